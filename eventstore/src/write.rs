//! A handling's writes in one round trip: the events it appends to each stream, the messages it
//! queues and its command's outcome go to the server as one statement instead of one each. Each
//! part is the very statement that writes it alone (`append`, `outbox::enqueue`,
//! `record_outcome`), as a part of a `with`; a caller may add statements of its own ([`Part`]).

use crate::Error;
use crate::outbox::{self, Message};
use crate::outcome::{OutcomeRecord, push_outcome};
use crate::stream::{Appended, ExpectedVersion, NewEvent, appended, id_reused, push_append};
use sqlx::{PgConnection, Postgres, QueryBuilder};

/// Events to append to one stream, if it is at `expected`.
#[derive(Debug, Clone, Copy)]
pub struct Append<'a> {
    pub stream_id: &'a str,
    pub stream_type: &'a str,
    pub expected: ExpectedVersion,
    pub events: &'a [NewEvent],
}

/// A caller's own data-modifying statement (on its own tables), written by [`write_with`] as a
/// part of its `with`: pushed with its values bound. Like every part of one statement, it sees
/// the tables as they were before the statement, not what the other parts write.
pub type Part<'p> = &'p (dyn Fn(&mut QueryBuilder<Postgres>) + Sync);

/// Appends to every stream in `appends`, queues `messages` and records `outcome`, in the caller's
/// transaction and one round trip; returns what each append did, in order. Each part behaves as
/// it does alone, except that a conflict on one stream ([`Error::Conflict`]) leaves the other
/// parts written: the caller rolls back, as it would after a conflict anyway. In
/// [`outbox::handing_to`], the messages are written for the process's relay.
pub async fn write(
    conn: &mut PgConnection,
    appends: &[Append<'_>],
    messages: &[Message],
    outcome: Option<OutcomeRecord<'_>>,
) -> Result<Vec<Appended>, Error> {
    write_with(conn, appends, messages, outcome, &[]).await
}

/// [`write`], and the caller's `parts` in the same statement.
pub async fn write_with(
    conn: &mut PgConnection,
    appends: &[Append<'_>],
    messages: &[Message],
    outcome: Option<OutcomeRecord<'_>>,
    parts: &[Part<'_>],
) -> Result<Vec<Appended>, Error> {
    if appends.iter().any(|a| a.events.is_empty()) {
        return Err(Error::EmptyAppend);
    }
    if appends.is_empty() && messages.is_empty() && outcome.is_none() && parts.is_empty() {
        return Ok(Vec::new());
    }
    let mut query = QueryBuilder::new("with ");
    let mut selects = Vec::new();
    let mut separator = "";
    for (i, append) in appends.iter().enumerate() {
        query.push(format_args!(
            "{separator}appended_{i} as materialized (select {i} as part, outcome, version, first_position from "
        ));
        push_append(
            &mut query,
            append.stream_id,
            append.stream_type,
            append.expected,
            append.events,
        );
        query.push(")");
        separator = ", ";
        selects.push(format!("select *, null::bool as leased from appended_{i}"));
    }
    let lease = outbox::lease().filter(|_| !messages.is_empty());
    if !messages.is_empty() {
        query.push(format_args!("{separator}queued as ("));
        outbox::push_enqueue(&mut query, messages, lease.as_ref());
        query.push(")");
        separator = ", ";
    }
    if let Some(outcome) = outcome {
        query.push(format_args!("{separator}recorded as ("));
        push_outcome(&mut query, outcome);
        query.push(")");
        separator = ", ";
    }
    for (i, part) in parts.iter().enumerate() {
        query.push(format_args!("{separator}part_{i} as ("));
        part(&mut query);
        query.push(")");
        separator = ", ";
    }
    // A data-modifying part runs to completion whether or not the final select reads it. The
    // rows queued for a relay come after the appends' (part null), in id order.
    if lease.is_some() {
        selects.push(
            "select null::int as part, null::text as outcome, id as version, \
             after as first_position, leased from queued"
                .into(),
        );
    }
    query.push(" select outcome, version, first_position, leased from (");
    if selects.is_empty() {
        selects.push(
            "select null::int as part, null::text as outcome, null::bigint as version, \
             null::bigint as first_position, null::bool as leased where false"
                .into(),
        );
    }
    query.push(selects.join(" union all "));
    query.push(") appended order by part, version");
    let rows: Vec<WriteRow> = query
        .build_query_as()
        .fetch_all(conn)
        .await
        .map_err(|error| id_reused(error, appends.first().map_or(&[], |a| a.events)))?;
    let (queued, rows): (Vec<WriteRow>, Vec<WriteRow>) =
        rows.into_iter().partition(|row| row.3.is_some());
    if lease.is_some() {
        let written: Vec<outbox::Written> = queued
            .iter()
            .filter_map(|(_, id, after, leased)| Some((*id, (*leased)?, *after)))
            .collect();
        outbox::written(messages, &written);
    }
    appends
        .iter()
        .zip(rows)
        .map(|(append, (outcome, version, first_position, _))| {
            appended(
                (outcome.unwrap_or_default(), version, first_position),
                append.stream_id,
                append.expected,
            )
        })
        .collect()
}

/// A row of [`write_with`]'s answer: an append's `(outcome, version, first_position)`, or a
/// queued message's id (as the version), the row it follows (as the first position) and
/// whether it was leased.
type WriteRow = (Option<String>, i64, Option<i64>, Option<bool>);
