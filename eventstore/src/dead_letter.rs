//! Dead letters: the messages a service's consumers gave up on, recorded in its database in the
//! transaction that queues each one for its dead-letter topic (`<topic>-<subscription>-DLQ`,
//! published by the relay like any other message). The table is what operators list, inspect and
//! re-drive; the topic is Pulsar's convention, for the tools that read it.
//!
//! Re-driving queues the original message (body, key and properties, its message id included) on
//! its topic again, in the transaction that marks the dead letter re-driven by whom and why. The
//! consumer's inbox never recorded a dead-lettered message, so it is handled as if new; if it
//! fails again, it comes back as a new dead letter.

use crate::Error;
use crate::http::{Acting, Problem, cursor, page_limit};
use crate::outbox;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sqlx::types::Json as Jsonb;
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// The property a re-driven message carries: the id of the dead letter it was re-driven from.
pub const REDRIVEN_FROM: &str = "redriven_from";

/// A message a consumer gave up on.
#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    pub id: Uuid,
    /// The topic's short name, as the outbox names it.
    pub topic: String,
    pub subscription: String,
    /// Its Pulsar message id on `topic`.
    pub origin_message_id: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub properties: BTreeMap<String, String>,
    /// The payload decoded, when it could be.
    pub body: Option<Value>,
    /// `undecodable`, `permanent` or `attempts_exhausted`.
    pub cause: String,
    pub error: String,
    pub attempts: i32,
}

/// Records `letter` and queues `copy` (its message for the dead-letter topic), in the caller's
/// transaction, unless the same message of the same topic was dead-lettered for the same
/// subscription before. `true` if it was recorded now.
///
/// A message is often dead-lettered for holding what PostgreSQL cannot store: text with U+0000.
/// Its payload is kept as it came (bytes); in its key, properties, decoded body and error, each
/// U+0000 is stored as U+FFFD, so that recording it cannot fail the same way.
pub async fn record(
    conn: &mut PgConnection,
    letter: &NewDeadLetter,
    copy: &outbox::Message,
) -> Result<bool, Error> {
    let recorded = sqlx::query(
        "insert into dead_letters (id, topic, subscription, origin_message_id, key, payload,
                                   properties, body, cause, error, attempts)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         on conflict (topic, subscription, origin_message_id) do nothing",
    )
    .bind(letter.id)
    .bind(&letter.topic)
    .bind(&letter.subscription)
    .bind(&letter.origin_message_id)
    .bind(storable(&letter.key))
    .bind(&letter.payload)
    .bind(Jsonb(storable_map(&letter.properties)))
    .bind(letter.body.clone().map(storable_json).map(Jsonb))
    .bind(&letter.cause)
    .bind(storable(&letter.error))
    .bind(letter.attempts)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if recorded {
        let copy = outbox::Message {
            topic: copy.topic.clone(),
            key: storable(&copy.key),
            payload: copy.payload.clone(),
            properties: storable_map(&copy.properties),
        };
        outbox::enqueue(conn, &[copy]).await?;
    }
    Ok(recorded)
}

/// `text` with every U+0000, which PostgreSQL's text and jsonb cannot hold, as U+FFFD.
fn storable(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

fn storable_map(map: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    map.iter()
        .map(|(key, value)| (storable(key), storable(value)))
        .collect()
}

fn storable_json(value: Value) -> Value {
    match value {
        Value::String(text) => Value::String(storable(&text)),
        Value::Array(items) => Value::Array(items.into_iter().map(storable_json).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| (storable(&key), storable_json(value)))
                .collect(),
        ),
        other => other,
    }
}

/// What became of a re-drive.
#[derive(Debug)]
pub enum Redrive {
    /// Queued on its topic again: the message as queued.
    Queued(outbox::Message),
    NotFound,
    /// Re-driven before, at that time by that actor.
    AlreadyRedriven {
        at: OffsetDateTime,
        by: Option<String>,
    },
}

/// A dead letter's original message: topic, key, payload, properties.
type Original = (String, String, Vec<u8>, Jsonb<BTreeMap<String, String>>);

