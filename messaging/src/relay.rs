//! The outbox relay: drains a service's outbox to Pulsar in per-key order.
//!
//! It publishes two kinds of rows. What the process's own transactions queued is handed to it
//! in memory once they commit, already leased to it (`outbox::Handoff`): it publishes those at
//! once. The rest it claims (see `eventstore::outbox` for how claims keep per-key order across
//! relays): rows other processes or tools queued free, and rows whose lease lapsed with a relay
//! that died. It claims at start, when the outbox's notification says rows were queued free
//! (raised at their commit), after a full claim, and every `idle_poll` as a fallback.
//!
//! Either way it publishes a batch, and marks published only what the broker confirmed. Within a
//! batch a key's messages go one after another — the next is sent once the previous is confirmed
//! — while different keys go together. A handed row waits until the row it follows (`after`) has
//! gone out: two transactions' handoffs may arrive in the other order than their commits. A key
//! whose message fails is not published further in this round; its rows are released for a claim
//! (by any relay), and for a lease's time the relay releases, rather than publishes, rows of that
//! key handed to it: they may have been written before the release, behind the failed row. So
//! does a handed row that waited for half its lease. While the broker is away the relay keeps
//! trying with a growing delay. Several relays may run on one outbox. Every `vacuum_every`
//! published messages a relay vacuums the outbox itself (see `outbox::vacuum`): what a claim
//! costs must not depend on the server's autovacuum keeping up with a queue table, or being on
//! at all.

use crate::consume::Backoff;
use crate::{Client, Error};
use eventstore::outbox::{self, Claimed, Handed, HandedRow};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Unique per relay instance: it owns the leases.
    pub name: String,
    pub batch: i64,
    /// How long a claim holds its rows, and a handed row from when it was written. A relay that
    /// dies holds them that long: it must be well under a saga step's timeout, or a step whose
    /// command sat in a dead relay's claim is given up before the command goes out. A live relay
    /// publishing for longer only causes duplicates.
    pub lease: Duration,
    /// How long to wait before claiming again when the outbox had no more, unless a notification
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

/// Relays until `shutdown`; the batch in hand is finished first, and rows handed since are
/// released for any relay to claim. `wakeup` is on `outbox::CHANNEL`; `handed` receives what the
/// process's transactions hand over (see `outbox::Handoff`), if they do.
pub async fn run(
    client: Arc<Client>,
    pool: PgPool,
    mut wakeup: eventstore::Wakeup,
    mut handed: Option<mpsc::UnboundedReceiver<Handed>>,
    settings: RelaySettings,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let mut failures = 0;
    let mut since_vacuum = 0;
    let mut vacuuming: Option<tokio::task::JoinHandle<()>> = None;
    let service_pool = pool.clone();
    let mut relay = Relay {
        client: &client,
        pool: own_pool(&pool),
        settings: &settings,
        released: HashMap::new(),
        sent: HashMap::new(),
    };
    let mut waiting: Vec<Handed> = Vec::new();
    let mut claim = true;
    let mut claimed_at = Instant::now();
    while !shutdown.is_cancelled() {
        if let Some(receiver) = &mut handed {
            while let Ok(more) = receiver.try_recv() {
                waiting.push(more);
            }
        }
        let mut round = Ok(RoundOutcome::default());
        if !waiting.is_empty() {
            let held;
            (round, held) = relay.hand_round(std::mem::take(&mut waiting)).await;
            waiting.extend(held);
        }
        if claim && round.is_ok() {
            claimed_at = Instant::now();
            let claimed = relay.claim_round().await;
            // A claim short of a full batch took every row there was: what is queued free since
            // notifies, so the next claim waits for that.
            claim = claimed.as_ref().is_ok_and(|c| {
                c.published + c.failed >= usize::try_from(settings.batch).unwrap_or(usize::MAX)
            });
            round = round.and_then(|handed| Ok(handed + claimed?));
        }
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
        let failed = match round {
            Ok(RoundOutcome { failed: 0, .. }) => false,
            Ok(RoundOutcome { failed, .. }) => {
                tracing::warn!(relay = %settings.name, failed, "broker refused messages; backing off");
                true
            }
            Err(error) => {
                tracing::warn!(relay = %settings.name, error = %crate::error_chain(&error), "relay round failed; backing off");
                true
            }
        };
        if failed {
            // What failed was released, or is still in the outbox: a claim takes it again.
            failures += 1;
            claim = true;
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(settings.backoff.delay(failures)) => {}
            }
            continue;
        }
        failures = 0;
        if claim {
            continue;
        }
        let holding = !waiting.is_empty();
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(HOLD_PAUSE), if holding => {}
            more = next_handed(&mut handed) => match more {
                Some(more) => waiting.push(more),
                None => handed = None,
            },
            _ = wakeup.wait(settings.idle_poll.saturating_sub(claimed_at.elapsed())) => claim = true,
        }
    }
    if let Some(mut receiver) = handed {
        receiver.close();
        while let Ok(more) = receiver.try_recv() {
            waiting.push(more);
        }
    }
    let unpublished: Vec<i64> = waiting
        .iter()
        .flat_map(|h| &h.rows)
        .map(|r| r.row.id)
        .collect();
    if !unpublished.is_empty() {
        let mut conn = relay.pool.acquire().await?;
        outbox::release(&mut conn, &settings.name, &unpublished).await?;
    }
    if let Some(task) = vacuuming {
        task.await.ok();
    }
    Ok(())
}

/// How soon a relay looks again at handed rows waiting for the rows they follow.
const HOLD_PAUSE: Duration = Duration::from_millis(5);

