//! The process's listener: one connection, whatever the number of workers and channels; a commit
//! that notifies wakes every worker waiting on its channel, and only those.

use super::store;
use eventstore::Notifications;
use sqlx::PgPool;
use std::time::{Duration, Instant};

/// Longer than any test waits: a worker that returns sooner was woken by a notification.
const FALLBACK: Duration = Duration::from_secs(60);

#[sqlx::test(migrations = false)]
async fn one_connection_wakes_every_worker_of_a_channel(db: PgPool) {
    let pool = store(db, 4).await;
    let notifications = Notifications::new(&pool);
    let mut relay = notifications.wakeup("work").await;
    let mut projection = notifications.wakeup("work").await;
    let mut other = notifications.wakeup("other work").await;

    let listening: i64 = sqlx::query_scalar(
        "select count(*) from pg_stat_activity
         where datname = current_database() and query ilike 'listen%'",
    )
    .fetch_one(&pool)
    .await
    .expect("count listeners");
    assert_eq!(listening, 1, "one connection listens for all");

    sqlx::query("select pg_notify('work', '')")
        .execute(&pool)
        .await
        .expect("notify");
    let started = Instant::now();
    relay.wait(FALLBACK).await;
    projection.wait(FALLBACK).await;
    assert!(started.elapsed() < Duration::from_secs(10), "both woken");
    let unwoken = tokio::time::timeout(Duration::from_millis(300), other.wait(FALLBACK)).await;
    assert!(unwoken.is_err(), "another channel's worker sleeps on");

    // A burst of commits wakes a worker once: the next wait sleeps until the next commit.
    for _ in 0..5 {
        sqlx::query("select pg_notify('work', '')")
            .execute(&pool)
            .await
            .expect("notify");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    relay.wait(FALLBACK).await;
    let again = tokio::time::timeout(Duration::from_millis(300), relay.wait(FALLBACK)).await;
    assert!(again.is_err(), "the burst was one wakeup");
}
