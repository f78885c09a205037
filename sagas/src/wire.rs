//! The only place the saga definitions meet bytes: saga-log entries stored as JSON (the log is
//! the coordinator's own, never on a topic), saga commands as the services' Avro commands, and the
//! services' events as answers to the commands that caused them.

use crate::definition::{
    Answer, Command, Entry, Money, OperatorAction, Order, SagaData, SagaType, Sent, Step,
    TrackingKind,
};
use schemas::Message;
use schemas::commands as wire;
use schemas::events::{CampaignsEvent, CommissionsEvent, PaymentsEvent, TrackingEvent};
use schemas::values;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

/// Why a stored entry could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("saga log entry is not valid JSON for its type: {0}")]
    Json(#[from] serde_json::Error),
    #[error("saga log entry names an unknown {what} {name:?}")]
    Unknown { what: &'static str, name: String },
}

// Serde mirrors of the definition types: the definitions stay free of serialization.

#[derive(Debug, Serialize, Deserialize)]
struct DataJson {
    tracking_id: Uuid,
    campaign_id: Uuid,
    partner_id: Uuid,
    kind: String,
    order_id: Option<String>,
    order_amount: Option<Money>,
    occurred_at: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
enum CommandJson {
    ReserveBudget {
        reservation_id: Uuid,
        campaign_id: Uuid,
        partner_id: Uuid,
        tracking_id: Uuid,
        kind: String,
        order_amount: Option<Money>,
        occurred_at: i64,
    },
    ReleaseBudget {
        reservation_id: Uuid,
        campaign_id: Uuid,
        reason: String,
    },
    AssignCommission {
        commission_id: Uuid,
        campaign_id: Uuid,
        partner_id: Uuid,
        tracking_id: Uuid,
        amount: Money,
    },
    ReverseCommission {
        commission_id: Uuid,
        reason: String,
    },
    RequestPayment {
        payment_id: Uuid,
        commission_id: Uuid,
        partner_id: Uuid,
        campaign_id: Uuid,
        amount: Money,
    },
    ConfirmTracking {
        tracking_id: Uuid,
    },
    FailTracking {
        tracking_id: Uuid,
        reason: String,
    },
    CancelPayment {
        payment_id: Uuid,
        reason: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct SentJson {
    step: String,
    attempt: u32,
    command_id: Uuid,
    timeout_ms: u64,
    #[serde(flatten)]
    command: CommandJson,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
enum EntryJson {
    Started {
        saga_id: Uuid,
        saga_type: String,
        data: DataJson,
        at: i64,
    },
    StepCommandSent {
        sent: SentJson,
        at: i64,
    },
    StepSucceeded {
        step: String,
        command_id: Uuid,
        message_id: Uuid,
        amount: Option<Money>,
        at: i64,
    },
    StepFailed {
        step: String,
        command_id: Uuid,
        message_id: Uuid,
        code: String,
        reason: String,
        at: i64,
    },
    StepTimedOut {
        step: String,
        command_id: Uuid,
        attempt: u32,
        at: i64,
    },
    CompensationStarted {
        reason: String,
        at: i64,
    },
    CompensationCommandSent {
        sent: SentJson,
        at: i64,
    },
    CompensationSucceeded {
        step: String,
        command_id: Uuid,
        message_id: Uuid,
        at: i64,
    },
    CompensationFailed {
        step: String,
        command_id: Uuid,
        attempt: u32,
        message_id: Option<Uuid>,
        reason: String,
        /// Absent on entries written before refused compensations waited to be retried.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_in_ms: Option<u64>,
        at: i64,
    },
    CompensationRetryDue {
        step: String,
        command_id: Uuid,
        attempt: u32,
        at: i64,
    },
    Parked {
        reason: String,
        at: i64,
    },
    OperatorActed {
        action: String,
        actor: String,
        /// Absent on entries written before operators gave reasons.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        at: i64,
    },
    Completed {
        at: i64,
    },
    Compensated {
        at: i64,
    },
}

fn kind_name(kind: TrackingKind) -> &'static str {
    match kind {
        TrackingKind::Click => "click",
        TrackingKind::Lead => "lead",
        TrackingKind::Conversion => "conversion",
    }
}

fn kind(name: &str) -> Result<TrackingKind, Error> {
    match name {
        "click" => Ok(TrackingKind::Click),
        "lead" => Ok(TrackingKind::Lead),
        "conversion" => Ok(TrackingKind::Conversion),
        other => Err(Error::Unknown {
            what: "tracking kind",
            name: other.to_owned(),
        }),
    }
}

fn step(name: &str) -> Result<Step, Error> {
    Step::from_name(name).ok_or_else(|| Error::Unknown {
        what: "step",
        name: name.to_owned(),
    })
}

fn command_json(command: &Command) -> CommandJson {
    match command.clone() {
        Command::ReserveBudget {
            reservation_id,
            campaign_id,
            partner_id,
            tracking_id,
            kind,
            order_amount,
            occurred_at,
        } => CommandJson::ReserveBudget {
            reservation_id,
            campaign_id,
            partner_id,
            tracking_id,
            kind: kind_name(kind).to_owned(),
            order_amount: order_amount.as_ref().cloned(),
            occurred_at,
        },
        Command::ReleaseBudget {
            reservation_id,
            campaign_id,
            reason,
        } => CommandJson::ReleaseBudget {
            reservation_id,
            campaign_id,
            reason,
        },
        Command::AssignCommission {
            commission_id,
            campaign_id,
            partner_id,
            tracking_id,
            amount,
        } => CommandJson::AssignCommission {
            commission_id,
            campaign_id,
            partner_id,
            tracking_id,
            amount: amount.clone(),
        },
        Command::ReverseCommission {
            commission_id,
            reason,
        } => CommandJson::ReverseCommission {
            commission_id,
            reason,
        },
        Command::RequestPayment {
            payment_id,
            commission_id,
            partner_id,
            campaign_id,
            amount,
        } => CommandJson::RequestPayment {
            payment_id,
            commission_id,
            partner_id,
            campaign_id,
            amount: amount.clone(),
        },
        Command::ConfirmTracking { tracking_id } => CommandJson::ConfirmTracking { tracking_id },
        Command::FailTracking {
            tracking_id,
            reason,
        } => CommandJson::FailTracking {
            tracking_id,
            reason,
        },
        Command::CancelPayment { payment_id, reason } => {
            CommandJson::CancelPayment { payment_id, reason }
        }
    }
}

fn command(json: CommandJson) -> Result<Command, Error> {
    Ok(match json {
        CommandJson::ReserveBudget {
            reservation_id,
            campaign_id,
            partner_id,
            tracking_id,
            kind: k,
            order_amount,
            occurred_at,
        } => Command::ReserveBudget {
            reservation_id,
            campaign_id,
            partner_id,
            tracking_id,
            kind: kind(&k)?,
            order_amount,
            occurred_at,
        },
        CommandJson::ReleaseBudget {
            reservation_id,
            campaign_id,
            reason,
        } => Command::ReleaseBudget {
            reservation_id,
            campaign_id,
            reason,
        },
        CommandJson::AssignCommission {
            commission_id,
            campaign_id,
            partner_id,
            tracking_id,
            amount,
        } => Command::AssignCommission {
            commission_id,
            campaign_id,
            partner_id,
            tracking_id,
            amount,
        },
        CommandJson::ReverseCommission {
            commission_id,
            reason,
        } => Command::ReverseCommission {
            commission_id,
            reason,
        },
        CommandJson::RequestPayment {
            payment_id,
            commission_id,
            partner_id,
            campaign_id,
            amount,
        } => Command::RequestPayment {
            payment_id,
            commission_id,
            partner_id,
            campaign_id,
            amount,
        },
        CommandJson::ConfirmTracking { tracking_id } => Command::ConfirmTracking { tracking_id },
        CommandJson::FailTracking {
            tracking_id,
            reason,
        } => Command::FailTracking {
            tracking_id,
            reason,
        },
        CommandJson::CancelPayment { payment_id, reason } => {
            Command::CancelPayment { payment_id, reason }
        }
    })
}

fn sent_json(sent: &Sent) -> SentJson {
    SentJson {
        step: sent.step.name().to_owned(),
        attempt: sent.attempt,
        command_id: sent.command_id,
        timeout_ms: u64::try_from(sent.timeout.as_millis()).unwrap_or(u64::MAX),
        command: command_json(&sent.command),
    }
}

fn sent(json: SentJson) -> Result<Sent, Error> {
    Ok(Sent {
        step: step(&json.step)?,
        attempt: json.attempt,
        command_id: json.command_id,
        command: command(json.command)?,
        timeout: Duration::from_millis(json.timeout_ms),
    })
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

/// The entry as stored: JSON, schema version 1.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    let json = match entry.clone() {
        Entry::Started {
            saga_id,
            saga_type,
            data,
            at,
        } => EntryJson::Started {
            saga_id,
            saga_type: saga_type.name().to_owned(),
            data: DataJson {
                tracking_id: data.tracking_id,
                campaign_id: data.campaign_id,
                partner_id: data.partner_id,
                kind: kind_name(data.kind).to_owned(),
                order_id: data.order.as_ref().map(|o| o.order_id.clone()),
                order_amount: data.order.as_ref().map(|o| o.amount.clone()),
                occurred_at: data.occurred_at,
            },
            at,
        },
        Entry::StepCommandSent { sent, at } => EntryJson::StepCommandSent {
            sent: sent_json(&sent),
            at,
        },
        Entry::StepSucceeded {
            step,
            command_id,
            message_id,
            amount,
            at,
        } => EntryJson::StepSucceeded {
            step: step.name().to_owned(),
            command_id,
            message_id,
            amount: amount.as_ref().cloned(),
            at,
        },
        Entry::StepFailed {
            step,
            command_id,
            message_id,
            code,
            reason,
            at,
        } => EntryJson::StepFailed {
            step: step.name().to_owned(),
            command_id,
            message_id,
            code,
            reason,
            at,
        },
        Entry::StepTimedOut {
            step,
            command_id,
            attempt,
            at,
        } => EntryJson::StepTimedOut {
            step: step.name().to_owned(),
            command_id,
            attempt,
            at,
        },
        Entry::CompensationStarted { reason, at } => EntryJson::CompensationStarted { reason, at },
        Entry::CompensationCommandSent { sent, at } => EntryJson::CompensationCommandSent {
            sent: sent_json(&sent),
            at,
        },
        Entry::CompensationSucceeded {
            step,
            command_id,
            message_id,
            at,
        } => EntryJson::CompensationSucceeded {
            step: step.name().to_owned(),
            command_id,
            message_id,
            at,
        },
        Entry::CompensationFailed {
            step,
            command_id,
            attempt,
            message_id,
            reason,
            retry_in,
            at,
        } => EntryJson::CompensationFailed {
            step: step.name().to_owned(),
            command_id,
            attempt,
            message_id,
            reason,
            retry_in_ms: retry_in.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            at,
        },
        Entry::CompensationRetryDue {
            step,
            command_id,
            attempt,
            at,
        } => EntryJson::CompensationRetryDue {
            step: step.name().to_owned(),
            command_id,
            attempt,
            at,
        },
        Entry::Parked { reason, at } => EntryJson::Parked { reason, at },
        Entry::OperatorActed {
            action,
            actor,
            reason,
            at,
        } => EntryJson::OperatorActed {
            action: action.name().to_owned(),
            actor,
            reason,
            at,
        },
        Entry::Completed { at } => EntryJson::Completed { at },
        Entry::Compensated { at } => EntryJson::Compensated { at },
    };
    serde_json::to_vec(&json).unwrap_or_default()
}

pub fn decode_entry(bytes: &[u8]) -> Result<Entry, Error> {
    Ok(match serde_json::from_slice::<EntryJson>(bytes)? {
        EntryJson::Started {
            saga_id,
            saga_type,
            data,
            at,
        } => Entry::Started {
            saga_id,
            saga_type: SagaType::from_name(&saga_type).ok_or(Error::Unknown {
                what: "saga type",
                name: saga_type,
            })?,
            data: SagaData {
                tracking_id: data.tracking_id,
                campaign_id: data.campaign_id,
                partner_id: data.partner_id,
                kind: kind(&data.kind)?,
                order: match (data.order_id, data.order_amount) {
                    (Some(order_id), Some(amount)) => Some(Order { order_id, amount }),
                    _ => None,
                },
                occurred_at: data.occurred_at,
            },
            at,
        },
        EntryJson::StepCommandSent { sent: s, at } => Entry::StepCommandSent { sent: sent(s)?, at },
        EntryJson::StepSucceeded {
            step: s,
            command_id,
            message_id,
            amount,
            at,
        } => Entry::StepSucceeded {
            step: step(&s)?,
            command_id,
            message_id,
            amount,
            at,
        },
        EntryJson::StepFailed {
            step: s,
            command_id,
            message_id,
            code,
            reason,
            at,
        } => Entry::StepFailed {
            step: step(&s)?,
            command_id,
            message_id,
            code,
            reason,
            at,
        },
        EntryJson::StepTimedOut {
            step: s,
            command_id,
            attempt,
            at,
        } => Entry::StepTimedOut {
            step: step(&s)?,
            command_id,
            attempt,
            at,
        },
        EntryJson::CompensationStarted { reason, at } => Entry::CompensationStarted { reason, at },
        EntryJson::CompensationCommandSent { sent: s, at } => {
            Entry::CompensationCommandSent { sent: sent(s)?, at }
        }
        EntryJson::CompensationSucceeded {
            step: s,
            command_id,
            message_id,
            at,
        } => Entry::CompensationSucceeded {
            step: step(&s)?,
            command_id,
            message_id,
            at,
        },
        EntryJson::CompensationFailed {
            step: s,
            command_id,
            attempt,
            message_id,
            reason,
            retry_in_ms,
            at,
        } => Entry::CompensationFailed {
            step: step(&s)?,
            command_id,
            attempt,
            message_id,
            reason,
            retry_in: retry_in_ms.map(Duration::from_millis),
            at,
        },
        EntryJson::CompensationRetryDue {
            step: s,
            command_id,
            attempt,
            at,
        } => Entry::CompensationRetryDue {
            step: step(&s)?,
            command_id,
            attempt,
            at,
        },
        EntryJson::Parked { reason, at } => Entry::Parked { reason, at },
        EntryJson::OperatorActed {
            action,
            actor,
            reason,
            at,
        } => Entry::OperatorActed {
            action: OperatorAction::from_name(&action).ok_or(Error::Unknown {
                what: "operator action",
                name: action,
            })?,
            actor,
            reason,
            at,
        },
        EntryJson::Completed { at } => Entry::Completed { at },
        EntryJson::Compensated { at } => Entry::Compensated { at },
    })
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
    }
}

/// A saga command as its topic's body: (topic, message type, encoded body).
pub fn encode_command(
    command: &Command,
) -> Result<(&'static str, &'static str, u32, Vec<u8>), schemas::Error> {
    fn encoded<M: Message>(
        m: M,
    ) -> Result<(&'static str, &'static str, u32, Vec<u8>), schemas::Error> {
        Ok((
            M::TOPIC.name,
            m.message_type(),
            M::TOPIC.version(),
            m.encode()?,
        ))
    }
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
        Command::ReleaseBudget {
            reservation_id,
            campaign_id,
            reason,
        } => encoded(wire::ReleaseBudget {
            reservation_id,
            campaign_id,
            reason,
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
        Command::ReverseCommission {
            commission_id,
            reason,
        } => encoded(wire::ReverseCommission {
            commission_id,
            reason,
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
        | CommissionsEvent::CommissionVoided(_)
        | CommissionsEvent::CommandAlreadyApplied(_) => succeeded(None),
        CommissionsEvent::CommandRejected(r) => rejected(&r.code, &r.reason),
    }
}

/// Payments answers a request only with the payout's outcome (a request being recorded is not
/// one), and a cancel with the cancellation or where the payment stands.
pub fn payments_answer(event: &PaymentsEvent) -> Option<Answer> {
    match event {
        PaymentsEvent::PaymentCompleted(_) | PaymentsEvent::PaymentCancelled(_) => succeeded(None),
        PaymentsEvent::PaymentFailed(e) => rejected("payment_failed", &e.reason),
        PaymentsEvent::CommandRejected(r) => rejected(&r.code, &r.reason),
        // A cancel of a payment cancelled before.
        PaymentsEvent::CommandAlreadyApplied(a) if a.command_type == "CancelPayment" => {
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
    let kind = match r.kind {
        values::TrackingKind::Click => TrackingKind::Click,
        values::TrackingKind::Lead => TrackingKind::Lead,
        values::TrackingKind::Conversion => TrackingKind::Conversion,
    };
    let saga_type = if kind == TrackingKind::Conversion {
        SagaType::OrderToPayment
    } else {
        SagaType::CommissionAssignment
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
    };
    Some((saga_id_for(r.tracking_id), saga_type, data))
}

pub use schemas::ids::saga_id_for;
