//! Rebuilds of a small read model: one that fails part way leaves the live model as it was and
//! frees the projection's lock and the connection that read ahead for the next rebuild; one whose
//! rows PostgreSQL cannot hash is compared row by row.

use super::{event, log_settled, store};
use crate::tally::Tally;
use eventstore::projection;
use eventstore::{Error, ExpectedVersion};
use sqlx::PgPool;
use std::time::Duration;

async fn tallies(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("select stream_id, events from tallies order by 1")
        .fetch_all(pool)
        .await
        .expect("tallies")
}

/// An event store with the tallies table, `columns` added to it, and `streams` appended, each
/// with its number of events; the live model caught up.
async fn counted(db: PgPool, columns: &str, streams: &[(&str, usize)]) -> PgPool {
    let pool = store(db, 4).await;
    let table = format!(
        "create table tallies (stream_id text primary key, events bigint not null{columns})"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(table))
        .execute(&pool)
        .await
        .expect("tallies");
    let mut conn = pool.acquire().await.expect("connection");
    for &(stream, count) in streams {
        let events: Vec<_> = (0..count).map(|_| event("Counted", b"x")).collect();
        eventstore::append(
            &mut conn,
            stream,
            "tally",
            ExpectedVersion::NoStream,
            &events,
        )
        .await
        .expect("append");
    }
    while !log_settled(&pool).await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    projection::catch_up(&pool, &Tally { poisoned: false })
        .await
        .expect("live model");
    pool
}

#[sqlx::test(migrations = false)]
async fn a_rebuild_that_fails_leaves_the_live_model_and_frees_the_projection(db: PgPool) {
    // The poison early in a log of many pages, so that the page after it is read while it fails.
    let pool = counted(db, "", &[("first", 500), ("poison", 1), ("rest", 9_000)]).await;
    let live = tallies(&pool).await;

    let failed = projection::rebuild(&pool, &Tally { poisoned: true }, |_| {}).await;
    assert!(matches!(failed, Err(Error::Database(_))), "{failed:?}");
    assert_eq!(tallies(&pool).await, live, "the live model is untouched");

    // Held by the failed rebuild, the lock would keep this one waiting.
    let rebuilt = tokio::time::timeout(
        Duration::from_secs(30),
        projection::rebuild(&pool, &Tally { poisoned: false }, |_| {}),
    )
    .await
    .expect("the projection's lock is free")
    .expect("the next rebuild runs");
    assert!(rebuilt.matches, "{rebuilt:?}");
    assert_eq!(rebuilt.events, 9_501);
    assert_eq!(tallies(&pool).await, live);
}

#[sqlx::test(migrations = false)]
async fn a_model_postgresql_cannot_hash_is_compared_row_by_row(db: PgPool) {
    let columns = ", amount money not null default 0";
    let pool = counted(db, columns, &[("a", 3), ("b", 2)]).await;
    let tally = Tally { poisoned: false };
    let rebuilt = projection::rebuild(&pool, &tally, |_| {})
        .await
        .expect("a rebuild of a model with a money column");
    assert!(rebuilt.matches, "{rebuilt:?}");

    sqlx::query("update tallies set events = 99 where stream_id = 'b'")
        .execute(&pool)
        .await
        .expect("drift");
    let drifted = projection::rebuild(&pool, &tally, |_| {})
        .await
        .expect("rebuild");
    assert!(!drifted.matches, "the drift is caught");
    assert!(
        drifted.only_live.iter().any(|row| row.contains("(b,99,")),
        "{drifted:?}"
    );
}

/// A projection woken while another instance holds its batch looks again shortly, without
/// another wake-up: that instance may have read the log before the commits that woke this one
/// (a process wakes only its own projections for what it hands its relay).
#[sqlx::test(migrations = false)]
async fn a_projection_woken_while_another_holds_its_batch_looks_again(db: PgPool) {
    let pool = counted(db, "", &[("a", 1)]).await;
    let notifications = eventstore::Notifications::new(&pool);
    let wakeup = notifications.wakeup("nobody notifies this").await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = tokio::spawn({
        let pool = pool.clone();
        async move {
            let stopped = async {
                let _ = stopped.await;
            };
            let tally = Tally { poisoned: false };
            projection::run(&pool, &tally, wakeup, Duration::from_secs(600), stopped).await
        }
    });
    let mut other_instance = pool.acquire().await.expect("connection");
    sqlx::query("select pg_advisory_lock(hashtext('tally'))")
        .execute(&mut *other_instance)
        .await
        .expect("hold the batch");
    let mut conn = pool.acquire().await.expect("connection");
    eventstore::append(
        &mut conn,
        "b",
        "tally",
        ExpectedVersion::NoStream,
        &[event("Counted", b"x")],
    )
    .await
    .expect("append");
    notifications.wake("nobody notifies this");
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query("select pg_advisory_unlock(hashtext('tally'))")
        .execute(&mut *other_instance)
        .await
        .expect("let the batch go");

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tallies(&pool).await.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the projection waited for another wake-up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(tallies(&pool).await, [("a".into(), 1), ("b".into(), 1)]);
    stop.send(()).expect("stop");
    runner.await.expect("runner").expect("run");
}
