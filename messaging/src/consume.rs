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
    /// Per busy lane, the messages waiting behind the one being handled.
    waiting: HashMap<String, VecDeque<Waiting<M>>>,
    in_flight: usize,
}

/// Where a worker reports how its message left the runner.
type Done = mpsc::UnboundedSender<(String, Received<Vec<u8>>, Outcome)>;

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
            tokio::spawn(worker.clone().handle(lane, message, decoded, done.clone()));
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
    let topic = H::Message::TOPIC;
    let Some((mut consumer, mut name)) = subscribe(&client, topic.name, &settings, &shutdown).await
    else {
        return Ok(());
    };
    let admin = crate::admin::Admin::new(&client.settings.admin_url);
    let worker = Arc::new(Worker {
        client,
        pool,
        settings,
        handler,
        shutdown: shutdown.clone(),
    });
    let (done_sender, mut done) = mpsc::unbounded_channel::<(String, Received<Vec<u8>>, Outcome)>();
    let mut lanes = Lanes {
        waiting: HashMap::new(),
        in_flight: 0,
    };
    let mut stopping = false;
    // Ends of the consumer's stream since it last received a message.
    let mut ended = 0;
    let mut held_check = tokio::time::interval(HELD_CHECK_EVERY);
    held_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The broker said, at the last check, that it holds messages this consumer never acked.
    let mut held_before = false;
    loop {
        if stopping && lanes.in_flight == 0 {
            break;
        }
        tokio::select! {
            biased;
            Some((key, received, outcome)) = done.recv() => {
                lanes.in_flight -= 1;
                if let Outcome::Done = outcome
                    && let Err(error) = consumer.ack(&received).await
                {
                    tracing::warn!(%error, %key, "ack failed; the message will be redelivered");
                }
                let next = lanes.waiting.get_mut(&key).and_then(VecDeque::pop_front);
                match next {
                    Some((message, decoded)) if !stopping => {
                        tokio::spawn(worker.clone().handle(key, message, decoded, done_sender.clone()));
                    }
                    Some(_) => {
                        // Not started before shutdown: dropped unacknowledged, redelivered later.
                        let abandoned = lanes.waiting.remove(&key).map_or(0, |rest| rest.len()) + 1;
                        lanes.in_flight -= abandoned;
                    }
                    None => {
                        lanes.waiting.remove(&key);
                    }
                }
            }
            _ = shutdown.cancelled(), if !stopping => {
                stopping = true;
            }
            // A Key_Shared subscription gives a key to a new consumer only once the messages of
            // that key delivered before are acknowledged: one the broker still counts as
            // delivered here (an acknowledgement lost as the connection went) holds up its key,
            // and the runner must let it go. Twice in a row, with nothing in hand and nothing
            // received between: the consumer closes, which redelivers it.
            _ = held_check.tick(), if !stopping => {
                let held = if lanes.in_flight == 0 {
                    held_here(&admin, &worker, topic.name, &name).await
                } else {
                    0
                };
                if held > 0 && held_before {
                    tracing::warn!(topic = topic.name, held, "the broker holds messages delivered here that none of ours has in hand; subscribing again");
                    held_before = false;
                    match resubscribe(&worker, 1, &shutdown).await {
                        Some(fresh) => (consumer, name) = fresh,
                        None => break,
                    }
                } else {
                    held_before = held > 0;
                }
            }
            next = consumer.next(), if !stopping && lanes.in_flight < worker.settings.max_in_flight => {
                match next {
                    Some(Ok(message)) => {
                        ended = 0;
                        held_before = false;
                        admit(&mut lanes, &worker, message, &done_sender);
                    }
                    // pulsar-rs reports an error when reconnecting fails (one its retries do not
                    // cover, met while the broker restarts), leaving the consumer subscribed to
                    // nothing, and ends the stream when it gives up altogether. Either way a new
                    // consumer takes over: messages in hand are acknowledged through it, and those
                    // the old one held come again and are found in the inbox.
                    lost => {
                        ended += 1;
                        let error = lost.and_then(Result::err).map(|e| e.to_string());
                        tracing::warn!(topic = topic.name, ?error, "the consumer lost its subscription; subscribing again");
                        match resubscribe(&worker, ended, &shutdown).await {
                            Some(fresh) => (consumer, name) = fresh,
                            // Shut down first: what is in hand is left unacknowledged.
                            None => break,
                        }
                    }
                }
            }
        }
    }
    if let Err(error) = consumer.close().await {
        tracing::debug!(%error, "closing the consumer failed");
    }
    Ok(())
}

