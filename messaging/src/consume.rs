//! The consumer runner every service uses: receive → decode → run the handler in one Postgres
//! transaction that also records the message id in the inbox → commit → ack.
//!
//! Subscriptions are Key_Shared, keyed by aggregate id: the broker gives each key to one consumer
//! of the subscription, so a service runs as many replicas as it likes. The runner keeps one lane per key: a key's messages are handled one
//! after another, in order, while other keys go on concurrently. A handler may name another lane
//! for a message (`Handler::lane`): the aggregate it writes, when messages under many keys write
//! one aggregate.
//! A conflict with a concurrent writer is decided again after a short random pause, as often as it
//! takes (another write went through each time).
//! A database out of reach holds the message in its lane, tried again after growing delays for as
//! long as the outage lasts. Any other transient failure is retried in its lane after a growing
//! delay (pulsar-rs would redeliver a negative ack at once, and out of order), up to
//! `max_attempts`; then, or at once for a permanent
//! failure or an undecodable message, the message is dead-lettered: recorded in the service's
//! `dead_letters` table and queued in its outbox for `<topic>-<subscription>-DLQ` (with its
//! original properties plus the error), in one transaction, and then acknowledged. Operators
//! list, inspect and re-drive dead letters through the query API (`eventstore::dead_letter`). A
//! failing key holds up only itself.
//! The attempt count lives in the process: after a restart a message starts counting again.
//! pulsar-rs reconnects a consumer when the broker goes away, but gives up when it meets an error
//! its retries do not cover (a reset connection, a refused subscription); the runner then
//! subscribes again, after growing delays while that repeats, instead of going quiet. A message
//! the broker still counts as delivered to a runner that has none in hand (its acknowledgement
//! lost with a connection) would hold up its key for every consumer of the subscription: a runner
//! with nothing in hand asks the broker every 30 s, and lets go of such messages by subscribing
//! again.
//!
//! A command found in the inbox is not applied again, but what it sent the first time is queued
//! again under the same message ids (`outbox::requeue_caused_by`): a sender resends a command when
//! its answer never came (it timed out), and answers it again whatever became of the first one.

use crate::admin::dead_letter_topic;
use crate::properties::Properties;
use crate::{Client, Error};
use eventstore::{dead_letter, outbox};
use futures_util::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use pulsar::consumer::{ConsumerOptions, InitialPosition, Message as Received};
use pulsar::{Consumer, SubType, TokioExecutor};
use schemas::{Message, TopicKind, properties as names};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

mod decode;
mod subscription;
mod worker;

pub use decode::Undecodable;
use decode::decode;
use subscription::{HELD_CHECK_EVERY, Subscription};
use worker::{BATCH, Worker};

/// Batches a runner handles at once, each in a transaction of its own (see `worker.rs`): while
/// one is free a message starts at once; while all are busy the messages that arrive meanwhile
/// share the next free one's transaction.
pub const BATCHES: usize = 2;

/// A decoded message with its key and metadata.
#[derive(Debug, Clone)]
pub struct Incoming<T> {
    pub message: T,
    pub key: String,
    pub properties: Properties,
}

/// Why a handler could not apply a message.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Trying again cannot help: the message goes to the dead-letter topic.
    #[error("{code}: {reason}")]
    Permanent { code: String, reason: String },
    /// Worth another attempt after a delay (a database hiccup, the broker away).
    #[error("{0}")]
    Transient(String),
    /// A concurrent writer changed what the handler decided on: decide again on fresh state. A
    /// conflict means another write went through, so it is retried after a short random pause
    /// and never counts toward `max_attempts`: a hot aggregate under load is slow, never a
    /// dead letter.
    #[error("{0}")]
    Conflict(String),
    /// The database cannot be reached: the connection was lost or refused, the server is
    /// shutting down, restarting or out of connections. Nothing is wrong with the message, so it
    /// waits in its lane and is tried again, with the transient backoff, for as long as the outage
    /// lasts; it never counts toward `max_attempts`. (An outage longer than the attempts' delays
    /// would otherwise dead-letter every message in flight: accepted commands lost.)
    #[error("{0}")]
    Unavailable(String),
}

/// Whether `error` says the database cannot be reached, rather than anything about the work.
fn unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Connection exceptions (08), insufficient resources (53: too many connections, disk
        // full, out of memory), and an administrator's or a crash's shutdown, or a server still
        // starting (57P01-57P03).
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("53") || code.starts_with("57P0")
        }),
        _ => false,
    }
}

