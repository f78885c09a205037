//! The event store's HTTP query routes, which every service mounts next to its read models: one
//! stream's events (archived ones too), the global log by position or time, and a command's outcome. Events are
//! rendered as JSON with their payload decoded by the service (its `wire.rs` knows the schema).
//! Errors are `application/problem+json`.

use crate::http::{AsOf, MAX_PAGE, Path, Problem, Query, page_limit, time};
use crate::{CommandOutcome, Outcome, RecordedEvent};
use axum::Json;
use axum::extract::State;
use axum::routing::{get, put};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// Turns a stored event's payload into JSON; `None` if it cannot be decoded.
pub type Decode = fn(&RecordedEvent) -> Option<Value>;

/// Folds one stream's events, in order, into the state its owner decides on, as JSON; `None` for
/// a stream the service keeps no state of.
pub type Fold = fn(&[RecordedEvent]) -> Option<Value>;

/// The common [`Fold`]: `apply` each of `events`, as `event` reads it, to a fresh `S`; `None` if
/// an event is not one of `S`'s (or cannot be decoded).
pub fn fold_state<S: Default + Serialize, E>(
    events: &[RecordedEvent],
    event: impl Fn(&RecordedEvent) -> Option<E>,
    apply: impl Fn(&mut S, &E),
) -> Option<Value> {
    let mut state = S::default();
    for recorded in events {
        apply(&mut state, &event(recorded)?);
    }
    serde_json::to_value(state).ok()
}

#[derive(Clone)]
struct Api {
    pool: PgPool,
    decode: Decode,
    fold: Fold,
}

/// The routes, to be merged into the service's router: `GET /streams/{stream_id}`,
/// `GET /streams/{stream_id}/state` (its state now or `as_of` a time, by `fold`), `GET /events`, `GET /correlations/{correlation_id}`, `GET /commands/{command_id}`,
/// `PUT /idempotency-keys/{command_id}`, and the dead letters' (see [`crate::dead_letter`]).
pub fn routes(pool: PgPool, decode: Decode, fold: Fold) -> axum::Router {
    axum::Router::new()
        .route("/streams/{stream_id}", get(stream))
        .route("/streams/{stream_id}/state", get(stream_state))
        .route("/events", get(events))
        .route("/correlations/{correlation_id}", get(correlation))
        .route("/commands/{command_id}", get(command))
        .route("/idempotency-keys/{command_id}", put(claim_idempotency_key))
        .with_state(Api {
            pool: pool.clone(),
            decode,
            fold,
        })
        .merge(crate::dead_letter::routes(pool))
}

/// An event as the query API shows it: as stored (but for its encoded payload), and decoded.
#[derive(Debug, Serialize)]
pub struct EventView {
    #[serde(flatten)]
    pub event: RecordedEvent,
    /// The decoded payload, or null if this build cannot decode it.
    pub data: Value,
}

