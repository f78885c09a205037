//! The campaigns service end to end: commands published to the real broker (Apache Pulsar,
//! a namespace of their own), handled against the real PostgreSQL, and read back over its HTTP query API; and
//! the budget's guarantee under truly concurrent reservations.

mod budget;
mod flows;
mod queries;

use messaging::Client;
use messaging::effects;
use schemas::Message;
use schemas::commands::{AssociatePartner, CreateCampaign, RegisterPartner, ReserveBudget};
use schemas::values::{CommissionRule, Money, TrackingKind};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The campaigns service running on its own namespace and database, with its API on a free port.
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
        let pool = database(connect, 20).await;
        let token = messaging::ServiceToken::random();
        let (query, base) = messaging::testing::query_api(&token).await;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(campaigns::run(
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

    /// Sends a command and waits for its outcome.
    async fn command<M: Message>(&self, key: Uuid, command: &M) -> Value {
        let id = self.send(key, command).await;
        self.outcome(id).await
    }

    /// The status, content type and JSON body of a GET.
    async fn get_with_type(&self, path: &str) -> (reqwest::StatusCode, String, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request");
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

    async fn get(&self, path: &str) -> (reqwest::StatusCode, Value) {
        let (status, _, body) = self.get_with_type(path).await;
        (status, body)
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

    /// The (message type, causation id) of every message queued on campaigns-events, in order, once
    /// each (a duplicate command queues its answer again, under the same message id).
    async fn published(&self) -> Vec<(String, String)> {
        sqlx::query_as(
            "select message_type, causation_id from (
                select distinct on (properties->>'message_id') id,
                       properties->>'message_type' as message_type,
                       properties->>'causation_id' as causation_id
                  from outbox where topic = 'campaigns-events'
                 order by properties->>'message_id', id) first_queued
              order by id",
        )
        .fetch_all(&self.pool)
        .await
        .expect("outbox")
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("service task").expect("service");
    }
}

/// A fresh, migrated campaigns database.
async fn database(connect: PgConnectOptions, connections: u32) -> PgPool {
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect_with(connect)
        .await
        .expect("database");
    campaigns::migrate(&pool).await.expect("migrate");
    pool
}

fn micros_now() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
}

const HOUR: i64 = 3_600_000_000;

fn registration() -> RegisterPartner {
    RegisterPartner {
        partner_id: Uuid::new_v4(),
        name: "Ada's Deals".into(),
        email: "ada@example.com".into(),
        payout_account: "DE89370400440532013000".into(),
    }
}

/// A campaign active from an hour ago for thirty days, paying a fixed `commission` per event.
fn campaign(advertiser_id: Uuid, budget: i64, commission: i64) -> CreateCampaign {
    let now = micros_now();
    CreateCampaign {
        campaign_id: Uuid::new_v4(),
        advertiser_id,
        name: "Spring sale".into(),
        budget: Money {
            amount: budget,
            currency: "EUR".into(),
        },
        commission_rule: CommissionRule::Fixed { amount: commission },
        valid_from: now - HOUR,
        valid_until: now + 30 * 24 * HOUR,
    }
}

fn association(campaign_id: Uuid, partner_id: Uuid) -> AssociatePartner {
    AssociatePartner {
        campaign_id,
        partner_id,
    }
}

/// A click's reservation, as the commission-assignment saga sends it.
fn reservation(campaign_id: Uuid, partner_id: Uuid) -> ReserveBudget {
    ReserveBudget {
        reservation_id: Uuid::new_v4(),
        campaign_id,
        partner_id,
        tracking_id: Uuid::new_v4(),
        kind: TrackingKind::Click,
        order_amount: None,
        occurred_at: micros_now(),
    }
}