impl From<sqlx::Error> for HandlerError {
    /// A data exception (SQLSTATE class 22: a value the column cannot hold, out of range, badly
    /// encoded) fails the same way every time, so it is permanent; a database out of reach is
    /// [`HandlerError::Unavailable`]; anything else may pass later.
    fn from(error: sqlx::Error) -> Self {
        let data_exception = error
            .as_database_error()
            .and_then(|e| e.code())
            .is_some_and(|code| code.starts_with("22"));
        if data_exception {
            HandlerError::Permanent {
                code: "data_exception".into(),
                reason: crate::error_chain(&error),
            }
        } else if unreachable(&error) {
            HandlerError::Unavailable(crate::error_chain(&error))
        } else {
            HandlerError::Transient(crate::error_chain(&error))
        }
    }
}

impl From<eventstore::Error> for HandlerError {
    fn from(error: eventstore::Error) -> Self {
        match error {
            eventstore::Error::IdempotencyMismatch { .. } => HandlerError::Permanent {
                code: "id_reused".into(),
                reason: error.to_string(),
            },
            eventstore::Error::Conflict { .. } => HandlerError::Conflict(error.to_string()),
            eventstore::Error::Database(error) => HandlerError::from(error),
            other => HandlerError::Transient(crate::error_chain(&other)),
        }
    }
}

/// What a service does with one message of its topic, inside the transaction the runner opened.
/// Return `Ok` only when every effect is written to `tx`; the runner commits and acknowledges.
pub trait Handler: Send + Sync + 'static {
    type Message: Message + Serialize + Send + Sync + 'static;

    fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<Self::Message>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// The lane `message` is handled in: a lane's messages one after another, in order, lanes
    /// concurrently. By default its key. A handler whose messages under different keys write one
    /// aggregate (a campaign's budget, reserved by many sagas, each keyed by its saga) names that
    /// aggregate, so that they queue instead of racing for its stream.
    fn lane(&self, message: &Self::Message, key: &str) -> String {
        let _ = message;
        key.to_owned()
    }
}

/// Growing delays between attempts: `initial`, doubled each time, at most `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay after the `attempt`-th failure (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// What a runner has done, counted as it goes: exported as Prometheus metrics (see
/// [`crate::metrics`]) and read by tests.
#[derive(Debug)]
pub struct ConsumerStats {
    pub received: Counter,
    /// Handled and committed.
    pub applied: Counter,
    /// Found in the inbox and skipped.
    pub duplicates: Counter,
    /// Transient failures that were retried.
    pub retries: Counter,
    /// Conflicts with concurrent writers, decided again.
    pub conflicts: Counter,
    pub dead_lettered: Counter,
    /// Times the consumer lost its subscription for good and subscribed again.
    pub resubscribed: Counter,
    /// Messages still in hand after `ConsumerSettings::long_in_hand`.
    pub long_in_hand: Counter,
    /// Seconds from receiving a message to its commit (or dead letter), retries included.
    pub handling: Histogram,
    /// Messages in each batch that committed (see [`BATCHES`]).
    pub batched: Histogram,
}

impl Default for ConsumerStats {
    fn default() -> Self {
        ConsumerStats {
            received: Counter::default(),
            applied: Counter::default(),
            duplicates: Counter::default(),
            retries: Counter::default(),
            conflicts: Counter::default(),
            dead_lettered: Counter::default(),
            resubscribed: Counter::default(),
            long_in_hand: Counter::default(),
            handling: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            batched: Histogram::new(exponential_buckets(1.0, 2.0, 6)),
        }
    }
}

impl ConsumerStats {
    pub fn get(counter: &Counter) -> u64 {
        counter.get()
    }

    fn add(counter: &Counter) {
        counter.inc();
    }

