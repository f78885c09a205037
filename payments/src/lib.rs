//! The `payments` bounded context (SPEC §1 and §4): payouts of commissions through an external
//! provider, each executed at most once, and taken back from the partner's balance when its
//! order is refunded. It consumes `payments-request`, `payments-cancellation` and the claw-back
//! topics, calls the provider from
//! its payout worker (never inside a consumer's transaction), publishes `payments-events` through
//! its outbox, and serves its read models over HTTP. `simulator` is the payout provider that
//! development and tests run against.

pub mod api;
pub mod domain;
pub mod handlers;
pub mod payouts;
pub mod projections;
pub mod provider;
pub mod simulator;
mod stream;
pub mod wire;

pub use payouts::PayoutSettings;

use messaging::host::{self, ServiceError};

/// The payments service: its consumers of the payment command topics, its projection, its payout
/// worker (calling the provider `payouts` names) and its query API.
pub fn service(payouts: PayoutSettings) -> host::Service {
    static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!();
    host::Service::new("payments", &MIGRATIONS, move |tasks| {
        let provider =
            provider::Provider::new(&payouts.provider_url, payouts.timeout).map_err(|error| {
                ServiceError::Setup {
                    service: "payments",
                    source: error.into(),
                }
            })?;
        let worker = payouts::run(
            tasks.pool().clone(),
            provider,
            tasks.notifications().clone(),
            payouts.clone(),
            tasks.shutdown().clone(),
        );
        tasks
            .consume(handlers::Request)
            .consume(handlers::Cancel::default())
            .consume(handlers::ClawBack::default())
            .consume(handlers::ClawBackCancellation::default())
            .project(projections::PaymentViews)
            .spawn(async move {
                worker.await;
                Ok(())
            });
        Ok(api::router(tasks.pool().clone()))
    })
}
