//! One message in hand: handled in a transaction with retries (conflicts, outages, transient
//! failures), or dead-lettered with why.

use super::*;

pub(super) struct Worker<H> {
    pub(super) client: Arc<Client>,
    pub(super) pool: PgPool,
    pub(super) settings: ConsumerSettings,
    pub(super) handler: Arc<H>,
    pub(super) shutdown: CancellationToken,
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
