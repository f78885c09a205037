//! Runs one service's long-lived tasks together: its consumers (one per command or event topic,
//! on the service's subscription), its outbox relay, its projections, and whatever else it has
//! (a worker). It serves the service's query API with the process's metrics at `/metrics`. When
//! one task fails the others are stopped, and the first error is returned; when `shutdown` fires
//! they all finish what they hold and return.

use crate::consume::{self, ConsumerSettings, Handler};
use crate::metrics::Metrics;
use crate::relay::{self, RelaySettings};
use crate::{Client, QueryApi};
use eventstore::projection::{self, Projection};
use sqlx::PgPool;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How often the inbox and the published outbox are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How often a caught-up projection looks for new events if no append's notification came.
const PROJECTION_POLL: Duration = Duration::from_millis(500);

/// The tasks of one service. `E` is the service's error type.
#[derive(Debug)]
pub struct Tasks<E> {
    service: &'static str,
    client: Arc<Client>,
    pool: PgPool,
    shutdown: CancellationToken,
    set: JoinSet<Result<(), E>>,
    metrics: Metrics,
}

impl<E> Tasks<E>
where
    E: From<crate::Error>
        + From<eventstore::Error>
        + From<std::io::Error>
        + std::error::Error
        + Send
        + 'static,
{
    /// `service` names the subscription, the inbox and the relay of its tasks.
    pub fn new(
        service: &'static str,
        client: Arc<Client>,
        pool: PgPool,
        shutdown: CancellationToken,
    ) -> Self {
        Tasks {
            service,
            client,
            pool,
            shutdown,
            set: JoinSet::new(),
            metrics: Metrics::default(),
        }
    }

    /// The process's metrics, for the service's own to join them.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Consumes `H::Message`'s topic on the service's subscription.
    pub fn consume<H: Handler>(&mut self, handler: H) -> &mut Self {
        let settings = ConsumerSettings::new(self.service);
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

    /// Relays the service's outbox, under a name unique to this process.
    pub fn relay(&mut self) -> &mut Self {
        let name = format!("{}-{}", self.service, uuid::Uuid::new_v4());
        let run = relay::run(
            self.client.clone(),
            self.pool.clone(),
            RelaySettings::new(name),
            self.shutdown.clone(),
        );
        self.set.spawn(async move { Ok(run.await?) });
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
        let (pool, stop) = (self.pool.clone(), self.shutdown.clone());
        self.set.spawn(async move {
            Ok(projection::run(&pool, &projection, PROJECTION_POLL, stop.cancelled()).await?)
        });
        self
    }

    /// Serves `router` (the query API) and `/readyz` (the database answers; the process's
    /// restarts), both behind the service token, and `/metrics` (open, for Prometheus) on the
    /// API's listener until shutdown.
    pub fn serve(&mut self, api: QueryApi, router: axum::Router) -> &mut Self {
        let token = api.token;
        let (pool, restarts) = (self.pool.clone(), api.restarts);
        let readyz = axum::routing::get(move || readyz(pool.clone(), restarts));
        let app = router
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

    /// Any other task; it must end when the shutdown token it was given is cancelled.
    pub fn spawn(
        &mut self,
        task: impl Future<Output = Result<(), E>> + Send + 'static,
    ) -> &mut Self {
        self.set.spawn(task);
        self
    }

    /// Waits for every task; the first failure stops the others and is returned.
    pub async fn join(mut self) -> Result<(), E> {
        let mut outcome = Ok(());
        while let Some(done) = self.set.join_next().await {
            let result = done.unwrap_or_else(|panic| Err(E::from(std::io::Error::other(panic))));
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

/// 200 with the process's restarts when its database answers, else 503.
async fn readyz(pool: PgPool, restarts: u32) -> axum::response::Response {
    use axum::response::IntoResponse;
    match sqlx::query("select 1").execute(&pool).await {
        Ok(_) => axum::Json(serde_json::json!({ "status": "ready", "restarts": restarts }))
            .into_response(),
        Err(error) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "status": "unavailable", "detail": error.to_string() })),
        )
            .into_response(),
    }
}