    /// Registers the counters under `pulsaga_consumer_*`, labelled with the topic.
    pub fn register(&self, registry: &mut Registry, topic: &str) {
        let registry = registry.sub_registry_with_label((
            std::borrow::Cow::Borrowed("topic"),
            std::borrow::Cow::Owned(topic.to_owned()),
        ));
        for (name, help, counter) in [
            ("consumer_received", "Messages received", &self.received),
            (
                "consumer_applied",
                "Messages handled and committed",
                &self.applied,
            ),
            (
                "consumer_duplicates",
                "Messages found in the inbox and skipped",
                &self.duplicates,
            ),
            (
                "consumer_retries",
                "Transient failures retried",
                &self.retries,
            ),
            (
                "consumer_conflicts",
                "Lost races decided again",
                &self.conflicts,
            ),
            (
                "consumer_dead_lettered",
                "Messages sent to the dead-letter topic",
                &self.dead_lettered,
            ),
            (
                "consumer_resubscribed",
                "Consumers that lost their subscription for good and subscribed again",
                &self.resubscribed,
            ),
            (
                "consumer_long_in_hand",
                "Messages still in hand after the long wait (a handler that may never finish)",
                &self.long_in_hand,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "consumer_handling_seconds",
            "From receipt to commit or dead letter",
            self.handling.clone(),
        );
        registry.register(
            "consumer_batch_messages",
            "Messages handled in each committed transaction",
            self.batched.clone(),
        );
    }
}

/// How a runner subscribes and retries.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// The Key_Shared subscription; several runners with one subscription share its keys.
    pub subscription: String,
    /// The consumer name recorded in the inbox: runners with the same inbox apply a message once
    /// between them, even on different subscriptions. Usually the subscription.
    pub inbox: String,
    /// Attempts before a transiently failing message is dead-lettered.
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// Messages received but not yet acknowledged, across all keys.
    pub max_in_flight: usize,
    /// A message in hand this long is reported (a warning, `long_in_hand`): a handler that never
    /// finishes holds up its lane, and on Key_Shared its key for every consumer.
    pub long_in_hand: Duration,
    pub stats: Arc<ConsumerStats>,
    /// Where the handlers' transactions hand the messages they queue, once committed: the
    /// process's relay (see `eventstore::outbox::Handoff`). None: they are written for any
    /// relay to claim.
    pub handoff: Option<outbox::Handoff>,
}

impl ConsumerSettings {
    pub fn new(subscription: impl Into<String>) -> Self {
        let subscription = subscription.into();
        ConsumerSettings {
            inbox: subscription.clone(),
            subscription,
            max_attempts: 5,
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(10),
            },
            max_in_flight: 256,
            long_in_hand: Duration::from_secs(120),
            stats: Arc::default(),
            handoff: None,
        }
    }
}

/// How a message left the runner.
enum Outcome {
    /// Applied, found to be a duplicate, or dead-lettered: acknowledge it.
    Done,
    /// Shutting down before it was done: leave it unacknowledged for redelivery.
    Abandoned,
}

/// A received message, decoded once when it arrives (its lane depends on its content), or why
/// it could not be.
type Decoded<M> = Result<Incoming<M>, Undecodable>;

/// A message waiting in its lane, as received and as decoded.
type Waiting<M> = (Received<Vec<u8>>, Decoded<M>);

struct Lanes<M> {
    /// Per busy lane, the messages waiting behind the ones being handled.
    waiting: HashMap<String, VecDeque<Waiting<M>>>,
    in_flight: usize,
}

/// A lane and how the messages a worker took from it left the runner, in order.
type Ran = (String, Vec<(Received<Vec<u8>>, Outcome)>);

/// Where a worker reports what it [`Ran`].
type Done = mpsc::UnboundedSender<Ran>;

impl<M: Message + Send + Sync + 'static> Lanes<M> {
    /// `handled` messages of `lane` are done: the ones waiting there start, in order and up to
    /// a batch, unless the runner is stopping (then the lane's waiting messages are dropped
    /// unacknowledged, and redelivered later).
    fn next<H: Handler<Message = M>>(
        &mut self,
        worker: &Arc<Worker<H>>,
        (lane, handled): (String, usize),
        stopping: bool,
        done: &Done,
    ) {
        self.in_flight -= handled;
        let Some(waiting) = self.waiting.get_mut(&lane) else {
            return;
        };
        if waiting.is_empty() || stopping {
            self.in_flight -= waiting.len();
            self.waiting.remove(&lane);
            return;
        }
        let run: Vec<_> = waiting.drain(..waiting.len().min(BATCH)).collect();
        tokio::spawn(worker.clone().handle(lane, run, done.clone()));
    }
}

