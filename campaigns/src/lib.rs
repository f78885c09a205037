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

use messaging::host;
use std::sync::Arc;

/// The campaigns service: its consumers of the campaign command topics (sharing the campaigns
/// they keep in memory), its projection and its query API.
pub fn service() -> host::Service {
    static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!();
    host::Service::new("campaigns", &MIGRATIONS, move |tasks| {
        let campaigns = Arc::new(state::CampaignCache::default());
        tasks
            .consume(handlers::Registration)
            .consume(handlers::Creation::new(campaigns.clone()))
            .consume(handlers::PartnerAssociation::new(campaigns.clone()))
            .consume(handlers::ContentAssociation::new(campaigns.clone()))
            .consume(handlers::BudgetReservation::new(campaigns.clone()))
            .consume(handlers::BudgetRelease::new(campaigns))
            .project(projections::CampaignViews);
        Ok(api::router(tasks.pool().clone()))
    })
}
