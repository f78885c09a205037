//! The outbox relay: drains a service's outbox to Pulsar in per-key order.
//!
//! Each round claims a batch (see `eventstore::outbox` for how claims keep per-key order across
//! relays), publishes it, and marks published only what the broker confirmed. Within a batch a
//! key's messages go one after another — the next is sent once the previous is confirmed — while
//! different keys go together. A key whose message fails is not published further in this round;
//! its rows are released for the next. While the broker is away the relay keeps the rows and
//! retries with a growing delay. Several relays may run on one outbox. A relay whose round took
//! less than a full batch (all there was) waits for the outbox's notification (raised at the commit
//! that queued messages), polling only as a fallback. Every `vacuum_every` published messages a
//! relay vacuums the outbox itself (see `outbox::vacuum`): what a claim costs must not depend on
//! the server's autovacuum keeping up with a queue table, or being on at all.

use crate::consume::Backoff;
use crate::{Client, Error};
use eventstore::outbox::{self, Claimed};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Unique per relay instance: it owns the leases.
    pub name: String,
    pub batch: i64,
    /// How long a claim holds its rows. A relay that dies holds them that long: it must be well
    /// under a saga step's timeout, or a step whose command sat in a dead relay's claim is given
    /// up before the command goes out. A live relay publishing for longer only causes duplicates.
    pub lease: Duration,
    /// How long to wait before looking again when the outbox is empty, unless a notification
    /// (see `outbox::CHANNEL`) says there is something sooner.
    pub idle_poll: Duration,
    pub backoff: Backoff,
    /// Published messages between two vacuums of the outbox.
    pub vacuum_every: usize,
}

impl RelaySettings {
    pub fn new(name: impl Into<String>) -> Self {
        RelaySettings {
            name: name.into(),
            batch: 128,
            lease: Duration::from_secs(5),
            idle_poll: Duration::from_secs(2),
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(5),
            },
            vacuum_every: 2_000,
        }
    }
}

/// Relays until `shutdown`; the batch in hand is finished first. `wakeup` is on `outbox::CHANNEL`.
pub async fn run(
    client: Arc<Client>,
    pool: PgPool,
    mut wakeup: eventstore::Wakeup,
    settings: RelaySettings,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let mut failures = 0;
    let mut since_vacuum = 0;
    let mut vacuuming: Option<tokio::task::JoinHandle<()>> = None;
    let (service_pool, pool) = (pool.clone(), own_pool(&pool));
    while !shutdown.is_cancelled() {
        let round = relay_once(&client, &pool, &settings).await;
        if let Ok(RoundOutcome { published, .. }) = round {
            since_vacuum += published;
            // Beside the rounds, on the service's pool: under load a vacuum takes a second or
            // more, which the rounds need not wait for. One at a time.
            if since_vacuum >= settings.vacuum_every
                && vacuuming.as_ref().is_none_or(|task| task.is_finished())
            {
                since_vacuum = 0;
                let (pool, name) = (service_pool.clone(), settings.name.clone());
                vacuuming = Some(tokio::spawn(async move { vacuum(&pool, &name).await }));
            }
        }
        let pause = match round {
            Ok(RoundOutcome {
                published,
                failed: 0,
            }) => {
                failures = 0;
                // A claim short of a full batch took every row there was: what was queued since
                // has notified, so the next round waits for that instead of claiming at once.
                (published < usize::try_from(settings.batch).unwrap_or(usize::MAX))
                    .then_some(settings.idle_poll)
            }
            Ok(RoundOutcome { failed, .. }) => {
                failures += 1;
                tracing::warn!(relay = %settings.name, failed, "broker refused messages; backing off");
                Some(settings.backoff.delay(failures))
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(relay = %settings.name, error = %crate::error_chain(&error), "relay round failed; backing off");
                Some(settings.backoff.delay(failures))
            }
        };
        match pause {
            Some(pause) if failures == 0 => {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = wakeup.wait(pause) => {}
                }
            }
            Some(pause) => {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            None => {}
        }
    }
    if let Some(task) = vacuuming {
        task.await.ok();
    }
    Ok(())
}

async fn vacuum(pool: &PgPool, relay: &str) {
    let vacuumed = match pool.acquire().await {
        Ok(mut conn) => outbox::vacuum(&mut conn).await,
        Err(error) => Err(error.into()),
    };
    if let Err(error) = vacuumed {
        tracing::warn!(%relay, error = %crate::error_chain(&error), "vacuuming the outbox failed");
    }
}

/// The relay's own connection to the service's database, on which a claim or a mark is not a
/// durable commit: one lost in a crash only means that its rows are published again, which
/// consumers skip by message id (delivery is at least once). Two fsyncs less per round, and
/// no ping before each use.
fn own_pool(pool: &PgPool) -> PgPool {
    let options = (*pool.connect_options())
        .clone()
        .options([("synchronous_commit", "off")]);
    PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect_lazy_with(options)
}

/// What one round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundOutcome {
    pub published: usize,
    pub failed: usize,
}

/// Claims one batch and publishes it.
pub async fn relay_once(
    client: &Client,
    pool: &PgPool,
    settings: &RelaySettings,
) -> Result<RoundOutcome, Error> {
    let claimed = {
        let mut conn = pool.acquire().await?;
        outbox::claim(&mut conn, &settings.name, settings.batch, settings.lease).await?
    };
    if claimed.is_empty() {
        return Ok(RoundOutcome {
            published: 0,
            failed: 0,
        });
    }
    // Queues per key, in claim (id) order; round r sends the r-th message of every live key.
    let mut order: Vec<&str> = Vec::new();
    let mut queues: HashMap<&str, std::collections::VecDeque<&Claimed>> = HashMap::new();
    for row in &claimed {
        let key = row.message.key.as_str();
        queues
            .entry(key)
            .or_insert_with(|| {
                order.push(key);
                Default::default()
            })
            .push_back(row);
    }
    let mut published = Vec::new();
    let mut failed = 0;
    loop {
        let round: Vec<&Claimed> = order
            .iter()
            .filter_map(|key| queues.get_mut(key)?.pop_front())
            .collect();
        if round.is_empty() {
            break;
        }
        let messages: Vec<outbox::Message> = round.iter().map(|row| row.message.clone()).collect();
        for (row, result) in round.iter().zip(client.publish_all(&messages).await) {
            match result {
                Ok(()) => published.push(row.id),
                Err(error) => {
                    tracing::debug!(id = row.id, key = %row.message.key, %error, "publish failed");
                    failed += 1;
                    queues.remove(row.message.key.as_str());
                }
            }
        }
    }
    let mut conn = pool.acquire().await?;
    let marked = outbox::mark_published(&mut conn, &settings.name, &published).await?;
    if marked as usize != published.len() {
        tracing::warn!(relay = %settings.name, "a lease expired during publishing; those rows will be published again");
    }
    let unpublished: Vec<i64> = claimed
        .iter()
        .map(|row| row.id)
        .filter(|id| !published.contains(id))
        .collect();
    if !unpublished.is_empty() {
        outbox::release(&mut conn, &settings.name, &unpublished).await?;
    }
    Ok(RoundOutcome {
        published: published.len(),
        failed,
    })
}
