//! The connection to Pulsar and the producers: one per topic, created on first use, no batching.
//!
//! Producers never batch: pulsar-rs acknowledges a whole batch entry when one of its messages is
//! acknowledged (pulsar-rs issue #345), which would break at-least-once for the others.

use crate::Error;
use eventstore::outbox;
use futures_util::StreamExt;
use futures_util::future::join_all;
use pulsar::message::proto::{Schema, schema::Type as SchemaType};
use pulsar::producer::{Message as PulsarMessage, ProducerOptions};
use pulsar::{
    ConnectionRetryOptions, Consumer, OperationRetryOptions, Producer, Pulsar, SubType,
    TokioExecutor,
};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long a message may wait to be taken by its producer, and then for the broker's receipt.
/// After a broker restart a producer can be left waiting on a connection that is gone: without a
/// deadline its sender (a relay) would wait with it for good. A message sent again after a
/// deadline may arrive twice; consumers skip it by message id.
const SEND_DEADLINE: Duration = Duration::from_secs(15);

/// How to reach Apache Pulsar and name topics.
#[derive(Debug, Clone)]
pub struct PulsarSettings {
    /// `pulsar://host:port`, the binary protocol.
    pub url: String,
    /// `http://host:port`, the admin REST API (`pulsaga migrate` provisions through it).
    pub admin_url: String,
    pub tenant: String,
    pub namespace: String,
}

impl PulsarSettings {
    /// Settings for a broker with the default tenant and namespace (`public/default`).
    pub fn new(url: impl Into<String>, admin_url: impl Into<String>) -> Self {
        PulsarSettings {
            url: url.into(),
            admin_url: admin_url.into(),
            tenant: "public".into(),
            namespace: "default".into(),
        }
    }

    /// The full name of a topic: `persistent://{tenant}/{namespace}/{topic}`.
    pub fn topic(&self, topic: &str) -> String {
        format!("persistent://{}/{}/{}", self.tenant, self.namespace, topic)
    }
}

/// A Pulsar client with its producers. Cheap to share behind an `Arc`.
///
/// Consumers and producers go over connections of their own. On one connection, a consumer's
/// acknowledgement (a small write the broker answers with nothing) holds the next small write
/// back until the broker's delayed TCP acknowledgement, some 40 ms (Nagle's algorithm; pulsar-rs
/// does not set `TCP_NODELAY`): a service that acknowledged a message and then published what it
/// caused added those 40 ms to every hop of a flow.
pub struct Client {
    /// The producers' connection.
    pub(crate) pulsar: Pulsar<TokioExecutor>,
    /// The consumers' connection.
    pub(crate) consuming: Pulsar<TokioExecutor>,
    pub(crate) settings: PulsarSettings,
    producers: Mutex<HashMap<String, Producer<TokioExecutor>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects, retrying with backoff for as long as the broker is away.
    pub async fn connect(settings: PulsarSettings) -> Result<Self, Error> {
        Ok(Client {
            pulsar: Self::pulsar(&settings).await?,
            consuming: Self::pulsar(&settings).await?,
            settings,
            producers: Mutex::new(HashMap::new()),
        })
    }

    async fn pulsar(settings: &PulsarSettings) -> Result<Pulsar<TokioExecutor>, Error> {
        Ok(Pulsar::builder(settings.url.clone(), TokioExecutor)
            .with_connection_retry_options(ConnectionRetryOptions {
                min_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(2),
                max_retries: u32::MAX,
                connection_timeout: Duration::from_secs(5),
                keep_alive: Duration::from_secs(30),
                ..ConnectionRetryOptions::default()
            })
            .with_operation_retry_options(OperationRetryOptions {
                operation_timeout: Duration::from_secs(10),
                retry_delay: Duration::from_millis(200),
                max_retries: None,
            })
            .build()
            .await?)
    }

    pub fn settings(&self) -> &PulsarSettings {
        &self.settings
    }

    /// Whether the broker accepts a connection now (for readiness checks), within two seconds.
    pub async fn reachable(&self) -> bool {
        let address = self
            .settings
            .url
            .split_once("://")
            .map_or(self.settings.url.as_str(), |(_, rest)| rest)
            .trim_end_matches('/')
            .to_owned();
        let connect = tokio::net::TcpStream::connect(address);
        matches!(
            tokio::time::timeout(Duration::from_secs(2), connect).await,
            Ok(Ok(_))
        )
    }

