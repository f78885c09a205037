//! The events, one topic per service. Each topic's body is a record with one field, `event`,
//! a union of the service's event records; in Rust that record is an enum whose variants follow
//! the union's order. Times are microseconds since the Unix epoch (UTC).

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::marker::PhantomData;
use uuid::Uuid;

use crate::codec::Error;
use crate::topics::Message;
use crate::topics::{self, Topic};
use crate::values::{CommissionRule, ContentKind, Money, Order, TrackingKind};

/// A command was refused and nothing changed; every service's event topic carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRejected {
    /// The message id of the rejected command.
    pub command_id: Uuid,
    /// The rejected command's message type.
    pub command_type: String,
    pub aggregate_id: String,
    /// A stable machine-readable reason, e.g. `budget_exhausted`.
    pub code: String,
    /// A human-readable explanation.
    pub reason: String,
}

/// A command was accepted but changed nothing: its effect was already in place. Sent so that
/// whoever waits on the command gets an answer; every service's event topic carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandAlreadyApplied {
    /// The message id of the command.
    pub command_id: Uuid,
    /// The command's message type.
    pub command_type: String,
    pub aggregate_id: String,
}

/// A partner was registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerRegistered {
    pub partner_id: Uuid,
    pub name: String,
    pub email: String,
    pub payout_account: String,
}

/// A campaign was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignCreated {
    pub campaign_id: Uuid,
    pub advertiser_id: Uuid,
    pub name: String,
    pub budget: Money,
    pub commission_rule: CommissionRule,
    pub valid_from: i64,
    pub valid_until: i64,
}

/// A partner may now promote a campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerAssociated {
    pub campaign_id: Uuid,
    pub partner_id: Uuid,
}

/// Content was attached to a campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentAssociated {
    pub campaign_id: Uuid,
    pub content_id: Uuid,
    pub kind: ContentKind,
    pub url: String,
    pub title: String,
    pub tags: Vec<String>,
}

/// Budget was reserved for one tracking event's commission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetReserved {
    pub reservation_id: Uuid,
    pub campaign_id: Uuid,
    pub partner_id: Uuid,
    pub tracking_id: Uuid,
    pub amount: Money,
}

/// A budget reservation was released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetReleased {
    pub reservation_id: Uuid,
    pub campaign_id: Uuid,
    pub amount: Money,
    pub reason: String,
}

/// A click, lead, conversion or refund was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackingEventRecorded {
    pub tracking_id: Uuid,
    pub campaign_id: Uuid,
    pub partner_id: Uuid,
    pub kind: TrackingKind,
    pub order: Option<Order>,
    pub occurred_at: i64,
    /// For a refund: the tracking id of the conversion it refunds (absent before version 3).
    pub refund_of: Option<Uuid>,
}

/// A tracking event's saga succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackingEventConfirmed {
    pub tracking_id: Uuid,
    pub campaign_id: Uuid,
    /// The partner the tracking event is credited to; absent on events written with schema
    /// version 1.
    pub partner_id: Option<Uuid>,
}

/// A tracking event's saga failed and was compensated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackingEventFailed {
    pub tracking_id: Uuid,
    pub campaign_id: Uuid,
    /// The partner the tracking event is credited to; absent on events written with schema
    /// version 1.
    pub partner_id: Option<Uuid>,
    pub reason: String,
}

/// An order id was claimed on a campaign by a tracking event; a second tracking event with the
/// same order id on the campaign is fraud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderClaimed {
    pub campaign_id: Uuid,
    pub order_id: String,
    pub tracking_id: Uuid,
}

/// An order claimed on a campaign was refunded by a tracking event; a second refund is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRefunded {
    pub campaign_id: Uuid,
    pub order_id: String,
    pub tracking_id: Uuid,
}

/// A partner earned a commission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommissionAssigned {
    pub commission_id: Uuid,
    pub campaign_id: Uuid,
    pub partner_id: Uuid,
    pub tracking_id: Uuid,
    pub amount: Money,
}

/// An assigned commission was reversed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommissionReversed {
    pub commission_id: Uuid,
    pub campaign_id: Uuid,
    pub partner_id: Uuid,
    pub amount: Money,
    pub reason: String,
}

/// A reversed commission was assigned again, as it was (the refund that reversed it was undone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommissionReinstated {
    pub commission_id: Uuid,
    pub campaign_id: Uuid,
    pub partner_id: Uuid,
    pub amount: Money,
    pub reason: String,
}

/// A reversal arrived for a commission that was never assigned; the commission id can no longer
/// be assigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommissionVoided {
    pub commission_id: Uuid,
    pub reason: String,
}

/// A payout of one commission was requested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequested {
    pub payment_id: Uuid,
    pub commission_id: Uuid,
    pub campaign_id: Uuid,
    pub partner_id: Uuid,
    pub amount: Money,
}

/// The payout provider is being called with this idempotency key; from here on the payment is
/// never attempted again, only resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutAttempted {
    pub payment_id: Uuid,
    pub idempotency_key: String,
}

/// The provider call ended without an answer (a timeout); the outcome is resolved by asking the
/// provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutOutcomeUnknown {
    pub payment_id: Uuid,
    pub reason: String,
}

/// The payout provider paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCompleted {
    pub payment_id: Uuid,
    /// The payout provider's id of the payout.
    pub provider_reference: String,
}

