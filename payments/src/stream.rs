//! A payment's stream: folded from the event store, and appended to with its events queued on
//! `payments-events`, by the command handlers and the payout worker alike.

use crate::domain::{Payment, PaymentEvent};
use crate::wire;
use eventstore::Aggregate;
use eventstore::ExpectedVersion;
use messaging::consume::HandlerError;
use messaging::effects::{self, StreamEvents};
use schemas::events::PaymentsEvent;
use sqlx::PgConnection;
use uuid::Uuid;

/// A payment folded from its stream, and the stream's version.
pub(crate) async fn load(
    conn: &mut PgConnection,
    payment_id: Uuid,
) -> Result<(Payment, ExpectedVersion), HandlerError> {
    let stream_id = wire::payment_stream(payment_id);
    effects::load(conn, &stream_id, wire::stored, |p: &mut Payment, e| {
        p.apply(&e)
    })
    .await
}

/// A payment's new events, in the wire form, for an append at `expected`.
pub(crate) fn on_stream<'a>(
    stream_id: &'a str,
    expected: ExpectedVersion,
    events: &[PaymentEvent],
) -> Vec<StreamEvents<'a, PaymentsEvent>> {
    vec![StreamEvents {
        stream_id,
        stream_type: "payment",
        expected,
        events: events.iter().map(wire::payment_event).collect(),
    }]
}

/// Appends a payment's new events and queues them on `payments-events`, caused by `cause`.
pub(crate) async fn commit(
    tx: &mut PgConnection,
    cause: &messaging::Properties,
    payment_id: Uuid,
    expected: ExpectedVersion,
    events: &[PaymentEvent],
) -> Result<(), HandlerError> {
    let stream_id = wire::payment_stream(payment_id);
    let streams = on_stream(&stream_id, expected, events);
    effects::commit_events(tx, cause, &payment_id.to_string(), &streams).await
}
