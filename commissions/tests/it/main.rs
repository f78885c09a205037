//! The commissions service end to end: commands published to the real broker (Apache Pulsar,
//! a namespace of their own), handled against the real PostgreSQL, and read back over its HTTP query API.

mod api;
mod flows;

use sqlx::PgPool;

/// The commissions service running on its own namespace and database, with its API on a free port.
type Service = messaging::testing::ServiceUnderTest;

async fn start(db: PgPool) -> Service {
    Service::connect(db, "advertiser-1", commissions::service()).await
}