/// The payout provider refused the payout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub payment_id: Uuid,
    pub reason: String,
}

/// A payment was cancelled before any payout was attempted: it will never be paid, and a later
/// request with its id is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCancelled {
    pub payment_id: Uuid,
    pub reason: String,
}

/// A completed payout was clawed back from the partner's balance: its order was refunded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentClawedBack {
    pub payment_id: Uuid,
    pub clawback_id: Uuid,
    pub partner_id: Uuid,
    pub amount: Money,
    pub reason: String,
}

/// A claw-back was taken back (compensation): the partner's balance is credited again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentClawBackCancelled {
    pub payment_id: Uuid,
    pub clawback_id: Uuid,
    pub partner_id: Uuid,
    pub amount: Money,
    pub reason: String,
}

/// The Avro body of an event topic: the event union wrapped in a record named after the enum.
#[derive(Serialize)]
struct Envelope<T> {
    event: T,
}

/// An event enum, with the name of the record that wraps it on its topic.
trait EventUnion {
    const RECORD: &'static str;
}

/// By hand rather than derived: apache-avro's decoder checks a struct's name against its record's,
/// and the envelope's record is named after each topic's enum.
impl<'de, T: Deserialize<'de> + EventUnion> Deserialize<'de> for Envelope<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Field {
            Event,
            #[serde(other)]
            Other,
        }

        struct Fields<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for Fields<T> {
            type Value = Envelope<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a record with the field `event`")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<Envelope<T>, A::Error> {
                let mut event = None;
                while let Some(field) = fields.next_key()? {
                    match field {
                        Field::Event => event = Some(fields.next_value()?),
                        Field::Other => {
                            fields.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let event = event.ok_or_else(|| de::Error::missing_field("event"))?;
                Ok(Envelope { event })
            }
        }

        deserializer.deserialize_struct(T::RECORD, &["event"], Fields(PhantomData))
    }
}

/// Declares an event enum, one variant per record, and implements [`Message`] for it; the message
/// type is the variant's record name.
macro_rules! events {
    ($($(#[$doc:meta])* $enum:ident => $topic:ident {
        $($(#[$attr:meta])* $variant:ident($record:ident),)+
    })+) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $enum {
            $($(#[$attr])* $variant($record),)+
        }

        impl EventUnion for $enum {
            const RECORD: &'static str = stringify!($enum);
        }

        impl Message for $enum {
            const TOPIC: &'static Topic = &topics::$topic;

            fn message_type(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => stringify!($record),)+
                }
            }

            fn encode(&self) -> Result<Vec<u8>, Error> {
                Self::TOPIC.codec().encode(&Envelope { event: self })
            }

            fn decode_version(bytes: &[u8], writer_version: u32) -> Result<Self, Error> {
                Self::TOPIC
                    .codec()
                    .decode(Self::TOPIC.name, bytes, writer_version)
                    .map(|e: Envelope<Self>| e.event)
            }
        }
    )+};
}

events! {
    /// An event of the campaigns service, on `campaigns-events`.
    CampaignsEvent => CAMPAIGNS_EVENTS {
        PartnerRegistered(PartnerRegistered),
        CampaignCreated(CampaignCreated),
        PartnerAssociated(PartnerAssociated),
        ContentAssociated(ContentAssociated),
        BudgetReserved(BudgetReserved),
        BudgetReleased(BudgetReleased),
        CommandRejected(CommandRejected),
        CommandAlreadyApplied(CommandAlreadyApplied),
    }
    /// An event of the tracking service, on `tracking-events`. The Avro records of `Recorded`,
    /// `Confirmed` and `Failed` are named `TrackingEventRecorded`, `TrackingEventConfirmed` and
    /// `TrackingEventFailed`.
    TrackingEvent => TRACKING_EVENTS {
        #[serde(rename = "TrackingEventRecorded")]
        Recorded(TrackingEventRecorded),
        #[serde(rename = "TrackingEventConfirmed")]
        Confirmed(TrackingEventConfirmed),
        #[serde(rename = "TrackingEventFailed")]
        Failed(TrackingEventFailed),
        OrderClaimed(OrderClaimed),
        CommandRejected(CommandRejected),
        CommandAlreadyApplied(CommandAlreadyApplied),
        OrderRefunded(OrderRefunded),
    }
    /// An event of the commissions service, on `commissions-events`.
    CommissionsEvent => COMMISSIONS_EVENTS {
        CommissionAssigned(CommissionAssigned),
        CommissionReversed(CommissionReversed),
        CommissionVoided(CommissionVoided),
        CommandRejected(CommandRejected),
        CommandAlreadyApplied(CommandAlreadyApplied),
        CommissionReinstated(CommissionReinstated),
    }
    /// An event of the payments service, on `payments-events`.
    PaymentsEvent => PAYMENTS_EVENTS {
        PaymentRequested(PaymentRequested),
        PayoutAttempted(PayoutAttempted),
        PayoutOutcomeUnknown(PayoutOutcomeUnknown),
        PaymentCompleted(PaymentCompleted),
        PaymentFailed(PaymentFailed),
        CommandRejected(CommandRejected),
        CommandAlreadyApplied(CommandAlreadyApplied),
        PaymentCancelled(PaymentCancelled),
        PaymentClawedBack(PaymentClawedBack),
        PaymentClawBackCancelled(PaymentClawBackCancelled),
    }
}
