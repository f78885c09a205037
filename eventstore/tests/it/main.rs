//! Integration tests of the event store against the real PostgreSQL (`DATABASE_URL`), each in a
//! fresh database created by `#[sqlx::test]`.

mod api;
mod archive;
mod global_log;
mod handoff;
mod inbox_and_checkpoints;
mod notifications;
mod outbox;
mod prune;
mod rebuild;
mod streams;
#[path = "../common/tally.rs"]
mod tally;
mod write;

use eventstore::{Metadata, NewEvent};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

/// A migrated event store in the database of `db`, the pool `#[sqlx::test]` gives a test, with
/// room for `connections` concurrent clients (`db` shares a small parent pool; the concurrency
/// tests need more, so it is closed).
async fn store(db: PgPool, connections: u32) -> PgPool {
    let connect = db.connect_options();
    db.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect_with((*connect).clone())
        .await
        .expect("connect to the test database");
    eventstore::migrate(&pool)
        .await
        .expect("migrate the event store");
    pool
}

/// Whether every committed event is below the oldest running transaction, so that the global log
/// hands all of them out. Other databases' transactions on the same server (parallel tests) hold
/// the bound back for a while; a reader that needs "everything" waits for this.
async fn log_settled(pool: &PgPool) -> bool {
    sqlx::query_scalar(
        "select not exists (select 1 from events
                             where transaction_id >= pg_snapshot_xmin(pg_current_snapshot()))",
    )
    .fetch_one(pool)
    .await
    .expect("settled")
}

fn event(event_type: &str, payload: &[u8]) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: event_type.to_owned(),
        schema_version: 1,
        payload: payload.to_vec(),
        metadata: Metadata::default(),
    }
}
