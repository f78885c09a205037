//! The coordinator's query API: sagas listed by type (and definition version), status, campaign,
//! partner, time, "stalled for longer than" and business key (saga, tracking, correlation or
//! order id), a page at a time with counts by status; one saga with each step's status and its whole log as a timeline;
//! its compensation log alone; and operator actions on a parked saga, recorded with who did it.
//! A saga that was archived (`archive`) is still shown by id, with `archived_at`; listings cover
//! the sagas that are not archived.

use crate::coordinator;
use crate::definition::{CATALOGUE, Definition, Entry, OperatorAction};
use crate::wire::{self, stream_id};
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use eventstore::http::{Acting, Path, Problem, Query, cursor, page_limit, time};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

pub fn router(pool: PgPool) -> axum::Router {
    axum::Router::new()
        .route("/sagas", get(list))
        .route("/sagas/{id}", get(detail))
        .route("/sagas/{id}/compensations", get(compensations))
        .route("/sagas/{id}/{action}", post(operate))
        .with_state(pool.clone())
        .merge(eventstore::api::routes(pool, wire::entry_json, fold))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Filter {
    #[serde(rename = "type")]
    saga_type: Option<String>,
    /// The version of its type's definition a saga started with.
    version: Option<i32>,
    status: Option<String>,
    campaign_id: Option<Uuid>,
    partner_id: Option<Uuid>,
    from: Option<String>,
    to: Option<String>,
    /// Seconds since the last change, for sagas that are neither completed nor compensated.
    stalled_for: Option<f64>,
    /// A business key: the saga's id, its tracking event's, its correlation id, or its order id.
    key: Option<String>,
    /// The `next` of the previous page.
    cursor: Option<String>,
    limit: Option<i64>,
}

/// The sagas that match, newest first, a page at a time (`next` continues it), with how many
/// match in each status (the status filter aside). Archived sagas are not listed.
async fn list(
    State(pool): State<PgPool>,
    Query(filter): Query<Filter>,
) -> Result<Json<Value>, Problem> {
    let limit = page_limit(filter.limit)?;
    if filter
        .stalled_for
        .is_some_and(|s| !s.is_finite() || s < 0.0)
    {
        return Err(Problem::bad_request("stalled_for is a number of seconds"));
    }
    let (from, to) = (
        filter
            .from
            .as_deref()
            .map(|v| time("from", v))
            .transpose()?,
        filter.to.as_deref().map(|v| time("to", v)).transpose()?,
    );
    let after = cursor(filter.cursor.as_deref())?;
    let (after_micros, after_id) = (after.map(|(m, _)| m), after.map(|(_, id)| id));
    let key = filter
        .key
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let key_id = key.and_then(|k| Uuid::parse_str(k).ok());
    let page: Value = sqlx::query_scalar(
        "with matching as (
             select * from sagas
              where ($1::text is null or saga_type = $1)
                and ($13::int is null or definition_version = $13)
                and ($3::uuid is null or campaign_id = $3) and ($4::uuid is null or partner_id = $4)
                and ($5::timestamptz is null or started_at >= $5)
                and ($6::timestamptz is null or started_at < $6)
                and ($7::float8 is null or (status not in ('completed', 'compensated')
                                            and updated_at < now() - make_interval(secs => $7)))
                and ($8::text is null or order_id = $8
                     or saga_id = $9 or tracking_id = $9 or correlation_id = $9)),
         page as (
             select * from matching
              where ($2::text is null or status = $2)
                and ($10::bigint is null
                     or (started_at, saga_id)
                        < (timestamptz 'epoch' + $10 * interval '1 microsecond', $11))
              order by started_at desc, saga_id desc
              limit $12)
         select jsonb_build_object(
             'sagas', coalesce((select jsonb_agg(to_jsonb(p) order by p.started_at desc, p.saga_id desc)
                                  from page p), '[]'),
             'next', case when (select count(*) from page) = $12 then
                         (select (extract(epoch from p.started_at) * 1000000)::bigint || '.' || p.saga_id
                            from page p order by p.started_at, p.saga_id limit 1) end,
             'counts', coalesce((select jsonb_object_agg(status, n)
                                   from (select status, count(*) as n from matching group by status) c),
                                '{}'))",
    )
    .bind(filter.saga_type)
    .bind(filter.status)
    .bind(filter.campaign_id)
    .bind(filter.partner_id)
    .bind(from)
    .bind(to)
    .bind(filter.stalled_for)
    .bind(key)
    .bind(key_id)
    .bind(after_micros)
    .bind(after_id)
    .bind(limit)
    .bind(filter.version)
    .fetch_one(&pool)
    .await
    ?;
    Ok(Json(page))
}

/// The saga's log: (entry, when it was recorded, JSON as stored).
async fn log(pool: &PgPool, id: Uuid) -> Result<Vec<(Entry, OffsetDateTime, Value)>, Problem> {
    let mut conn = pool.acquire().await?;
    let events =
        eventstore::archive::read_stream_or_archived(&mut conn, &stream_id(id), 1, None).await?;
    if events.is_empty() {
        return Err(Problem::not_found(format!("no saga {id}")));
    }
    events
        .iter()
        .map(|event| {
            let entry = wire::decode_entry(&event.payload).map_err(|e| {
                Problem::from(eventstore::Error::Database(sqlx::Error::Decode(Box::new(
                    e,
                ))))
            })?;
            let mut json = wire::entry_json(event).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut json {
                map.insert(
                    "recorded_at".into(),
                    json!(event.recorded_at.format(&Rfc3339).unwrap_or_default()),
                );
                map.insert("version".into(), json!(event.version));
            }
            Ok((entry, event.recorded_at, json))
        })
        .collect()
}

