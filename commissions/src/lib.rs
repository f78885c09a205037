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

use messaging::host;

/// The commissions service: its consumers of the commission command topics, its projection
/// and its query API.
pub fn service() -> host::Service {
    static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!();
    host::Service::new("commissions", &MIGRATIONS, move |tasks| {
        tasks
            .consume(handlers::Assign::default())
            .consume(handlers::Reverse::default())
            .consume(handlers::Reinstate::default())
            .project(projections::CommissionViews);
        Ok(api::router(tasks.pool().clone()))
    })
}
