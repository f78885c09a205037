//! The messages in hand: handled in a transaction with retries (conflicts, outages, transient
//! failures), or dead-lettered with why.
//!
//! Messages go to their first attempt in runs: the messages of one lane that were waiting
//! behind the ones before them, in order (see `Lanes`). A run joins a batch: when every batch in
//! progress is busy (a few at a time, see [`batches`]), the runs of other lanes that are ready
//! by the time one is free go together, up to [`BATCH`] messages, in one transaction, each message
//! handled as it would be alone, the inbox rows of all of them recorded in one statement, and
//! one commit for all. Under light load a batch holds one message and lanes run side by side;
//! under load the batches grow, and a commit, with its round trips and its flush to disk, is
//! shared. If anything in a batch fails, the whole batch is rolled back: the message that failed
//! takes that as its first attempt and goes on alone, with the retries above, and the others go
//! alone as if they had not been in the batch (their attempts and retries are not counted for
//! it), a run's messages one after another.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::oneshot;

/// Messages handled together at most.
pub(super) const BATCH: usize = 32;

pub(super) struct Worker<H: Handler> {
    pub(super) client: Arc<Client>,
    pub(super) pool: PgPool,
    pub(super) settings: ConsumerSettings,
    pub(super) handler: Arc<H>,
    pub(super) shutdown: CancellationToken,
    /// Where a run's first attempt joins a batch.
    pub(super) joining: mpsc::UnboundedSender<Joining<H::Message>>,
}

/// A run waiting for its batch: its messages, each with the span it is handled in, and where it
/// hears what became of them.
pub(super) type Joining<M> = (
    Vec<(Arc<Incoming<M>>, tracing::Span)>,
    oneshot::Sender<Together>,
);

/// What a batch did with a run.
pub(super) enum Together {
    Committed,
    /// The run's message at this index failed the batch: its first attempt.
    Failed(usize, HandlerError),
    /// Another message failed the batch, or its transaction did: to be handled alone.
    Alone,
}

/// What applying a message in a transaction came to.
enum Applied {
    Handled,
    /// Found in the inbox: skipped, or for a command its answer queued again.
    Duplicate,
}

/// The runs waiting for a batch, shared by the [`BATCHES`] batches of a runner.
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

/// Takes the next run and, when no other batch is free to take them, the others that are
/// ready, up to [`BATCH`] messages; handles them in one transaction and tells each run what
/// became of it. Until the runner ends (it aborts the batches).
pub(super) async fn batches<H: Handler>(worker: Arc<Worker<H>>, ready: Arc<Ready<H::Message>>) {
    loop {
        let batch = {
            let mut queue = ready.queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let others_idle = ready.idle.fetch_sub(1, Ordering::AcqRel) - 1;
            let mut messages = first.0.len();
            let mut batch = vec![first];
            while others_idle == 0 && messages < BATCH {
                match queue.try_recv() {
                    Ok(joining) => {
                        messages += joining.0.len();
                        batch.push(joining);
                    }
                    Err(_) => break,
                }
            }
            batch
        };
        let (committed, mut culprit) = match worker.apply_together(&batch).await {
            Ok(()) => (true, None),
            Err((culprit, error)) => {
                tracing::debug!(runs = batch.len(), %error, "a batch failed; its messages go alone");
                (false, culprit.map(|at| (at, error)))
            }
        };
        for (run, (_, reply)) in batch.into_iter().enumerate() {
            let together = match culprit.take_if(|((failed, _), _)| *failed == run) {
                Some(((_, message), error)) => Together::Failed(message, error),
                None if committed => Together::Committed,
                None => Together::Alone,
            };
            let _ = reply.send(together);
        }
        ready.idle.fetch_add(1, Ordering::AcqRel);
    }
}

