//! The `tracking` bounded context (SPEC §1 and §4): clicks, leads and conversions, their
//! confirmation or failure by sagas, and the fraud rule on order ids. It consumes
//! `campaign-tracking-events`, `tracking-event-confirmation` and `fail-tracking-events`, publishes
//! `tracking-events` through its outbox, and serves its read models over HTTP.

pub mod api;
pub mod domain;
pub mod handlers;
pub mod projections;
pub mod wire;

use messaging::host;

/// The tracking service: its consumers of the tracking command topics, its projection and its
/// query API.
pub fn service() -> host::Service {
    static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!();
    host::Service::new("tracking", &MIGRATIONS, move |tasks| {
        tasks
            .consume(handlers::Record)
            .consume(handlers::Confirm)
            .consume(handlers::Fail)
            .project(projections::TrackingViews);
        Ok(api::router(tasks.pool().clone()))
    })
}
