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
pub(super) async fn subscribe(
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
pub(super) async fn resubscribe<H: Handler>(
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
pub(super) async fn held_here<H>(
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
