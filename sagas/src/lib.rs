//! The saga coordinator (SPEC §5): saga definitions as pure step functions (`definition`), their
//! log and commands on the wire (`wire`), the durable runtime (`coordinator`: inputs in one
//! transaction each, commands through the outbox, timers in Postgres) and the query API (`api`).
//! It consumes the four services' event topics and publishes their commands.

pub mod api;
pub mod coordinator;
pub mod definition;
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

/// The subscription (and inbox) name of the coordinator's consumers.
pub const SUBSCRIPTION: &str = "sagas";

/// Why the coordinator stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("migrating the sagas database failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("event store")]
    EventStore(#[from] eventstore::Error),
    #[error("messaging")]
    Messaging(#[from] messaging::Error),
    #[error("serving the query API failed")]
    Serve(#[from] std::io::Error),
}

/// Creates or upgrades the event store and the coordinator's tables.
pub async fn migrate(pool: &PgPool) -> Result<(), Error> {
    eventstore::migrate(pool).await?;
    sqlx::migrate!().run(pool).await?;
    Ok(())
}

/// Runs the coordinator until `shutdown`: its consumers of the four event topics, the timer
/// worker, the outbox relay and the query API.
pub async fn run(
    pool: PgPool,
    client: Arc<Client>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let mut tasks: JoinSet<Result<(), Error>> = JoinSet::new();
    tasks.spawn(consume_with(
        &client,
        &pool,
        &shutdown,
        coordinator::TrackingReplies,
    ));
    tasks.spawn(consume_with(
        &client,
        &pool,
        &shutdown,
        coordinator::CampaignsReplies,
    ));
    tasks.spawn(consume_with(
        &client,
        &pool,
        &shutdown,
        coordinator::CommissionsReplies,
    ));
    tasks.spawn(consume_with(
        &client,
        &pool,
        &shutdown,
        coordinator::PaymentsReplies,
    ));
    let relay = relay::run(
        client.clone(),
        pool.clone(),
        RelaySettings::new(format!("sagas-{}", uuid::Uuid::new_v4())),
        shutdown.clone(),
    );
    tasks.spawn(async move { Ok(relay.await?) });
    let (timer_pool, stop) = (pool.clone(), shutdown.clone());
    tasks.spawn(async move {
        Ok(
            coordinator::run_timers(&timer_pool, Duration::from_millis(100), stop.cancelled())
                .await?,
        )
    });
    let serve = axum::serve(listener, api::router(pool.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    tasks.spawn(async move { Ok(serve.await?) });

    let mut outcome = Ok(());
    while let Some(done) = tasks.join_next().await {
        let result = done.unwrap_or_else(|panic| Err(Error::Serve(std::io::Error::other(panic))));
        if let Err(error) = result {
            tracing::error!(%error, "coordinator task failed; stopping");
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