    /// Publishes one message and waits for the broker's receipt.
    pub async fn publish(&self, message: &outbox::Message) -> Result<(), Error> {
        self.publish_all(std::slice::from_ref(message))
            .await
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Sends every message without waiting in between, then waits for all the receipts; returns
    /// one result per message, in order. Messages to one topic arrive in the order given.
    pub async fn publish_all(&self, messages: &[outbox::Message]) -> Vec<Result<(), Error>> {
        let mut receipts = Vec::with_capacity(messages.len());
        {
            let mut producers = self.producers.lock().await;
            // A topic whose producer did not take a message in time takes no more this call.
            let mut stuck: Vec<&str> = Vec::new();
            for message in messages {
                if stuck.contains(&message.topic.as_str()) {
                    receipts.push(Err(Error::Timeout));
                    continue;
                }
                let sent = tokio::time::timeout(SEND_DEADLINE, self.send(&mut producers, message));
                let sent = sent.await.unwrap_or(Err(Error::Timeout));
                if matches!(sent, Err(Error::Timeout)) {
                    stuck.push(&message.topic);
                }
                receipts.push(sent);
            }
        }
        let mut results = Vec::with_capacity(messages.len());
        let mut failed_topics = Vec::new();
        let pending = receipts.into_iter().map(|receipt| async move {
            let future = receipt?;
            match tokio::time::timeout(SEND_DEADLINE, future).await {
                Ok(receipt) => receipt.map(drop).map_err(Error::from),
                Err(_) => Err(Error::Timeout),
            }
        });
        for (message, result) in messages.iter().zip(join_all(pending).await) {
            if result.is_err() {
                failed_topics.push(message.topic.clone());
            }
            results.push(result);
        }
        if !failed_topics.is_empty() {
            // A producer that failed (or whose receipt never came) may be broken for good; the
            // next send builds a new one.
            let mut producers = self.producers.lock().await;
            for topic in failed_topics {
                producers.remove(&topic);
            }
        }
        results
    }

    async fn send(
        &self,
        producers: &mut HashMap<String, Producer<TokioExecutor>>,
        message: &outbox::Message,
    ) -> Result<pulsar::producer::SendFuture, Error> {
        if !producers.contains_key(&message.topic) {
            let producer = self.producer(&message.topic).await?;
            producers.insert(message.topic.clone(), producer);
        }
        let producer = producers
            .get_mut(&message.topic)
            .expect("the producer was just inserted");
        let outgoing = PulsarMessage {
            payload: message.payload.clone(),
            properties: message
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            partition_key: Some(message.key.clone()),
            ..PulsarMessage::default()
        };
        Ok(producer.send_non_blocking(outgoing).await?)
    }

    async fn producer(&self, topic: &str) -> Result<Producer<TokioExecutor>, Error> {
        let schema = avro_schema(topic);
        Ok(self
            .pulsar
            .producer()
            .with_topic(self.settings.topic(topic))
            .with_options(ProducerOptions {
                schema,
                batch_size: None,
                // Wait for room on the connection rather than fail a burst with SlowDown.
                block_queue_if_full: true,
                ..ProducerOptions::default()
            })
            .build()
            .await?)
    }

    /// Times `count` messages sent one after another to `topic` (a topic of the caller's own),
    /// each from its send to its arrival at a consumer: the broker's part of every hop of a flow.
    pub async fn round_trips(&self, topic: &str, count: usize) -> Result<Vec<Duration>, Error> {
        let mut consumer: Consumer<Vec<u8>, TokioExecutor> = self
            .consuming
            .consumer()
            .with_topic(self.settings.topic(topic))
            .with_subscription("round-trips")
            .with_subscription_type(SubType::Shared)
            .build()
            .await?;
        let mut times = Vec::with_capacity(count);
        for n in 0..count {
            let message = outbox::Message {
                topic: topic.to_owned(),
                key: n.to_string(),
                payload: vec![0; 256],
                properties: Default::default(),
            };
            let started = Instant::now();
            let receipt = {
                let mut producers = self.producers.lock().await;
                self.send(&mut producers, &message).await?
            };
            let arrived = consumer.next().await.transpose()?;
            times.push(started.elapsed());
            receipt.await?;
            if let Some(arrived) = arrived {
                consumer.ack(&arrived).await.map_err(pulsar::Error::from)?;
            }
        }
        consumer.close().await?;
        Ok(times)
    }

    /// Closes every producer, after their pending messages are confirmed.
    pub async fn close(&self) {
        let mut producers = self.producers.lock().await;
        for (topic, mut producer) in producers.drain() {
            if let Err(error) = producer.close().await {
                tracing::warn!(%topic, %error, "closing producer failed");
            }
        }
    }
}

/// The Avro schema a producer or consumer of `topic` declares to the broker's registry: its
/// topic's, or for a dead-letter topic (`<topic>-<subscription>-DLQ`) the original topic's, since
/// a dead letter is the original body. `None` for a topic that is not Pulsaga's.
pub(crate) fn avro_schema(topic: &str) -> Option<Schema> {
    let of = |t: &&&schemas::Topic| {
        topic == t.name
            || topic
                .strip_suffix("-DLQ")
                .and_then(|rest| rest.strip_prefix(t.name))
                .is_some_and(|subscription| subscription.starts_with('-'))
    };
    let topic = schemas::TOPICS
        .iter()
        .filter(of)
        .max_by_key(|t| t.name.len())?;
    Some(Schema {
        name: topic.name.to_owned(),
        schema_data: topic.avsc.as_bytes().to_vec(),
        r#type: SchemaType::Avro as i32,
        properties: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::avro_schema;

    #[test]
    fn dead_letter_topics_declare_their_original_topics_schema() {
        let schema = |topic| avro_schema(topic).map(|schema| schema.name);
        assert_eq!(
            schema("tracking-events").as_deref(),
            Some("tracking-events")
        );
        assert_eq!(
            schema("campaign-tracking-events-tracking-DLQ").as_deref(),
            Some("campaign-tracking-events")
        );
        assert_eq!(
            schema("tracking-events-sagas-DLQ").as_deref(),
            Some("tracking-events")
        );
        assert_eq!(schema("round-trips"), None);
        assert_eq!(schema("tracking-eventsX-DLQ"), None);
    }
}
