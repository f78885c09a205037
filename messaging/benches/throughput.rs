//! Messages per second through the outbox relay and through the consumer runner, on Apache
//! Pulsar standalone and the real PostgreSQL, next to pulsar-rs publishing the same messages
//! directly (the relay's limit on this broker).
//!
//! Run: `cargo bench -p messaging --bench throughput` (needs `DATABASE_URL` and the Apache Pulsar
//! distribution, as `scripts/setup.sh` provides; `-- --quick` for fewer messages). It starts its
//! own broker and creates and drops its own database.

use eventstore::outbox;
use messaging::admin::Admin;
use messaging::broker::{Standalone, StandaloneSettings};
use messaging::consume::{self, ConsumerSettings, ConsumerStats, Handler, HandlerError, Incoming};
use messaging::relay::{self, RelaySettings};
use messaging::{Client, PulsarSettings, effects};
use schemas::Message;
use schemas::commands::RegisterPartner;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgConnection};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const KEYS: usize = 64;

fn message(topic: &str, key: usize, n: usize) -> outbox::Message {
    let command = RegisterPartner {
        partner_id: Uuid::new_v4(),
        name: format!("partner {n}"),
        email: "partner@example.com".into(),
        payout_account: "NL00BANK0123456789".into(),
    };
    let tenant = Some("advertiser-1".into());
    let properties = effects::first_of_flow(Uuid::new_v4(), &command, tenant, Some("bench".into()));
    outbox::Message {
        topic: topic.into(),
        ..effects::outgoing(&command, &format!("key-{key}"), &properties).expect("encode")
    }
}

/// A handler with one small write, like a command handler's inbox-plus-effect transaction.
struct Apply;

impl Handler for Apply {
    type Message = RegisterPartner;

    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming<RegisterPartner>,
    ) -> Result<(), HandlerError> {
        sqlx::query("insert into applied (message_id) values ($1)")
            .bind(incoming.properties.message_id)
            .execute(tx)
            .await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let count = if quick { 2_000 } else { 10_000 };
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL names the PostgreSQL server");
    let server: PgConnectOptions = url.parse().expect("DATABASE_URL");
    let mut admin = server.connect().await.expect("connect");
    sqlx::raw_sql("drop database if exists pulsaga_bench_messaging with (force)")
        .execute(&mut admin)
        .await
        .expect("drop");
    sqlx::raw_sql("create database pulsaga_bench_messaging")
        .execute(&mut admin)
        .await
        .expect("create");
    let pool = PgPoolOptions::new()
        .max_connections(32)
        .connect_with(server.clone().database("pulsaga_bench_messaging"))
        .await
        .expect("pool");
    eventstore::migrate(&pool).await.expect("migrate");
    sqlx::raw_sql("create table applied (message_id uuid primary key)")
        .execute(&pool)
        .await
        .expect("table");

    let data_dir = std::env::temp_dir().join(format!("pulsaga-bench-{}", Uuid::new_v4()));
    let broker = Standalone::start(&StandaloneSettings::in_dir(&data_dir))
        .await
        .expect("Apache Pulsar (bash scripts/setup.sh fetches it)");
    let pulsar = PulsarSettings::new(broker.url(), broker.admin_url());
    Admin::new(&pulsar.admin_url)
        .provision(&pulsar)
        .await
        .expect("provision");
    let client = Arc::new(Client::connect(pulsar).await.expect("client"));
    let topic = RegisterPartner::TOPIC.name;

    // The limit: pulsar-rs publishing straight to a scratch topic, all sends in flight at once.
    let direct: Vec<outbox::Message> = (0..count)
        .map(|n| message("bench-direct", n % KEYS, n))
        .collect();
    let started = Instant::now();
    for chunk in direct.chunks(512) {
        for result in client.publish_all(chunk).await {
            result.expect("direct publish");
        }
    }
    let direct_rate = count as f64 / started.elapsed().as_secs_f64();

    for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
        let batch: Vec<outbox::Message> =
            chunk.iter().map(|&n| message(topic, n % KEYS, n)).collect();
        let mut tx = pool.begin().await.expect("begin");
        outbox::enqueue(&mut tx, &batch).await.expect("enqueue");
        tx.commit().await.expect("commit");
    }
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let wakeup = eventstore::Notifications::new(&pool)
        .wakeup(outbox::CHANNEL)
        .await;
    let relay = tokio::spawn(relay::run(
        client.clone(),
        pool.clone(),
        wakeup,
        None,
        RelaySettings::new("bench"),
        shutdown.clone(),
    ));
    loop {
        let mut conn = pool.acquire().await.expect("connection");
        if outbox::pending(&mut conn).await.expect("pending") == 0 {
            break;
        }
        drop(conn);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let relay_rate = count as f64 / started.elapsed().as_secs_f64();

    let settings = ConsumerSettings::new("bench");
    let stats = settings.stats.clone();
    let started = Instant::now();
    let consumer = tokio::spawn(consume::run(
        client.clone(),
        pool.clone(),
        settings,
        Arc::new(Apply),
        shutdown.clone(),
    ));
    while ConsumerStats::get(&stats.applied) < count as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let consumer_rate = count as f64 / started.elapsed().as_secs_f64();

    shutdown.cancel();
    relay.await.expect("relay").expect("relay run");
    consumer.await.expect("consumer").expect("consumer run");
    client.close().await;
    pool.close().await;
    sqlx::raw_sql("drop database pulsaga_bench_messaging with (force)")
        .execute(&mut admin)
        .await
        .expect("drop");
    broker.stop().await.expect("stop the broker");
    let _ = std::fs::remove_dir_all(data_dir);

    println!("messaging throughput, {count} messages over {KEYS} keys, Apache Pulsar standalone");
    println!();
    println!("| path | messages/s | limit | ratio |");
    println!("|---|---|---|---|");
    println!("| pulsar-rs publish, all in flight | {direct_rate:.0} | — | — |");
    println!(
        "| outbox relay (claim, publish, mark) | {relay_rate:.0} | {direct_rate:.0} | {:.2} |",
        relay_rate / direct_rate
    );
    println!("| consumer runner (inbox + effect + commit + ack) | {consumer_rate:.0} | — | — |");
}
