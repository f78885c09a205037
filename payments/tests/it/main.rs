//! The payments service end to end: commands published to the real broker (Apache Pulsar, a
//! namespace of their own), handled against the real PostgreSQL, paid out through the payout-provider simulator
//! over HTTP, and read back over the service's query API.

// Named for the crate: `#[sqlx::test]` names its database after the test path, which must not
// collide with another crate's test run at the same time.
mod payment_clawbacks;
mod payment_flows;

use messaging::consume::Backoff;
use payments::PayoutSettings;
use payments::provider::Provider;
use payments::simulator::{self, SimulatorRules, Stats};
use serde_json::Value;
use sqlx::PgPool;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The service's provider timeout. Generous, so that a loaded machine does not time out an
/// ordinary call; the simulator's slow answers take longer still.
const TIMEOUT: Duration = Duration::from_secs(2);
const SLOW_DELAY: Duration = Duration::from_secs(3);

/// The payout-provider simulator on a free port.
struct Simulator {
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Simulator {
    async fn start() -> Simulator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listen");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let shutdown = CancellationToken::new();
        let rules = SimulatorRules {
            slow_delay: SLOW_DELAY,
        };
        let task = tokio::spawn(simulator::serve(listener, rules, shutdown.clone()));
        Simulator {
            base,
            http: reqwest::Client::new(),
            shutdown,
            task,
        }
    }

    /// A client of the simulator, as the service builds it.
    fn provider(&self) -> Provider {
        Provider::new(&self.base, TIMEOUT).expect("provider")
    }

    async fn stats(&self) -> Stats {
        self.http
            .get(format!("{}/stats", self.base))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats body")
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("simulator task").expect("simulator");
    }
}

/// A fresh, migrated payments database.
async fn database(db: PgPool) -> PgPool {
    let service = payments::service(PayoutSettings::new("http://127.0.0.1:1"));
    messaging::testing::migrated(db, 20, &service).await
}

/// The payments service running on its own namespace and database, with its API on a free port and
/// its payouts going to its own simulator.
struct Service {
    service: messaging::testing::ServiceUnderTest,
    simulator: Simulator,
}

impl std::ops::Deref for Service {
    type Target = messaging::testing::ServiceUnderTest;

    fn deref(&self) -> &Self::Target {
        &self.service
    }
}

impl Service {
    async fn start(db: PgPool) -> Service {
        let simulator = Simulator::start().await;
        Service::start_with(database(db).await, simulator).await
    }

    /// Starts the service on a database and simulator prepared by the test.
    async fn start_with(pool: PgPool, simulator: Simulator) -> Service {
        let payouts = PayoutSettings {
            timeout: TIMEOUT,
            backoff: Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_secs(1),
            },
            poll: Duration::from_millis(25),
            ..PayoutSettings::new(simulator.base.clone())
        };
        let service = payments::service(payouts);
        let service = messaging::testing::ServiceUnderTest::start(pool, "partner-1", service).await;
        Service { service, simulator }
    }

    /// The payment's view once it has reached `status`.
    async fn payment(&self, payment_id: Uuid, status: &str) -> Value {
        self.wait_for(&format!("/payments/{payment_id}"), |b| {
            b["status"] == status
        })
        .await
    }

    /// The event types of a payment's stream, in order.
    async fn payment_history(&self, payment_id: Uuid) -> Vec<String> {
        self.history(&format!("payment-{payment_id}")).await
    }

    /// Payouts the worker still has to call the provider for.
    async fn payouts_due(&self) -> i64 {
        sqlx::query_scalar("select count(*) from payouts_due")
            .fetch_one(&self.pool)
            .await
            .expect("payouts_due")
    }

    async fn stop(self) {
        self.service.stop().await;
        self.simulator.stop().await;
    }
}