/// The span a received message is handled in, continuing its sender's trace.
fn span<M: Message>(received: &Received<Vec<u8>>) -> tracing::Span {
    let key = key_of(received);
    let span = tracing::info_span!("handle message", topic = M::TOPIC.name, %key);
    let traceparent = received
        .metadata()
        .properties
        .iter()
        .find(|kv| kv.key == names::TRACEPARENT)
        .map(|kv| kv.value.as_str());
    crate::trace::continue_trace(&span, traceparent);
    span
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
    /// Handles a run of one lane's messages, in order, and reports how each left the runner.
    pub(super) async fn handle(
        self: Arc<Self>,
        lane: String,
        run: Vec<Waiting<H::Message>>,
        done: Done,
    ) {
        let started = std::time::Instant::now();
        let work = self.process_run(run, started);
        tokio::pin!(work);
        // Said once: everything behind it in its lane, and on Key_Shared its key, waits.
        let outcomes = tokio::select! {
            outcomes = &mut work => outcomes,
            _ = tokio::time::sleep(self.settings.long_in_hand) => {
                ConsumerStats::add(&self.settings.stats.long_in_hand);
                tracing::warn!(topic = H::Message::TOPIC.name, %lane, after = ?self.settings.long_in_hand, "a message is still in hand; its lane waits behind it");
                work.await
            }
        };
        // The runner is gone only when shutting down; the messages are then redelivered later.
        let _ = done.send((lane, outcomes));
    }

    /// The run tried together in a batch, then, unless that committed, each message alone in
    /// order; once one is abandoned (shutting down) so are the ones behind it.
    async fn process_run(
        &self,
        run: Vec<Waiting<H::Message>>,
        started: std::time::Instant,
    ) -> Vec<(Received<Vec<u8>>, Outcome)> {
        let run: Vec<_> = run
            .into_iter()
            .map(|(received, decoded)| {
                let span = span::<H::Message>(&received);
                (received, decoded.map(Arc::new), span)
            })
            .collect();
        let decoded: Option<Vec<_>> = run
            .iter()
            .map(|(_, decoded, span)| Some((decoded.as_ref().ok()?.clone(), span.clone())))
            .collect();
        let mut failed = match decoded {
            Some(decoded) => match self.together(decoded).await {
                Together::Committed => {
                    self.observe(started, run.len());
                    return run
                        .into_iter()
                        .map(|(received, ..)| (received, Outcome::Done))
                        .collect();
                }
                Together::Failed(at, error) => Some((at, error)),
                Together::Alone => None,
            },
            None => None,
        };
        let mut outcomes = Vec::with_capacity(run.len());
        let mut abandoning = false;
        for (at, (received, decoded, span)) in run.into_iter().enumerate() {
            let first = failed
                .take_if(|(failed, _)| *failed == at)
                .map(|(_, error)| error);
            let outcome = if abandoning {
                Outcome::Abandoned
            } else {
                async {
                    match self.process(decoded, first).await {
                        Ok(outcome) => outcome,
                        Err(dead) => self.dead_letter(&key_of(&received), &received, dead).await,
                    }
                }
                .instrument(span)
                .await
            };
            abandoning = matches!(outcome, Outcome::Abandoned);
            self.observe(started, 1);
            outcomes.push((received, outcome));
        }
        outcomes
    }

    /// Records how long `messages` took from their run's start.
    fn observe(&self, started: std::time::Instant, messages: usize) {
        for _ in 0..messages {
            self.settings
                .stats
                .handling
                .observe(started.elapsed().as_secs_f64());
        }
    }

    /// A message handled alone, `first` its first attempt's failure when a batch was: applied,
    /// abandoned when the runner stops while it waits for another attempt, or why it is
    /// dead-lettered.
    async fn process(
        &self,
        decoded: Result<Arc<Incoming<H::Message>>, Undecodable>,
        mut first: Option<HandlerError>,
    ) -> Result<Outcome, DeadLetter> {
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
            let result = match first.take() {
                Some(error) => Err(error),
                None => self.attempt(&incoming).await,
            };
            let pause = match result {
                Ok(()) => return Ok(Outcome::Done),
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
                    conflict_pause(conflicts)
                }
                Err(HandlerError::Unavailable(reason)) => {
                    outage += 1;
                    let delay = self.settings.backoff.delay(outage);
                    tracing::warn!(message_id = %incoming.properties.message_id, outage, ?delay, %reason, "database out of reach; trying again");
                    ConsumerStats::add(&self.settings.stats.retries);
                    delay
                }
                Err(HandlerError::Transient(reason)) => {
                    outage = 0;
                    let delay = self.settings.backoff.delay(attempt);
                    tracing::warn!(message_id = %incoming.properties.message_id, attempt, ?delay, %reason, "retrying message");
                    ConsumerStats::add(&self.settings.stats.retries);
                    attempt += 1;
                    delay
                }
            };
            // Stopping: left unacknowledged, to be delivered again.
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(Outcome::Abandoned),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Hands the run to a batch; what became of it there. Not while shutting down: it goes
    /// alone then.
    async fn together(&self, run: Vec<(Arc<Incoming<H::Message>>, tracing::Span)>) -> Together {
        if self.shutdown.is_cancelled() {
            return Together::Alone;
        }
        let (reply, together) = oneshot::channel();
        if self.joining.send((run, reply)).is_err() {
            return Together::Alone;
        }
        together.await.unwrap_or(Together::Alone)
    }

    /// Handles `batch` in one transaction (see the module's description); on failure, which
    /// message failed it (its run and its place there), if one did.
    async fn apply_together(
        &self,
        batch: &[Joining<H::Message>],
    ) -> Result<(), (Option<(usize, usize)>, HandlerError)> {
        let handoff = self.settings.handoff.as_ref();
        outbox::handing_to(handoff, self.apply_together_in(batch)).await
    }

    async fn apply_together_in(
        &self,
        batch: &[Joining<H::Message>],
    ) -> Result<(), (Option<(usize, usize)>, HandlerError)> {
        let mut tx = eventstore::begin(&self.pool)
            .await
            .map_err(|e| (None, e.into()))?;
        let ids: Vec<uuid::Uuid> = batch
            .iter()
            .flat_map(|(run, _)| {
                run.iter()
                    .map(|(incoming, _)| incoming.properties.message_id)
            })
            .collect();
        let mut new = eventstore::record_messages(&mut tx, &self.settings.inbox, &ids)
            .await
            .map_err(|e| (None, e.into()))?
            .into_iter();
        let mut applied = Vec::with_capacity(ids.len());
        for (r, (run, _)) in batch.iter().enumerate() {
            for (m, (incoming, span)) in run.iter().enumerate() {
                let new = new.next().unwrap_or(false);
                let result = self
                    .apply(&mut tx, incoming, new)
                    .instrument(span.clone())
                    .await;
                applied.push(result.map_err(|e| (Some((r, m)), e))?);
            }
        }
        tx.commit().await.map_err(|e| (None, e.into()))?;
        self.settings.stats.batched.observe(applied.len() as f64);
        for applied in applied {
            self.count(applied);
        }
        Ok(())
    }

    async fn attempt(&self, incoming: &Incoming<H::Message>) -> Result<(), HandlerError> {
        let handoff = self.settings.handoff.as_ref();
        outbox::handing_to(handoff, self.attempt_in(incoming)).await
    }

    async fn attempt_in(&self, incoming: &Incoming<H::Message>) -> Result<(), HandlerError> {
        let mut tx = eventstore::begin(&self.pool).await?;
        let new = eventstore::record_message(
            &mut tx,
            &self.settings.inbox,
            incoming.properties.message_id,
        )
        .await?;
        let applied = self.apply(&mut tx, incoming, new).await?;
        tx.commit().await?;
        self.settings.stats.batched.observe(1.0);
        self.count(applied);
        Ok(())
    }

    /// Handles the message in `tx`, where it was just recorded in the inbox, `new` unless it was
    /// there before. A message found there is not handled again; a command found there has its
    /// answer queued again (its sender timed out waiting), whatever became of the first one.
    async fn apply(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<H::Message>,
        new: bool,
    ) -> Result<Applied, HandlerError> {
        let message_id = incoming.properties.message_id;
        if !new {
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
