//! The `tracking` bounded context (SPEC §1 and §4): clicks, leads and conversions, their
//! confirmation or failure by sagas, and the fraud rule on order ids. It consumes
//! `campaign-tracking-events`, `tracking-event-confirmation` and `fail-tracking-events`, publishes
//! `tracking-events` through its outbox, and serves its read models over HTTP.

pub mod api;
pub mod domain;
pub mod handlers;
pub mod projections;
pub mod wire;

use messaging::host::{self, ServiceError, Tasks};
use messaging::{Client, QueryApi};
use sqlx::PgPool;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The subscription (and inbox) name of every tracking consumer.
pub const SUBSCRIPTION: &str = "tracking";

/// Creates or upgrades the event store and tracking's read models.
pub async fn migrate(pool: &PgPool) -> Result<(), ServiceError> {
    host::migrate(pool, SUBSCRIPTION, &sqlx::migrate!()).await
}

/// Runs the service until `shutdown`: its consumers, outbox relay, projection and query API. If
/// any of them fails, the others are stopped and the first error is returned.
pub async fn run(
    pool: PgPool,
    client: Arc<Client>,
    query: QueryApi,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let api = api::router(pool.clone());
    let mut tasks = Tasks::new(SUBSCRIPTION, client, pool, shutdown);
    tasks
        .consume(handlers::Record)
        .consume(handlers::Confirm)
        .consume(handlers::Fail)
        .relay()
        .prune()
        .project(projections::TrackingViews)
        .serve(query, api);
    tasks.join().await
}