/// `events` as the query API shows them.
fn views(events: Vec<RecordedEvent>, decode: Decode) -> Vec<EventView> {
    events
        .into_iter()
        .map(|event| EventView {
            data: decode(&event).unwrap_or(Value::Null),
            event,
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    from_version: Option<i64>,
    to_version: Option<i64>,
}

async fn stream(
    State(api): State<Api>,
    Path(stream_id): Path<String>,
    Query(query): Query<StreamQuery>,
) -> Result<Json<Vec<EventView>>, Problem> {
    let mut conn = api.pool.acquire().await?;
    let events = crate::archive::read_stream_or_archived(
        &mut conn,
        &stream_id,
        query.from_version.unwrap_or(1),
        query.to_version,
    )
    .await?;
    if events.is_empty() && query.from_version.is_none() {
        return Err(Problem::not_found(format!("no stream {stream_id}")));
    }
    Ok(Json(views(events, api.decode)))
}

/// A stream's state as of a time (now by default), folded from its events recorded until then
/// (archived ones too), with its version then: `state` is null for a stream the service keeps
/// no state of.
async fn stream_state(
    State(api): State<Api>,
    Path(stream_id): Path<String>,
    Query(query): Query<AsOf>,
) -> Result<Json<Value>, Problem> {
    let at = query.time()?.unwrap_or_else(OffsetDateTime::now_utc);
    let mut conn = api.pool.acquire().await?;
    let mut events =
        crate::archive::read_stream_or_archived(&mut conn, &stream_id, 1, None).await?;
    events.retain(|event| event.recorded_at <= at);
    let Some(last) = events.last() else {
        return Err(Problem::not_found(format!(
            "no stream {stream_id} as of {}",
            at.format(&Rfc3339).unwrap_or_default()
        )));
    };
    Ok(Json(json!({
        "stream_id": stream_id,
        "stream_type": last.stream_type,
        "as_of": at.format(&Rfc3339).unwrap_or_default(),
        "version": last.version,
        "updated_at": last.recorded_at.format(&Rfc3339).unwrap_or_default(),
        "state": (api.fold)(&events).unwrap_or(Value::Null),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    after: Option<i64>,
    limit: Option<i64>,
    from: Option<String>,
    to: Option<String>,
}

#[derive(Debug, Serialize)]
struct LogPage {
    events: Vec<EventView>,
    /// Pass as `after` for the next page.
    next: i64,
}

async fn events(
    State(api): State<Api>,
    Query(query): Query<LogQuery>,
) -> Result<Json<LogPage>, Problem> {
    let limit = page_limit(query.limit)?;
    let after = query.after.unwrap_or(0);
    let mut conn = api.pool.acquire().await?;
    let page = match (&query.from, &query.to) {
        (None, None) => crate::read_all(&mut conn, after, limit).await?,
        (from, to) => {
            let from = from
                .as_deref()
                .map(|v| time("from", v))
                .transpose()?
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            let to = to
                .as_deref()
                .map(|v| time("to", v))
                .transpose()?
                .unwrap_or_else(OffsetDateTime::now_utc);
            crate::read_all_between(&mut conn, from, to, after, limit).await?
        }
    };
    Ok(Json(LogPage {
        events: views(page.events, api.decode),
        next: page.next,
    }))
}

/// A flow's events in this service, in causal order (see [`crate::read_correlation`]); at most
/// `MAX_PAGE`.
async fn correlation(
    State(api): State<Api>,
    Path(correlation_id): Path<Uuid>,
) -> Result<Json<Vec<EventView>>, Problem> {
    let mut conn = api.pool.acquire().await?;
    let events = crate::read_correlation(&mut conn, correlation_id, MAX_PAGE).await?;
    Ok(Json(views(events, api.decode)))
}

async fn command(
    State(api): State<Api>,
    Path(command_id): Path<Uuid>,
) -> Result<Json<Value>, Problem> {
    let mut conn = api.pool.acquire().await?;
    let Some(CommandOutcome {
        command_id,
        command_type,
        aggregate_id,
        actor,
        outcome,
        recorded_at,
    }) = crate::load_outcome(&mut conn, command_id).await?
    else {
        return Ok(Json(
            json!({ "command_id": command_id, "status": "pending" }),
        ));
    };
    let (status, code, reason) = match outcome {
        Outcome::Succeeded => ("succeeded", None, None),
        Outcome::AlreadyApplied => ("succeeded", Some("already_applied".to_owned()), None),
        Outcome::Rejected { code, reason } => ("rejected", Some(code), Some(reason)),
    };
    Ok(Json(json!({
        "command_id": command_id,
        "command_type": command_type,
        "aggregate_id": aggregate_id,
        "actor": actor,
        "status": status,
        "code": code,
        "reason": reason,
        "recorded_at": recorded_at.format(&Rfc3339).unwrap_or_default(),
    })))
}

/// An Idempotency-Key's claim: the fingerprint of the body it was used with.
#[derive(Debug, Serialize, Deserialize)]
pub struct IdempotencyClaim {
    pub fingerprint: Uuid,
}

/// Claims the command id an Idempotency-Key names for a request body's fingerprint, unless it is
/// claimed already: answers the fingerprint that holds the claim, the caller's own or an earlier
/// one. The caller (the BFF) refuses the request when they differ.
async fn claim_idempotency_key(
    State(api): State<Api>,
    Path(command_id): Path<Uuid>,
    Json(claim): Json<IdempotencyClaim>,
) -> Result<Json<IdempotencyClaim>, Problem> {
    let claimed: Option<Uuid> = sqlx::query_scalar(
        "insert into idempotency_keys (command_id, fingerprint) values ($1, $2)
         on conflict (command_id) do nothing
         returning fingerprint",
    )
    .bind(command_id)
    .bind(claim.fingerprint)
    .fetch_optional(&api.pool)
    .await?;
    let fingerprint = match claimed {
        Some(fingerprint) => fingerprint,
        // Claimed before (a concurrent claim has committed: the insert waited for it).
        None => {
            sqlx::query_scalar("select fingerprint from idempotency_keys where command_id = $1")
                .bind(command_id)
                .fetch_one(&api.pool)
                .await?
        }
    };
    Ok(Json(IdempotencyClaim { fingerprint }))
}
