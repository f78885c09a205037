//! The `campaigns` bounded context (SPEC §1 and §4): partners, campaigns, their content and
//! budget reservations. It consumes `campaigns-partner-registration`, `campaign-creation`,
//! `campaign-partner-association`, `campaign-content-association`, `campaign-budget-reservation`
//! and `campaign-budget-release`, publishes `campaigns-events` through its outbox, and serves its
//! read models over HTTP.

pub mod api;
pub mod domain;
pub mod handlers;
pub mod projections;
pub mod state;
pub mod wire;

use messaging::host::{self, ServiceError, Tasks};
use messaging::{Client, QueryApi};
use sqlx::PgPool;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The subscription (and inbox) name of every campaigns consumer.
pub const SUBSCRIPTION: &str = "campaigns";

/// Creates or upgrades the event store and the campaigns read models.
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
    let campaigns = Arc::new(state::CampaignCache::default());
    tasks
        .consume(handlers::Registration)
        .consume(handlers::Creation::new(campaigns.clone()))
        .consume(handlers::PartnerAssociation::new(campaigns.clone()))
        .consume(handlers::ContentAssociation::new(campaigns.clone()))
        .consume(handlers::BudgetReservation::new(campaigns.clone()))
        .consume(handlers::BudgetRelease::new(campaigns))
        .relay()
        .prune()
        .project(projections::CampaignViews)
        .serve(query, api);
    tasks.join().await
}
