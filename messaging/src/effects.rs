//! What handling a command leaves behind, in the handler's transaction: the events appended to
//! their streams and queued in the outbox for the service's event topic, and the command's
//! outcome — or, when the command changed nothing, a reply, so that whoever waits on it (a saga,
//! a client) gets an answer either way.

use crate::consume::HandlerError;
use crate::properties::Properties;
use eventstore::{
    Append, ExpectedVersion, Metadata, NewEvent, Outcome, OutcomeRecord, RecordedEvent, outbox,
};
use schemas::Message;
use schemas::events::{CommandAlreadyApplied, CommandRejected};
use sqlx::PgConnection;
use uuid::Uuid;

/// Events for one stream, in the wire form of the service's event topic.
#[derive(Debug)]
pub struct StreamEvents<'a, E> {
    pub stream_id: &'a str,
    pub stream_type: &'a str,
    pub expected: ExpectedVersion,
    pub events: Vec<E>,
}

/// Properties for a message caused by `cause`: same flow, saga, tenant and actor; `cause` as
/// the causation; the current span's trace context.
pub fn caused_by<M: Message>(cause: &Properties, message_id: Uuid, message: &M) -> Properties {
    Properties {
        message_id,
        message_type: message.message_type().to_owned(),
        schema_version: M::TOPIC.version(),
        correlation_id: Some(cause.correlation_id.unwrap_or(cause.message_id)),
        causation_id: Some(cause.message_id),
        saga_id: cause.saga_id,
        tenant: cause.tenant.clone(),
        actor: cause.actor.clone(),
        traceparent: crate::current_traceparent().or_else(|| cause.traceparent.clone()),
    }
}

/// A message ready for the outbox (or a direct publish): its body encoded for its topic.
pub fn outgoing<M: Message>(
    message: &M,
    key: &str,
    properties: &Properties,
) -> Result<outbox::Message, schemas::Error> {
    Ok(outbox::Message {
        topic: M::TOPIC.name.to_owned(),
        key: key.to_owned(),
        payload: message.encode()?,
        properties: properties.to_map(),
    })
}

/// Properties for the first message of a flow (a client's command): its own correlation.
pub fn first_of_flow<M: Message>(
    message_id: Uuid,
    message: &M,
    tenant: Option<String>,
    actor: Option<String>,
) -> Properties {
    Properties {
        message_id,
        message_type: message.message_type().to_owned(),
        schema_version: M::TOPIC.version(),
        correlation_id: Some(message_id),
        causation_id: None,
        saga_id: None,
        tenant,
        actor,
        traceparent: crate::current_traceparent(),
    }
}

