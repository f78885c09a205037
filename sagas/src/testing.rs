//! Sagas to test with, for this crate's tests and others' (the `test-support` feature).

use crate::definition::{CATALOGUE, Definition, Money, Order, SagaData, SagaType, TrackingKind};
use uuid::Uuid;

/// A conversion of order `o-1` for `amount` (euro cents), of a new campaign and partner: its
/// saga's id, the definition a new order-to-payment saga starts on, and the saga's data.
pub fn conversion(amount: i64) -> (Uuid, &'static Definition, SagaData) {
    let tracking_id = Uuid::new_v4();
    let data = SagaData {
        tracking_id,
        campaign_id: Uuid::new_v4(),
        partner_id: Uuid::new_v4(),
        kind: TrackingKind::Conversion,
        order: Some(Order {
            order_id: "o-1".into(),
            amount: Money::new(amount, "EUR"),
        }),
        occurred_at: 0,
        refund_of: None,
    };
    let definition = CATALOGUE
        .latest(SagaType::OrderToPayment)
        .expect("a definition");
    (crate::wire::saga_id_for(tracking_id), definition, data)
}
