//! Command outcomes: what became of each command a service handled. A client polling a command
//! and a saga waiting on one read the same record.

use crate::Error;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use time::OffsetDateTime;
use uuid::Uuid;

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It changed state: its events are in the store.
    Succeeded,
    /// Its effect was already in place (a retry); nothing changed.
    AlreadyApplied,
    /// A rule refused it; nothing changed.
    Rejected { code: String, reason: String },
}

/// The recorded outcome of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    pub command_id: Uuid,
    pub command_type: String,
    pub aggregate_id: String,
    /// Who sent the command (the message's `actor`), if it said.
    pub actor: Option<String>,
    pub outcome: Outcome,
    pub recorded_at: OffsetDateTime,
}

/// A command's outcome, as [`record_outcome`] records it.
#[derive(Debug, Clone, Copy)]
pub struct OutcomeRecord<'a> {
    pub command_id: Uuid,
    pub command_type: &'a str,
    pub aggregate_id: &'a str,
    /// Who sent the command (the message's `actor`), if it said.
    pub actor: Option<&'a str>,
    pub outcome: &'a Outcome,
}

/// Records a command's outcome in the caller's transaction. The first outcome recorded for a
/// command id stands; recording again is a no-op (the inbox normally prevents it).
pub async fn record_outcome(
    conn: &mut PgConnection,
    record: OutcomeRecord<'_>,
) -> Result<(), Error> {
    let mut query = QueryBuilder::new("");
    push_outcome(&mut query, record);
    query.build().execute(conn).await?;
    Ok(())
}

/// The insert of `record` into `command_outcomes`, its arguments bound.
pub(crate) fn push_outcome(query: &mut QueryBuilder<Postgres>, record: OutcomeRecord<'_>) {
    let (kind, code, reason) = match record.outcome {
        Outcome::Succeeded => ("succeeded", None, None),
        Outcome::AlreadyApplied => ("already_applied", None, None),
        Outcome::Rejected { code, reason } => {
            ("rejected", Some(code.as_str()), Some(reason.as_str()))
        }
    };
    query.push(
        "insert into command_outcomes (command_id, command_type, aggregate_id, actor, outcome, code, reason)
         values (",
    );
    query
        .separated(", ")
        .push_bind(record.command_id)
        .push_bind(record.command_type)
        .push_bind(record.aggregate_id)
        .push_bind(record.actor)
        .push_bind(kind)
        .push_bind(code)
        .push_bind(reason)
        .push_unseparated(") on conflict (command_id) do nothing");
}

#[derive(sqlx::FromRow)]
struct OutcomeRow {
    command_type: String,
    aggregate_id: String,
    actor: Option<String>,
    outcome: String,
    code: Option<String>,
    reason: Option<String>,
    recorded_at: OffsetDateTime,
}

/// The outcome of a command, if it has been handled.
pub async fn load_outcome(
    conn: &mut PgConnection,
    command_id: Uuid,
) -> Result<Option<CommandOutcome>, Error> {
    let row: Option<OutcomeRow> = sqlx::query_as(
        "select command_type, aggregate_id, actor, outcome, code, reason, recorded_at
           from command_outcomes where command_id = $1",
    )
    .bind(command_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| CommandOutcome {
        command_id,
        command_type: row.command_type,
        aggregate_id: row.aggregate_id,
        actor: row.actor,
        outcome: match row.outcome.as_str() {
            "succeeded" => Outcome::Succeeded,
            "already_applied" => Outcome::AlreadyApplied,
            _ => Outcome::Rejected {
                code: row.code.unwrap_or_default(),
                reason: row.reason.unwrap_or_default(),
            },
        },
        recorded_at: row.recorded_at,
    }))
}
