//! The runner's subscription: Key_Shared under a consumer name of its own, subscribed again
//! when pulsar-rs gives up on it or the broker holds messages delivered to it that it never had.

use super::*;

/// How often a runner with nothing in hand asks the broker whether it counts messages as
/// delivered to it.
pub(super) const HELD_CHECK_EVERY: Duration = Duration::from_secs(30);

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
            .consuming
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

/// The runner's consumer, replaced whenever it is subscribed again, and what the runner knows of
/// the broker's deliveries to it.
pub(super) struct Subscription {
    pub(super) consumer: Consumer<Vec<u8>, TokioExecutor>,
    /// The consumer's name, under which the broker's stats count what it holds.
    name: String,
    admin: crate::admin::Admin,
    /// Ends of the consumer's stream since it last received a message.
    ended: u32,
    /// The broker said, at the last check, that it holds messages this consumer never acked.
    held_before: bool,
}

impl Subscription {
    /// Subscribes as [`subscribe`] does; `None` once `shutdown` fires first.
    pub(super) async fn open<H: Handler>(
        client: &Client,
        settings: &ConsumerSettings,
        shutdown: &CancellationToken,
    ) -> Option<Subscription> {
        let (consumer, name) =
            subscribe(client, H::Message::TOPIC.name, settings, shutdown).await?;
        Some(Subscription {
            consumer,
            name,
            admin: crate::admin::Admin::new(&client.settings.admin_url),
            ended: 0,
            held_before: false,
        })
    }

    /// A message came: the consumer is alive and delivering.
    pub(super) fn received(&mut self) {
        self.ended = 0;
        self.held_before = false;
    }

    /// A Key_Shared subscription gives a key to a new consumer only once the messages of that key
    /// delivered before are acknowledged: one the broker still counts as delivered here (an
    /// acknowledgement lost as the connection went) holds up its key, and the runner must let it
    /// go. Twice in a row, with nothing in hand (`idle`) and nothing received between: the
    /// consumer closes, which redelivers it. `false` once `shutdown` fires first.
    pub(super) async fn check_held<H: Handler>(
        &mut self,
        worker: &Worker<H>,
        idle: bool,
        shutdown: &CancellationToken,
    ) -> bool {
        let held = if idle { self.held(worker).await } else { 0 };
        if held > 0 && self.held_before {
            let topic = H::Message::TOPIC.name;
            tracing::warn!(
                topic,
                held,
                "the broker holds messages delivered here that none of ours has in hand; subscribing again"
            );
            self.held_before = false;
            return self.renew(worker, 1, shutdown).await;
        }
        self.held_before = held > 0;
        true
    }

    /// pulsar-rs reports an error when reconnecting fails (one its retries do not cover, met
    /// while the broker restarts), leaving the consumer subscribed to nothing, and ends the stream
    /// when it gives up altogether. Either way a new consumer takes over: messages in hand are
    /// acknowledged through it, and those the old one held come again and are found in the inbox.
    /// `false` once `shutdown` fires first.
    pub(super) async fn lost<H: Handler>(
        &mut self,
        worker: &Worker<H>,
        error: Option<String>,
        shutdown: &CancellationToken,
    ) -> bool {
        self.ended += 1;
        let topic = H::Message::TOPIC.name;
        tracing::warn!(
            topic,
            ?error,
            "the consumer lost its subscription; subscribing again"
        );
        self.renew(worker, self.ended, shutdown).await
    }

    async fn renew<H: Handler>(
        &mut self,
        worker: &Worker<H>,
        attempt: u32,
        shutdown: &CancellationToken,
    ) -> bool {
        match resubscribe(worker, attempt, shutdown).await {
            Some((consumer, name)) => {
                (self.consumer, self.name) = (consumer, name);
                true
            }
            None => false,
        }
    }

    /// The messages the broker counts as delivered to this consumer and not acknowledged (0 when
    /// it cannot say).
    async fn held<H: Handler>(&self, worker: &Worker<H>) -> u64 {
        let topic = H::Message::TOPIC.name;
        let stats = match self.admin.topic_stats(&worker.client.settings, topic).await {
            Ok(stats) => stats.unwrap_or_default(),
            Err(error) => {
                tracing::debug!(%error, topic, "reading the topic's stats failed");
                return 0;
            }
        };
        held_by(&stats, &worker.settings.subscription, &self.name)
    }

    /// Closes the consumer: what it holds unacknowledged is redelivered.
    pub(super) async fn close(mut self) {
        if let Err(error) = self.consumer.close().await {
            tracing::debug!(%error, "closing the consumer failed");
        }
    }
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
}