/// The next handoff; never, if there are none to come.
async fn next_handed(handed: &mut Option<mpsc::UnboundedReceiver<Handed>>) -> Option<Handed> {
    match handed {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
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
/// no ping before each use. Its few statements are planned once (see `eventstore::begin`): a
/// mark was planned anew on two executions of three, for an array of ids.
fn own_pool(pool: &PgPool) -> PgPool {
    let options = (*pool.connect_options()).clone().options([
        ("synchronous_commit", "off"),
        ("plan_cache_mode", "force_generic_plan"),
    ]);
    PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect_lazy_with(options)
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundOutcome {
    pub published: usize,
    pub failed: usize,
}

impl std::ops::Add for RoundOutcome {
    type Output = RoundOutcome;

    fn add(self, other: RoundOutcome) -> RoundOutcome {
        RoundOutcome {
            published: self.published + other.published,
            failed: self.failed + other.failed,
        }
    }
}

/// A relay's rounds.
struct Relay<'a> {
    client: &'a Client,
    pool: PgPool,
    settings: &'a RelaySettings,
    /// Keys whose rows this relay released, and when: for a lease's time, rows of theirs handed
    /// to it are released too, not published (see the module's description).
    released: HashMap<String, Instant>,
    /// The newest row of each key this relay published, and when: for a lease's time, a handed
    /// row that follows it may go.
    sent: HashMap<String, (i64, Instant)>,
}

impl Relay<'_> {
    /// Claims one batch and publishes it.
    async fn claim_round(&mut self) -> Result<RoundOutcome, Error> {
        let claimed = {
            let mut conn = self.pool.acquire().await?;
            let (name, batch, lease) = (
                &self.settings.name,
                self.settings.batch,
                self.settings.lease,
            );
            outbox::claim(&mut conn, name, batch, lease).await?
        };
        self.publish(claimed, Vec::new()).await
    }

    /// Publishes what the process's transactions handed over: the rows whose leases have time
    /// left, whose keys it has not released lately, and whose `after` row has gone out (or goes
    /// first in this round); the others it releases, but for those waiting for their `after`,
    /// which it returns, to be tried again.
    async fn hand_round(
        &mut self,
        handed: Vec<Handed>,
    ) -> (Result<RoundOutcome, Error>, Vec<Handed>) {
        let now = Instant::now();
        let lease = self.settings.lease;
        self.released
            .retain(|_, at| now.duration_since(*at) < lease);
        self.sent
            .retain(|_, (_, at)| now.duration_since(*at) < lease);
        let mut rows: Vec<(HandedRow, Instant)> = handed
            .into_iter()
            .flat_map(|h| h.rows.into_iter().map(move |row| (row, h.since)))
            .collect();
        rows.sort_unstable_by_key(|(handed, _)| handed.row.id);
        let (mut publish, mut release, mut held) = (Vec::new(), Vec::new(), Vec::new());
        let mut going: std::collections::HashSet<i64> = Default::default();
        for (HandedRow { row, after }, since) in rows {
            let gone = |id: i64| {
                going.contains(&id)
                    || self
                        .sent
                        .get(&row.message.key)
                        .is_some_and(|(sent, _)| *sent >= id)
            };
            if now.duration_since(since) >= lease / 2
                || self.released.contains_key(&row.message.key)
            {
                release.push(row);
            } else if after.is_none_or(gone) {
                going.insert(row.id);
                publish.push(row);
            } else {
                held.push(Handed {
                    rows: vec![HandedRow { row, after }],
                    since,
                });
            }
        }
        (self.publish(publish, release).await, held)
    }

    /// Publishes `rows` (leased to this relay, in id order), marks what the broker confirmed,
    /// and releases the rest, and `release`.
    async fn publish(
        &mut self,
        rows: Vec<Claimed>,
        mut release: Vec<Claimed>,
    ) -> Result<RoundOutcome, Error> {
        if rows.is_empty() && release.is_empty() {
            return Ok(RoundOutcome::default());
        }
        let (published, failed) = publish_by_key(self.client, &rows).await;
        let now = Instant::now();
        for row in rows.iter().filter(|row| published.contains(&row.id)) {
            let newest = self
                .sent
                .entry(row.message.key.clone())
                .or_insert((row.id, now));
            *newest = (newest.0.max(row.id), now);
        }
        let mut conn = self.pool.acquire().await?;
        let marked = outbox::mark_published(&mut conn, &self.settings.name, &published).await?;
        if marked as usize != published.len() {
            tracing::warn!(relay = %self.settings.name, "a lease expired during publishing; those rows will be published again");
        }
        release.extend(rows.into_iter().filter(|row| !published.contains(&row.id)));
        if !release.is_empty() {
            let ids: Vec<i64> = release.iter().map(|row| row.id).collect();
            outbox::release(&mut conn, &self.settings.name, &ids).await?;
            for row in release {
                self.released.insert(row.message.key, now);
            }
        }
        Ok(RoundOutcome {
            published: published.len(),
            failed,
        })
    }
}

/// Publishes `rows` (in id order), a key's one after another and the keys together: round r
/// sends the r-th message of every key still going. A key stops at its first failure. Returns
/// the ids the broker confirmed and how many failed.
async fn publish_by_key(client: &Client, rows: &[Claimed]) -> (Vec<i64>, usize) {
    let mut order: Vec<&str> = Vec::new();
    let mut queues: HashMap<&str, VecDeque<&Claimed>> = HashMap::new();
    for row in rows {
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
    (published, failed)
}
