//! Where the saga definitions meet the services' messages: saga commands as the services' Avro
//! commands, and the services' events as answers to the commands that caused them. Saga-log
//! entries are stored as JSON through the definitions' serde derives (the log is the
//! coordinator's own, never on a topic).

use crate::definition::{Answer, Command, Entry, Order, SagaData, SagaType, TrackingKind};
use schemas::Message;
use schemas::commands as wire;
use schemas::events::{CampaignsEvent, CommissionsEvent, PaymentsEvent, TrackingEvent};
use schemas::values;
use uuid::Uuid;

/// Why a stored entry could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("saga log entry is not valid JSON for its type: {0}")]
    Json(#[from] serde_json::Error),
}

/// The event-store stream of a saga's log.
pub fn stream_id(saga_id: Uuid) -> String {
    format!("saga-{saga_id}")
}

/// The entry's type name, as the event store records it.
pub fn entry_type(entry: &Entry) -> &'static str {
    match entry {
        Entry::Started { .. } => "SagaStarted",
        Entry::StepCommandSent { .. } => "StepCommandSent",
        Entry::StepSucceeded { .. } => "StepSucceeded",
        Entry::StepFailed { .. } => "StepFailed",
        Entry::StepTimedOut { .. } => "StepTimedOut",
        Entry::CompensationStarted { .. } => "CompensationStarted",
        Entry::CompensationCommandSent { .. } => "CompensationCommandSent",
        Entry::CompensationSucceeded { .. } => "CompensationSucceeded",
        Entry::CompensationFailed { .. } => "CompensationFailed",
        Entry::CompensationRetryDue { .. } => "CompensationRetryDue",
        Entry::Parked { .. } => "SagaParked",
        Entry::OperatorActed { .. } => "OperatorActed",
        Entry::Completed { .. } => "SagaCompleted",
        Entry::Compensated { .. } => "SagaCompensated",
    }
}

/// The entry as stored: JSON tagged by `entry` (the definitions' serde derives), schema
/// version 1.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    serde_json::to_vec(entry).unwrap_or_default()
}

pub fn decode_entry(bytes: &[u8]) -> Result<Entry, Error> {
    Ok(serde_json::from_slice(bytes)?)
}

/// A stored entry as the query API shows it.
pub fn entry_json(event: &eventstore::RecordedEvent) -> Option<serde_json::Value> {
    serde_json::from_slice(&event.payload).ok()
}

fn wire_kind(kind: TrackingKind) -> values::TrackingKind {
    match kind {
        TrackingKind::Click => values::TrackingKind::Click,
        TrackingKind::Lead => values::TrackingKind::Lead,
        TrackingKind::Conversion => values::TrackingKind::Conversion,
        TrackingKind::Refund => values::TrackingKind::Refund,
    }
}

/// A command's topic, message type, schema version and encoded body.
type Encoded = (&'static str, &'static str, u32, Vec<u8>);

fn encoded<M: Message>(m: M) -> Result<Encoded, schemas::Error> {
    Ok((
        M::TOPIC.name,
        m.message_type(),
        M::TOPIC.version(),
        m.encode()?,
    ))
}

/// A saga command as its topic's body: (topic, message type, schema version, encoded body).
pub fn encode_command(command: &Command) -> Result<Encoded, schemas::Error> {
    match command.clone() {
        Command::ReserveBudget {
            reservation_id,
            campaign_id,
            partner_id,
            tracking_id,
            kind,
            order_amount,
            occurred_at,
        } => encoded(wire::ReserveBudget {
            reservation_id,
            campaign_id,
            partner_id,
            tracking_id,
            kind: wire_kind(kind),
            order_amount: order_amount.as_ref().cloned(),
            occurred_at,
        }),
        // The reservation fixed the amount (campaigns applies the campaign's rule); the commission
        // is that amount.
        Command::AssignCommission {
            commission_id,
            campaign_id,
            partner_id,
            tracking_id,
            amount,
        } => encoded(wire::AssignCommission {
            commission_id,
            campaign_id,
            partner_id,
            tracking_id,
            rule: values::CommissionRule::Fixed {
                amount: amount.amount,
            },
            order_amount: None,
            currency: amount.currency,
        }),
        Command::RequestPayment {
            payment_id,
            commission_id,
            partner_id,
            campaign_id,
            amount,
        } => encoded(wire::RequestPayment {
            payment_id,
            commission_id,
            partner_id,
            campaign_id,
            amount: amount.clone(),
        }),
        other => encode_as_is(other),
    }
}

