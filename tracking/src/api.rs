//! Tracking's internal query API: one tracking event (now, or as of a time), a campaign's
//! counts, and the event store's routes (streams, the global log, command outcomes).

use crate::domain::{Status, TrackingEvent as Tracking};
use crate::wire::{self, Stored};
use axum::Json;
use axum::extract::State;
use axum::routing::get;
use eventstore::Aggregate;
use eventstore::http::{AsOf, Path, Problem, Query};
use messaging::stored;
use schemas::events;
use serde_json::{Value, json};
use sqlx::PgPool;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

pub fn router(pool: PgPool) -> axum::Router {
    axum::Router::new()
        .route("/tracking-events/{id}", get(tracking_event))
        .route("/campaigns/{id}/stats", get(campaign_stats))
        .with_state(pool.clone())
        .merge(eventstore::api::routes(
            pool,
            stored::json::<events::TrackingEvent>,
            wire::fold,
        ))
}

async fn tracking_event(
    State(pool): State<PgPool>,
    Path(id): Path<Uuid>,
    Query(query): Query<AsOf>,
) -> Result<Json<Value>, Problem> {
    let mut conn = pool.acquire().await?;
    if let Some(at) = query.time()? {
        return as_of_time(&mut conn, id, at).await;
    }
    let row: Option<Value> =
        sqlx::query_scalar("select to_jsonb(t) from tracking_events t where tracking_id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(Json)
        .ok_or_else(|| Problem::not_found(format!("no tracking event {id}")))
}

/// The tracking event as it stood at `at`, folded from the events recorded until then.
async fn as_of_time(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
    at: OffsetDateTime,
) -> Result<Json<Value>, Problem> {
    let events = eventstore::read_stream_as_of(conn, &wire::tracking_stream(id), at).await?;
    let mut state = Tracking::default();
    for event in &events {
        if let Ok(Some(Stored::Tracking(change))) = wire::stored(event) {
            state.apply(&change);
        }
    }
    let (Some(recording), Some(status)) = (state.recording(), state.status()) else {
        return Err(Problem::not_found(format!(
            "no tracking event {id} at {at}"
        )));
    };
    let (status, reason) = match status {
        Status::Recorded => ("recorded", None),
        Status::Confirmed => ("confirmed", None),
        Status::Failed { reason } => ("failed", Some(reason.clone())),
    };
    Ok(Json(json!({
        "tracking_id": recording.tracking_id,
        "campaign_id": recording.campaign_id,
        "partner_id": recording.partner_id,
        "status": status,
        "failure_reason": reason,
        "version": events.last().map(|e| e.version),
        "as_of": at.format(&Rfc3339).unwrap_or_default(),
    })))
}

async fn campaign_stats(
    State(pool): State<PgPool>,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, Problem> {
    let row: Option<Value> = sqlx::query_scalar(
        "select jsonb_build_object('campaign_id', $1::uuid, 'clicks', coalesce(s.clicks, 0),
                'leads', coalesce(s.leads, 0), 'conversions', coalesce(s.conversions, 0),
                'confirmed', coalesce(s.confirmed, 0), 'failed', coalesce(s.failed, 0),
                'refunds', coalesce(s.refunds, 0))
           from (select 1) one left join campaign_tracking_stats s on s.campaign_id = $1",
    )
    .bind(id)
    .fetch_optional(&pool)
    .await?;
    Ok(Json(row.unwrap_or(Value::Null)))
}