/// How often a runner with nothing in hand asks the broker whether it counts messages as
/// delivered to it.
const HELD_CHECK_EVERY: Duration = Duration::from_secs(30);

/// A subscribed consumer and the name the broker knows it by.
type Subscribed = (Consumer<Vec<u8>, TokioExecutor>, String);

/// Subscribes (Key_Shared, declaring the topic's Avro schema) under a name of its own, retrying
/// with growing delays while the broker refuses; `None` once `shutdown` fires first.
async fn subscribe(
    client: &Client,
    topic: &str,
    settings: &ConsumerSettings,
    shutdown: &CancellationToken,
) -> Option<Subscribed> {
    let mut attempt = 1;
    loop {
        let name = format!(
            "{}-{}",
            settings.subscription,
            uuid::Uuid::new_v4().simple()
        );
        let built = client
            .pulsar
            .consumer()
            .with_topic(client.settings.topic(topic))
            .with_consumer_name(name.clone())
            .with_subscription(settings.subscription.clone())
            .with_subscription_type(SubType::KeyShared)
            .with_options(ConsumerOptions {
                initial_position: InitialPosition::Earliest,
                durable: Some(true),
                schema: crate::client::avro_schema(topic),
                ..ConsumerOptions::default()
            })
            .build()
            .await;
        match built {
            Ok(consumer) => return Some((consumer, name)),
            Err(error) => {
                let delay = settings.backoff.delay(attempt);
                tracing::warn!(%topic, error = %crate::error_chain(&error), ?delay, "subscribing failed; trying again");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
                attempt += 1;
            }
        }
    }
}

/// Drops the consumer (the broker redelivers what it held) for a new one, after the backoff's
/// delay for the `attempt`-th time in a row; `None` once `shutdown` fires first.
async fn resubscribe<H: Handler>(
    worker: &Worker<H>,
    attempt: u32,
    shutdown: &CancellationToken,
) -> Option<Subscribed> {
    ConsumerStats::add(&worker.settings.stats.resubscribed);
    tokio::select! {
        _ = shutdown.cancelled() => None,
        _ = tokio::time::sleep(worker.settings.backoff.delay(attempt)) => {
            subscribe(&worker.client, H::Message::TOPIC.name, &worker.settings, shutdown).await
        }
    }
}

/// The messages the broker counts as delivered to the consumer `name` and not acknowledged
/// (0 when it cannot say).
async fn held_here<H>(
    admin: &crate::admin::Admin,
    worker: &Worker<H>,
    topic: &str,
    name: &str,
) -> u64 {
    let stats = match admin.topic_stats(&worker.client.settings, topic).await {
        Ok(stats) => stats.unwrap_or_default(),
        Err(error) => {
            tracing::debug!(%error, topic, "reading the topic's stats failed");
            return 0;
        }
    };
    held_by(&stats, &worker.settings.subscription, name)
}

