//! Streams: appending events with an expected version (idempotent by event id) and reading one
//! stream back, whole, by version range, or as it stood at a point in time.

use crate::Error;
use serde::Serialize;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use std::fmt;
use time::OffsetDateTime;
use uuid::Uuid;

/// What the writer believes the stream's version to be. Versions start at 1 for the first event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the version is (for streams with a single writer by construction).
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event has this version.
    Exact(i64),
}

impl ExpectedVersion {
    fn as_sql(self) -> Option<i64> {
        match self {
            ExpectedVersion::Any => None,
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::Exact(version) => Some(version),
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => f.write_str("no stream"),
            ExpectedVersion::Exact(version) => write!(f, "version {version}"),
        }
    }
}

/// Where an event came from (SPEC §3): the message whose handling recorded it, the flow it
/// belongs to, what caused that message, and who asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Metadata {
    /// The message (usually a command) whose handling recorded this event.
    pub message_id: Option<Uuid>,
    /// One id per business flow, carried by every message and event of the flow.
    pub correlation_id: Option<Uuid>,
    /// The message that caused `message_id`.
    pub causation_id: Option<Uuid>,
    pub saga_id: Option<Uuid>,
    pub tenant: Option<String>,
    pub actor: Option<String>,
    /// W3C trace context of the span that recorded the event.
    pub traceparent: Option<String>,
}

/// An event to append. The payload is opaque here: the service's `wire.rs` owns its encoding and
/// tags it with `event_type` and `schema_version` so that it can be upcast when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Vec<u8>,
    pub metadata: Metadata,
}

/// An event as stored; serialized without its payload, whose encoding only the service's
/// `wire.rs` knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordedEvent {
    /// Unique and increasing in insertion order; the global log orders by commit safety, not by
    /// this number alone (see [`crate::read_all`]).
    pub position: i64,
    pub stream_id: String,
    pub stream_type: String,
    pub version: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    #[serde(skip)]
    pub payload: Vec<u8>,
    pub metadata: Metadata,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// The events were written; the stream is now at `version`.
    Written { version: i64, first_position: i64 },
    /// These exact events had been appended before; nothing was written.
    AlreadyWritten { version: i64 },
}

impl Appended {
    pub fn version(self) -> i64 {
        match self {
            Appended::Written { version, .. } | Appended::AlreadyWritten { version } => version,
        }
    }
}

/// Appends `events` to a stream if it is at `expected`, in one round trip.
///
/// A writer that lost a race gets [`Error::Conflict`] with the stream's actual version and
/// nothing is written. Appending the same events again (same ids, same content) is a no-op that
/// returns [`Appended::AlreadyWritten`], whatever `expected` says; reusing an id for different
/// content is [`Error::IdempotencyMismatch`], and, being a client's mistake rather than a race,
/// it aborts the transaction it happens in. Run it inside the caller's transaction to commit the
/// events together with the caller's other effects (outbox, inbox).
pub async fn append(
    conn: &mut PgConnection,
    stream_id: &str,
    stream_type: &str,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<Appended, Error> {
    if events.is_empty() {
        return Err(Error::EmptyAppend);
    }
    let mut query = QueryBuilder::new("select outcome, version, first_position from ");
    push_append(&mut query, stream_id, stream_type, expected, events);
    let row = query
        .build_query_as()
        .fetch_one(conn)
        .await
        .map_err(|error| id_reused(error, events))?;
    appended(row, stream_id, expected)
}

/// What `eventstore_append` returns: the outcome, the stream's version and the position of the
/// first event written.
pub(crate) type AppendRow = (String, i64, Option<i64>);

/// `eventstore_append(…)` for `events`, its arguments bound.
pub(crate) fn push_append(
    query: &mut QueryBuilder<Postgres>,
    stream_id: &str,
    stream_type: &str,
    expected: ExpectedVersion,
    events: &[NewEvent],
) {
    let column = |f: fn(&NewEvent) -> Option<&str>| -> Vec<Option<String>> {
        events.iter().map(|e| f(e).map(str::to_owned)).collect()
    };
    let ids = |f: fn(&Metadata) -> Option<Uuid>| -> Vec<Option<Uuid>> {
        events.iter().map(|e| f(&e.metadata)).collect()
    };
    query.push("eventstore_append(");
    let mut arguments = query.separated(", ");
    arguments
        .push_bind(stream_id)
        .push_bind(stream_type)
        .push_bind(expected.as_sql())
        .push_bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
        .push_bind(
            events
                .iter()
                .map(|e| e.event_type.clone())
                .collect::<Vec<_>>(),
        )
        .push_bind(events.iter().map(|e| e.schema_version).collect::<Vec<_>>())
        .push_bind(events.iter().map(|e| e.payload.clone()).collect::<Vec<_>>())
        .push_bind(ids(|m| m.message_id))
        .push_bind(ids(|m| m.correlation_id))
        .push_bind(ids(|m| m.causation_id))
        .push_bind(ids(|m| m.saga_id))
        .push_bind(column(|e| e.metadata.tenant.as_deref()))
        .push_bind(column(|e| e.metadata.actor.as_deref()))
        .push_bind(column(|e| e.metadata.traceparent.as_deref()))
        .push_unseparated(")");
}

/// An append's result from the row `eventstore_append` returned.
pub(crate) fn appended(
    (outcome, version, first_position): AppendRow,
    stream_id: &str,
    expected: ExpectedVersion,
) -> Result<Appended, Error> {
    match (outcome.as_str(), first_position) {
        ("appended", Some(first_position)) => Ok(Appended::Written {
            version,
            first_position,
        }),
        ("duplicate", _) => Ok(Appended::AlreadyWritten { version }),
        ("conflict", _) => Err(Error::Conflict {
            stream_id: stream_id.to_owned(),
            expected,
            actual: version,
        }),
        _ => Err(Error::Database(sqlx::Error::Protocol(format!(
            "eventstore_append returned an unknown outcome {outcome:?}"
        )))),
    }
}

/// Turns the function's PS001 error into [`Error::IdempotencyMismatch`].
pub(crate) fn id_reused(error: sqlx::Error, events: &[NewEvent]) -> Error {
    let Some(database) = error.as_database_error() else {
        return Error::Database(error);
    };
    if database.code().as_deref() != Some("PS001") {
        return Error::Database(error);
    }
    let detail = database
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .and_then(|e| e.detail())
        .and_then(|d| d.parse().ok());
    match detail.or_else(|| events.first().map(|e| e.event_id)) {
        Some(event_id) => Error::IdempotencyMismatch { event_id },
        None => Error::Database(error),
    }
}

/// `select <every event column> from events <rest>` (or from `$table`), as a static string.
macro_rules! select_events {
    ($rest:literal $(,)?) => {
        select_events!(from "events", $rest)
    };
    (from $table:literal, $($rest:tt)+) => {
        concat!(
            "select position, stream_id, stream_type, version, event_id, event_type, ",
            "schema_version, payload, message_id, correlation_id, causation_id, saga_id, tenant, ",
            "actor, traceparent, recorded_at from ",
            $table,
            " ",
            $($rest)+
        )
    };
}
pub(crate) use select_events;

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    position: i64,
    stream_id: String,
    stream_type: String,
    version: i64,
    event_id: Uuid,
    event_type: String,
    schema_version: i32,
    payload: Vec<u8>,
    message_id: Option<Uuid>,
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    saga_id: Option<Uuid>,
    tenant: Option<String>,
    actor: Option<String>,
    traceparent: Option<String>,
    recorded_at: OffsetDateTime,
}

