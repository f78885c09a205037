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

use messaging::host::{self, ServiceError, Tasks};
use messaging::{Client, QueryApi};
use sqlx::PgPool;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The subscription (and inbox) name of every payments consumer.
pub const SUBSCRIPTION: &str = "payments";

/// Creates or upgrades the event store, payments' read models and its payout table.
pub async fn migrate(pool: &PgPool) -> Result<(), ServiceError> {
    host::migrate(pool, SUBSCRIPTION, &sqlx::migrate!()).await
}

/// Runs the service until `shutdown`: its consumer, outbox relay, projection, payout worker and
/// query API. If any of them fails, the others are stopped and the first error is returned.
pub async fn run(
    pool: PgPool,
    client: Arc<Client>,
    query: QueryApi,
    payouts: PayoutSettings,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let provider =
        provider::Provider::new(&payouts.provider_url, payouts.timeout).map_err(|error| {
            ServiceError::Setup {
                service: SUBSCRIPTION,
                source: error.into(),
            }
        })?;
    let api = api::router(pool.clone());
    let mut tasks = Tasks::new(SUBSCRIPTION, client, pool.clone(), shutdown.clone());
    let notifications = tasks.notifications().clone();
    let worker = payouts::run(pool, provider, notifications, payouts, shutdown);
    tasks
        .consume(handlers::Request)
        .consume(handlers::Cancel::default())
        .consume(handlers::ClawBack::default())
        .consume(handlers::ClawBackCancellation::default())
        .relay()
        .prune()
        .project(projections::PaymentViews)
        .spawn(async move {
            worker.await;
            Ok(())
        })
        .serve(query, api);
    tasks.join().await
}
