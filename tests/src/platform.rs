//! The whole platform in one test process: a namespace of its own on the test run's Apache Pulsar,
//! the four services and the saga coordinator each on its own database and HTTP port, and the
//! payout simulator.

use bff::services::Service;
use messaging::{Client, ServiceToken, effects, host, testing};
use schemas::Message;
use schemas::commands::{AssociatePartner, CreateCampaign, RecordTrackingEvent, RegisterPartner};
use schemas::values::{CommissionRule, Money, Order, TrackingKind};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug)]
pub struct Platform {
    pub client: Arc<Client>,
    server: PgConnectOptions,
    databases: Vec<(String, PgPool)>,
    pub urls: Urls,
    /// What the query APIs require.
    pub service_token: ServiceToken,
    /// Presents the service token.
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    /// Each process's task and its own stop token (a child of `shutdown`).
    tasks: Vec<(&'static str, CancellationToken, JoinHandle<()>)>,
}

/// Where each query API listens.
#[derive(Debug)]
pub struct Urls {
    pub campaigns: String,
    pub tracking: String,
    pub commissions: String,
    pub payments: String,
    pub sagas: String,
    /// The payout-provider simulator.
    pub simulator: String,
}

/// Now, in microseconds since the Unix epoch.
fn micros_now() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
}

/// A conversion of the order `order_id` of `amount` EUR, now, for (partner, campaign).
pub fn conversion(
    (partner, campaign): (Uuid, Uuid),
    order_id: &str,
    amount: i64,
) -> RecordTrackingEvent {
    RecordTrackingEvent {
        tracking_id: Uuid::new_v4(),
        campaign_id: campaign,
        partner_id: partner,
        kind: TrackingKind::Conversion,
        order: Some(Order {
            order_id: order_id.into(),
            amount: Money::new(amount, "EUR"),
        }),
        occurred_at: micros_now(),
    }
}

async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    (listener, url)
}

fn report<E: std::fmt::Display>(name: &'static str, result: Result<(), E>) {
    if let Err(error) = result {
        panic!("{name} stopped: {error}");
    }
}

impl Platform {
    /// Starts everything; `admin` is the test's own database, beside which the five service
    /// databases are created.
    pub async fn start(admin: PgPool) -> Platform {
        let connect = (*admin.connect_options()).clone();
        let client = messaging::testing::client().await;
        let shutdown = CancellationToken::new();
        let (sim_listener, sim_url) = listener().await;
        let mut tasks = Vec::new();
        let stop = shutdown.child_token();
        let simulator = payments::simulator::serve(sim_listener, Default::default(), stop.clone());
        let simulator = tokio::spawn(async move { report("payout simulator", simulator.await) });
        tasks.push(("payout-sim", stop, simulator));

        // Every service of the platform, as `pulsaga serve` runs it, each on a database and an
        // HTTP port of its own.
        let settings = pulsaga_platform::Settings {
            payout_provider_url: sim_url.clone(),
            ..Default::default()
        };
        let service_token = ServiceToken::random();
        let mut databases = Vec::new();
        let mut urls = Vec::new();
        for kind in Service::ALL {
            let name = format!("e2e_{}_{}", kind.name(), Uuid::new_v4().simple());
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {name}")))
                .execute(&admin)
                .await
                .expect("create");
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .connect_with(connect.clone().database(&name))
                .await
                .expect("pool");
            let service = pulsaga_platform::service(kind, &settings);
            host::migrate(&pool, &service).await.expect("migrate");
            let (query, url) = testing::query_api(&service_token).await;
            let stop = shutdown.child_token();
            let run = {
                let (pool, client, stop) = (pool.clone(), client.clone(), stop.clone());
                async move {
                    report(
                        kind.name(),
                        host::run(&service, pool, client, query, stop).await,
                    )
                }
            };
            tasks.push((kind.name(), stop, tokio::spawn(run)));
            databases.push((name, pool));
            urls.push(url);
        }
        admin.close().await;
        let [campaigns, tracking, commissions, payments, sagas] =
            <[String; 5]>::try_from(urls).expect("five services");
        Platform {
            client,
            server: connect,
            databases,
            urls: Urls {
                campaigns,
                tracking,
                commissions,
                payments,
                sagas,
                simulator: sim_url,
            },
            http: testing::service_client(&service_token),
            service_token,
            shutdown,
            tasks,
        }
    }

