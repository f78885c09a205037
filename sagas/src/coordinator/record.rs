//! What one input writes beside the saga's log: the flow its entries and commands belong to,
//! the commands for the outbox, the durable timers, the saga's row, and the metrics of its moves.

use super::{Cause, Row};
use crate::definition::{Entry, Saga, Sent, Status};
use crate::wire;
use eventstore::{Metadata, outbox};
use messaging::Properties;
use messaging::consume::HandlerError;
use sqlx::{Postgres, QueryBuilder};
use std::time::Duration;
use uuid::Uuid;

/// The flow a saga's entries and commands belong to: its identity from the saga's row once it
/// exists, from the trigger before; the input's cause and trace.
pub(super) struct Flow {
    saga_id: Uuid,
    correlation_id: Option<Uuid>,
    tenant: Option<String>,
    /// Who started the saga.
    actor: Option<String>,
    cause: Cause,
    traceparent: Option<String>,
}

impl Flow {
    pub(super) fn of(saga_id: Uuid, row: Option<Row>, cause: &Cause) -> Flow {
        let (correlation_id, tenant, actor) = match row {
            Some(row) => (row.correlation_id, row.tenant, row.actor),
            None => (
                cause.correlation_id,
                cause.tenant.clone(),
                cause.actor.clone(),
            ),
        };
        Flow {
            saga_id,
            correlation_id,
            tenant,
            actor,
            traceparent: messaging::current_traceparent().or_else(|| cause.traceparent.clone()),
            cause: cause.clone(),
        }
    }

    /// The log entries' metadata: the input's actor, or the saga's.
    pub(super) fn metadata(&self) -> Metadata {
        Metadata {
            message_id: self.cause.message_id,
            correlation_id: self.correlation_id,
            causation_id: self.cause.message_id,
            saga_id: Some(self.saga_id),
            tenant: self.tenant.clone(),
            actor: self.cause.actor.clone().or(self.actor.clone()),
            traceparent: self.traceparent.clone(),
        }
    }

    /// The commands `entries` send, for the outbox, and the timers they set: each command's
    /// timeout, and a refused compensation's backoff (keyed by the refused command and the next
    /// attempt, which the definition takes as the signal to send that attempt).
    pub(super) fn outgoing(
        &self,
        entries: &[Entry],
    ) -> Result<(Vec<outbox::Message>, Vec<Timer>), HandlerError> {
        let mut messages = Vec::new();
        let mut timers = Vec::new();
        for entry in entries {
            match entry {
                Entry::CompensationFailed {
                    command_id,
                    attempt,
                    retry_in: Some(retry_in),
                    ..
                } => timers.push(Timer::new(*command_id, attempt + 1, *retry_in)),
                Entry::StepCommandSent { sent, .. }
                | Entry::CompensationCommandSent { sent, .. } => {
                    messages.push(self.command(sent)?);
                    timers.push(Timer::new(sent.command_id, sent.attempt, sent.timeout));
                }
                _ => {}
            }
        }
        Ok((messages, timers))
    }

    fn command(&self, sent: &Sent) -> Result<outbox::Message, HandlerError> {
        let (topic, message_type, schema_version, payload) = wire::encode_command(&sent.command)
            .map_err(|e| HandlerError::Permanent {
                code: "unencodable_command".into(),
                reason: e.to_string(),
            })?;
        let properties = Properties {
            message_id: sent.command_id,
            message_type: message_type.to_owned(),
            schema_version,
            correlation_id: self.correlation_id,
            causation_id: self.cause.message_id,
            saga_id: Some(self.saga_id),
            tenant: self.tenant.clone(),
            actor: Some("sagas".to_owned()),
            traceparent: self.traceparent.clone(),
        };
        Ok(outbox::Message {
            topic: topic.to_owned(),
            key: self.saga_id.to_string(),
            payload,
            properties: properties.to_map(),
        })
    }
}

/// A durable timer: a command's id, the attempt it fires for, and when.
pub(super) struct Timer {
    command_id: Uuid,
    attempt: i32,
    seconds: f64,
}

impl Timer {
    fn new(command_id: Uuid, attempt: u32, after: Duration) -> Timer {
        Timer {
            command_id,
            attempt: i32::try_from(attempt).unwrap_or(i32::MAX),
            seconds: after.as_secs_f64(),
        }
    }
}

