//! Projections: read models fed from the service's global log, each with its checkpoint.
//!
//! A projection applies events in global-log order; the read model's changes and the checkpoint
//! commit together, so a crash never applies an event twice or skips one. Several instances of a
//! service may run the same projection: a transaction-scoped advisory lock on its name lets one
//! batch run at a time. A rebuild resets the read model and replays the log from zero, then
//! compares what it built with what was live.

use crate::{Error, RecordedEvent, load_checkpoint, read_all, store_checkpoint};
use sqlx::{PgConnection, PgPool};
use std::future::Future;
use std::time::Duration;

/// A read model built from the global log. `snapshot` renders its whole state canonically (sorted,
/// every column), so that two builds can be compared.
pub trait Projection: Send + Sync {
    /// Names the checkpoint and the lock.
    fn name(&self) -> &'static str;

    /// Applies one event (ignoring the kinds it does not use) inside the batch's transaction.
    fn apply(
        &self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Empties the read model.
    fn reset(&self, tx: &mut PgConnection) -> impl Future<Output = Result<(), Error>> + Send;

    /// The whole read model, canonically rendered.
    fn snapshot(
        &self,
        conn: &mut PgConnection,
    ) -> impl Future<Output = Result<Vec<String>, Error>> + Send;
}

const BATCH: i64 = 500;

/// Applies the next batch of events after the checkpoint; returns how many it applied (0: caught
/// up, or another instance holds the batch).
pub async fn apply_batch<P: Projection>(pool: &PgPool, projection: &P) -> Result<usize, Error> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("select pg_try_advisory_xact_lock(hashtext($1))")
        .bind(projection.name())
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(0);
    }
    let after = load_checkpoint(&mut tx, projection.name()).await?;
    let page = read_all(&mut tx, after, BATCH).await?;
    for event in &page.events {
        projection.apply(&mut tx, event).await?;
    }
    if !page.events.is_empty() {
        store_checkpoint(&mut tx, projection.name(), page.next).await?;
    }
    tx.commit().await?;
    Ok(page.events.len())
}

/// Applies batches until the projection has caught up with the log; returns the events applied.
pub async fn catch_up<P: Projection>(pool: &PgPool, projection: &P) -> Result<usize, Error> {
    let mut total = 0;
    loop {
        let applied = apply_batch(pool, projection).await?;
        total += applied;
        if applied == 0 {
            return Ok(total);
        }
    }
}

/// Keeps the projection up to date until `stop` resolves, polling every `idle` when caught up.
pub async fn run<P: Projection>(
    pool: &PgPool,
    projection: &P,
    idle: Duration,
    stop: impl Future<Output = ()>,
) -> Result<(), Error> {
    tokio::pin!(stop);
    loop {
        let applied = apply_batch(pool, projection).await?;
        if applied == 0 {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tokio::time::sleep(idle) => {}
            }
        }
    }
}

/// What a rebuild found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuild {
    /// Events replayed.
    pub events: usize,
    /// Whether the rebuilt read model equals the one that was live.
    pub matches: bool,
    /// Rows only in the live model, and rows only in the rebuilt one (at most a few of each).
    pub only_live: Vec<String>,
    pub only_rebuilt: Vec<String>,
}

/// Rebuilds the read model from zero in one transaction, holding the projection's lock, and
/// compares it with the live one up to the same position. `progress` is called with the number
/// of events replayed so far.
pub async fn rebuild<P: Projection>(
    pool: &PgPool,
    projection: &P,
    mut progress: impl FnMut(usize) + Send,
) -> Result<Rebuild, Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("select pg_advisory_xact_lock(hashtext($1))")
        .bind(projection.name())
        .execute(&mut *tx)
        .await?;
    let live_position = load_checkpoint(&mut tx, projection.name()).await?;
    let live = projection.snapshot(&mut tx).await?;
    projection.reset(&mut tx).await?;
    let mut after = 0;
    let mut events = 0;
    while after != live_position {
        let page = read_all(&mut tx, after, BATCH).await?;
        if page.events.is_empty() {
            break;
        }
        for event in &page.events {
            projection.apply(&mut tx, event).await?;
            events += 1;
            if event.position == live_position {
                break;
            }
        }
        after = page
            .events
            .iter()
            .map(|e| e.position)
            .find(|p| *p == live_position)
            .unwrap_or(page.next);
        progress(events);
    }
    let rebuilt = projection.snapshot(&mut tx).await?;
    store_checkpoint(&mut tx, projection.name(), after).await?;
    tx.commit().await?;
    let only_live: Vec<String> = live
        .iter()
        .filter(|row| !rebuilt.contains(row))
        .take(5)
        .cloned()
        .collect();
    let only_rebuilt: Vec<String> = rebuilt
        .iter()
        .filter(|row| !live.contains(row))
        .take(5)
        .cloned()
        .collect();
    Ok(Rebuild {
        events,
        matches: live == rebuilt,
        only_live,
        only_rebuilt,
    })
}
