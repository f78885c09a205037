//! For tests (feature `test-support`): clients of the one Apache Pulsar broker a test run shares
//! (`PULSAR_URL` and `PULSAR_ADMIN_URL`, which `scripts/test.sh` starts and sets), each test on a
//! namespace of its own, provisioned as `pulsaga migrate` provisions a namespace.

use crate::admin::Admin;
use crate::{Client, PulsarSettings};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

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

/// A pool of `connections` on the database of `db`, the pool `#[sqlx::test]` gives a test (which
/// is closed: it holds too few connections for a service).
pub async fn pool(db: sqlx::PgPool, connections: u32) -> sqlx::PgPool {
    let connect = db.connect_options();
    db.close().await;
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections)
        .connect_with((*connect).clone())
        .await
        .expect("connecting to the test database")
}

/// A pool of `connections` on the test's database, migrated for `service`.
pub async fn migrated(
    db: sqlx::PgPool,
    connections: u32,
    service: &crate::host::Service,
) -> sqlx::PgPool {
    let pool = pool(db, connections).await;
    crate::host::migrate(&pool, service).await.expect("migrate");
    pool
}

/// Sends `request` to `router` in process, as a server would: the answer's status, headers and
/// body.
pub async fn respond(
    router: &axum::Router,
    request: axum::http::Request<axum::body::Body>,
) -> (
    axum::http::StatusCode,
    axum::http::HeaderMap,
    axum::body::Bytes,
) {
    use tower::ServiceExt;
    let response = router.clone().oneshot(request).await.expect("response");
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.expect("body");
    (parts.status, parts.headers, body)
}

