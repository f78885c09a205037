//! For tests (feature `testing`): clients of the one Apache Pulsar broker a test run shares
//! (`PULSAR_URL` and `PULSAR_ADMIN_URL`, which `scripts/test.sh` starts and sets), each test on a
//! namespace of its own, provisioned as `pulsaga migrate` provisions a namespace.

use crate::admin::Admin;
use crate::{Client, PulsarSettings};
use std::sync::Arc;

/// The shared broker, on a fresh namespace, provisioned.
pub async fn settings() -> PulsarSettings {
    let url = std::env::var("PULSAR_URL").unwrap_or_else(|_| "pulsar://127.0.0.1:6650".into());
    let admin_url =
        std::env::var("PULSAR_ADMIN_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let settings = PulsarSettings {
        namespace: format!("test-{}", uuid::Uuid::new_v4().simple()),
        ..PulsarSettings::new(url, admin_url)
    };
    provision(&settings).await;
    settings
}

/// Provisions `settings`'s namespace, or panics saying how to start a broker.
pub async fn provision(settings: &PulsarSettings) {
    if let Err(error) = Admin::new(&settings.admin_url).provision(settings).await {
        panic!(
            "provisioning {}/{} failed ({}); the tests need Apache Pulsar: `bash scripts/test.sh` \
             starts one, or run `pulsaga serve broker` and set PULSAR_URL and PULSAR_ADMIN_URL",
            settings.tenant,
            settings.namespace,
            crate::error_chain(&error)
        );
    }
}

/// A client of the shared broker on a fresh, provisioned namespace.
pub async fn client() -> Arc<Client> {
    Arc::new(
        Client::connect(settings().await)
            .await
            .expect("connecting to the test broker"),
    )
}

/// The environment variables that point a `pulsaga` process at `settings`.
pub fn env(settings: &PulsarSettings) -> [(&'static str, String); 4] {
    [
        ("PULSAR_URL", settings.url.clone()),
        ("PULSAR_ADMIN_URL", settings.admin_url.clone()),
        ("PULSAR_TENANT", settings.tenant.clone()),
        ("PULSAR_NAMESPACE", settings.namespace.clone()),
    ]
}

/// A message read back from a dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub properties: std::collections::HashMap<String, String>,
    pub payload: Vec<u8>,
}

/// The first `count` messages of `topic`'s dead-letter topic for its consuming subscription (or
/// `subscription` when given), read from the start; panics after 30 s without the next one.
pub async fn dead_letters(
    settings: &PulsarSettings,
    topic: &schemas::Topic,
    subscription: Option<&str>,
    count: usize,
) -> Vec<DeadLetter> {
    use futures_util::StreamExt;
    use pulsar::consumer::{ConsumerOptions, InitialPosition};
    use pulsar::{Consumer, Pulsar, SubType, TokioExecutor};
    let pulsar = Pulsar::builder(settings.url.clone(), TokioExecutor)
        .build()
        .await
        .expect("a client of the test broker");
    let name =
        crate::consume::dead_letter_topic(topic.name, subscription.unwrap_or(topic.subscription));
    let mut consumer: Consumer<Vec<u8>, TokioExecutor> = pulsar
        .consumer()
        .with_topic(settings.topic(&name))
        .with_subscription(format!("inspect-{}", uuid::Uuid::new_v4().simple()))
        .with_subscription_type(SubType::Exclusive)
        .with_options(ConsumerOptions {
            initial_position: InitialPosition::Earliest,
            ..ConsumerOptions::default()
        })
        .build()
        .await
        .expect("a dead-letter consumer");
    let mut letters = Vec::new();
    while letters.len() < count {
        let received = tokio::time::timeout(std::time::Duration::from_secs(30), consumer.next())
            .await
            .unwrap_or_else(|_| panic!("dead letter {} of {name} within 30 s", letters.len() + 1))
            .expect("stream open")
            .expect("a message");
        consumer.ack(&received).await.expect("ack");
        letters.push(DeadLetter {
            properties: received
                .metadata()
                .properties
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect(),
            payload: received.payload.data,
        });
    }
    letters
}

/// A service's query API on a free loopback port, requiring `token`, and its base URL.
pub async fn query_api(token: &crate::ServiceToken) -> (crate::QueryApi, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free loopback port");
    let base = format!("http://{}", listener.local_addr().expect("an address"));
    let token = token.clone();
    let api = crate::QueryApi {
        listener,
        token,
        restarts: 0,
    };
    (api, base)
}

/// An HTTP client that presents `token` to the services' query APIs.
pub fn service_client(token: &crate::ServiceToken) -> reqwest::Client {
    reqwest::Client::builder()
        .default_headers(token.headers())
        .build()
        .expect("a client without TLS settings builds")
}
