//! One sample of every message type and every event variant, each with its body and its JSON
//! rendering, shared by the tests.

use schemas::commands::{
    AssignCommission, AssociateContent, AssociatePartner, CancelClawBack, CancelPayment,
    ClawBackPayment, ConfirmTrackingEvent, CreateCampaign, FailTrackingEvent, RecordTrackingEvent,
    RegisterPartner, ReinstateCommission, ReleaseBudget, RequestPayment, ReserveBudget,
    ReverseCommission,
};
use schemas::events::{
    BudgetReleased, BudgetReserved, CampaignCreated, CampaignsEvent, CommandAlreadyApplied,
    CommandRejected, CommissionAssigned, CommissionReinstated, CommissionReversed,
    CommissionVoided, CommissionsEvent, ContentAssociated, OrderClaimed, OrderRefunded,
    PartnerAssociated, PartnerRegistered, PaymentCancelled, PaymentClawBackCancelled,
    PaymentClawedBack, PaymentCompleted, PaymentFailed, PaymentRequested, PaymentsEvent,
    PayoutAttempted, PayoutOutcomeUnknown, TrackingEvent, TrackingEventConfirmed,
    TrackingEventFailed, TrackingEventRecorded,
};
use schemas::values::{CommissionRule, ContentKind, Money, Order, TrackingKind};
use schemas::{Error, Message, Topic, TopicKind};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

/// 2026-03-01T09:30:00.123456Z in microseconds.
const T0: i64 = 1_772_357_400_123_456;
const DAY: i64 = 86_400_000_000;

pub struct Sample {
    pub topic: &'static Topic,
    pub message_type: &'static str,
    /// The body, encoded with the current schema.
    pub bytes: Vec<u8>,
    /// The message as serde_json renders it; an event inside its `{"event": ...}` record.
    pub json: serde_json::Value,
    /// Decodes a body written with the given schema version as this sample's type, rendered
    /// like `json`.
    pub decode: fn(&[u8], u32) -> Result<serde_json::Value, Error>,
}

impl Sample {
    fn new<T: Message + Serialize>(message: T) -> Self {
        Self {
            topic: T::TOPIC,
            message_type: message.message_type(),
            bytes: message.encode().expect("a sample encodes"),
            json: wire_json(&message),
            decode: decode_json::<T>,
        }
    }
}

fn wire_json<T: Message + Serialize>(message: &T) -> serde_json::Value {
    let json = serde_json::to_value(message).expect("a wire type renders as JSON");
    match T::TOPIC.kind {
        TopicKind::Command => json,
        TopicKind::Event => json!({ "event": json }),
    }
}

fn decode_json<T: Message + Serialize>(
    bytes: &[u8],
    version: u32,
) -> Result<serde_json::Value, Error> {
    T::decode_version(bytes, version).map(|message| wire_json(&message))
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0195_3c1e_7a4b_7c2d_8e9f_0000_0000_0000 + n)
}

fn eur(amount: i64) -> Money {
    Money {
        amount,
        currency: "EUR".into(),
    }
}

fn rejected(command_type: &str, aggregate_id: Uuid) -> CommandRejected {
    CommandRejected {
        command_id: id(99),
        command_type: command_type.into(),
        aggregate_id: aggregate_id.to_string(),
        code: "not_found".into(),
        reason: "no such aggregate".into(),
    }
}

fn already_applied(command_type: &str, aggregate_id: Uuid) -> CommandAlreadyApplied {
    CommandAlreadyApplied {
        command_id: id(98),
        command_type: command_type.into(),
        aggregate_id: aggregate_id.to_string(),
    }
}