/// Takes a received message: handled at once if its lane is free, else queued behind it.
fn admit<H: Handler>(
    lanes: &mut Lanes<H::Message>,
    worker: &Arc<Worker<H>>,
    message: Received<Vec<u8>>,
    done: &Done,
) {
    ConsumerStats::add(&worker.settings.stats.received);
    lanes.in_flight += 1;
    let key = key_of(&message);
    let decoded = decode::<H::Message>(&key, &message);
    // An undecodable message keeps its key as its lane; the worker dead-letters it.
    let lane = match &decoded {
        Ok(incoming) => worker.handler.lane(&incoming.message, &key),
        Err(_) => key,
    };
    match lanes.waiting.get_mut(&lane) {
        Some(queue) => queue.push_back((message, decoded)),
        None => {
            lanes.waiting.insert(lane.clone(), VecDeque::new());
            tokio::spawn(
                worker
                    .clone()
                    .handle(lane, vec![(message, decoded)], done.clone()),
            );
        }
    }
}

/// Consumes `topic` with `handler` until `shutdown`, then stops receiving, lets the messages in
/// hand finish (or abandons those waiting for a retry), and closes the consumer.
pub async fn run<H: Handler>(
    client: Arc<Client>,
    pool: PgPool,
    settings: ConsumerSettings,
    handler: Arc<H>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let Some(mut subscription) = Subscription::open::<H>(&client, &settings, &shutdown).await
    else {
        return Ok(());
    };
    let (joining, ready) = mpsc::unbounded_channel();
    let worker = Arc::new(Worker {
        client,
        pool,
        settings,
        handler,
        shutdown: shutdown.clone(),
        joining,
    });
    // Only the batches hold the queue: were they all gone, a message would go alone instead of
    // waiting for them.
    let batches: Vec<_> = {
        let ready = Arc::new(worker::Ready::new(ready));
        (0..BATCHES)
            .map(|_| tokio::spawn(worker::batches(worker.clone(), ready.clone())))
            .collect()
    };
    let (done_sender, mut done) = mpsc::unbounded_channel::<Ran>();
    let mut lanes = Lanes {
        waiting: HashMap::new(),
        in_flight: 0,
    };
    let mut stopping = false;
    let mut held_check = tokio::time::interval(HELD_CHECK_EVERY);
    held_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if stopping && lanes.in_flight == 0 {
            break;
        }
        tokio::select! {
            biased;
            Some((lane, run)) = done.recv() => {
                let handled = run.len();
                for (received, outcome) in run {
                    if let Outcome::Done = outcome
                        && let Err(error) = subscription.consumer.ack(&received).await
                    {
                        tracing::warn!(%error, %lane, "ack failed; the message will be redelivered");
                    }
                }
                lanes.next(&worker, (lane, handled), stopping, &done_sender);
            }
            _ = shutdown.cancelled(), if !stopping => {
                stopping = true;
            }
            _ = held_check.tick(), if !stopping => {
                let idle = lanes.in_flight == 0;
                if !subscription.check_held(&worker, idle, &shutdown).await {
                    break;
                }
            }
            next = subscription.consumer.next(), if !stopping && lanes.in_flight < worker.settings.max_in_flight => {
                match next {
                    Some(Ok(message)) => {
                        subscription.received();
                        admit(&mut lanes, &worker, message, &done_sender);
                    }
                    lost => {
                        let error = lost.and_then(Result::err).map(|e| e.to_string());
                        // Shut down first: what is in hand is left unacknowledged.
                        if !subscription.lost(&worker, error, &shutdown).await {
                            break;
                        }
                    }
                }
            }
        }
    }
    // Nothing is in hand: no batch is in progress.
    for batch in batches {
        batch.abort();
    }
    subscription.close().await;
    Ok(())
}

/// A received message's key (its message id if it has none).
fn key_of(received: &Received<Vec<u8>>) -> String {
    received
        .key()
        .unwrap_or_else(|| format!("{:?}", received.message_id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_out_of_reach_is_waited_for_and_other_failures_are_counted() {
        let lost = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "got 0 bytes at EOF");
        for unreachable in [
            sqlx::Error::Io(lost),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
        ] {
            let error = HandlerError::from(eventstore::Error::Database(unreachable));
            assert!(matches!(error, HandlerError::Unavailable(_)), "{error:?}");
        }
        let other = HandlerError::from(sqlx::Error::RowNotFound);
        assert!(matches!(other, HandlerError::Transient(_)), "{other:?}");
    }
}
