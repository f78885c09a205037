//! Runs one service's long-lived tasks together: its consumers (one per command or event topic,
//! on the service's subscription), its outbox relay, its projections, and whatever else it has
//! (a worker). It serves the service's query API with the process's metrics at `/metrics`. When
//! one task fails the others are stopped, and the first error is returned; when `shutdown` fires
//! they all finish what they hold and return.

use crate::admission::Admission;
use crate::consume::{self, ConsumerSettings, Handler};
use crate::metrics::Metrics;
use crate::relay::{self, RelaySettings};
use crate::{Client, QueryApi};
use eventstore::projection::{self, Lag, Projection};
use eventstore::{Notifications, outbox};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use sqlx::PgPool;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How often the inbox and the published outbox are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How often a caught-up projection looks for new events if no append's notification came.
const PROJECTION_POLL: Duration = Duration::from_secs(5);

/// How long a query API request waits for its turn before it is answered 503.
const ADMISSION_WAIT: Duration = Duration::from_secs(1);

/// Why a service stopped: the first of its tasks that failed, or its setup.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("migrating the {service} database failed")]
    Migrate {
        service: &'static str,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("event store")]
    EventStore(#[from] eventstore::Error),
    #[error("messaging")]
    Messaging(#[from] crate::Error),
    #[error("setting {service} up failed")]
    Setup {
        service: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("serving the query API failed")]
    Serve(#[from] std::io::Error),
}

/// Adds a service's consumers, projections and workers to its tasks (the outbox relay and the
/// pruning are every service's), and answers its query API.
pub type Assemble = Box<dyn Fn(&mut Tasks) -> Result<axum::Router, ServiceError> + Send + Sync>;

/// A service as the platform runs it: its name, its migrations and its tasks. [`migrate`] and
/// [`run`] take any of them; `pulsaga serve`, `pulsaga up` and the tests' platform run the same
/// ones, listed once (the `platform` crate).
pub struct Service {
    /// Its subscription, inbox and relay name, and its database's.
    pub name: &'static str,
    /// Its own migrations (`sqlx::migrate!()` in its crate), run after the event store's.
    pub migrations: &'static sqlx::migrate::Migrator,
    pub assemble: Assemble,
}

impl Service {
    pub fn new(
        name: &'static str,
        migrations: &'static sqlx::migrate::Migrator,
        assemble: impl Fn(&mut Tasks) -> Result<axum::Router, ServiceError> + Send + Sync + 'static,
    ) -> Service {
        Service {
            name,
            migrations,
            assemble: Box::new(assemble),
        }
    }
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Creates or upgrades a service's database: the event store's tables, then the service's own.
pub async fn migrate(pool: &PgPool, service: &Service) -> Result<(), ServiceError> {
    eventstore::migrate(pool).await?;
    service
        .migrations
        .run(pool)
        .await
        .map_err(|source| ServiceError::Migrate {
            service: service.name,
            source,
        })
}

/// Runs `service` until `shutdown`: its tasks, its outbox relay and pruning, and its query API on
/// `query`. If any task fails, the others are stopped and the first error is returned.
pub async fn run(
    service: &Service,
    pool: PgPool,
    client: Arc<Client>,
    query: QueryApi,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let mut tasks = Tasks::new(service.name, client, pool, shutdown);
    let api = (service.assemble)(&mut tasks)?;
    tasks.relay().prune().serve(query, api);
    tasks.join().await
}

/// The tasks of one service.
#[derive(Debug)]
pub struct Tasks {
    service: &'static str,
    client: Arc<Client>,
    pool: PgPool,
    shutdown: CancellationToken,
    set: JoinSet<Result<(), ServiceError>>,
    metrics: Metrics,
    notifications: Notifications,
    /// Where its transactions hand what they queue: its relay, under a name unique to the process.
    relay: RelaySettings,
    handoff: outbox::Handoff,
    /// The relay's end of the handoff, until the relay starts.
    handed: Option<mpsc::UnboundedReceiver<outbox::Handed>>,
    /// The names of the projections it keeps, for their lag.
    projections: Vec<&'static str>,
}

impl Tasks {
    /// `service` names the subscription, the inbox and the relay of its tasks.
    pub fn new(
        service: &'static str,
        client: Arc<Client>,
        pool: PgPool,
        shutdown: CancellationToken,
    ) -> Self {
        let notifications = Notifications::new(&pool);
        let relay = RelaySettings::new(format!("{service}-{}", uuid::Uuid::new_v4()));
        let (handoff, handed) =
            outbox::Handoff::new(&relay.name, relay.lease, notifications.clone());
        Tasks {
            service,
            client,
            notifications,
            relay,
            handoff,
            handed: Some(handed),
            projections: Vec::new(),
            pool,
            shutdown,
            set: JoinSet::new(),
            metrics: Metrics::default(),
        }
    }

    /// The service's database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Fires when the service is to stop; a task spawned here ends then.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// The process's metrics, for the service's own to join them.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The process's listener for notifications: one connection for all its workers.
    pub fn notifications(&self) -> &Notifications {
        &self.notifications
    }

    /// Where the service's transactions hand the messages they queue to its relay (see
    /// `outbox::handing_to`); its consumers' do.
    pub fn handoff(&self) -> &outbox::Handoff {
        &self.handoff
    }

    /// Consumes `H::Message`'s topic on the service's subscription.
    pub fn consume<H: Handler>(&mut self, handler: H) -> &mut Self {
        let settings = ConsumerSettings {
            handoff: Some(self.handoff.clone()),
            ..ConsumerSettings::new(self.service)
        };
        self.metrics.register(|registry| {
            settings
                .stats
                .register(registry, <H::Message as schemas::Message>::TOPIC.name);
        });
        let run = consume::run(
            self.client.clone(),
            self.pool.clone(),
            settings,
            Arc::new(handler),
            self.shutdown.clone(),
        );
        self.set.spawn(async move { Ok(run.await?) });
        self
    }

    /// Relays the service's outbox, under a name unique to this process: what its transactions
    /// hand over, and what it claims. Without it, its transactions' messages are written for any
    /// relay to claim.
    pub fn relay(&mut self) -> &mut Self {
        let (client, pool) = (self.client.clone(), self.pool.clone());
        let (notifications, stop) = (self.notifications.clone(), self.shutdown.clone());
        let (settings, handed) = (self.relay.clone(), self.handed.take());
        self.set.spawn(async move {
            let wakeup = notifications.wakeup(outbox::CHANNEL).await;
            Ok(relay::run(client, pool, wakeup, handed, settings, stop).await?)
        });
        self
    }

    /// Prunes the inbox, the published outbox and the Idempotency-Key claims past
    /// `eventstore::prune::RETENTION`, at start and then every hour.
    pub fn prune(&mut self) -> &mut Self {
        let (pool, stop, service) = (self.pool.clone(), self.shutdown.clone(), self.service);
        self.set.spawn(async move {
            loop {
                match eventstore::prune::prune(&pool, eventstore::prune::RETENTION).await {
                    Ok(pruned) => tracing::debug!(service, ?pruned, "pruned"),
                    Err(error) => tracing::warn!(service, %error, "pruning failed; next hour"),
                }
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(PRUNE_EVERY) => {}
                }
            }
        });
        self
    }

    /// Keeps a read model up to date.
    pub fn project<P: Projection + 'static>(&mut self, projection: P) -> &mut Self {
        self.projections.push(projection.name());
        let (pool, stop) = (self.pool.clone(), self.shutdown.clone());
        let notifications = self.notifications.clone();
        self.set.spawn(async move {
            let wakeup = notifications
                .wakeup_on(&[outbox::CHANNEL, outbox::HANDED])
                .await;
            let stop = stop.cancelled();
            Ok(projection::run(&pool, &projection, wakeup, PROJECTION_POLL, stop).await?)
        });
        self
    }

    /// Serves `router` (the query API) and `/readyz` (the database answers; the process's
    /// restarts; each projection's lag), both behind the service token, and `/metrics` (open,
    /// for Prometheus, with the projections' lag as of `LAG_EVERY` ago) on the API's listener
    /// until shutdown. The query API handles as many requests at once as the pool has
    /// connections; more wait up to `ADMISSION_WAIT`, then are answered 503. Call it last.
    pub fn serve(&mut self, api: QueryApi, router: axum::Router) -> &mut Self {
        let token = api.token;
        let projections: Arc<[&'static str]> = self.projections.clone().into();
        self.watch_lag(projections.clone());
        let (pool, restarts) = (self.pool.clone(), api.restarts);
        let at_once = self.pool.options().get_max_connections() as usize;
        let readyz =
            axum::routing::get(move || readyz(pool.clone(), restarts, projections.clone()));
        let app = Admission::new(at_once, ADMISSION_WAIT)
            .around(router)
            .route("/readyz", readyz)
            .layer(axum::middleware::from_fn(move |request, next| {
                token.clone().require(request, next)
            }))
            .merge(self.metrics.route());
        let serve = axum::serve(api.listener, app)
            .with_graceful_shutdown(self.shutdown.clone().cancelled_owned());
        self.set.spawn(async move { Ok(serve.await?) });
        self
    }

    /// Keeps the lag gauges of `projections` up to date, every `LAG_EVERY`.
    fn watch_lag(&mut self, projections: Arc<[&'static str]>) {
        let lag = LagGauges::default();
        self.metrics.register(|registry| lag.register(registry));
        let (pool, stop) = (self.pool.clone(), self.shutdown.clone());
        self.set.spawn(async move {
            while !stop.is_cancelled() {
                if let Ok(lags) = lags(&pool, &projections).await {
                    lag.set(&lags);
                }
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(LAG_EVERY) => {}
                }
            }
            Ok(())
        });
    }

    /// Any other task; it must end when the shutdown token it was given is cancelled.
    pub fn spawn(
        &mut self,
        task: impl Future<Output = Result<(), ServiceError>> + Send + 'static,
    ) -> &mut Self {
        self.set.spawn(task);
        self
    }

    /// Waits for every task; the first failure stops the others and is returned.
    pub async fn join(mut self) -> Result<(), ServiceError> {
        // No relay was started to take what the transactions hand over: they write for claims.
        self.handed = None;
        let mut outcome = Ok(());
        while let Some(done) = self.set.join_next().await {
            let result = done.unwrap_or_else(|panic| Err(std::io::Error::other(panic).into()));
            if let Err(error) = result {
                tracing::error!(service = self.service, error = %crate::error_chain(&error), "task failed; stopping the service");
                self.shutdown.cancel();
                if outcome.is_ok() {
                    outcome = Err(error);
                }
            }
        }
        outcome
    }
}

/// How often the projections' lag gauges are brought up to date.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// `pulsaga_projection_lag_events` and `pulsaga_projection_lag_seconds`, by projection.
#[derive(Debug, Clone, Default)]
struct LagGauges {
    events: Family<ProjectionLabel, Gauge>,
    seconds: Family<ProjectionLabel, Gauge<f64, AtomicU64>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProjectionLabel {
    projection: String,
}

impl LagGauges {
    fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "projection_lag_events",
            "Committed events a projection has not applied yet",
            self.events.clone(),
        );
        registry.register(
            "projection_lag_seconds",
            "Age of the oldest event a projection has not applied yet",
            self.seconds.clone(),
        );
    }

    fn set(&self, lags: &[(&'static str, Lag)]) {
        for (name, lag) in lags {
            let label = ProjectionLabel {
                projection: (*name).to_owned(),
            };
            self.events.get_or_create(&label).set(lag.events);
            self.seconds.get_or_create(&label).set(lag.seconds);
        }
    }
}

/// Each projection's lag, in one connection.
async fn lags(
    pool: &PgPool,
    projections: &[&'static str],
) -> Result<Vec<(&'static str, Lag)>, eventstore::Error> {
    let mut conn = pool.acquire().await?;
    let mut lags = Vec::with_capacity(projections.len());
    for name in projections {
        lags.push((*name, projection::lag(&mut conn, name).await?));
    }
    Ok(lags)
}

/// 200 with the process's restarts and its projections' lag when its database answers, else 503.
async fn readyz(
    pool: PgPool,
    restarts: u32,
    projections: Arc<[&'static str]>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let answer = async {
        sqlx::query("select 1").execute(&pool).await?;
        lags(&pool, &projections).await
    };
    match answer.await {
        Ok(lags) => axum::Json(serde_json::json!({
            "status": "ready",
            "restarts": restarts,
            "projections": lags.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        }))
        .into_response(),
        Err(error) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "status": "unavailable", "detail": error.to_string() })),
        )
            .into_response(),
    }
}