/// Every sample: each command, and each variant of each event union.
pub fn all() -> Vec<Sample> {
    let (partner, campaign, advertiser, content) = (id(1), id(2), id(3), id(4));
    let (tracking, commission, payment, reservation) = (id(5), id(6), id(7), id(8));
    let order = Order {
        order_id: "A-1001/ü".into(),
        amount: eur(12_999),
    };
    vec![
        Sample::new(RegisterPartner {
            partner_id: partner,
            name: "Zoë Müller".into(),
            email: "zoe@example.com".into(),
            payout_account: "DE89 3704 0044 0532 0130 00".into(),
        }),
        Sample::new(CreateCampaign {
            campaign_id: campaign,
            advertiser_id: advertiser,
            name: "Spring sale ☀".into(),
            budget: eur(1_000_000),
            commission_rule: CommissionRule::Fixed { amount: 250 },
            valid_from: T0,
            valid_until: T0 + 30 * DAY,
        }),
        Sample::new(AssociatePartner {
            campaign_id: campaign,
            partner_id: partner,
        }),
        Sample::new(AssociateContent {
            campaign_id: campaign,
            content_id: content,
            kind: ContentKind::Video,
            url: "https://example.com/spring?utm=1".into(),
            title: "Spring".into(),
            tags: vec!["spring".into(), "sale".into()],
        }),
        Sample::new(RecordTrackingEvent {
            tracking_id: tracking,
            campaign_id: campaign,
            partner_id: partner,
            kind: TrackingKind::Click,
            order: None,
            occurred_at: T0,
        }),
        Sample::new(RecordTrackingEvent {
            tracking_id: tracking,
            campaign_id: campaign,
            partner_id: partner,
            kind: TrackingKind::Conversion,
            order: Some(order.clone()),
            occurred_at: T0 + 1,
        }),
        Sample::new(AssignCommission {
            commission_id: commission,
            campaign_id: campaign,
            partner_id: partner,
            tracking_id: tracking,
            rule: CommissionRule::Percent { basis_points: 250 },
            order_amount: Some(eur(12_999)),
            currency: "EUR".into(),
        }),
        Sample::new(RequestPayment {
            payment_id: payment,
            commission_id: commission,
            partner_id: partner,
            campaign_id: campaign,
            amount: eur(325),
        }),
        Sample::new(CancelPayment {
            payment_id: payment,
            reason: "request-payment timed out after 2 attempts".into(),
        }),
        Sample::new(FailTrackingEvent {
            tracking_id: tracking,
            reason: "budget exhausted".into(),
        }),
        Sample::new(ReserveBudget {
            reservation_id: reservation,
            campaign_id: campaign,
            partner_id: partner,
            tracking_id: tracking,
            kind: TrackingKind::Lead,
            order_amount: None,
            occurred_at: T0,
        }),
        Sample::new(ReleaseBudget {
            reservation_id: reservation,
            campaign_id: campaign,
            reason: "commission step timed out".into(),
        }),
        Sample::new(ReverseCommission {
            commission_id: commission,
            reason: "payment failed".into(),
        }),
        Sample::new(ConfirmTrackingEvent {
            tracking_id: tracking,
        }),
        Sample::new(CampaignsEvent::PartnerRegistered(PartnerRegistered {
            partner_id: partner,
            name: "Zoë Müller".into(),
            email: "zoe@example.com".into(),
            payout_account: "DE89 3704 0044 0532 0130 00".into(),
        })),
        Sample::new(CampaignsEvent::CampaignCreated(CampaignCreated {
            campaign_id: campaign,
            advertiser_id: advertiser,
            name: "Spring sale ☀".into(),
            budget: eur(1_000_000),
            commission_rule: CommissionRule::Percent {
                basis_points: 1_000,
            },
            valid_from: T0,
            valid_until: T0 + 30 * DAY,
        })),
        Sample::new(CampaignsEvent::PartnerAssociated(PartnerAssociated {
            campaign_id: campaign,
            partner_id: partner,
        })),
        Sample::new(CampaignsEvent::ContentAssociated(ContentAssociated {
            campaign_id: campaign,
            content_id: content,
            kind: ContentKind::Banner,
            url: "https://example.com/b.png".into(),
            title: String::new(),
            tags: Vec::new(),
        })),
        Sample::new(CampaignsEvent::BudgetReserved(BudgetReserved {
            reservation_id: reservation,
            campaign_id: campaign,
            partner_id: partner,
            tracking_id: tracking,
            // Beyond a double's exact integers, so JSON numbers must stay integers.
            amount: eur(9_007_199_254_740_993),
        })),
        Sample::new(CampaignsEvent::BudgetReleased(BudgetReleased {
            reservation_id: reservation,
            campaign_id: campaign,
            amount: eur(-1),
            reason: "compensated".into(),
        })),
        Sample::new(CampaignsEvent::CommandRejected(rejected(
            "CreateCampaign",
            campaign,
        ))),
        Sample::new(CampaignsEvent::CommandAlreadyApplied(already_applied(
            "RegisterPartner",
            partner,
        ))),
        Sample::new(TrackingEvent::Recorded(TrackingEventRecorded {
            tracking_id: tracking,
            campaign_id: campaign,
            partner_id: partner,
            kind: TrackingKind::Conversion,
            order: Some(order.clone()),
            occurred_at: T0,
            refund_of: None,
        })),
        Sample::new(TrackingEvent::Recorded(TrackingEventRecorded {
            tracking_id: id(9),
            campaign_id: campaign,
            partner_id: partner,
            kind: TrackingKind::Refund,
            order: Some(order),
            occurred_at: T0 + 1,
            refund_of: Some(tracking),
        })),
        Sample::new(TrackingEvent::Confirmed(TrackingEventConfirmed {
            tracking_id: tracking,
            campaign_id: campaign,
            partner_id: Some(partner),
        })),
        Sample::new(TrackingEvent::Failed(TrackingEventFailed {
            tracking_id: tracking,
            campaign_id: campaign,
            partner_id: None,
            reason: "fraud: order seen twice".into(),
        })),
        Sample::new(TrackingEvent::OrderClaimed(OrderClaimed {
            campaign_id: campaign,
            order_id: "A-1001/ü".into(),
            tracking_id: tracking,
        })),
        Sample::new(TrackingEvent::CommandRejected(rejected(
            "RecordTrackingEvent",
            tracking,
        ))),
        Sample::new(TrackingEvent::CommandAlreadyApplied(already_applied(
            "ConfirmTrackingEvent",
            tracking,
        ))),
        Sample::new(TrackingEvent::OrderRefunded(OrderRefunded {
            campaign_id: campaign,
            order_id: "A-1001/ü".into(),
            tracking_id: id(9),
        })),
        Sample::new(CommissionsEvent::CommissionAssigned(CommissionAssigned {
            commission_id: commission,
            campaign_id: campaign,
            partner_id: partner,
            tracking_id: tracking,
            amount: eur(325),
        })),
        Sample::new(CommissionsEvent::CommissionReversed(CommissionReversed {
            commission_id: commission,
            campaign_id: campaign,
            partner_id: partner,
            amount: eur(325),
            reason: "payment failed".into(),
        })),
        Sample::new(CommissionsEvent::CommissionVoided(CommissionVoided {
            commission_id: commission,
            reason: "tracking event failed before assignment".into(),
        })),
        Sample::new(CommissionsEvent::CommandRejected(rejected(
            "AssignCommission",
            commission,
        ))),
        Sample::new(CommissionsEvent::CommandAlreadyApplied(already_applied(
            "ReverseCommission",
            commission,
        ))),
        Sample::new(CommissionsEvent::CommissionReinstated(
            CommissionReinstated {
                commission_id: commission,
                campaign_id: campaign,
                partner_id: partner,
                amount: eur(325),
                reason: "claw-back rejected".into(),
            },
        )),
        Sample::new(ReinstateCommission {
            commission_id: commission,
            reason: "claw-back rejected".into(),
        }),
        Sample::new(PaymentsEvent::PaymentRequested(PaymentRequested {
            payment_id: payment,
            commission_id: commission,
            campaign_id: campaign,
            partner_id: partner,
            amount: eur(325),
        })),
        Sample::new(PaymentsEvent::PayoutAttempted(PayoutAttempted {
            payment_id: payment,
            idempotency_key: payment.to_string(),
        })),
        Sample::new(PaymentsEvent::PayoutOutcomeUnknown(PayoutOutcomeUnknown {
            payment_id: payment,
            reason: "provider timed out after 30 s".into(),
        })),
        Sample::new(PaymentsEvent::PaymentCompleted(PaymentCompleted {
            payment_id: payment,
            provider_reference: "po_7781".into(),
        })),
        Sample::new(PaymentsEvent::PaymentFailed(PaymentFailed {
            payment_id: payment,
            reason: "account closed".into(),
        })),
        Sample::new(PaymentsEvent::CommandRejected(rejected(
            "RequestPayment",
            payment,
        ))),
        Sample::new(PaymentsEvent::CommandAlreadyApplied(already_applied(
            "RequestPayment",
            payment,
        ))),
        Sample::new(PaymentsEvent::PaymentCancelled(PaymentCancelled {
            payment_id: payment,
            reason: "request-payment timed out after 2 attempts".into(),
        })),
        Sample::new(ClawBackPayment {
            clawback_id: id(10),
            payment_id: payment,
            reason: "order A-1001/ü refunded".into(),
        }),
        Sample::new(CancelClawBack {
            clawback_id: id(10),
            payment_id: payment,
            reason: "release-budget rejected".into(),
        }),
        Sample::new(PaymentsEvent::PaymentClawedBack(PaymentClawedBack {
            payment_id: payment,
            clawback_id: id(10),
            partner_id: partner,
            amount: eur(325),
            reason: "order A-1001/ü refunded".into(),
        })),
        Sample::new(PaymentsEvent::PaymentClawBackCancelled(
            PaymentClawBackCancelled {
                payment_id: payment,
                clawback_id: id(10),
                partner_id: partner,
                amount: eur(325),
                reason: "release-budget rejected".into(),
            },
        )),
    ]
}