/// Queues dead letter `id`'s message on its topic again and marks it re-driven by `actor` for
/// `reason`, in the caller's transaction. A dead letter is re-driven once.
pub async fn redrive(
    conn: &mut PgConnection,
    id: Uuid,
    actor: &str,
    reason: Option<&str>,
) -> Result<Redrive, Error> {
    let row: Option<Original> = sqlx::query_as(
        "update dead_letters
            set redriven_at = clock_timestamp(), redriven_by = $2, redrive_reason = $3
          where id = $1 and redriven_at is null
          returning topic, key, payload, properties",
    )
    .bind(id)
    .bind(actor)
    .bind(reason)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((topic, key, payload, Jsonb(mut properties))) = row else {
        let earlier: Option<(OffsetDateTime, Option<String>)> =
            sqlx::query_as("select redriven_at, redriven_by from dead_letters where id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
                .and_then(|(at, by): (Option<OffsetDateTime>, Option<String>)| Some((at?, by)));
        return Ok(match earlier {
            Some((at, by)) => Redrive::AlreadyRedriven { at, by },
            None => Redrive::NotFound,
        });
    };
    properties.insert(REDRIVEN_FROM.into(), id.to_string());
    let message = outbox::Message {
        topic,
        key,
        payload,
        properties,
    };
    outbox::enqueue(conn, std::slice::from_ref(&message)).await?;
    Ok(Redrive::Queued(message))
}

/// The routes, merged into the query API: `GET /dead-letters` (newest first, a page at a time,
/// with counts per topic), `GET /dead-letters/{id}` and `POST /dead-letters/{id}/redrive`.
pub fn routes(pool: PgPool) -> axum::Router {
    axum::Router::new()
        .route("/dead-letters", get(list))
        .route("/dead-letters/{id}", get(show))
        .route("/dead-letters/{id}/redrive", post(redrive_route))
        .with_state(pool)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Filter {
    topic: Option<String>,
    /// `pending` (not re-driven), `redriven`, or all when absent.
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// The columns of a summary, in the order `summary` reads them (a macro, so that the queries
/// stay literals).
macro_rules! summary_columns {
    () => {
        "id, topic, subscription, key, properties ->> 'message_type', cause, error, attempts,
         dead_lettered_at, redriven_at, redriven_by, redrive_reason"
    };
}

type SummaryRow = (
    Uuid,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    i32,
    OffsetDateTime,
    Option<OffsetDateTime>,
    Option<String>,
    Option<String>,
);

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

fn summary(row: SummaryRow) -> Map<String, Value> {
    let (
        id,
        topic,
        subscription,
        key,
        message_type,
        cause,
        error,
        attempts,
        at,
        redriven_at,
        by,
        reason,
    ) = row;
    let dead_letter_topic = format!("{topic}-{subscription}-DLQ");
    let json = json!({
        "id": id,
        "topic": topic,
        "subscription": subscription,
        "dead_letter_topic": dead_letter_topic,
        "key": key,
        "message_type": message_type,
        "cause": cause,
        "error": error,
        "attempts": attempts,
        "dead_lettered_at": rfc3339(at),
        "status": if redriven_at.is_some() { "redriven" } else { "pending" },
        "redriven_at": redriven_at.map(rfc3339),
        "redriven_by": by,
        "redrive_reason": reason,
        "cursor": format!("{}.{id}", at.unix_timestamp_nanos() / 1000),
    });
    match json {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object literal"),
    }
}

/// Dead letters newest first, `limit` at a time (`next` continues), with every topic's pending and
/// re-driven counts (the filters aside).
async fn list(
    State(pool): State<PgPool>,
    Query(filter): Query<Filter>,
) -> Result<Json<Value>, Problem> {
    let limit = page_limit(filter.limit)?;
    let redriven = match filter.status.as_deref() {
        None | Some("all") => None,
        Some("pending") => Some(false),
        Some("redriven") => Some(true),
        Some(other) => {
            return Err(Problem::bad_request(format!(
                "status is pending, redriven or all, got {other:?}"
            )));
        }
    };
    let after = cursor(filter.cursor.as_deref())?;
    let mut conn = pool.acquire().await.map_err(Error::from)?;
    let rows: Vec<SummaryRow> = sqlx::query_as(concat!(
        "select ",
        summary_columns!(),
        " from dead_letters
          where ($1::text is null or topic = $1)
            and ($2::boolean is null or (redriven_at is not null) = $2)
            and ($3::bigint is null
                 or (dead_lettered_at, id) < (to_timestamp($3::bigint / 1e6), $4::uuid))
          order by dead_lettered_at desc, id desc
          limit $5"
    ))
    .bind(&filter.topic)
    .bind(redriven)
    .bind(after.map(|(micros, _)| micros))
    .bind(after.map(|(_, id)| id))
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await
    .map_err(Error::from)?;
    let more = rows.len() as i64 > limit;
    let letters: Vec<Map<String, Value>> =
        rows.into_iter().take(limit as usize).map(summary).collect();
    let next = more.then(|| letters.last().map(|l| l["cursor"].clone()));
    let topics: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "select topic, subscription, count(*) filter (where redriven_at is null),
                count(*) filter (where redriven_at is not null)
           from dead_letters group by topic, subscription order by topic, subscription",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(Error::from)?;
    let topics: Vec<Value> = topics
        .into_iter()
        .map(|(topic, subscription, pending, redriven)| {
            json!({ "topic": topic, "subscription": subscription, "pending": pending, "redriven": redriven })
        })
        .collect();
    Ok(Json(
        json!({ "dead_letters": letters, "next": next.flatten(), "topics": topics }),
    ))
}

/// One dead letter: its summary, its original properties, its body decoded (null if it could not
/// be) and its payload in base64.
async fn show(State(pool): State<PgPool>, Path(id): Path<Uuid>) -> Result<Json<Value>, Problem> {
    let mut conn = pool.acquire().await.map_err(Error::from)?;
    Ok(Json(Value::Object(detail(&mut conn, id).await?)))
}

async fn detail(conn: &mut PgConnection, id: Uuid) -> Result<Map<String, Value>, Problem> {
    let row: Option<SummaryRow> = sqlx::query_as(concat!(
        "select ",
        summary_columns!(),
        " from dead_letters where id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(Error::from)?;
    let mut letter =
        summary(row.ok_or_else(|| Problem::not_found(format!("no dead letter {id}")))?);
    let (origin, properties, body, payload): (String, Value, Option<Value>, Vec<u8>) =
        sqlx::query_as(
            "select origin_message_id, properties, body, payload from dead_letters where id = $1",
        )
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .map_err(Error::from)?;
    letter.insert("origin_message_id".into(), json!(origin));
    letter.insert("properties".into(), properties);
    letter.insert("body".into(), body.unwrap_or(Value::Null));
    letter.insert("payload_bytes".into(), json!(payload.len()));
    letter.insert(
        "payload_base64".into(),
        json!(base64::engine::general_purpose::STANDARD.encode(&payload)),
    );
    Ok(letter)
}

/// Re-drives a dead letter for the actor the caller names (`x-pulsaga-actor`): the dead letter,
/// now re-driven. 409 if it was re-driven before.
async fn redrive_route(
    State(pool): State<PgPool>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, Problem> {
    let Acting { actor, reason } = Acting::read(&headers, &body)?;
    let mut tx = pool.begin().await.map_err(Error::from)?;
    match redrive(&mut tx, id, &actor, reason.as_deref()).await? {
        Redrive::Queued(message) => {
            tracing::info!(dead_letter = %id, topic = message.topic, %actor, "dead letter re-driven");
            let letter = detail(&mut tx, id).await?;
            tx.commit().await.map_err(Error::from)?;
            Ok(Json(Value::Object(letter)))
        }
        Redrive::NotFound => Err(Problem::not_found(format!("no dead letter {id}"))),
        Redrive::AlreadyRedriven { at, by } => Err(Problem::conflict(format!(
            "dead letter {id} was re-driven at {} by {}",
            rfc3339(at),
            by.as_deref().unwrap_or("someone")
        ))),
    }
}