/// Appends each stream's events (each event's id is also its message id on the wire), queues
/// them for publishing keyed by `key`, and records that the command succeeded. A lost race is
/// [`HandlerError::Conflict`]: the runner retries, and the handler decides again on fresh state.
pub async fn commit_events<E: Message>(
    tx: &mut PgConnection,
    cause: &Properties,
    key: &str,
    streams: &[StreamEvents<'_, E>],
) -> Result<(), HandlerError> {
    let metadata = Metadata {
        message_id: Some(cause.message_id),
        correlation_id: Some(cause.correlation_id.unwrap_or(cause.message_id)),
        causation_id: cause.causation_id,
        saga_id: cause.saga_id,
        tenant: cause.tenant.clone(),
        actor: cause.actor.clone(),
        traceparent: crate::current_traceparent().or_else(|| cause.traceparent.clone()),
    };
    let mut messages = Vec::new();
    let mut appended = Vec::new();
    for stream in streams.iter().filter(|s| !s.events.is_empty()) {
        let mut new_events = Vec::with_capacity(stream.events.len());
        for event in &stream.events {
            let event_id = Uuid::now_v7();
            let payload = event.encode().map_err(|e| HandlerError::Permanent {
                code: "unencodable_event".into(),
                reason: crate::error_chain(&e),
            })?;
            messages.push(outbox::Message {
                topic: E::TOPIC.name.to_owned(),
                key: key.to_owned(),
                payload: payload.clone(),
                properties: caused_by(cause, event_id, event).to_map(),
            });
            new_events.push(NewEvent {
                event_id,
                event_type: event.message_type().to_owned(),
                schema_version: E::TOPIC.version() as i32,
                payload,
                metadata: metadata.clone(),
            });
        }
        appended.push((stream, new_events));
    }
    let appends: Vec<Append> = appended
        .iter()
        .map(|(stream, events)| Append {
            stream_id: stream.stream_id,
            stream_type: stream.stream_type,
            expected: stream.expected,
            events,
        })
        .collect();
    conclude(tx, cause, key, &appends, &messages, &Outcome::Succeeded).await
}

/// Records that the command was refused and publishes [`CommandRejected`] on the event topic;
/// `wrap` is the topic's variant for it (e.g. `TrackingEvent::CommandRejected`).
pub async fn commit_rejection<E: Message>(
    tx: &mut PgConnection,
    cause: &Properties,
    aggregate_id: &str,
    (code, reason): (&str, &str),
    wrap: fn(CommandRejected) -> E,
) -> Result<(), HandlerError> {
    tracing::info!(command_id = %cause.message_id, command_type = %cause.message_type, %code, %reason, "command rejected");
    let reply = wrap(CommandRejected {
        command_id: cause.message_id,
        command_type: cause.message_type.clone(),
        aggregate_id: aggregate_id.to_owned(),
        code: code.to_owned(),
        reason: reason.to_owned(),
    });
    let outcome = Outcome::Rejected {
        code: code.to_owned(),
        reason: reason.to_owned(),
    };
    reply_with(tx, cause, aggregate_id, reply, &outcome).await
}

/// Records that the command's effect was already in place and publishes
/// [`CommandAlreadyApplied`] on the event topic; `wrap` is the topic's variant for it.
pub async fn commit_already_applied<E: Message>(
    tx: &mut PgConnection,
    cause: &Properties,
    aggregate_id: &str,
    wrap: fn(CommandAlreadyApplied) -> E,
) -> Result<(), HandlerError> {
    let reply = wrap(CommandAlreadyApplied {
        command_id: cause.message_id,
        command_type: cause.message_type.clone(),
        aggregate_id: aggregate_id.to_owned(),
    });
    reply_with(tx, cause, aggregate_id, reply, &Outcome::AlreadyApplied).await
}

/// Queues `reply` to the command and records its outcome.
async fn reply_with<E: Message>(
    tx: &mut PgConnection,
    cause: &Properties,
    key: &str,
    reply: E,
    outcome: &Outcome,
) -> Result<(), HandlerError> {
    let payload = reply.encode().map_err(|e| HandlerError::Permanent {
        code: "unencodable_reply".into(),
        reason: crate::error_chain(&e),
    })?;
    let message = outbox::Message {
        topic: E::TOPIC.name.to_owned(),
        key: key.to_owned(),
        payload,
        properties: caused_by(cause, Uuid::now_v7(), &reply).to_map(),
    };
    conclude(tx, cause, key, &[], &[message], outcome).await
}

/// Writes what handling the command `cause` came to, in one round trip: the appends, the queued
/// messages and the command's outcome (see `eventstore::write`).
async fn conclude(
    tx: &mut PgConnection,
    cause: &Properties,
    aggregate_id: &str,
    appends: &[Append<'_>],
    messages: &[outbox::Message],
    outcome: &Outcome,
) -> Result<(), HandlerError> {
    let record = OutcomeRecord {
        command_id: cause.message_id,
        command_type: &cause.message_type,
        aggregate_id,
        actor: cause.actor.as_deref(),
        outcome,
    };
    eventstore::write(tx, appends, messages, Some(record)).await?;
    Ok(())
}

/// How a service answers a command that changed nothing: its event topic's variants for
/// [`CommandRejected`] and [`CommandAlreadyApplied`].
#[derive(Debug)]
pub struct Replies<E> {
    pub rejected: fn(CommandRejected) -> E,
    pub already_applied: fn(CommandAlreadyApplied) -> E,
}

impl<E> Clone for Replies<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for Replies<E> {}

/// What deciding a command came to: the events for each stream it was decided on, or why it
/// was refused (a stable code and its explanation).
pub type Decision<'a, E> = Result<Vec<StreamEvents<'a, E>>, (&'static str, String)>;

/// Ends a command the one way every service does, in the handler's transaction: a rejection; a
/// reply that it was already applied when no stream got an event; or the events appended at the
/// versions they were decided on, queued, and the command's outcome. `key` is the aggregate the
/// replies and events are keyed by.
pub async fn commit_decision<E: Message>(
    tx: &mut PgConnection,
    cause: &Properties,
    key: &str,
    decision: Decision<'_, E>,
    replies: Replies<E>,
) -> Result<(), HandlerError> {
    match decision {
        Err((code, reason)) => {
            commit_rejection(tx, cause, key, (code, &reason), replies.rejected).await
        }
        Ok(streams) if streams.iter().all(|s| s.events.is_empty()) => {
            commit_already_applied(tx, cause, key, replies.already_applied).await
        }
        Ok(streams) => commit_events(tx, cause, key, &streams).await,
    }
}

/// Brings `state`, folded from a stream's events up to `version`, up to the stream's end:
/// `decode` reads a stored event (`None`: not one this state folds), `apply` folds it. An event
/// that cannot be read is a transient failure: the code that can read it may be a deploy away.
pub async fn fold<S, T, D: std::fmt::Display>(
    tx: &mut PgConnection,
    stream_id: &str,
    (mut state, version): (S, i64),
    decode: fn(&RecordedEvent) -> Result<Option<T>, D>,
    mut apply: impl FnMut(&mut S, T),
) -> Result<(S, i64), HandlerError> {
    let events = eventstore::read_stream(tx, stream_id, version + 1, None).await?;
    for event in &events {
        let stored = decode(event).map_err(|e| {
            HandlerError::Transient(format!("stored event {} undecodable: {e}", event.event_id))
        })?;
        if let Some(stored) = stored {
            apply(&mut state, stored);
        }
    }
    Ok((state, events.last().map_or(version, |e| e.version)))
}

/// A stream's state folded from all its events (see [`fold`]), and the version an append
/// decided on it expects.
pub async fn load<S: Default, T, D: std::fmt::Display>(
    tx: &mut PgConnection,
    stream_id: &str,
    decode: fn(&RecordedEvent) -> Result<Option<T>, D>,
    apply: impl FnMut(&mut S, T),
) -> Result<(S, ExpectedVersion), HandlerError> {
    let (state, version) = fold(tx, stream_id, (S::default(), 0), decode, apply).await?;
    Ok((state, expected(version)))
}

/// What an append after a stream's `version` expects (0: no stream yet).
pub fn expected(version: i64) -> ExpectedVersion {
    match version {
        0 => ExpectedVersion::NoStream,
        version => ExpectedVersion::Exact(version),
    }
}
