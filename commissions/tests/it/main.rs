//! The commissions service end to end: commands published to the real broker (Apache Pulsar,
//! a namespace of their own), handled against the real PostgreSQL, and read back over its HTTP query API.

mod api;
mod flows;

use messaging::Client;
use messaging::effects;
use schemas::Message;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The commissions service running on its own namespace and database, with its API on a free port.
struct Service {
    client: Arc<Client>,
    pool: PgPool,
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), messaging::host::ServiceError>>,
}

impl Service {
    async fn start(connect: PgConnectOptions) -> Service {
        let client = messaging::testing::client().await;
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .connect_with(connect)
            .await
            .expect("database");
        commissions::migrate(&pool).await.expect("migrate");
        let token = messaging::ServiceToken::random();
        let (query, base) = messaging::testing::query_api(&token).await;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(commissions::run(
            pool.clone(),
            client.clone(),
            query,
            shutdown.clone(),
        ));
        Service {
            client,
            pool,
            base,
            http: messaging::testing::service_client(&token),
            shutdown,
            task,
        }
    }

    /// Publishes a command as a client would; returns its message id.
    async fn send<M: Message>(&self, key: Uuid, command: &M) -> Uuid {
        let id = Uuid::new_v4();
        self.send_as(id, key, command).await;
        id
    }

    async fn send_as<M: Message>(&self, id: Uuid, key: Uuid, command: &M) {
        let properties = effects::first_of_flow(
            id,
            command,
            Some("advertiser-1".into()),
            Some("test".into()),
        );
        let message = effects::outgoing(command, &key.to_string(), &properties).expect("encode");
        self.client.publish(&message).await.expect("publish");
    }

    async fn get(&self, path: &str) -> (reqwest::StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls `path` until `done` holds for its JSON, or fails after a deadline.
    async fn wait_for(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
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

    async fn outcome(&self, command: Uuid) -> Value {
        self.wait_for(&format!("/commands/{command}"), |b| {
            b["status"] != "pending"
        })
        .await
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("service task").expect("service");
    }
}
