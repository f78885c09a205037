//! What the saga log stores that serde's derives cannot say alone: a saga's data with its
//! order's id and amount side by side, and durations in whole milliseconds.

use super::{Money, Order, SagaData, TrackingKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// [`SagaData`] as the log stores it.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredData {
    tracking_id: Uuid,
    campaign_id: Uuid,
    partner_id: Uuid,
    kind: TrackingKind,
    order_id: Option<String>,
    order_amount: Option<Money>,
    occurred_at: i64,
    /// Only a refund's data has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refund_of: Option<Uuid>,
}

impl From<SagaData> for StoredData {
    fn from(data: SagaData) -> Self {
        let (order_id, order_amount) = data
            .order
            .map_or((None, None), |o| (Some(o.order_id), Some(o.amount)));
        StoredData {
            tracking_id: data.tracking_id,
            campaign_id: data.campaign_id,
            partner_id: data.partner_id,
            kind: data.kind,
            order_id,
            order_amount,
            occurred_at: data.occurred_at,
            refund_of: data.refund_of,
        }
    }
}

impl From<StoredData> for SagaData {
    fn from(data: StoredData) -> Self {
        SagaData {
            tracking_id: data.tracking_id,
            campaign_id: data.campaign_id,
            partner_id: data.partner_id,
            kind: data.kind,
            order: match (data.order_id, data.order_amount) {
                (Some(order_id), Some(amount)) => Some(Order { order_id, amount }),
                _ => None,
            },
            occurred_at: data.occurred_at,
            refund_of: data.refund_of,
        }
    }
}

/// A duration as whole milliseconds (`timeout_ms`).
pub(super) mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(duration: &Duration, to: S) -> Result<S::Ok, S::Error> {
        to.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Duration, D::Error> {
        u64::deserialize(from).map(Duration::from_millis)
    }
}

/// An optional duration as whole milliseconds (`retry_in_ms`).
pub(super) mod millis_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(duration: &Option<Duration>, to: S) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => super::millis::serialize(duration, to),
            None => to.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(from).map(|ms| ms.map(Duration::from_millis))
    }
}
