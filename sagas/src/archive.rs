//! Archiving: a saga that ended (completed or compensated) longer ago than a configured age leaves
//! the hot tables. Its row moves from `sagas` to `archived_sagas` and its log from the hot event
//! log to the archive (`eventstore::archive`), in one transaction, so `sagas`, the event log and
//! their indexes stay the size of the live work. The query API still shows an archived saga by
//! id, with its whole timeline; listings cover the sagas that are not archived. A parked saga is
//! never archived: it waits for an operator.
//!
//! An archived saga takes no more input: a reply or trigger that comes after it is ignored
//! (`coordinator::feed`), so a message redelivered after the archiving cannot start it again.

use crate::wire::stream_id;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// The age at which an ended saga is archived unless configured otherwise: as long as the event
/// topics keep a message that could still come for it.
pub const DEFAULT_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Sagas moved per transaction.
const BATCH: i64 = 500;

/// Archives every saga that ended more than `age` ago, a batch per short transaction (a long one
/// would hold back the global log of every service on the server); returns how many.
pub async fn archive_ended(pool: &PgPool, age: Duration) -> Result<u64, eventstore::Error> {
    let mut total = 0;
    loop {
        let mut tx = pool.begin().await?;
        // Skips the sagas an input holds right now; the next pass takes them.
        let archived: Vec<Uuid> = sqlx::query_scalar(
            "with moved as (
                 delete from sagas where saga_id in (
                     select saga_id from sagas
                      where status in ('completed', 'compensated')
                        and updated_at < now() - make_interval(secs => $1)
                      order by status, updated_at
                      limit $2
                        for update skip locked)
                 returning *)
             insert into archived_sagas (saga_id, saga_type, status, tracking_id, campaign_id,
                    partner_id, correlation_id, tenant, actor, current_step, reason, started_at,
                    updated_at, order_id, definition_version)
             select saga_id, saga_type, status, tracking_id, campaign_id, partner_id,
                    correlation_id, tenant, actor, current_step, reason, started_at, updated_at,
                    order_id, definition_version
               from moved
             returning saga_id",
        )
        .bind(age.as_secs_f64())
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if archived.is_empty() {
            return Ok(total);
        }
        let streams: Vec<String> = archived.iter().map(|id| stream_id(*id)).collect();
        eventstore::archive::archive_streams(&mut tx, &streams).await?;
        sqlx::query("delete from saga_timers where saga_id = any($1)")
            .bind(&archived)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        total += archived.len() as u64;
    }
}

/// How often the archiver looks for sagas old enough (one indexed query when there are none).
pub const ARCHIVE_EVERY: Duration = Duration::from_secs(60);

/// Archives the ended sagas older than `age` now and every [`ARCHIVE_EVERY`], until `stop`.
pub async fn run(pool: &PgPool, age: Duration, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        match archive_ended(pool, age).await {
            Ok(0) => {}
            Ok(archived) => tracing::info!(archived, "archived ended sagas"),
            Err(error) => tracing::warn!(%error, "archiving failed; trying again later"),
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(ARCHIVE_EVERY) => {}
        }
    }
}
