//! Commissions' internal query API: one commission, a partner's commissions and totals, a
//! campaign's totals, and the event store's routes (streams, the global log, command outcomes).
//! Every error, a malformed path or query included, is problem+json.

use crate::wire;
use axum::Json;
use axum::extract::State;
use axum::routing::get;
use eventstore::Aggregate;
use eventstore::http::{AsOf, NoQuery, Path, Problem, Query, page_limit};
use messaging::stored;
use schemas::events;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

const STATUSES: [&str; 3] = ["assigned", "reversed", "voided"];

pub fn router(pool: PgPool) -> axum::Router {
    axum::Router::new()
        .route("/commissions/{id}", get(commission))
        .route("/partners/{id}/commissions", get(partner_commissions))
        .route("/partners/{id}/balance", get(partner_balance))
        .route("/campaigns/{id}/commissions/summary", get(campaign_summary))
        .with_state(pool.clone())
        .merge(eventstore::api::routes(
            pool,
            stored::json::<events::CommissionsEvent>,
            wire::fold,
        ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    /// The `next` of the previous page.
    after: Option<i64>,
    limit: Option<i64>,
}

async fn commission(
    State(pool): State<PgPool>,
    Path(id): Path<Uuid>,
    Query(as_of): Query<AsOf>,
) -> Result<Json<Value>, Problem> {
    if let Some(at) = as_of.as_of {
        return commission_as_of(&pool, id, &at).await;
    }
    let row: Option<Value> = sqlx::query_scalar(
        "select to_jsonb(c) - 'position' from commissions c where commission_id = $1",
    )
    .bind(id)
    .fetch_optional(&pool)
    .await?;
    row.map(Json)
        .ok_or_else(|| Problem::not_found(format!("no commission {id}")))
}

/// The commission as it stood at `at`, folded from the events recorded until then.
async fn commission_as_of(pool: &PgPool, id: Uuid, at: &str) -> Result<Json<Value>, Problem> {
    let time = eventstore::http::time("as_of", at)?;
    let mut conn = pool.acquire().await?;
    let events =
        eventstore::read_stream_as_of(&mut conn, &wire::commission_stream(id), time).await?;
    let mut state = crate::domain::Commission::default();
    for event in &events {
        if let Ok(Some(event)) = wire::stored(event) {
            state.apply(&event);
        }
    }
    let Some(last) = events.last() else {
        return Err(Problem::not_found(format!("no commission {id} at {at}")));
    };
    let assignment = state.assignment();
    let status = match (assignment.is_some(), state.is_reversed()) {
        (true, false) => "assigned",
        (true, true) => "reversed",
        (false, _) => "voided",
    };
    Ok(Json(json!({
        "commission_id": id,
        "campaign_id": assignment.map(|a| a.campaign_id),
        "partner_id": assignment.map(|a| a.partner_id),
        "tracking_id": assignment.map(|a| a.tracking_id),
        "amount": assignment.map(|a| a.amount.amount),
        "currency": assignment.map(|a| a.amount.currency.clone()),
        "status": status,
        "version": last.version,
        "as_of": at,
    })))
}

/// A partner's commissions in the order they were recorded, a page at a time; `next` is null on
/// the last page.
async fn partner_commissions(
    State(pool): State<PgPool>,
    Path(partner_id): Path<Uuid>,
    Query(list): Query<ListQuery>,
) -> Result<Json<Value>, Problem> {
    let limit = page_limit(list.limit)?;
    if let Some(status) = list.status.as_deref().filter(|s| !STATUSES.contains(s)) {
        return Err(Problem::bad_request(format!(
            "status must be one of {}, got {status:?}",
            STATUSES.join(", ")
        )));
    }
    // One row more than the page tells whether another page follows.
    let mut rows: Vec<(i64, Value)> = sqlx::query_as(
        "select position, to_jsonb(c) - 'position' from commissions c
          where partner_id = $1 and ($2::text is null or status = $2) and position > $3
          order by position limit $4",
    )
    .bind(partner_id)
    .bind(list.status)
    .bind(list.after.unwrap_or(0))
    .bind(limit + 1)
    .fetch_all(&pool)
    .await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next = if more {
        rows.last().map(|(position, _)| *position)
    } else {
        None
    };
    let commissions: Vec<Value> = rows.into_iter().map(|(_, row)| row).collect();
    Ok(Json(json!({
        "partner_id": partner_id,
        "commissions": commissions,
        "next": next,
    })))
}

/// The totals of one partner or campaign: counts over all currencies, amounts per currency.
/// `table` and `key` are one of the totals tables and its id column.
async fn totals(
    pool: &PgPool,
    table: &'static str,
    key: &'static str,
    id: Uuid,
) -> Result<Json<Value>, Problem> {
    let sql = format!(
        "select jsonb_build_object(
                '{key}', $1::uuid,
                'commissions', coalesce(sum(assigned_count), 0)::bigint,
                'reversed_commissions', coalesce(sum(reversed_count), 0)::bigint,
                'currencies', coalesce(jsonb_agg(jsonb_build_object(
                    'currency', currency, 'assigned', assigned, 'reversed', reversed,
                    'net', assigned - reversed, 'assigned_count', assigned_count,
                    'reversed_count', reversed_count) order by currency), '[]'::jsonb))
           from {table} where {key} = $1"
    );
    let totals: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_one(pool)
        .await?;
    Ok(Json(totals))
}

/// What a partner was assigned and what was reversed, per currency. Payments owns what was paid;
/// the partner's balance is `net` minus that.
async fn partner_balance(
    State(pool): State<PgPool>,
    Path(partner_id): Path<Uuid>,
    Query(_): Query<NoQuery>,
) -> Result<Json<Value>, Problem> {
    totals(&pool, "partner_balances", "partner_id", partner_id).await
}

async fn campaign_summary(
    State(pool): State<PgPool>,
    Path(campaign_id): Path<Uuid>,
    Query(_): Query<NoQuery>,
) -> Result<Json<Value>, Problem> {
    totals(
        &pool,
        "campaign_commission_stats",
        "campaign_id",
        campaign_id,
    )
    .await
}
