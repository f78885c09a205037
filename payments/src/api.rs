//! Payments' internal query API: one payment, a partner's payments with what they were paid, and
//! the event store's routes (streams, the global log, command outcomes).

use crate::wire;
use axum::Json;
use axum::extract::State;
use axum::routing::get;
use eventstore::Aggregate;
use eventstore::http::{AsOf, Path, Problem, Query, page_limit};
use messaging::stored;
use schemas::events;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

pub fn router(pool: PgPool) -> axum::Router {
    axum::Router::new()
        .route("/payments/{id}", get(payment))
        .route("/partners/{id}/payments", get(partner_payments))
        .with_state(pool.clone())
        .merge(eventstore::api::routes(
            pool,
            stored::json::<events::PaymentsEvent>,
            wire::fold,
        ))
}

async fn payment(
    State(pool): State<PgPool>,
    Path(id): Path<Uuid>,
    Query(as_of): Query<AsOf>,
) -> Result<Json<Value>, Problem> {
    if let Some(at) = as_of.as_of {
        return payment_as_of(&pool, id, &at).await;
    }
    let row: Option<Value> =
        sqlx::query_scalar("select to_jsonb(p) from payments p where payment_id = $1")
            .bind(id)
            .fetch_optional(&pool)
            .await?;
    row.map(Json)
        .ok_or_else(|| Problem::not_found(format!("no payment {id}")))
}

/// The payment as it stood at `at`, folded from the events recorded until then.
async fn payment_as_of(pool: &PgPool, id: Uuid, at: &str) -> Result<Json<Value>, Problem> {
    use crate::domain::{Payment, Status};
    let time = eventstore::http::time("as_of", at)?;
    let mut conn = pool.acquire().await?;
    let events = eventstore::read_stream_as_of(&mut conn, &wire::payment_stream(id), time).await?;
    let mut state = Payment::default();
    for event in &events {
        if let Ok(Some(event)) = wire::stored(event) {
            state.apply(&event);
        }
    }
    let (Some(request), Some(status), Some(last)) =
        (state.request(), state.status(), events.last())
    else {
        return Err(Problem::not_found(format!("no payment {id} at {at}")));
    };
    let status = match status {
        Status::Requested => "requested",
        Status::PayoutAttempted => "attempted",
        Status::OutcomeUnknown => "unknown",
        Status::Completed => "completed",
        Status::Failed => "failed",
        Status::Cancelled => "cancelled",
    };
    Ok(Json(json!({
        "payment_id": id,
        "commission_id": request.commission_id,
        "partner_id": request.partner_id,
        "campaign_id": request.campaign_id,
        "amount": request.amount.amount,
        "currency": request.amount.currency,
        "status": status,
        "version": last.version,
        "as_of": at,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<i64>,
    offset: Option<i64>,
}

/// A partner's payments, newest first and paged, with the totals paid and clawed back per
/// currency.
async fn partner_payments(
    State(pool): State<PgPool>,
    Path(id): Path<Uuid>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, Problem> {
    let limit = page_limit(page.limit)?;
    let offset = page.offset.unwrap_or(0);
    if offset < 0 {
        return Err(Problem::bad_request("offset must not be negative"));
    }
    let payments: Vec<Value> = sqlx::query_scalar(
        "select to_jsonb(p) from payments p where partner_id = $1
          order by requested_at desc, payment_id limit $2 offset $3",
    )
    .bind(id)
    .bind(limit)
    .bind(offset)
    .fetch_all(&pool)
    .await?;
    let totals: Vec<Value> = sqlx::query_scalar(
        "select jsonb_build_object('currency', currency, 'paid_amount', paid_amount,
                                   'paid_count', paid_count,
                                   'clawed_back_amount', clawed_back_amount,
                                   'clawed_back_count', clawed_back_count)
           from partner_payouts where partner_id = $1 order by currency",
    )
    .bind(id)
    .fetch_all(&pool)
    .await?;
    Ok(Json(json!({
        "partner_id": id,
        "payments": payments,
        "paid": totals,
    })))
}
