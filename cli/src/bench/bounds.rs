//! The bounds a saga's latency is measured against: how fast the API accepts, a broker round
//! trip, a payout provider call and a durable commit, each the median of probes.

use crate::client::ApiClient;
use crate::up::Platform;
use serde_json::json;
use std::time::{Duration, Instant};

/// The topic the bench times broker round trips on (no process of the platform uses it).
const PROBE_TOPIC: &str = "pulsaga-bench-round-trips";

/// What the API did with `POST /v1/tracking-events` from many callers at once.
pub(super) struct Acceptance {
    /// Accepted per second.
    pub(super) rate: f64,
    pub(super) p99: Duration,
    /// Answered otherwise (the API shedding load included), or not answered.
    pub(super) failed: usize,
}

/// Requests per second and p99 of `POST /v1/tracking-events` with `concurrency` callers.
/// Each caller has a token of its own: the API limits requests per caller. A caller goes on
/// after an error; the errors are counted.
pub(super) async fn acceptance(
    api: &Api,
    (campaign, partner): (&str, &str),
    tokens: Vec<String>,
    duration: Duration,
) -> anyhow::Result<Acceptance> {
    let end = Instant::now() + duration;
    let mut callers = tokio::task::JoinSet::new();
    for token in tokens {
        let (http, base) = (api.client.http.clone(), api.client.base.clone());
        let body = json!({ "campaign_id": campaign, "partner_id": partner, "kind": "lead" });
        callers.spawn(async move {
            let (mut times, mut failed) = (Vec::new(), 0);
            while Instant::now() < end {
                let sent = Instant::now();
                let answer = http
                    .post(format!("{base}/v1/tracking-events"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
                match answer {
                    Ok(response) if response.status().is_success() => times.push(sent.elapsed()),
                    _ => failed += 1,
                }
            }
            (times, failed)
        });
    }
    let (mut times, mut failed) = (Vec::new(), 0);
    while let Some(done) = callers.join_next().await {
        let (caller_times, caller_failed) = done?;
        times.extend(caller_times);
        failed += caller_failed;
    }
    times.sort();
    Ok(Acceptance {
        rate: times.len() as f64 / duration.as_secs_f64(),
        p99: percentile(&times, 0.99),
        failed,
    })
}

/// The median of `times`.
pub(super) fn median_of(mut times: Vec<Duration>) -> Duration {
    times.sort();
    percentile(&times, 0.5)
}

/// The broker's part of one hop, measured now: a message from its send to its arrival at a
/// consumer, on the broker the platform's processes use (median of `probes`).
pub(super) async fn broker_round_trip(
    platform: &Platform,
    probes: usize,
) -> anyhow::Result<Duration> {
    let client = messaging::Client::connect(messaging::PulsarSettings::new(
        &platform.pulsar_url,
        &platform.pulsar_admin_url,
    ))
    .await?;
    let times = client.round_trips(PROBE_TOPIC, probes).await;
    client.close().await;
    Ok(median_of(times?))
}

/// One call to the payout provider, measured now (median of `probes` lookups of an unknown key).
pub(super) async fn provider_call(simulator: &str, probes: usize) -> anyhow::Result<Duration> {
    let provider = payments::provider::Provider::new(simulator, Duration::from_secs(5))?;
    let mut times = Vec::with_capacity(probes);
    for n in 0..probes {
        let started = Instant::now();
        provider.lookup(&format!("bench-probe-{n}")).await?;
        times.push(started.elapsed());
    }
    Ok(median_of(times))
}

/// The durable commit latency on the server, measured now.
pub(super) async fn commit_latency(database_url: &str) -> anyhow::Result<Duration> {
    let pool = sqlx::PgPool::connect(database_url).await?;
    sqlx::raw_sql("create table if not exists pulsaga_bench_commit (n int)")
        .execute(&pool)
        .await?;
    let probes = 200;
    let started = Instant::now();
    for n in 0..probes {
        sqlx::query("insert into pulsaga_bench_commit values ($1)")
            .bind(n)
            .execute(&pool)
            .await?;
    }
    let latency = started.elapsed() / probes as u32;
    sqlx::raw_sql("drop table pulsaga_bench_commit")
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(latency)
}

/// The API, and the token the bench calls it with.
pub(super) struct Api {
    pub(super) client: ApiClient,
    pub(super) token: String,
    /// The Apache Pulsar JVM the platform started, whose CPU is counted apart.
    pub(super) broker: Option<u32>,
}

pub(super) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}
