//! Value types that several messages share: money, commission rules, what was tracked, orders.

use serde::{Deserialize, Serialize};

/// An amount of money: integer minor units (cents for EUR) of one ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub amount: i64,
    pub currency: String,
}

impl Money {
    pub fn new(amount: i64, currency: impl Into<String>) -> Self {
        Money {
            amount,
            currency: currency.into(),
        }
    }
}

/// How a campaign pays its partners; in Avro a union of the records `FixedCommission` and
/// `PercentCommission`, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommissionRule {
    /// A fixed amount, in minor units, per billable event.
    #[serde(rename = "FixedCommission")]
    Fixed { amount: i64 },
    /// A share of the order amount in basis points: 250 is 2.5 %.
    #[serde(rename = "PercentCommission")]
    Percent { basis_points: i32 },
}

/// What a tracking event is evidence of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TrackingKind {
    Click,
    Lead,
    Conversion,
    /// The refund of a converted order (a chargeback); carries that order.
    Refund,
}

/// The kind of promotional content associated with a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContentKind {
    Banner,
    Link,
    Text,
    Video,
}

/// The order a conversion carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The advertiser's own order id.
    pub order_id: String,
    pub amount: Money,
}