/// The commands `entries` record an answer to (or a counted failure of).
pub(super) fn answered(entries: &[Entry]) -> Vec<Uuid> {
    entries
        .iter()
        .filter_map(|entry| match entry {
            Entry::StepSucceeded { command_id, .. }
            | Entry::StepFailed { command_id, .. }
            | Entry::CompensationSucceeded { command_id, .. }
            | Entry::CompensationFailed { command_id, .. } => Some(*command_id),
            _ => None,
        })
        .collect()
}

/// Counts a saga's move to its status, and how long it took to end (or park).
pub(super) fn count_transition(saga: &Saga, age: Option<f64>) {
    let labels = crate::metrics::SagaLabels {
        saga_type: saga.definition.saga_type.name().to_owned(),
        status: saga.status.name().to_owned(),
    };
    crate::metrics::SAGAS
        .transitions
        .get_or_create(&labels)
        .inc();
    if matches!(
        saga.status,
        Status::Completed | Status::Compensated | Status::Parked
    ) && let Some(seconds) = age
    {
        crate::metrics::SAGAS
            .duration
            .get_or_create(&labels)
            .observe(seconds);
    }
}

/// A part of an input's write (see `eventstore::write_with`), with the values it binds.
pub(super) type StorePart = Box<dyn Fn(&mut QueryBuilder<Postgres>) + Send + Sync>;

/// What an input writes beside its log, as parts of the log's statement: the answered commands'
/// timers go, the new ones come, and the saga's row is written.
pub(super) fn store(
    saga: &Saga,
    flow: &Flow,
    answered: Vec<Uuid>,
    timers: &[Timer],
) -> Vec<StorePart> {
    let saga_id = saga.saga_id;
    let mut parts: Vec<StorePart> = Vec::new();
    if !answered.is_empty() {
        parts.push(Box::new(move |query| {
            query
                .push("delete from saga_timers where saga_id = ")
                .push_bind(saga_id)
                .push(" and command_id = any(")
                .push_bind(answered.clone())
                .push(")");
        }));
    }
    if !timers.is_empty() {
        let ids: Vec<Uuid> = timers.iter().map(|t| t.command_id).collect();
        let attempts: Vec<i32> = timers.iter().map(|t| t.attempt).collect();
        let seconds: Vec<f64> = timers.iter().map(|t| t.seconds).collect();
        parts.push(Box::new(move |query| {
            query
                .push("insert into saga_timers (saga_id, command_id, attempt, due_at) select ")
                .push_bind(saga_id)
                .push(", t.command_id, t.attempt, now() + make_interval(secs => t.seconds) from unnest(")
                .push_bind(ids.clone())
                .push("::uuid[], ")
                .push_bind(attempts.clone())
                .push("::int[], ")
                .push_bind(seconds.clone())
                .push("::float8[]) as t (command_id, attempt, seconds) on conflict do nothing");
        }));
    }
    // Every saga's log starts with its data: only a saga that never started has none.
    if let Some(data) = &saga.data {
        let row = (
            saga.definition.saga_type.name(),
            saga.status.name(),
            (data.tracking_id, data.campaign_id, data.partner_id),
            (flow.correlation_id, flow.tenant.clone(), flow.actor.clone()),
            saga.pending.as_ref().map(|p| p.step.name()),
            saga.reason.clone(),
            data.order.as_ref().map(|order| order.order_id.clone()),
            i32::try_from(saga.definition.version).unwrap_or(i32::MAX),
        );
        parts.push(Box::new(move |query| {
            let (saga_type, status, (tracking, campaign, partner), flow, step, reason, order, version) =
                row.clone();
            query.push(
                "insert into sagas (saga_id, saga_type, status, tracking_id, campaign_id, partner_id,
                                    correlation_id, tenant, actor, current_step, reason, order_id,
                                    definition_version, started_at, updated_at) values (",
            );
            query
                .separated(", ")
                .push_bind(saga_id)
                .push_bind(saga_type)
                .push_bind(status)
                .push_bind(tracking)
                .push_bind(campaign)
                .push_bind(partner)
                .push_bind(flow.0)
                .push_bind(flow.1)
                .push_bind(flow.2)
                .push_bind(step)
                .push_bind(reason)
                .push_bind(order)
                .push_bind(version)
                .push_unseparated(
                    ", now(), now()) on conflict (saga_id) do update
                        set status = excluded.status, current_step = excluded.current_step,
                            reason = excluded.reason, updated_at = now()",
                );
        }));
    }
    parts
}