/// In a topic's stats: the unacknowledged messages of the consumer `name` of `subscription`.
fn held_by(stats: &serde_json::Value, subscription: &str, name: &str) -> u64 {
    stats["subscriptions"][subscription]["consumers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|consumer| consumer["consumerName"] == name)
        .filter_map(|consumer| consumer["unackedMessages"].as_u64())
        .sum()
}

struct Worker<H> {
    client: Arc<Client>,
    pool: PgPool,
    settings: ConsumerSettings,
    handler: Arc<H>,
    shutdown: CancellationToken,
}

/// Why a message is dead-lettered.
struct DeadLetter {
    cause: &'static str,
    error: String,
    attempts: u32,
    /// The message decoded, unless that is what failed.
    body: Option<serde_json::Value>,
}

impl<H: Handler> Worker<H> {
    async fn handle(
        self: Arc<Self>,
        lane: String,
        received: Received<Vec<u8>>,
        decoded: Decoded<H::Message>,
        done: Done,
    ) {
        let key = key_of(&received);
        let span = tracing::info_span!("handle message", topic = H::Message::TOPIC.name, %key);
        let traceparent = received
            .metadata()
            .properties
            .iter()
            .find(|kv| kv.key == names::TRACEPARENT)
            .map(|kv| kv.value.as_str());
        crate::trace::continue_trace(&span, traceparent);
        let started = std::time::Instant::now();
        // Said once: everything behind it in its lane, and on Key_Shared its key, waits.
        let outcome = {
            let work = async {
                match self.process(decoded).await {
                    Ok(()) => Outcome::Done,
                    Err(dead) => self.dead_letter(&key, &received, dead).await,
                }
            }
            .instrument(span);
            tokio::pin!(work);
            tokio::select! {
                outcome = &mut work => outcome,
                _ = tokio::time::sleep(self.settings.long_in_hand) => {
                    ConsumerStats::add(&self.settings.stats.long_in_hand);
                    tracing::warn!(topic = H::Message::TOPIC.name, %key, after = ?self.settings.long_in_hand, "a message is still in hand; its lane waits behind it");
                    work.await
                }
            }
        };
        self.settings
            .stats
            .handling
            .observe(started.elapsed().as_secs_f64());
        // The runner is gone only when shutting down; the message is then redelivered later.
        let _ = done.send((lane, received, outcome));
    }

    async fn process(&self, decoded: Decoded<H::Message>) -> Result<(), DeadLetter> {
        let incoming = decoded.map_err(|error| DeadLetter {
            cause: "undecodable",
            error: error.to_string(),
            attempts: 1,
            body: None,
        })?;
        let body = || serde_json::to_value(&incoming.message).ok();
        let mut attempt = 1;
        let (mut conflicts, mut outage) = (0, 0);
        loop {
            match self.attempt(&incoming).await {
                Ok(()) => return Ok(()),
                Err(HandlerError::Permanent { code, reason }) => {
                    return Err(DeadLetter {
                        cause: "permanent",
                        error: format!("{code}: {reason}"),
                        attempts: attempt,
                        body: body(),
                    });
                }
                Err(HandlerError::Transient(reason)) if attempt >= self.settings.max_attempts => {
                    return Err(DeadLetter {
                        cause: "attempts_exhausted",
                        error: reason,
                        attempts: attempt,
                        body: body(),
                    });
                }
                Err(HandlerError::Conflict(reason)) => {
                    conflicts += 1;
                    tracing::debug!(message_id = %incoming.properties.message_id, conflicts, %reason, "deciding again after a conflict");
                    ConsumerStats::add(&self.settings.stats.conflicts);
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(conflict_pause(conflicts)) => {}
                    }
                }
                Err(HandlerError::Unavailable(reason)) => {
                    outage += 1;
                    let delay = self.settings.backoff.delay(outage);
                    tracing::warn!(message_id = %incoming.properties.message_id, outage, ?delay, %reason, "database out of reach; trying again");
                    ConsumerStats::add(&self.settings.stats.retries);
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Err(HandlerError::Transient(reason)) => {
                    outage = 0;
                    let delay = self.settings.backoff.delay(attempt);
                    tracing::warn!(message_id = %incoming.properties.message_id, attempt, ?delay, %reason, "retrying message");
                    ConsumerStats::add(&self.settings.stats.retries);
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    attempt += 1;
                }
            }
        }
    }

    async fn attempt(&self, incoming: &Incoming<H::Message>) -> Result<(), HandlerError> {
        let mut tx = self.pool.begin().await?;
        if !eventstore::record_message(
            &mut tx,
            &self.settings.inbox,
            incoming.properties.message_id,
        )
        .await?
        {
            ConsumerStats::add(&self.settings.stats.duplicates);
            if H::Message::TOPIC.kind == TopicKind::Command {
                // A resent command (its sender timed out waiting): the sender gets the answer
                // again, whatever became of the first one.
                let requeued =
                    outbox::requeue_caused_by(&mut tx, incoming.properties.message_id).await?;
                tx.commit().await?;
                tracing::debug!(message_id = %incoming.properties.message_id, requeued, "duplicate command answered again");
            } else {
                tracing::debug!(message_id = %incoming.properties.message_id, "duplicate message skipped");
            }
            return Ok(());
        }
        self.handler.handle(&mut tx, incoming).await?;
        tx.commit().await?;
        ConsumerStats::add(&self.settings.stats.applied);
        Ok(())
    }

    /// Records the message as a dead letter and queues it for the dead-letter topic, in one
    /// transaction (see `eventstore::dead_letter`), trying again while the database is away.
    async fn dead_letter(
        &self,
        key: &str,
        received: &Received<Vec<u8>>,
        dead: DeadLetter,
    ) -> Outcome {
        let topic = H::Message::TOPIC.name;
        let original: std::collections::BTreeMap<String, String> = received
            .metadata()
            .properties
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect();
        let origin = origin_message_id(received.message_id());
        let mut properties = original.clone();
        properties.insert(names::DEAD_LETTER_ERROR.into(), dead.error.clone());
        properties.insert(names::DEAD_LETTER_CAUSE.into(), dead.cause.into());
        properties.insert(names::ATTEMPTS.into(), dead.attempts.to_string());
        properties.insert(names::REAL_TOPIC.into(), self.client.settings.topic(topic));
        properties.insert(names::ORIGIN_MESSAGE_ID.into(), origin.clone());
        let copy = outbox::Message {
            topic: dead_letter_topic(topic, &self.settings.subscription),
            key: key.to_owned(),
            payload: received.payload.data.clone(),
            properties,
        };
        let letter = dead_letter::NewDeadLetter {
            id: uuid::Uuid::now_v7(),
            topic: topic.to_owned(),
            subscription: self.settings.subscription.clone(),
            origin_message_id: origin,
            key: key.to_owned(),
            payload: received.payload.data.clone(),
            properties: original,
            body: dead.body,
            cause: dead.cause.to_owned(),
            error: dead.error,
            attempts: i32::try_from(dead.attempts).unwrap_or(i32::MAX),
        };
        tracing::warn!(%key, cause = dead.cause, error = %letter.error, attempts = dead.attempts, "dead-lettering message");
        let mut attempt = 1;
        loop {
            match self.record_dead_letter(&letter, &copy).await {
                Ok(recorded) => {
                    if recorded {
                        ConsumerStats::add(&self.settings.stats.dead_lettered);
                    }
                    return Outcome::Done;
                }
                Err(error) => {
                    tracing::warn!(error = %crate::error_chain(&error), attempt, "recording a dead letter failed");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Outcome::Abandoned,
                        _ = tokio::time::sleep(self.settings.backoff.delay(attempt)) => {}
                    }
                    attempt += 1;
                }
            }
        }
    }

    async fn record_dead_letter(
        &self,
        letter: &dead_letter::NewDeadLetter,
        copy: &outbox::Message,
    ) -> Result<bool, eventstore::Error> {
        let mut tx = self.pool.begin().await?;
        let recorded = dead_letter::record(&mut tx, letter, copy).await?;
        tx.commit().await?;
        Ok(recorded)
    }
}

