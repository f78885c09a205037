//! Two replicas of every service and of the coordinator at once, sharing Key_Shared
//! subscriptions on Apache Pulsar: a burst of orders over many keys is spread over both, every
//! saga ends, per-key order holds and nothing is applied twice; then the same while one replica
//! of each is killed with `kill -9` in the middle of a second burst.

use super::crash::conversions;
use super::{free_address, wait_for};
use pulsaga_tests::platform::Platform;
use std::time::{Duration, Instant};
use tokio::process::Child;
use uuid::Uuid;

const ORDERS: usize = 500;
const SERVICES: [&str; 5] = ["campaigns", "tracking", "commissions", "payments", "sagas"];

/// A second replica of `service`: `pulsaga serve` on the in-process platform's database and
/// namespace, its query API on a port of its own.
async fn replica(platform: &Platform, service: &str) -> (Child, String) {
    let listen = free_address();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pulsaga"))
        .args([
            "serve",
            service,
            "--database",
            platform.database_name(service),
        ])
        .args(["--listen", &listen.to_string()])
        .args(["--payout-provider-url", &platform.urls.simulator])
        .envs(messaging::testing::env(platform.client.settings()))
        .env("SERVICE_TOKEN", super::SERVICE_TOKEN.expose())
        // Beside the platform's own pools, within PostgreSQL's default 100 connections.
        .env("DATABASE_CONNECTIONS", "6")
        // A runtime of two worker threads, where `pulsaga up`'s processes run on one.
        .env("PULSAGA_WORKER_THREADS", "2")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn a replica");
    let base = format!("http://{listen}");
    wait_for(&format!("{base}/events"), |_| true).await;
    (child, base)
}

/// Messages a replica's consumers applied, from its Prometheus metrics.
async fn applied(base: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|line| line.starts_with("pulsaga_consumer_applied_total"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

async fn count(platform: &Platform, service: &str, sql: &str) -> i64 {
    let pool = sqlx::PgPool::connect_with(
        std::env::var("DATABASE_URL")
            .expect("DATABASE_URL")
            .parse::<sqlx::postgres::PgConnectOptions>()
            .expect("url")
            .database(platform.database_name(service)),
    )
    .await
    .expect("pool");
    let n = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pool.close().await;
    n
}

/// Waits until every saga in `sagas` has ended, and returns how many ended `completed`.
async fn wait_until_ended(platform: &Platform, sagas: &[Uuid], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let statuses: Vec<String> =
            sqlx::query_scalar("select status from sagas where saga_id = any($1)")
                .bind(sagas)
                .fetch_all(platform.sagas_pool())
                .await
                .expect("sagas");
        let ended = statuses
            .iter()
            .filter(|s| matches!(s.as_str(), "completed" | "compensated" | "parked"))
            .count();
        if ended == sagas.len() {
            return statuses.iter().filter(|s| *s == "completed").count();
        }
        assert!(
            Instant::now() < deadline,
            "{ended} of {} sagas ended within {within:?}",
            sagas.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every order paid once and confirmed once, in order, across both bursts. The read models are
/// eventually consistent: they are given a while to catch up with the sagas that ended.
async fn assert_each_applied_once_in_order(platform: &Platform, orders: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let applied = loop {
        let applied = (
            count(platform, "commissions", "select count(*) from commissions").await,
            count(
                platform,
                "payments",
                "select count(*) from payments where status = 'completed'",
            )
            .await,
            count(
                platform,
                "campaigns",
                "select count(*) from budget_reservations where status = 'held'",
            )
            .await,
        );
        if applied == (orders, orders, orders) || Instant::now() > deadline {
            break applied;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        applied,
        (orders, orders, orders),
        "one commission, one payment and one reservation per order"
    );
    // A tracking event's stream is exactly recorded, then confirmed: per-key order held.
    let out_of_order = count(
        platform,
        "tracking",
        "select count(*) from (
             select stream_id, array_agg(event_type order by version) as types from events
              where stream_type = 'tracking-event' group by stream_id) s
          where types <> array['TrackingEventRecorded', 'TrackingEventConfirmed']",
    )
    .await;
    assert_eq!(out_of_order, 0, "tracking streams out of order");
}

#[sqlx::test(migrations = false)]
async fn two_replicas_of_every_process_share_the_load_and_survive_losing_one(db: sqlx::PgPool) {
    let platform = Platform::start(db).await;
    let mut replicas = Vec::new();
    for service in SERVICES {
        replicas.push((service, replica(&platform, service).await));
    }

    let started = Instant::now();
    let first = conversions(&platform, ORDERS).await;
    let completed = wait_until_ended(&platform, &first, Duration::from_secs(300)).await;
    assert_eq!(completed, ORDERS, "every saga of the first burst completed");
    println!("{ORDERS} sagas on two replicas in {:?}", started.elapsed());
    for (service, (_, base)) in &replicas {
        assert!(
            applied(base).await > 0,
            "the second {service} replica took no part of the burst"
        );
    }
    assert_each_applied_once_in_order(&platform, ORDERS as i64).await;

    // The second burst: one replica of each is killed once a tenth of it has ended.
    let killer = async {
        let deadline = Instant::now() + Duration::from_secs(120);
        while count(
            &platform,
            "sagas",
            "select count(*) from sagas where status = 'completed'",
        )
        .await
            < (ORDERS + ORDERS / 10) as i64
        {
            assert!(Instant::now() < deadline, "the second burst did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (_, (child, _)) in replicas.iter_mut() {
            child.start_kill().expect("kill -9 a replica");
        }
        for (_, (child, _)) in replicas.iter_mut() {
            child.wait().await.expect("reap");
        }
    };
    let (second, ()) = tokio::join!(conversions(&platform, ORDERS), killer);
    let completed = wait_until_ended(&platform, &second, Duration::from_secs(300)).await;
    assert_eq!(
        completed, ORDERS,
        "every saga of the second burst completed"
    );
    assert_each_applied_once_in_order(&platform, 2 * ORDERS as i64).await;
    platform.stop().await;
}
