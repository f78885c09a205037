//! The commands, one record type per command topic. Ids are chosen by the sender, so a retried
//! request is the same command; times are microseconds since the Unix epoch (UTC).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::Error;
use crate::topics::Message;
use crate::topics::{self, Topic};
use crate::values::{CommissionRule, ContentKind, Money, Order, TrackingKind};

/// Registers a partner (affiliate) once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterPartner {
    pub partner_id: Uuid,
    pub name: String,
    pub email: String,
    /// Where the payout provider sends the partner's money.
    pub payout_account: String,
}

/// Creates an advertiser's campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateCampaign {
    pub campaign_id: Uuid,
    /// The advertiser owning the campaign (its tenant).
    pub advertiser_id: Uuid,
    pub name: String,
    pub budget: Money,
    pub commission_rule: CommissionRule,
    pub valid_from: i64,
    pub valid_until: i64,
}

/// Lets a partner promote a campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssociatePartner {
    pub campaign_id: Uuid,
    pub partner_id: Uuid,
}

/// Attaches promotional content to a campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssociateContent {
    pub campaign_id: Uuid,
    pub content_id: Uuid,
    pub kind: ContentKind,
    pub url: String,
    pub title: String,
    pub tags: Vec<String>,
}

/// Records tracked evidence of a click, lead or conversion, or the refund of a converted order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordTrackingEvent {
    pub tracking_id: Uuid,
    pub campaign_id: Uuid,
    pub partner_id: Uuid,
    pub kind: TrackingKind,
    /// Present for a conversion, and for a refund (the converted order).
    pub order: Option<Order>,
    pub occurred_at: i64,
}

/// Assigns a partner the commission one tracking event earned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignCommission {
    pub commission_id: Uuid,
    pub campaign_id: Uuid,
    pub partner_id: Uuid,
    pub tracking_id: Uuid,
    pub rule: CommissionRule,
    /// The order amount a percent rule applies to.
    pub order_amount: Option<Money>,
    /// ISO 4217 currency of the commission.
    pub currency: String,
}

/// Pays one commission out to its partner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestPayment {
    /// Also the payout provider's idempotency key.
    pub payment_id: Uuid,
    pub commission_id: Uuid,
    pub partner_id: Uuid,
    pub campaign_id: Uuid,
    pub amount: Money,
}

/// Cancels a payment unless a payout was attempted: what a saga sends when a payment's request
/// went unanswered, to learn whether money can still move before it compensates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelPayment {
    pub payment_id: Uuid,
    pub reason: String,
}

/// Compensation: marks a tracking event failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailTrackingEvent {
    pub tracking_id: Uuid,
    pub reason: String,
}

/// Reserves campaign budget for one tracking event's commission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveBudget {
    pub reservation_id: Uuid,
    pub campaign_id: Uuid,
    pub partner_id: Uuid,
    pub tracking_id: Uuid,
    pub kind: TrackingKind,
    /// The order amount a percent rule applies to.
    pub order_amount: Option<Money>,
    /// When the tracked event happened; the campaign must be valid then.
    pub occurred_at: i64,
}

/// Compensation: releases a budget reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseBudget {
    pub reservation_id: Uuid,
    pub campaign_id: Uuid,
    pub reason: String,
}

/// Compensation: reverses an assigned commission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReverseCommission {
    pub commission_id: Uuid,
    pub reason: String,
}

/// Confirms a tracking event once its saga succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmTrackingEvent {
    pub tracking_id: Uuid,
}

/// Compensation of a refund: assigns a reversed commission again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReinstateCommission {
    pub commission_id: Uuid,
    pub reason: String,
}

/// Claws a completed payout back from the partner's balance (its order was refunded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClawBackPayment {
    pub clawback_id: Uuid,
    pub payment_id: Uuid,
    pub reason: String,
}

/// Compensation: takes a claw-back back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelClawBack {
    pub clawback_id: Uuid,
    pub payment_id: Uuid,
    pub reason: String,
}

/// Implements [`Message`] for command records, each the whole body of its topic.
macro_rules! commands {
    ($($command:ident => $topic:ident,)+) => {$(
        impl Message for $command {
            const TOPIC: &'static Topic = &topics::$topic;

            fn message_type(&self) -> &'static str {
                stringify!($command)
            }

            fn encode(&self) -> Result<Vec<u8>, Error> {
                Self::TOPIC.codec().encode(self)
            }

            fn decode_version(bytes: &[u8], writer_version: u32) -> Result<Self, Error> {
                Self::TOPIC
                    .codec()
                    .decode(Self::TOPIC.name, bytes, writer_version)
            }
        }
    )+};
}

commands! {
    RegisterPartner => CAMPAIGNS_PARTNER_REGISTRATION,
    CreateCampaign => CAMPAIGN_CREATION,
    AssociatePartner => CAMPAIGN_PARTNER_ASSOCIATION,
    AssociateContent => CAMPAIGN_CONTENT_ASSOCIATION,
    RecordTrackingEvent => CAMPAIGN_TRACKING_EVENTS,
    AssignCommission => ASSIGN_COMMISSION_TO_PARTNER,
    RequestPayment => PAYMENTS_REQUEST,
    CancelPayment => PAYMENTS_CANCELLATION,
    FailTrackingEvent => FAIL_TRACKING_EVENTS,
    ReserveBudget => CAMPAIGN_BUDGET_RESERVATION,
    ReleaseBudget => CAMPAIGN_BUDGET_RELEASE,
    ReverseCommission => COMMISSION_REVERSAL,
    ConfirmTrackingEvent => TRACKING_EVENT_CONFIRMATION,
    ReinstateCommission => COMMISSION_REINSTATEMENT,
    ClawBackPayment => PAYMENTS_CLAWBACK,
    CancelClawBack => PAYMENTS_CLAWBACK_CANCELLATION,
}