/// The status, content type and JSON body (`null` when there is none) of a GET of `url`.
pub async fn get_json(http: &reqwest::Client, url: &str) -> (reqwest::StatusCode, String, Value) {
    let response = http.get(url).send().await.expect("request");
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        status,
        content_type,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// The `event_type` of each event in a JSON list of events, as the event store's routes answer.
pub fn event_types(events: &Value) -> Vec<String> {
    events
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["event_type"].as_str().map(str::to_owned))
        .collect()
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
        crate::admin::dead_letter_topic(topic.name, subscription.unwrap_or(topic.subscription));
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

/// A service under test: its tasks running on a namespace of their own and the test's database,
/// its query API on a free port. Commands are published as a client would publish them, and
/// read back through the API.
#[derive(Debug)]
pub struct ServiceUnderTest {
    pub client: Arc<Client>,
    pub pool: sqlx::PgPool,
    /// The query API's base URL.
    pub base: String,
    http: reqwest::Client,
    /// The tenant the commands are sent for.
    tenant: &'static str,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), crate::host::ServiceError>>,
}

impl ServiceUnderTest {
    /// Migrates `pool` for `service` and runs the service on it, as `pulsaga serve` does;
    /// commands are sent for `tenant`, by the actor `test`.
    pub async fn start(
        pool: sqlx::PgPool,
        tenant: &'static str,
        service: crate::host::Service,
    ) -> ServiceUnderTest {
        crate::host::migrate(&pool, &service)
            .await
            .expect("migrate");
        let client = client().await;
        let token = crate::ServiceToken::random();
        let (query, base) = query_api(&token).await;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = {
            let (pool, client, stop) = (pool.clone(), client.clone(), shutdown.clone());
            tokio::spawn(async move { crate::host::run(&service, pool, client, query, stop).await })
        };
        ServiceUnderTest {
            client,
            pool,
            base,
            http: service_client(&token),
            tenant,
            shutdown,
            task,
        }
    }

    /// [`start`](Self::start) on a pool of the test's database (see [`pool`]).
    pub async fn connect(
        db: sqlx::PgPool,
        tenant: &'static str,
        service: crate::host::Service,
    ) -> ServiceUnderTest {
        Self::start(pool(db, 20).await, tenant, service).await
    }

    /// Publishes a command as a client would; returns its message id.
    pub async fn send<M: schemas::Message>(&self, key: Uuid, command: &M) -> Uuid {
        let id = Uuid::new_v4();
        self.send_as(id, key, command).await;
        id
    }

    /// Publishes a command under the message id `id`.
    pub async fn send_as<M: schemas::Message>(&self, id: Uuid, key: Uuid, command: &M) {
        let properties = crate::effects::first_of_flow(
            id,
            command,
            Some(self.tenant.into()),
            Some("test".into()),
        );
        let message =
            crate::effects::outgoing(command, &key.to_string(), &properties).expect("encode");
        self.client.publish(&message).await.expect("publish");
    }

    /// Sends a command and waits for its outcome.
    pub async fn command<M: schemas::Message>(&self, key: Uuid, command: &M) -> Value {
        let id = self.send(key, command).await;
        self.outcome(id).await
    }

    /// The status, content type and JSON body of a GET of the query API.
    pub async fn get_with_type(&self, path: &str) -> (reqwest::StatusCode, String, Value) {
        get_json(&self.http, &format!("{}{path}", self.base)).await
    }

    /// The status and JSON body of a GET of the query API.
    pub async fn get(&self, path: &str) -> (reqwest::StatusCode, Value) {
        let (status, _, body) = self.get_with_type(path).await;
        (status, body)
    }

    /// The event types of the stream `stream_id`, in order (none for a stream it does not have).
    pub async fn history(&self, stream_id: &str) -> Vec<String> {
        let (_, events) = self.get(&format!("/streams/{stream_id}")).await;
        event_types(&events)
    }

    /// Polls `path` until `done` holds for its JSON, or fails after 30 s.
    pub async fn wait_for(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.get(path).await;
            if status.is_success() && done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never got there; last: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The outcome of the command with message id `command`, once it has one.
    pub async fn outcome(&self, command: Uuid) -> Value {
        self.wait_for(&format!("/commands/{command}"), |b| {
            b["status"] != "pending"
        })
        .await
    }

    /// The (message type, causation id) of every message queued on `topic`, in order, once each
    /// (a duplicate command queues its answer again, under the same message id).
    pub async fn published(&self, topic: &str) -> Vec<(String, String)> {
        sqlx::query_as(
            "select message_type, causation_id from (
                select distinct on (properties->>'message_id') id,
                       properties->>'message_type' as message_type,
                       properties->>'causation_id' as causation_id
                  from outbox where topic = $1
                 order by properties->>'message_id', id) first_queued
              order by id",
        )
        .bind(topic)
        .fetch_all(&self.pool)
        .await
        .expect("outbox")
    }

    /// Asserts that the messages queued on `topic` are `expected`, each a message type and the
    /// command that caused it, in order; then waits until the relay has published them.
    pub async fn assert_published(&self, topic: &str, expected: &[(&str, Uuid)]) {
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(message_type, cause)| (message_type.to_string(), cause.to_string()))
            .collect();
        assert_eq!(self.published(topic).await, expected, "queued on {topic}");
        self.wait_until_published().await;
    }

    /// Rebuilds `projection` and checks that it equals the live read model; then, as a negative
    /// control, makes the live model drift (`drift`, an update) and checks that the next rebuild
    /// reports the drifted row (one holding `marker`). The rebuild replaces the live model, which
    /// the caller checks through the API. The events the first rebuild replayed.
    pub async fn assert_rebuild_repairs<P: eventstore::projection::Projection>(
        &self,
        projection: &P,
        drift: &'static str,
        marker: &str,
    ) -> usize {
        use eventstore::projection::rebuild;
        let rebuilt = rebuild(&self.pool, projection, |_| {})
            .await
            .expect("rebuild");
        assert!(rebuilt.matches, "{rebuilt:?}");
        sqlx::query(drift).execute(&self.pool).await.expect("drift");
        let drifted = rebuild(&self.pool, projection, |_| {})
            .await
            .expect("rebuild");
        assert!(!drifted.matches, "the drift is caught");
        assert!(
            drifted.only_live.iter().any(|row| row.contains(marker)),
            "{drifted:?}"
        );
        rebuilt.events
    }

    /// Waits until the relay has published everything in the outbox.
    pub async fn wait_until_published(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut conn = self.pool.acquire().await.expect("connection");
        while eventstore::outbox::pending(&mut conn)
            .await
            .expect("pending")
            > 0
        {
            assert!(Instant::now() < deadline, "the relay never published");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the service; panics if it failed.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("service task").expect("service");
    }
}