/// [`encode_command`] for the commands whose fields travel as they are: the releases, reversals,
/// cancellations and confirmations.
fn encode_as_is(command: Command) -> Result<Encoded, schemas::Error> {
    match command {
        Command::ReleaseBudget {
            reservation_id,
            campaign_id,
            reason,
        } => encoded(wire::ReleaseBudget {
            reservation_id,
            campaign_id,
            reason,
        }),
        Command::ReverseCommission {
            commission_id,
            reason,
        } => encoded(wire::ReverseCommission {
            commission_id,
            reason,
        }),
        Command::ConfirmTracking { tracking_id } => {
            encoded(wire::ConfirmTrackingEvent { tracking_id })
        }
        Command::FailTracking {
            tracking_id,
            reason,
        } => encoded(wire::FailTrackingEvent {
            tracking_id,
            reason,
        }),
        Command::CancelPayment { payment_id, reason } => {
            encoded(wire::CancelPayment { payment_id, reason })
        }
        Command::ReinstateCommission {
            commission_id,
            reason,
        } => encoded(wire::ReinstateCommission {
            commission_id,
            reason,
        }),
        Command::ClawBack {
            clawback_id,
            payment_id,
            reason,
        } => encoded(wire::ClawBackPayment {
            clawback_id,
            payment_id,
            reason,
        }),
        Command::CancelClawBack {
            clawback_id,
            payment_id,
            reason,
        } => encoded(wire::CancelClawBack {
            clawback_id,
            payment_id,
            reason,
        }),
        Command::ReserveBudget { .. }
        | Command::AssignCommission { .. }
        | Command::RequestPayment { .. } => unreachable!("encode_command converts these"),
    }
}

fn succeeded(amount: Option<&values::Money>) -> Option<Answer> {
    Some(Answer::Succeeded {
        amount: amount.cloned(),
    })
}

fn rejected(code: &str, reason: &str) -> Option<Answer> {
    Some(Answer::Rejected {
        code: code.to_owned(),
        reason: reason.to_owned(),
    })
}

/// What a campaigns event answers, if it is an answer.
pub fn campaigns_answer(event: &CampaignsEvent) -> Option<Answer> {
    match event {
        CampaignsEvent::BudgetReserved(e) => succeeded(Some(&e.amount)),
        CampaignsEvent::BudgetReleased(_) | CampaignsEvent::CommandAlreadyApplied(_) => {
            succeeded(None)
        }
        CampaignsEvent::CommandRejected(r) => rejected(&r.code, &r.reason),
        _ => None,
    }
}

pub fn commissions_answer(event: &CommissionsEvent) -> Option<Answer> {
    match event {
        CommissionsEvent::CommissionAssigned(e) => succeeded(Some(&e.amount)),
        CommissionsEvent::CommissionReversed(_)
        | CommissionsEvent::CommissionReinstated(_)
        | CommissionsEvent::CommissionVoided(_)
        | CommissionsEvent::CommandAlreadyApplied(_) => succeeded(None),
        CommissionsEvent::CommandRejected(r) => rejected(&r.code, &r.reason),
    }
}

/// Payments answers a request only with the payout's outcome (a request being recorded is not
/// one), a cancel with the cancellation or where the payment stands, and a claw-back (or its
/// cancellation) with itself.
pub fn payments_answer(event: &PaymentsEvent) -> Option<Answer> {
    match event {
        PaymentsEvent::PaymentCompleted(_)
        | PaymentsEvent::PaymentCancelled(_)
        | PaymentsEvent::PaymentClawBackCancelled(_) => succeeded(None),
        PaymentsEvent::PaymentClawedBack(e) => succeeded(Some(&e.amount)),
        PaymentsEvent::PaymentFailed(e) => rejected("payment_failed", &e.reason),
        PaymentsEvent::CommandRejected(r) => rejected(&r.code, &r.reason),
        // A cancel of a payment cancelled before; a claw-back of a payout never made (nothing to
        // take back) or made before; a cancelled claw-back cancelled again.
        PaymentsEvent::CommandAlreadyApplied(a) if a.command_type != "RequestPayment" => {
            succeeded(None)
        }
        _ => None,
    }
}

pub fn tracking_answer(event: &TrackingEvent) -> Option<Answer> {
    match event {
        TrackingEvent::Confirmed(_)
        | TrackingEvent::Failed(_)
        | TrackingEvent::CommandAlreadyApplied(_) => succeeded(None),
        TrackingEvent::CommandRejected(r) => rejected(&r.code, &r.reason),
        _ => None,
    }
}

/// The saga a recorded tracking event starts: one per tracking event, whatever the deliveries.
pub fn trigger(event: &TrackingEvent) -> Option<(Uuid, SagaType, SagaData)> {
    let TrackingEvent::Recorded(r) = event else {
        return None;
    };
    let (kind, saga_type) = match r.kind {
        values::TrackingKind::Click => (TrackingKind::Click, SagaType::CommissionAssignment),
        values::TrackingKind::Lead => (TrackingKind::Lead, SagaType::CommissionAssignment),
        values::TrackingKind::Conversion => (TrackingKind::Conversion, SagaType::OrderToPayment),
        values::TrackingKind::Refund => (TrackingKind::Refund, SagaType::OrderRefund),
    };
    let data = SagaData {
        tracking_id: r.tracking_id,
        campaign_id: r.campaign_id,
        partner_id: r.partner_id,
        kind,
        order: r.order.as_ref().map(|o| Order {
            order_id: o.order_id.clone(),
            amount: o.amount.clone(),
        }),
        occurred_at: r.occurred_at,
        refund_of: r.refund_of,
    };
    Some((saga_id_for(r.tracking_id), saga_type, data))
}

pub use schemas::ids::saga_id_for;
