//! The write routes' request bodies as clients send them, with the validation rules the OpenAPI
//! document states, and what a write answers.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// What a write answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// Poll `GET /v1/commands/{command_id}` for its outcome.
    pub command_id: Uuid,
    /// The ids the command creates, by name (`partner_id`, `campaign_id`, …).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub created: serde_json::Map<String, Value>,
}

/// An amount in minor units (cents) and its ISO 4217 currency.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoneyBody {
    #[schema(minimum = 1)]
    pub amount: i64,
    #[schema(
        pattern = "^[A-Z]{3}$",
        min_length = 3,
        max_length = 3,
        example = "EUR"
    )]
    pub currency: String,
}

/// How the campaign pays: `{"type": "fixed", "amount": 250}` or
/// `{"type": "percent", "basis_points": 1000}`.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleBody {
    Fixed {
        #[schema(minimum = 1)]
        amount: i64,
    },
    Percent {
        #[schema(minimum = 1, maximum = 10_000)]
        basis_points: i32,
    },
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPartner {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\s\\x00-\\x1F\\x7F-\\x9F][^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    pub name: String,
    #[schema(
        min_length = 3,
        max_length = 254,
        pattern = "^[^\\s@\\x00-\\x1F\\x7F-\\x9F]+@[^\\s@\\x00-\\x1F\\x7F-\\x9F]+$"
    )]
    pub email: String,
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\s\\x00-\\x1F\\x7F-\\x9F][^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    pub payout_account: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\s\\x00-\\x1F\\x7F-\\x9F][^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    pub name: String,
    pub budget: MoneyBody,
    pub commission_rule: RuleBody,
    /// RFC 3339; defaults to now.
    #[schema(format = DateTime)]
    pub valid_from: Option<String>,
    /// RFC 3339, after `valid_from`.
    #[schema(format = DateTime)]
    pub valid_until: String,
    /// Admins only: the advertiser the campaign is for. An advertiser's campaign is its own.
    pub advertiser_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAssociation {
    pub partner_id: Uuid,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContentKindBody {
    Banner,
    Link,
    Text,
    Video,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewContent {
    pub kind: ContentKindBody,
    #[schema(
        max_length = 2048,
        pattern = "^https?://[^\\s\\x00-\\x1F\\x7F-\\x9F]+$"
    )]
    pub url: String,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\s\\x00-\\x1F\\x7F-\\x9F][^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    pub title: String,
    /// At most 20, each 1 to 50 characters without control characters.
    #[serde(default)]
    #[schema(max_items = 20)]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KindBody {
    Click,
    Lead,
    Conversion,
    /// The refund of a converted order (a chargeback), in full: it carries that order, and starts
    /// the order-refund saga.
    Refund,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderBody {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\s\\x00-\\x1F\\x7F-\\x9F][^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    pub order_id: String,
    pub amount: MoneyBody,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTrackingEvent {
    pub campaign_id: Uuid,
    pub partner_id: Uuid,
    pub kind: KindBody,
    /// Required for a conversion and a refund (the converted order), refused otherwise.
    pub order: Option<OrderBody>,
    /// RFC 3339; defaults to now.
    #[schema(format = DateTime)]
    pub occurred_at: Option<String>,
}
