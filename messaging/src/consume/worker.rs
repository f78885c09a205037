//! One message in hand: handled in a transaction with retries (conflicts, outages, transient
//! failures), or dead-lettered with why.
//!
//! A message's first attempt joins a batch: when every batch in progress is busy (a few at a
//! time, see [`batches`]), the messages of other lanes that are ready by the time one is free
//! are handled in one transaction, each recorded in the inbox and handled as it would be alone,
//! with one commit for all of them. Under light load a batch holds one message and lanes run
//! side by side; under load the batches grow, and a commit, with its round trips and its flush
//! to disk, is shared. If anything in a batch fails, the whole batch is rolled back: the message
//! that failed takes that as its first attempt and goes on alone, with the retries above, and
//! the others are handled alone as if they had not been in the batch (their attempts and
//! retries are not counted for it).

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::oneshot;

/// Messages handled together at most.
const BATCH: usize = 32;

pub(super) struct Worker<H: Handler> {
    pub(super) client: Arc<Client>,
    pub(super) pool: PgPool,
    pub(super) settings: ConsumerSettings,
    pub(super) handler: Arc<H>,
    pub(super) shutdown: CancellationToken,
    /// Where a message's first attempt joins a batch.
    pub(super) joining: mpsc::UnboundedSender<Joining<H::Message>>,
}

/// A message waiting for its batch: the message, the span it is handled in, and where it hears
/// what became of it.
pub(super) type Joining<M> = (Arc<Incoming<M>>, tracing::Span, oneshot::Sender<Together>);

/// What a batch did with a message.
pub(super) enum Together {
    Committed,
    /// The message failed the batch: its first attempt.
    Failed(HandlerError),
    /// Another message failed the batch, or its transaction did: to be handled alone.
    Alone,
}

/// What applying a message in a transaction came to.
enum Applied {
    Handled,
    /// Found in the inbox: skipped, or for a command its answer queued again.
    Duplicate,
}

/// The messages waiting for a batch, shared by the [`BATCHES`] batches of a runner.
pub(super) struct Ready<M> {
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<Joining<M>>>,
    /// Batches not in progress.
    idle: AtomicUsize,
}

impl<M> Ready<M> {
    pub(super) fn new(queue: mpsc::UnboundedReceiver<Joining<M>>) -> Self {
        Ready {
            queue: tokio::sync::Mutex::new(queue),
            idle: AtomicUsize::new(BATCHES),
        }
    }
}

/// Takes the next message and, when no other batch is free to take them, the others that are
/// ready, up to [`BATCH`]; handles them in one transaction and tells each what became of it.
/// Until the runner ends (it aborts the batches).
pub(super) async fn batches<H: Handler>(worker: Arc<Worker<H>>, ready: Arc<Ready<H::Message>>) {
    loop {
        let batch = {
            let mut queue = ready.queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let others_idle = ready.idle.fetch_sub(1, Ordering::AcqRel) - 1;
            let mut batch = vec![first];
            while others_idle == 0 && batch.len() < BATCH {
                match queue.try_recv() {
                    Ok(joining) => batch.push(joining),
                    Err(_) => break,
                }
            }
            batch
        };
        let (committed, mut culprit) = match worker.apply_together(&batch).await {
            Ok(()) => (true, None),
            Err((culprit, error)) => {
                tracing::debug!(messages = batch.len(), %error, "a batch failed; its messages go alone");
                (false, culprit.map(|i| (i, error)))
            }
        };
        for (i, (_, _, reply)) in batch.into_iter().enumerate() {
            let together = match culprit.take_if(|(failed, _)| *failed == i) {
                Some((_, error)) => Together::Failed(error),
                None if committed => Together::Committed,
                None => Together::Alone,
            };
            let _ = reply.send(together);
        }
        ready.idle.fetch_add(1, Ordering::AcqRel);
    }
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
    pub(super) async fn handle(
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
        let incoming = Arc::new(incoming);
        let mut first = match self.together(&incoming).await {
            Together::Committed => return Ok(()),
            Together::Failed(error) => Some(error),
            Together::Alone => None,
        };
        let body = || serde_json::to_value(&incoming.message).ok();
        let mut attempt = 1;
        let (mut conflicts, mut outage) = (0, 0);
        loop {
            let result = match first.take() {
                Some(error) => Err(error),
                None => self.attempt(&incoming).await,
            };
            match result {
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

    /// Hands the message to a batch; what became of it there. Not while shutting down: it goes
    /// alone then.
    async fn together(&self, incoming: &Arc<Incoming<H::Message>>) -> Together {
        if self.shutdown.is_cancelled() {
            return Together::Alone;
        }
        let (reply, together) = oneshot::channel();
        let joining = (incoming.clone(), tracing::Span::current(), reply);
        if self.joining.send(joining).is_err() {
            return Together::Alone;
        }
        together.await.unwrap_or(Together::Alone)
    }

    /// Handles `batch` in one transaction (see the module's description); on failure, which
    /// message failed it, if one did.
    async fn apply_together(
        &self,
        batch: &[Joining<H::Message>],
    ) -> Result<(), (Option<usize>, HandlerError)> {
        let mut tx = self.pool.begin().await.map_err(|e| (None, e.into()))?;
        let mut applied = Vec::with_capacity(batch.len());
        for (i, (incoming, span, _)) in batch.iter().enumerate() {
            let result = self.apply(&mut tx, incoming).instrument(span.clone()).await;
            applied.push(result.map_err(|e| (Some(i), e))?);
        }
        tx.commit().await.map_err(|e| (None, e.into()))?;
        self.settings.stats.batched.observe(batch.len() as f64);
        for applied in applied {
            self.count(applied);
        }
        Ok(())
    }

    async fn attempt(&self, incoming: &Incoming<H::Message>) -> Result<(), HandlerError> {
        let mut tx = self.pool.begin().await?;
        let applied = self.apply(&mut tx, incoming).await?;
        tx.commit().await?;
        self.settings.stats.batched.observe(1.0);
        self.count(applied);
        Ok(())
    }

    /// Records the message in the inbox and handles it, in `tx`. A message found there is not
    /// handled again; a command found there has its answer queued again (its sender timed out
    /// waiting), whatever became of the first one.
    async fn apply(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<H::Message>,
    ) -> Result<Applied, HandlerError> {
        let message_id = incoming.properties.message_id;
        if !eventstore::record_message(tx, &self.settings.inbox, message_id).await? {
            if H::Message::TOPIC.kind == TopicKind::Command {
                let requeued = outbox::requeue_caused_by(tx, message_id).await?;
                tracing::debug!(%message_id, requeued, "duplicate command answered again");
            } else {
                tracing::debug!(%message_id, "duplicate message skipped");
            }
            return Ok(Applied::Duplicate);
        }
        self.handler.handle(tx, incoming).await?;
        Ok(Applied::Handled)
    }

    /// Counts a committed message.
    fn count(&self, applied: Applied) {
        ConsumerStats::add(match applied {
            Applied::Handled => &self.settings.stats.applied,
            Applied::Duplicate => &self.settings.stats.duplicates,
        });
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
