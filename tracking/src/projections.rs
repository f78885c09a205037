//! Tracking's read models: each tracking event with its state, and per-campaign counts. Both are
//! fed from the service's global log by one projection and can be rebuilt from zero.

use crate::domain::{Recording, TrackingChange, TrackingKind};
use crate::wire::{self, Stored};
use eventstore::projection::Projection;
use eventstore::{Error, RecordedEvent};
use sqlx::PgConnection;
use time::OffsetDateTime;

/// The `tracking_events` and `campaign_tracking_stats` tables.
#[derive(Debug, Default)]
pub struct TrackingViews;

fn kind_name(kind: TrackingKind) -> &'static str {
    match kind {
        TrackingKind::Click => "click",
        TrackingKind::Lead => "lead",
        TrackingKind::Conversion => "conversion",
    }
}

fn micros(at: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

async fn recorded(tx: &mut PgConnection, r: &Recording, at: OffsetDateTime) -> Result<(), Error> {
    sqlx::query(
        "insert into tracking_events (tracking_id, campaign_id, partner_id, kind, order_id, order_amount,
                                      currency, occurred_at, status, recorded_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, 'recorded', $9, $9)",
    )
    .bind(r.tracking_id)
    .bind(r.campaign_id)
    .bind(r.partner_id)
    .bind(kind_name(r.kind))
    .bind(r.order.as_ref().map(|o| o.order_id.clone()))
    .bind(r.order.as_ref().map(|o| o.amount.amount))
    .bind(r.order.as_ref().map(|o| o.amount.currency.clone()))
    .bind(micros(r.occurred_at))
    .bind(at)
    .execute(&mut *tx)
    .await?;
    let column = match r.kind {
        TrackingKind::Click => "clicks",
        TrackingKind::Lead => "leads",
        TrackingKind::Conversion => "conversions",
    };
    bump(tx, r.campaign_id, column).await
}

/// Adds one to a count of a campaign; `column` is one of the table's count columns.
async fn bump(
    tx: &mut PgConnection,
    campaign_id: uuid::Uuid,
    column: &'static str,
) -> Result<(), Error> {
    let sql = format!(
        "insert into campaign_tracking_stats (campaign_id, {column}) values ($1, 1)
         on conflict (campaign_id) do update set {column} = campaign_tracking_stats.{column} + 1"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(campaign_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn settled(
    tx: &mut PgConnection,
    tracking_id: uuid::Uuid,
    campaign_id: uuid::Uuid,
    failure: Option<&str>,
    at: OffsetDateTime,
) -> Result<(), Error> {
    sqlx::query("update tracking_events set status = $2, failure_reason = $3, updated_at = $4 where tracking_id = $1")
        .bind(tracking_id)
        .bind(if failure.is_some() { "failed" } else { "confirmed" })
        .bind(failure)
        .bind(at)
        .execute(&mut *tx)
        .await?;
    bump(
        tx,
        campaign_id,
        if failure.is_some() {
            "failed"
        } else {
            "confirmed"
        },
    )
    .await
}

impl Projection for TrackingViews {
    fn name(&self) -> &'static str {
        "tracking-views"
    }

    async fn apply(&self, tx: &mut PgConnection, event: &RecordedEvent) -> Result<(), Error> {
        let Ok(Some(Stored::Tracking(change))) = wire::stored(event) else {
            return Ok(());
        };
        match &change {
            TrackingChange::Recorded(r) => recorded(tx, r, event.recorded_at).await,
            TrackingChange::Confirmed {
                tracking_id,
                campaign_id,
            } => settled(tx, *tracking_id, *campaign_id, None, event.recorded_at).await,
            TrackingChange::Failed {
                tracking_id,
                campaign_id,
                reason,
            } => {
                settled(
                    tx,
                    *tracking_id,
                    *campaign_id,
                    Some(reason),
                    event.recorded_at,
                )
                .await
            }
        }
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), Error> {
        sqlx::raw_sql("truncate tracking_events, campaign_tracking_stats")
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    async fn snapshot(&self, conn: &mut PgConnection) -> Result<Vec<String>, Error> {
        Ok(sqlx::query_scalar(
            "select t::text from (select * from tracking_events order by tracking_id) t
             union all
             select s::text from (select * from campaign_tracking_stats order by campaign_id) s",
        )
        .fetch_all(conn)
        .await?)
    }
}