/// The pause before deciding again after the `conflicts`-th conflict: random, so that writers
/// that collided spread out, within a window that doubles from 2 ms up to 256 ms.
fn conflict_pause(conflicts: u32) -> Duration {
    let window_ms = 2u64 << conflicts.clamp(1, 8).saturating_sub(1);
    Duration::from_micros(rand::random_range(0..window_ms * 1000))
}

/// A received message's key (its message id if it has none).
fn key_of(received: &Received<Vec<u8>>) -> String {
    received
        .key()
        .unwrap_or_else(|| format!("{:?}", received.message_id()))
}

/// A message id as Pulsar's own clients write it into a dead letter's `ORIGIN_MESSAGE_ID`:
/// `ledger:entry:partition:batch`, with -1 for no partition or batch.
fn origin_message_id(id: &pulsar::proto::MessageIdData) -> String {
    format!(
        "{}:{}:{}:{}",
        id.ledger_id,
        id.entry_id,
        id.partition.unwrap_or(-1),
        id.batch_index.unwrap_or(-1)
    )
}

/// Why a received message cannot be handled as its topic's type: it is dead-lettered at once.
/// A message holding U+0000 is refused too: every service stores its text in PostgreSQL, which
/// cannot hold that character, so the message would fail the same way on every attempt.
#[derive(Debug, thiserror::Error)]
pub enum Undecodable {
    #[error("property {0} holds U+0000 (NUL), which PostgreSQL text cannot store")]
    NulProperty(String),
    #[error("{0}")]
    Properties(#[from] crate::PropertyError),
    /// The payload, with the cause's chain.
    #[error("{0}")]
    Payload(String),
    #[error("a text field holds U+0000 (NUL), which PostgreSQL text cannot store")]
    NulText,
}

fn holds_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(fields) => fields.values().any(holds_nul),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// The dead-letter topic of a subscription, by Pulsar's convention.
pub fn dead_letter_topic(topic: &str, subscription: &str) -> String {
    format!("{topic}-{subscription}-DLQ")
}

fn decode<T: Message + Serialize>(key: &str, received: &Received<Vec<u8>>) -> Decoded<T> {
    let map: HashMap<String, String> = received
        .metadata()
        .properties
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    if let Some(name) = map
        .iter()
        .find_map(|(name, value)| value.contains('\0').then_some(name))
    {
        return Err(Undecodable::NulProperty(name.clone()));
    }
    let properties = Properties::parse(&map, T::TOPIC.version())?;
    let message = T::decode_version(&received.payload.data, properties.schema_version)
        .map_err(|e| Undecodable::Payload(crate::error_chain(&e)))?;
    let fields = serde_json::to_value(&message).map_err(|e| Undecodable::Payload(e.to_string()))?;
    if holds_nul(&fields) {
        return Err(Undecodable::NulText);
    }
    Ok(Incoming {
        message,
        key: key.to_owned(),
        properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_messages_the_broker_holds_for_a_consumer_are_read_from_its_stats() {
        let stats = serde_json::json!({
            "subscriptions": {
                "sagas": { "consumers": [
                    { "consumerName": "sagas-a", "unackedMessages": 2 },
                    { "consumerName": "sagas-b", "unackedMessages": 0 },
                ] },
                "other": { "consumers": [ { "consumerName": "sagas-a", "unackedMessages": 7 } ] },
            }
        });
        assert_eq!(held_by(&stats, "sagas", "sagas-a"), 2);
        assert_eq!(held_by(&stats, "sagas", "sagas-b"), 0);
        assert_eq!(held_by(&stats, "sagas", "gone"), 0);
        assert_eq!(held_by(&serde_json::Value::Null, "sagas", "sagas-a"), 0);
    }

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
