//! Why a campaigns command was rejected: each reason with its stable code.

use super::TrackingKind;
use uuid::Uuid;

/// Why a command was rejected; nothing changed. [`Error::code`] is the stable machine-readable
/// reason published in `CommandRejected`, the message its human-readable explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid partner: {0}")]
    InvalidPartner(&'static str),
    #[error("partner {0} is already registered with other data")]
    PartnerAlreadyRegistered(Uuid),
    #[error("campaign {0} already exists with other data")]
    CampaignAlreadyExists(Uuid),
    #[error("campaign {0} does not exist")]
    CampaignNotFound(Uuid),
    #[error("the campaign name is blank")]
    InvalidCampaignName,
    #[error("{0:?} is not an ISO 4217 currency code")]
    InvalidCurrency(String),
    #[error("the budget must be positive, got {0}")]
    InvalidBudget(i64),
    #[error("invalid commission rule: {0}")]
    InvalidCommissionRule(&'static str),
    #[error(
        "the validity window must start before it ends (from {}, until {})",
        rfc3339(*valid_from),
        rfc3339(*valid_until)
    )]
    InvalidValidityWindow { valid_from: i64, valid_until: i64 },
    #[error("invalid content: {0}")]
    InvalidContent(&'static str),
    #[error("content {0} is already associated with other data")]
    ContentAlreadyAssociated(Uuid),
    #[error("partner {partner_id} is not associated with campaign {campaign_id}")]
    PartnerNotAssociated { campaign_id: Uuid, partner_id: Uuid },
    #[error("campaign {campaign_id} is not active at {}", rfc3339(*at))]
    CampaignNotActive { campaign_id: Uuid, at: i64 },
    #[error("a conversion or a percent commission needs an order amount")]
    OrderAmountRequired,
    #[error("a {0:?} is not billable: no budget is reserved for it")]
    NotBillable(TrackingKind),
    #[error("the order amount must not be negative, got {0}")]
    InvalidOrderAmount(i64),
    #[error("the order is in {found}, the campaign's budget in {expected}")]
    CurrencyMismatch { expected: String, found: String },
    #[error(
        "campaign {campaign_id} has {remaining} left of its budget, the commission needs {requested}"
    )]
    BudgetExhausted {
        campaign_id: Uuid,
        requested: i64,
        remaining: i64,
    },
    #[error("reservation {0} was already made for another partner or tracking event")]
    ReservationConflict(Uuid),
}

/// Microseconds since the Unix epoch as an RFC 3339 time, for messages people read.
fn rfc3339(micros: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{micros} µs after the Unix epoch"))
}

impl Error {
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidPartner(_) => "invalid_partner",
            Error::PartnerAlreadyRegistered(_) => "partner_already_registered",
            Error::CampaignAlreadyExists(_) => "campaign_already_exists",
            Error::CampaignNotFound(_) => "campaign_not_found",
            Error::InvalidCampaignName => "invalid_campaign_name",
            Error::InvalidCurrency(_) => "invalid_currency",
            Error::InvalidBudget(_) => "invalid_budget",
            Error::InvalidCommissionRule(_) => "invalid_commission_rule",
            Error::InvalidValidityWindow { .. } => "invalid_validity_window",
            Error::InvalidContent(_) => "invalid_content",
            Error::ContentAlreadyAssociated(_) => "content_already_associated",
            Error::PartnerNotAssociated { .. } => "partner_not_associated",
            Error::CampaignNotActive { .. } => "campaign_not_active",
            Error::OrderAmountRequired => "order_amount_required",
            Error::NotBillable(_) => "not_billable",
            Error::InvalidOrderAmount(_) => "invalid_order_amount",
            Error::CurrencyMismatch { .. } => "currency_mismatch",
            Error::BudgetExhausted { .. } => "budget_exhausted",
            Error::ReservationConflict(_) => "reservation_conflict",
        }
    }
}
