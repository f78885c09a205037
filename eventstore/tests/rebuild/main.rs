//! A rebuild of a projection while others work on the same PostgreSQL server: it replays beside
//! the live read model in short transactions, so another service's projection keeps up with its
//! log meanwhile (the global log is read only up to the oldest running transaction on the
//! server), the live model stays readable, and the rebuilt one is swapped in. A binary of its
//! own, so that no other test's transactions hold the server's log back while it measures.

#[path = "../common/tally.rs"]
mod tally;

use eventstore::projection;
use eventstore::{ExpectedVersion, Metadata, NewEvent};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::time::{Duration, Instant};
use tally::Tally;
use uuid::Uuid;

const STREAMS: usize = 100;
const PER_STREAM: usize = 1_000;

/// A migrated event store with the tallies table (and a secondary index, which a rebuild sets
/// aside and builds again).
async fn store(connect: PgConnectOptions) -> PgPool {
    let pool = PgPoolOptions::new()
        .max_connections(6)
        .connect_with(connect)
        .await
        .expect("connect");
    eventstore::migrate(&pool).await.expect("migrate");
    sqlx::raw_sql(
        "create table tallies (stream_id text primary key, events bigint not null);
         create index tallies_by_count on tallies (events);",
    )
    .execute(&pool)
    .await
    .expect("tallies");
    pool
}

fn events(count: usize) -> Vec<NewEvent> {
    (0..count)
        .map(|_| NewEvent {
            event_id: Uuid::new_v4(),
            event_type: "Counted".into(),
            schema_version: 1,
            payload: vec![1, 2, 3],
            metadata: Metadata::default(),
        })
        .collect()
}

async fn append(pool: &PgPool, stream: &str, count: usize) {
    let mut conn = pool.acquire().await.expect("connection");
    eventstore::append(
        &mut conn,
        stream,
        "tally",
        ExpectedVersion::Any,
        &events(count),
    )
    .await
    .expect("append");
}

/// Waits until the projection has counted `stream`.
async fn projected(pool: &PgPool, stream: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen: bool =
            sqlx::query_scalar("select exists (select 1 from tallies where stream_id = $1)")
                .bind(stream)
                .fetch_one(pool)
                .await
                .expect("tallies");
        if seen {
            return;
        }
        assert!(Instant::now() < deadline, "{stream} never projected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[sqlx::test(migrations = false)]
async fn another_services_projection_keeps_up_while_one_rebuilds_100_000_events(
    _: PgPoolOptions,
    connect: PgConnectOptions,
) {
    let rebuilt = store(connect.clone()).await;
    for stream in 0..STREAMS {
        append(&rebuilt, &format!("s-{stream}"), PER_STREAM).await;
    }
    projection::catch_up(&rebuilt, &Tally { poisoned: false })
        .await
        .expect("live model");

    // Another service's database on the same server, its projection running.
    let other_name = format!("rebuild_other_{}", Uuid::new_v4().simple());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {other_name}")))
        .execute(&rebuilt)
        .await
        .expect("create the other database");
    let other = store(connect.clone().database(&other_name)).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = tokio::spawn({
        let other = other.clone();
        async move {
            let stopped = async {
                let _ = stopped.await;
            };
            let wakeup = eventstore::Notifications::new(&other)
                .wakeup(eventstore::outbox::CHANNEL)
                .await;
            projection::run(
                &other,
                &Tally { poisoned: false },
                wakeup,
                Duration::from_millis(50),
                stopped,
            )
            .await
        }
    });

    // The runner is up and caught up before anything is measured.
    append(&other, "warm-up", 1).await;
    projected(&other, "warm-up").await;

    let started = Instant::now();
    // On a thread and runtime of its own, as `pulsaga replay` runs in a process of its own: the
    // test's runtime then only waits on PostgreSQL, never on the rebuild's work.
    let rebuild = std::thread::spawn({
        let connect = connect.clone();
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let pool = PgPool::connect_with(connect).await.expect("connect");
                projection::rebuild(&pool, &Tally { poisoned: false }, |_| {}).await
            })
        }
    });
    // The live model stays readable while the rebuild runs: the slowest read of it.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads = tokio::spawn({
        let (rebuilt, done) = (rebuilt.clone(), done.clone());
        async move {
            let mut slowest = Duration::ZERO;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let asked = Instant::now();
                let live: i64 = sqlx::query_scalar("select count(*) from tallies")
                    .fetch_one(&rebuilt)
                    .await
                    .expect("live tallies");
                assert_eq!(live, STREAMS as i64);
                slowest = slowest.max(asked.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            slowest
        }
    });
    let (mut samples, mut worst) = (0, Duration::ZERO);
    while !rebuild.is_finished() {
        let stream = format!("o-{samples}");
        append(&other, &stream, 1).await;
        let appended = Instant::now();
        projected(&other, &stream).await;
        worst = worst.max(appended.elapsed());
        samples += 1;
    }
    let report = rebuild.join().expect("rebuild").expect("rebuild ran");
    let took = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let slowest_read = reads.await.expect("reads");
    println!(
        "rebuild of {} events in {took:?}; the other projection's worst lag over {samples} \
         appends: {worst:?}",
        report.events
    );
    assert_eq!(report.events, STREAMS * PER_STREAM);
    assert!(report.matches, "{report:?}");
    assert!(
        samples >= 5,
        "the rebuild ended before it could be watched ({samples})"
    );
    // Held back by one page's transaction at most, not by the whole rebuild.
    assert!(
        worst < Duration::from_secs(1) && worst < took / 3,
        "the other projection lagged {worst:?} during a rebuild of {took:?}"
    );
    assert!(
        slowest_read < took / 3,
        "a read of the live model waited {slowest_read:?}"
    );

    let tallies: Vec<i64> = sqlx::query_scalar("select events from tallies")
        .fetch_all(&rebuilt)
        .await
        .expect("rebuilt tallies");
    assert!(tallies.len() == STREAMS && tallies.iter().all(|n| *n == PER_STREAM as i64));
    let indexes: Vec<String> = sqlx::query_scalar(
        "select indexname::text from pg_indexes where tablename = 'tallies' order by 1",
    )
    .fetch_all(&rebuilt)
    .await
    .expect("indexes");
    assert_eq!(
        indexes,
        ["tallies_by_count", "tallies_pkey"],
        "the live names, in public"
    );

    stop.send(()).expect("the runner listens");
    runner.await.expect("runner").expect("runner ran");
    other.close().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "drop database {other_name} with (force)"
    )))
    .execute(&rebuilt)
    .await
    .expect("drop the other database");
}