    /// A campaign with `budget` EUR paying 10 % of each order, made by an advertiser, with one
    /// partner registered and associated; returns (partner, campaign) once each command
    /// succeeded.
    pub async fn campaign(&self, budget: i64) -> (Uuid, Uuid) {
        let (partner, campaign) = (Uuid::new_v4(), Uuid::new_v4());
        let now = micros_now();
        let registered = self
            .send(
                partner,
                &RegisterPartner {
                    partner_id: partner,
                    name: "Pat".into(),
                    email: "pat@example.com".into(),
                    payout_account: "NL00BANK01".into(),
                },
            )
            .await;
        let created = self
            .send(
                campaign,
                &CreateCampaign {
                    campaign_id: campaign,
                    advertiser_id: Uuid::new_v4(),
                    name: "Spring sale".into(),
                    budget: Money::new(budget, "EUR"),
                    commission_rule: CommissionRule::Percent {
                        basis_points: 1_000,
                    },
                    valid_from: now - 3_600_000_000,
                    valid_until: now + 86_400_000_000,
                },
            )
            .await;
        let succeeded = async |command| {
            let outcome = self.outcome(&self.urls.campaigns, command).await;
            assert_eq!(outcome["status"], "succeeded", "{outcome}");
        };
        // Each command's topic is consumed on its own: the association is sent once the partner
        // and the campaign exist.
        succeeded(registered).await;
        succeeded(created).await;
        let association = AssociatePartner {
            campaign_id: campaign,
            partner_id: partner,
        };
        succeeded(self.send(campaign, &association).await).await;
        (partner, campaign)
    }

    /// Stops one process (as an outage would) and waits until it has.
    pub async fn stop_process(&mut self, name: &str) {
        let index = self
            .tasks
            .iter()
            .position(|(n, _, _)| *n == name)
            .expect("a process of the platform");
        let (_, stop, task) = self.tasks.remove(index);
        stop.cancel();
        task.await.expect("process task");
    }

    /// The database of one of the five services (`campaigns` … `sagas`), and a pool on it.
    fn database(&self, service: &str) -> &(String, PgPool) {
        let index = Service::ALL
            .iter()
            .position(|s| s.name() == service)
            .expect("a service of the platform");
        &self.databases[index]
    }

    pub fn database_name(&self, service: &str) -> &str {
        &self.database(service).0
    }

    pub fn pool(&self, service: &str) -> &PgPool {
        &self.database(service).1
    }

    pub fn sagas_pool(&self) -> &PgPool {
        self.pool("sagas")
    }

    /// Publishes a command as a client would, keyed by `key`; returns its id.
    pub async fn send<M: Message>(&self, key: Uuid, command: &M) -> Uuid {
        let id = Uuid::new_v4();
        let properties =
            effects::first_of_flow(id, command, Some("advertiser-1".into()), Some("e2e".into()));
        let message = effects::outgoing(command, &key.to_string(), &properties).expect("encode");
        self.client.publish(&message).await.expect("publish");
        id
    }

    pub async fn get(&self, url: &str) -> (reqwest::StatusCode, Value) {
        let response = self.http.get(url).send().await.expect("request");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls `url` until its JSON satisfies `done`.
    pub async fn wait_for(
        &self,
        url: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = self.get(url).await;
            if status.is_success() && done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{url} never got there; last: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the service at `base` has handled `command`, and returns its outcome.
    pub async fn outcome(&self, base: &str, command: Uuid) -> Value {
        self.wait_for(
            &format!("{base}/commands/{command}"),
            Duration::from_secs(30),
            |b| b["status"] != "pending",
        )
        .await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for (_, _, task) in self.tasks {
            task.await.expect("process task");
        }
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(self.server.clone())
            .await
            .expect("admin");
        for (name, pool) in self.databases {
            pool.close().await;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "drop database {name} with (force)"
            )))
            .execute(&admin)
            .await
            .expect("drop");
        }
    }
}
