//! The `commissions` bounded context (SPEC §1 and §4): commissions computed from a campaign's rule
//! and assigned to partners for one tracking event each, reversed by compensation, and the
//! partners' and campaigns' totals. It consumes `assign-commission-to-partner` and
//! `commission-reversal`, publishes `commissions-events` through its outbox, and serves its read
//! models over HTTP.

pub mod api;
pub mod domain;
pub mod handlers;
pub mod projections;
pub mod wire;

use messaging::Client;
use messaging::consume::{self, ConsumerSettings};
use messaging::relay::{self, RelaySettings};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The subscription (and inbox) name of every commissions consumer.
pub const SUBSCRIPTION: &str = "commissions";

/// Why the service stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("migrating the commissions database failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("event store")]
    EventStore(#[from] eventstore::Error),
    #[error("messaging")]
    Messaging(#[from] messaging::Error),
    #[error("serving the query API failed")]
    Serve(#[from] std::io::Error),
}

/// Creates or upgrades the event store and commissions' read models.
pub async fn migrate(pool: &PgPool) -> Result<(), Error> {
    eventstore::migrate(pool).await?;
    sqlx::migrate!().run(pool).await?;
    Ok(())
}

/// Runs the service until `shutdown`: its consumers, outbox relay, projection and query API. If
/// any of them fails, the others are stopped and the first error is returned.
pub async fn run(
    pool: PgPool,
    client: Arc<Client>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let mut tasks: JoinSet<Result<(), Error>> = JoinSet::new();
    tasks.spawn(consume_with(&client, &pool, &shutdown, handlers::Assign));
    tasks.spawn(consume_with(&client, &pool, &shutdown, handlers::Reverse));
    let relay = relay::run(
        client.clone(),
        pool.clone(),
        RelaySettings::new(format!("commissions-{}", uuid::Uuid::new_v4())),
        shutdown.clone(),
    );
    tasks.spawn(async move { Ok(relay.await?) });
    let (projection_pool, stop) = (pool.clone(), shutdown.clone());
    tasks.spawn(async move {
        let views = projections::CommissionViews;
        Ok(eventstore::projection::run(
            &projection_pool,
            &views,
            Duration::from_millis(50),
            stop.cancelled(),
        )
        .await?)
    });
    let serve = axum::serve(listener, api::router(pool.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    tasks.spawn(async move { Ok(serve.await?) });

    let mut outcome = Ok(());
    while let Some(done) = tasks.join_next().await {
        let result = done.unwrap_or_else(|panic| Err(Error::Serve(std::io::Error::other(panic))));
        if let Err(error) = result {
            tracing::error!(%error, "commissions task failed; stopping the service");
            shutdown.cancel();
            if outcome.is_ok() {
                outcome = Err(error);
            }
        }
    }
    outcome
}

fn consume_with<H: consume::Handler>(
    client: &Arc<Client>,
    pool: &PgPool,
    shutdown: &CancellationToken,
    handler: H,
) -> impl Future<Output = Result<(), Error>> + Send + 'static {
    let run = consume::run(
        client.clone(),
        pool.clone(),
        ConsumerSettings::new(SUBSCRIPTION),
        Arc::new(handler),
        shutdown.clone(),
    );
    async move { Ok(run.await?) }
}
