//! The `commissions` bounded context (SPEC §1 and §4): commissions computed from a campaign's rule
//! and assigned to partners for one tracking event each, reversed by compensation or a refund
//! (and reinstated when that refund is undone), and the partners' and campaigns' totals. It
//! consumes `assign-commission-to-partner`, `commission-reversal` and
//! `commission-reinstatement`, publishes `commissions-events` through its outbox, and serves its read
//! models over HTTP.

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

/// The subscription (and inbox) name of every commissions consumer.
pub const SUBSCRIPTION: &str = "commissions";

/// Creates or upgrades the event store and commissions' read models.
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
        .consume(handlers::Assign::default())
        .consume(handlers::Reverse::default())
        .consume(handlers::Reinstate::default())
        .relay()
        .prune()
        .project(projections::CommissionViews)
        .serve(query, api);
    tasks.join().await
}