/// Each step of the saga's definition (and its trigger) with its status, as the log tells it.
fn steps(entries: &[Entry], definition: &Definition) -> Vec<Value> {
    definition
        .step_names()
        .iter()
        .map(|step| {
            let attempts_allowed = definition.step(*step).map_or(0, |s| s.policy.attempts);
            let mut status = "not_started";
            let mut attempts = 0;
            for entry in entries {
                match entry {
                    Entry::StepCommandSent { sent, .. } if sent.step == *step => {
                        status = "sent";
                        attempts = sent.attempt;
                    }
                    Entry::StepSucceeded { step: s, .. } if s == step => status = "succeeded",
                    Entry::StepFailed { step: s, .. } if s == step => status = "failed",
                    Entry::StepTimedOut {
                        step: s, attempt, ..
                    } if s == step && *attempt >= attempts_allowed => status = "timed_out",
                    Entry::CompensationCommandSent { sent, .. } if sent.step == *step => {
                        status = "compensating"
                    }
                    Entry::CompensationSucceeded { step: s, .. } if s == step => {
                        status = "compensated"
                    }
                    Entry::CompensationFailed { step: s, .. } if s == step => {
                        status = "compensation_failed"
                    }
                    _ => {}
                }
            }
            json!({ "step": step.name(), "status": status, "attempts": attempts })
        })
        .collect()
}

async fn detail(State(pool): State<PgPool>, Path(id): Path<Uuid>) -> Result<Json<Value>, Problem> {
    let row: Option<Value> = sqlx::query_scalar(
        "select to_jsonb(s) from sagas s where saga_id = $1
         union all
         select to_jsonb(a) from archived_sagas a where saga_id = $1",
    )
    .bind(id)
    .fetch_optional(&pool)
    .await?;
    let row = row.ok_or_else(|| Problem::not_found(format!("no saga {id}")))?;
    let log = log(&pool, id).await?;
    let entries: Vec<Entry> = log.iter().map(|(e, _, _)| e.clone()).collect();
    // A saga of a version this coordinator lacks is still shown, without its steps.
    let (steps, unknown) = match CATALOGUE.resume(&entries) {
        Ok(saga) => (steps(&entries, saga.definition), None),
        Err(e) => (vec![], Some(e.to_string())),
    };
    Ok(Json(json!({
        "saga": row,
        "steps": steps,
        "unknown_definition": unknown,
        "timeline": log.into_iter().map(|(_, _, json)| json).collect::<Vec<_>>(),
    })))
}

/// A saga's state folded from its log: its status, why, the command it awaits, and each step's
/// status as the detail shows them.
fn fold(events: &[eventstore::RecordedEvent]) -> Option<Value> {
    let entries: Vec<Entry> = events
        .iter()
        .map(|event| wire::decode_entry(&event.payload).ok())
        .collect::<Option<_>>()?;
    let saga = CATALOGUE.resume(&entries).ok()?;
    Some(json!({
        "saga_id": saga.saga_id,
        "saga_type": saga.definition.saga_type.name(),
        "definition_version": saga.definition.version,
        "status": saga.status.name(),
        "reason": saga.reason,
        "awaiting": saga.pending.as_ref().map(|sent| sent.step.name()),
        "steps": steps(&entries, saga.definition),
    }))
}

async fn compensations(
    State(pool): State<PgPool>,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, Problem> {
    let log = log(&pool, id).await?;
    let entries: Vec<Value> = log
        .into_iter()
        .filter(|(entry, _, _)| {
            matches!(
                entry,
                Entry::CompensationStarted { .. }
                    | Entry::CompensationCommandSent { .. }
                    | Entry::CompensationSucceeded { .. }
                    | Entry::CompensationFailed { .. }
                    | Entry::CompensationRetryDue { .. }
                    | Entry::Parked { .. }
                    | Entry::OperatorActed { .. }
                    | Entry::Compensated { .. }
            )
        })
        .map(|(_, _, json)| json)
        .collect();
    Ok(Json(json!({ "saga_id": id, "compensations": entries })))
}

async fn operate(
    State(pool): State<PgPool>,
    Path((id, action)): Path<(Uuid, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, Problem> {
    let action = OperatorAction::from_name(&action)
        .ok_or_else(|| Problem::not_found(format!("no operator action {action}")))?;
    let Acting { actor, reason } = Acting::read(&headers, &body)?;
    let entries = coordinator::operate(&pool, id, action, &actor, reason.as_deref())
        .await
        .map_err(|e| Problem::unavailable(format!("try again: {e}")))?;
    match entries {
        None => Err(Problem::not_found(format!("no saga {id}"))),
        Some(entries) if entries.is_empty() => Err(Problem::conflict(format!(
            "{} does not apply to saga {id} in its current state",
            action.name()
        ))),
        Some(entries) => Ok(Json(
            json!({ "saga_id": id, "action": action.name(), "entries": entries.len() }),
        )),
    }
}