impl From<EventRow> for RecordedEvent {
    fn from(row: EventRow) -> Self {
        RecordedEvent {
            position: row.position,
            stream_id: row.stream_id,
            stream_type: row.stream_type,
            version: row.version,
            event_id: row.event_id,
            event_type: row.event_type,
            schema_version: row.schema_version,
            payload: row.payload,
            metadata: Metadata {
                message_id: row.message_id,
                correlation_id: row.correlation_id,
                causation_id: row.causation_id,
                saga_id: row.saga_id,
                tenant: row.tenant,
                actor: row.actor,
                traceparent: row.traceparent,
            },
            recorded_at: row.recorded_at,
        }
    }
}

/// The events of one stream with `from_version <= version <= to_version` (`None`: to the end),
/// in version order. An unknown stream reads as empty.
pub async fn read_stream(
    conn: &mut PgConnection,
    stream_id: &str,
    from_version: i64,
    to_version: Option<i64>,
) -> Result<Vec<RecordedEvent>, Error> {
    read_range(
        conn,
        select_events!(from "events", stream_range!()),
        stream_id,
        (from_version, to_version),
    )
    .await
}

/// The condition and order of a stream's version range, `$1` the stream, `$2`..`$3` the range.
macro_rules! stream_range {
    () => {
        "where stream_id = $1 and version >= $2 and ($3::bigint is null or version <= $3)
         order by version"
    };
}
pub(crate) use stream_range;

/// A stream's version range, read with `sql` (a `select_events!` of a table and [`stream_range`]).
pub(crate) async fn read_range(
    conn: &mut PgConnection,
    sql: &'static str,
    stream_id: &str,
    (from_version, to_version): (i64, Option<i64>),
) -> Result<Vec<RecordedEvent>, Error> {
    let rows: Vec<EventRow> = sqlx::query_as(sql)
        .bind(stream_id)
        .bind(from_version)
        .bind(to_version)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(RecordedEvent::from).collect())
}

/// The events of one stream recorded at or before `at`: the history from which the stream's
/// state at that moment is rebuilt.
pub async fn read_stream_as_of(
    conn: &mut PgConnection,
    stream_id: &str,
    at: OffsetDateTime,
) -> Result<Vec<RecordedEvent>, Error> {
    let rows: Vec<EventRow> = sqlx::query_as(select_events!(
        "where stream_id = $1 and recorded_at <= $2 order by version",
    ))
    .bind(stream_id)
    .bind(at)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(RecordedEvent::from).collect())
}

/// The events of one business flow (one correlation id), at most `limit`, in the order they were
/// recorded. `recorded_at` is read inside the event's transaction, which begins only after its
/// cause committed, so on one database server this order is causal.
pub async fn read_correlation(
    conn: &mut PgConnection,
    correlation_id: Uuid,
    limit: i64,
) -> Result<Vec<RecordedEvent>, Error> {
    let rows: Vec<EventRow> = sqlx::query_as(select_events!(
        "where correlation_id = $1 order by recorded_at, position limit $2",
    ))
    .bind(correlation_id)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(RecordedEvent::from).collect())
}
