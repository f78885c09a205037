//! The tracking service end to end: commands published to the real broker (Apache Pulsar, a
//! namespace of their own), handled against the real PostgreSQL, and read back over its HTTP query API.

mod flows;

use sqlx::PgPool;

/// The tracking service running on its own namespace and database, with its API on a free port.
type Service = messaging::testing::ServiceUnderTest;

async fn start(db: PgPool) -> Service {
    Service::connect(db, "advertiser-1", tracking::service()).await
}

fn micros_now() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
}
