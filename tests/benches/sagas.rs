//! End-to-end order-to-payment sagas through the broker: sustained sagas per second, and the
//! latency from recording a conversion to the saga's completion (p50, p99), at no load (one saga
//! at a time) and under a burst. Everything runs in this process on pulsar-lite behind the proxy
//! and the real PostgreSQL; the durable commits on a saga's critical path are counted and timed
//! against a plain commit measured in the same run.
//!
//! Run: `cargo bench -p pulsaga-tests --bench sagas` (needs `DATABASE_URL` and pulsar-lite, as
//! `scripts/setup.sh` provides; `-- --quick` for fewer sagas).

use pulsaga_tests::platform::Platform;
use schemas::commands::{AssociatePartner, CreateCampaign, RecordTrackingEvent, RegisterPartner};
use schemas::values::{CommissionRule, Money, Order, TrackingKind};
use sqlx::postgres::PgConnectOptions;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use uuid::Uuid;

fn micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1000).expect("micros")
}

fn eur(amount: i64) -> Money {
    Money {
        amount,
        currency: "EUR".into(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn conversion(partner: Uuid, campaign: Uuid) -> RecordTrackingEvent {
    let tracking_id = Uuid::new_v4();
    RecordTrackingEvent {
        tracking_id,
        campaign_id: campaign,
        partner_id: partner,
        kind: TrackingKind::Conversion,
        order: Some(Order {
            order_id: tracking_id.to_string(),
            amount: eur(5_000),
        }),
        occurred_at: micros(OffsetDateTime::now_utc()),
    }
}

/// Sends `conversions` (as fast as it can), then waits until every saga completed or `patience`
/// passed without one more finishing; returns the latencies of those that completed and the
/// wall time until the last of them did.
async fn run(
    platform: &Platform,
    conversions: Vec<RecordTrackingEvent>,
    patience: Duration,
) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let mut sent_at: HashMap<Uuid, Instant> = HashMap::new();
    for conversion in &conversions {
        sent_at.insert(
            sagas::wire::saga_id_for(conversion.tracking_id),
            Instant::now(),
        );
        platform.send(conversion.tracking_id, conversion).await;
    }
    let mut latencies = Vec::new();
    let mut last_progress = Instant::now();
    let mut wall = started.elapsed();
    while !sent_at.is_empty() && last_progress.elapsed() < patience {
        let ids: Vec<Uuid> = sent_at.keys().copied().collect();
        let done: Vec<(Uuid, String)> = sqlx::query_as(
            "select saga_id, status from sagas where saga_id = any($1) and status in ('completed', 'compensated', 'parked')",
        )
        .bind(&ids)
        .fetch_all(platform.sagas_pool())
        .await
        .expect("sagas");
        let now = Instant::now();
        for (id, status) in done {
            assert_eq!(status, "completed", "saga {id} did not complete");
            if let Some(sent) = sent_at.remove(&id) {
                latencies.push(now - sent);
                last_progress = now;
                wall = started.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    latencies.sort();
    (latencies, wall)
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (single, burst) = if quick { (20, 200) } else { (50, 500) };
    let patience = Duration::from_secs(30);
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL names the PostgreSQL server");
    let connect: PgConnectOptions = url.parse().expect("DATABASE_URL");
    let platform = Platform::start(connect.clone()).await;

    let (partner, campaign) = (Uuid::new_v4(), Uuid::new_v4());
    let now = OffsetDateTime::now_utc();
    let a = platform
        .send(
            partner,
            &RegisterPartner {
                partner_id: partner,
                name: "Pat".into(),
                email: "p@example.com".into(),
                payout_account: "NL00".into(),
            },
        )
        .await;
    let b = platform
        .send(
            campaign,
            &CreateCampaign {
                campaign_id: campaign,
                advertiser_id: Uuid::new_v4(),
                name: "Bench".into(),
                budget: eur(i64::MAX / 4),
                commission_rule: CommissionRule::Percent {
                    basis_points: 1_000,
                },
                valid_from: micros(now - time::Duration::hours(1)),
                valid_until: micros(now + time::Duration::days(1)),
            },
        )
        .await;
    for command in [a, b] {
        platform.outcome(&platform.urls.campaigns, command).await;
    }
    let c = platform
        .send(
            campaign,
            &AssociatePartner {
                campaign_id: campaign,
                partner_id: partner,
            },
        )
        .await;
    platform.outcome(&platform.urls.campaigns, c).await;

    // The lower bound's parts, measured here: a durable commit, and the commits on the path.
    let pool = platform.sagas_pool();
    sqlx::raw_sql("create temporary table commit_probe (n int)")
        .execute(pool)
        .await
        .ok();
    let probes = 200;
    let probe = Instant::now();
    for n in 0..probes {
        sqlx::query(
            "insert into outbox (topic, key, payload) values ('probe', $1, '') returning id",
        )
        .bind(n.to_string())
        .fetch_one(pool)
        .await
        .expect("probe");
    }
    let commit = probe.elapsed() / probes;
    sqlx::query("delete from outbox where topic = 'probe'")
        .execute(pool)
        .await
        .expect("clean");
    // Per saga: 1 tracking record + 4 forward steps × (coordinator send + service handle) + 4
    // replies fed + completion, each a transaction of its own, plus the relay's mark-published
    // commits between them (one per hop: 9).
    let commits_on_path = 1 + 4 * 2 + 4 + 9;

    let mut singles = Vec::new();
    for _ in 0..single {
        let (latency, _) = run(&platform, vec![conversion(partner, campaign)], patience).await;
        singles.extend(latency);
    }
    singles.sort();
    let conversions: Vec<RecordTrackingEvent> =
        (0..burst).map(|_| conversion(partner, campaign)).collect();
    let (latencies, wall) = run(&platform, conversions, patience).await;
    platform.stop().await;

    let bound = commit * commits_on_path;
    println!(
        "order-to-payment sagas end to end (pulsar-lite behind the proxy, 4 services + coordinator in one process)"
    );
    println!();
    println!("| figure | value | limit | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| durable commit (measured) | {:.2} ms | — | — |",
        commit.as_secs_f64() * 1e3
    );
    println!(
        "| lower bound: {commits_on_path} commits on the path | {:.1} ms | — | — |",
        bound.as_secs_f64() * 1e3
    );
    for (label, set) in [
        ("one at a time", &singles),
        (&*format!("burst of {burst}"), &latencies),
    ] {
        if set.is_empty() {
            continue;
        }
        let p50 = percentile(set, 0.5);
        let p99 = percentile(set, 0.99);
        println!(
            "| p50, {label} | {:.1} ms | {:.1} ms | {:.1}× the bound |",
            p50.as_secs_f64() * 1e3,
            bound.as_secs_f64() * 1e3,
            p50.as_secs_f64() / bound.as_secs_f64()
        );
        println!(
            "| p99, {label} | {:.1} ms | — | — |",
            p99.as_secs_f64() * 1e3
        );
    }
    let completed = latencies.len();
    let rate = completed as f64 / wall.as_secs_f64();
    println!(
        "| sustained, burst of {burst} | {rate:.0} sagas/s | 300 sagas/s (goal) | {:.2} |",
        rate / 300.0
    );
    println!(
        "| completed of the burst | {completed} of {burst} | {burst} | {:.2} |",
        completed as f64 / burst as f64
    );
    if completed < burst {
        println!();
        println!(
            "{} sagas of the burst made no progress for {patience:?} and were left (see ADR 4).",
            burst - completed
        );
    }
}
