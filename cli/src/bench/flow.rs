//! The platform as deployed (every process of `pulsaga up`, on Apache Pulsar and PostgreSQL),
//! driven through its HTTP API: order-to-payment sagas at rising offered loads, from the
//! recorded conversion to the completed saga, next to the lower bound of the durable commits on
//! a saga's path; and how many `POST /v1/tracking-events` the API accepts under concurrency.

use super::bounds::{
    Acceptance, Api, acceptance, broker_round_trip, commit_latency, percentile, provider_call,
};
use super::cpu::{Cpu, cpu_figures};
use super::listing::{Listing, saga_list};
use super::storage::{drop_databases, storage, tables_before};
use super::{Figure, Point, Scale};
use crate::client::ApiClient;
use crate::settings::Jwt;
use crate::up::{Options, Platform};
use anyhow::Context;
use bff::auth::Role;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The durable commits on an order-to-payment saga's path: the conversion's record; the
/// coordinator's start, its four answers (the last completes the saga); the four steps, each
/// handled by a service; and the payout worker's claim and its record of the provider's answer.
/// (The relays' claims and marks are not durable commits: see `messaging::relay`.)
const COMMITS_ON_PATH: u32 = 1 + 5 + 4 + 2;

/// The messages on the path, each a broker hop: the conversion command, its recorded event, and
/// each of the four steps' command and answer.
const HOPS_ON_PATH: u32 = 2 + 4 * 2;

/// A campaign paying 10 % of each order, with one partner, made by the advertiser `token` acts
/// for; returns (campaign, partner).
pub(crate) async fn set_up(client: &ApiClient, token: &str) -> anyhow::Result<(String, String)> {
    let partner = client
        .post(
            "/v1/partners",
            token,
            json!({ "name": "Bench", "email": "bench@example.com", "payout_account": "NL00" }),
        )
        .await?;
    client.succeeded(&partner, token).await?;
    let partner = partner["partner_id"]
        .as_str()
        .context("partner")?
        .to_owned();
    let rule = json!({ "type": "percent", "basis_points": 1_000 });
    let campaign = campaign_for(client, token, &partner, rule).await?;
    Ok((campaign, partner))
}

/// A campaign paying `partner` by `rule`, with a budget no run spends, ready for its events.
pub(crate) async fn campaign_for(
    client: &ApiClient,
    token: &str,
    partner: &str,
    rule: serde_json::Value,
) -> anyhow::Result<String> {
    let campaign = client
        .post(
            "/v1/campaigns",
            token,
            json!({
                "name": "Bench",
                "budget": { "amount": 1_000_000_000_000_i64, "currency": "EUR" },
                "commission_rule": rule,
                "valid_until": "2099-01-01T00:00:00Z",
            }),
        )
        .await?;
    client.succeeded(&campaign, token).await?;
    let campaign = campaign["campaign_id"]
        .as_str()
        .context("campaign")?
        .to_owned();
    client
        .wait_for(&format!("/v1/campaigns/{campaign}"), token, |_| true)
        .await?;
    let associated = client
        .post(
            &format!("/v1/campaigns/{campaign}/partners"),
            token,
            json!({ "partner_id": partner }),
        )
        .await?;
    client.succeeded(&associated, token).await?;
    Ok(campaign)
}

/// Sends conversions at `rate` per second for `duration`, from the `callers` in turn (the API
/// limits each caller's rate), while following the coordinator's log; a saga's latency runs from
/// sending its conversion to its `SagaCompleted` entry.
async fn load(
    api: &Api,
    callers: &[String],
    (follower, sagas_url): (&reqwest::Client, &str),
    (campaign, partner): (&str, &str),
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Point> {
    let total = (rate * duration.as_secs_f64()).round() as usize;
    // Where the coordinator's log stands before the first conversion: reading to its end takes
    // longer the longer the log, and a saga sent meanwhile could end before it.
    let mut endings = Endings::from(log_end(follower, sagas_url).await?);
    let cpu_before = Cpu::now(api.broker);
    let body = json!({ "campaign_id": campaign, "partner_id": partner, "kind": "conversion" });
    let sender = tokio::spawn(send_conversions(api, callers.to_vec(), body, rate, total));
    let mut sends: Option<Sends> = None;
    let mut sender = Some(sender);
    loop {
        if let Some(task) = sender.take_if(|task| task.is_finished()) {
            sends = Some(task.await??);
        }
        if let Some(Sends { sent, .. }) = &sends
            && (sent.keys().all(|id| endings.ended(id))
                || endings.last_progress.elapsed() > Duration::from_secs(30))
        {
            break;
        }
        if !endings.follow(follower, sagas_url).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let cpu = cpu_before.and_then(|before| Some(Cpu::now(api.broker)?.since(before)));
    Ok(endings.point(rate, sends.unwrap_or_default(), cpu))
}

/// Sends `total` conversions (`body` with an order of its own each) at `rate` per second, from
/// the `callers` in turn.
fn send_conversions(
    api: &Api,
    callers: Vec<String>,
    body: Value,
    rate: f64,
    total: usize,
) -> impl Future<Output = anyhow::Result<Sends>> + Send + 'static {
    let (http, base) = (api.client.http.clone(), api.client.base.clone());
    async move {
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        let mut sends = tokio::task::JoinSet::new();
        for n in 0..total {
            ticker.tick().await;
            let mut body = body.clone();
            body["order"] = json!({
                "order_id": uuid::Uuid::new_v4().to_string(),
                "amount": { "amount": 5_000, "currency": "EUR" },
            });
            let (http, base) = (http.clone(), base.clone());
            let token = callers[n % callers.len()].clone();
            sends.spawn(async move {
                let sent = OffsetDateTime::now_utc();
                let request = http
                    .post(format!("{base}/v1/tracking-events"))
                    .bearer_auth(token)
                    .json(&body);
                let (answer, refused) = send_as_told(request).await;
                let saga = answer.map(|answer| answer["saga_id"].as_str().map(str::to_owned));
                (saga, sent, refused)
            });
        }
        let mut sends_done = Sends::default();
        while let Some(done) = sends.join_next().await {
            let (saga, at, refused) = done?;
            sends_done.refused += refused;
            match saga {
                Ok(Some(saga)) => {
                    sends_done.sent.insert(saga, at);
                }
                Ok(None) => sends_done.fail("an answer without a saga id".into()),
                Err(error) => sends_done.fail(error),
            }
        }
        anyhow::Ok(sends_done)
    }
}

/// The coordinator's log, followed from where it stood: how every saga ended, once, with the
/// time it was recorded (the same clock as a conversion's sending: one machine).
struct Endings {
    /// The log's position read up to.
    after: i64,
    completed: HashMap<String, OffsetDateTime>,
    ended_otherwise: HashMap<String, &'static str>,
    step_timeouts: usize,
    last_progress: Instant,
}

impl From<i64> for Endings {
    fn from(after: i64) -> Self {
        Endings {
            after,
            completed: HashMap::new(),
            ended_otherwise: HashMap::new(),
            step_timeouts: 0,
            last_progress: Instant::now(),
        }
    }
}

impl Endings {
    fn ended(&self, saga: &str) -> bool {
        self.completed.contains_key(saga) || self.ended_otherwise.contains_key(saga)
    }

    /// Reads the log's next page; `false` if it had nothing new. A page the coordinator does not
    /// give now (it sheds load, say) is asked for again.
    async fn follow(&mut self, follower: &reqwest::Client, sagas_url: &str) -> bool {
        let page = follower
            .get(format!(
                "{sagas_url}/events?after={}&limit=1000",
                self.after
            ))
            .send()
            .await;
        let page: Value = match page {
            Ok(response) => response.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        self.after = page["next"].as_i64().unwrap_or(self.after);
        let events = page["events"].as_array().cloned().unwrap_or_default();
        for event in &events {
            let Some(saga) = event["stream_id"]
                .as_str()
                .map(|s| s.trim_start_matches("saga-"))
            else {
                continue;
            };
            match event["event_type"].as_str() {
                Some("SagaCompleted") => {
                    let at = event["recorded_at"]
                        .as_str()
                        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
                    if let Some(at) = at {
                        self.completed.insert(saga.to_owned(), at);
                    }
                }
                Some("SagaCompensated") => {
                    self.ended_otherwise.insert(saga.to_owned(), "compensated");
                }
                Some("SagaParked") => {
                    self.ended_otherwise.insert(saga.to_owned(), "parked");
                }
                Some("StepTimedOut") => {
                    self.step_timeouts += 1;
                    continue;
                }
                _ => continue,
            }
            self.last_progress = Instant::now();
        }
        !events.is_empty()
    }

    /// The figures of a load offered at `rate`.
    fn point(&self, rate: f64, sends: Sends, cpu: Option<Cpu>) -> Point {
        let Sends {
            sent,
            refused,
            errors,
        } = sends;
        let mut latencies: Vec<Duration> = sent
            .iter()
            .filter_map(|(id, at)| Duration::try_from(*self.completed.get(id)? - *at).ok())
            .collect();
        latencies.sort();
        let first = sent.values().min().copied();
        let last = sent
            .keys()
            .filter_map(|id| self.completed.get(id))
            .max()
            .copied();
        let window = match (first, last) {
            (Some(first), Some(last)) => (last - first).as_seconds_f64(),
            _ => f64::NAN,
        };
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let ending_count = |ending: &str| {
            sent.keys()
                .filter(|id| self.ended_otherwise.get(*id) == Some(&ending))
                .count()
        };
        let (compensated, parked) = (ending_count("compensated"), ending_count("parked"));
        Point {
            offered: rate,
            achieved: latencies.len() as f64 / window.max(1e-9),
            completed: latencies.len(),
            compensated,
            parked,
            unfinished: sent.len() - latencies.len() - compensated - parked,
            step_timeouts: self.step_timeouts,
            sent: sent.len(),
            refused,
            errors: errors.values().sum(),
            p50_ms: ms(percentile(&latencies, 0.5)),
            p99_ms: ms(percentile(&latencies, 0.99)),
            cpu,
        }
    }
}

/// What came of one load's conversions.
#[derive(Debug, Default)]
struct Sends {
    /// The accepted ones: their saga, and when they were sent.
    sent: HashMap<String, OffsetDateTime>,
    refused: usize,
    /// The ones that failed for good, by what went wrong.
    errors: BTreeMap<String, usize>,
}

impl Sends {
    fn fail(&mut self, error: String) {
        if !self.errors.contains_key(&error) {
            eprintln!("bench: a conversion failed: {error}");
        }
        *self.errors.entry(error).or_default() += 1;
    }
}

/// The most times one request is sent again when the API asks for it later.
const MAX_REFUSALS: usize = 20;

/// Sends `request` as a well-behaved client does: answered 429 or 503, it waits the
/// `Retry-After` the API gave and sends it again. The body of the 2xx answer, or what went wrong;
/// with how many times it was asked to come back.
async fn send_as_told(request: reqwest::RequestBuilder) -> (Result<Value, String>, usize) {
    let mut refused = 0;
    loop {
        let Some(attempt) = request.try_clone() else {
            return (Err("a request that cannot be sent again".into()), refused);
        };
        let response = match attempt.send().await {
            Ok(response) => response,
            Err(error) => return (Err(format!("no answer: {error}")), refused),
        };
        let status = response.status();
        if status.is_success() {
            let body = response.json().await.map_err(|e| format!("{status}: {e}"));
            return (body, refused);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        match retry_after {
            Some(seconds) if refused < MAX_REFUSALS && matches!(status.as_u16(), 429 | 503) => {
                refused += 1;
                tokio::time::sleep(Duration::from_secs(seconds)).await;
            }
            _ => return (Err(format!("answered {status}")), refused),
        }
    }
}

/// The position the coordinator's log has reached.
async fn log_end(http: &reqwest::Client, sagas_url: &str) -> anyhow::Result<i64> {
    let mut after = 0;
    loop {
        let page: Value = http
            .get(format!("{sagas_url}/events?after={after}&limit=1000"))
            .send()
            .await?
            .json()
            .await?;
        let next = page["next"].as_i64().unwrap_or(after);
        if page["events"].as_array().is_none_or(Vec::is_empty) {
            return Ok(next);
        }
        after = next;
    }
}

pub async fn measure(
    database_url: &str,
    scale: Scale,
) -> anyhow::Result<(Vec<Figure>, Vec<Point>)> {
    let jwt = Jwt::random_hs256();
    let prefix = format!("bench_{}_", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let options = Options::on_free_ports(&prefix, Some(database_url));
    let platform = Platform::start(&options, &jwt).await?;
    let empty = tables_before(database_url, &prefix).await?;
    let mut outcome = drive(&platform, &jwt, database_url, scale).await;
    if let Ok((figures, _)) = &mut outcome {
        figures.extend(storage(database_url, &prefix, empty).await?);
    }
    platform.stop().await;
    drop_databases(database_url, &prefix).await?;
    std::fs::remove_dir_all(&options.data_dir).ok();
    outcome
}

async fn drive(
    platform: &Platform,
    jwt: &Jwt,
    database_url: &str,
    scale: Scale,
) -> anyhow::Result<(Vec<Figure>, Vec<Point>)> {
    let tenant = uuid::Uuid::new_v4().to_string();
    let api = Api {
        client: ApiClient::new(&platform.api),
        token: mint(jwt, "bench", Role::Advertiser, Some(&tenant))?,
        broker: platform.broker_pid(),
    };
    let sagas_url = platform
        .urls
        .iter()
        .find(|(service, _)| *service == crate::Service::Sagas)
        .map(|(_, url)| url.clone())
        .context("the coordinator's URL")?;
    let (campaign, partner) = set_up(&api.client, &api.token).await?;
    let ids = (campaign.as_str(), partner.as_str());
    let tokens = (0..32)
        .map(|n| {
            mint(
                jwt,
                &format!("bench-caller-{n}"),
                Role::Advertiser,
                Some(&tenant),
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let probes = scale.pick(20, 200, 500);
    let bound = Bound {
        commit: commit_latency(database_url).await?,
        broker: broker_round_trip(platform, probes).await?,
        provider: provider_call(&platform.simulator, probes).await?,
    };
    let (rates, seconds): (&[f64], u64) = scale.pick(
        (&[5.0, 10.0], 1),
        (&[5.0, 20.0, 50.0, 100.0], 6),
        (&[5.0, 20.0, 50.0, 100.0, 200.0, 300.0], 15),
    );
    // Warm-up, not measured: every process creates its producers on first use.
    let follower = crate::settings::service_client(&platform.service_token)?;
    let coordinator = (&follower, sagas_url.as_str());
    load(&api, &tokens, coordinator, ids, 5.0, Duration::from_secs(2)).await?;
    let mut curve = Vec::new();
    for rate in rates {
        eprintln!("bench: {rate} sagas/s offered for {seconds} s");
        let point = load(
            &api,
            &tokens,
            coordinator,
            ids,
            *rate,
            Duration::from_secs(seconds),
        );
        curve.push(point.await?);
    }
    let accepted = acceptance(&api, ids, tokens, Duration::from_secs(scale.pick(1, 5, 15))).await?;
    let admin = mint(jwt, "bench-admin", Role::Admin, None)?;
    let listing = saga_list(&api.client, &admin, scale.pick(3, 10, 20)).await?;
    let mut figures = bound.figures(&curve)?;
    figures.extend(cpu_figures(&curve));
    figures.extend(curve.iter().map(Point::figure));
    figures.extend(api_figures(&accepted, listing));
    Ok((figures, curve))
}

/// What the API accepts under 32 callers, and how fast it lists sagas.
fn api_figures(accepted: &Acceptance, listing: Listing) -> Vec<Figure> {
    let mut figures = Vec::new();
    figures.push(Figure::info(
        format!(
            "POST /v1/tracking-events accepted, 32 callers ({} not accepted)",
            accepted.failed
        ),
        accepted.rate,
        "req/s",
    ));
    figures.push(Figure::info(
        "POST /v1/tracking-events p99, 32 callers",
        accepted.p99.as_secs_f64() * 1e3,
        "ms",
    ));
    for (what, time) in listing.times {
        figures.push(Figure::info(
            format!("GET /v1/sagas {what}, on {} sagas (median)", listing.sagas),
            time.as_secs_f64() * 1e3,
            "ms",
        ));
    }
    figures
}

/// A bench caller's token, valid for an hour.
fn mint(jwt: &Jwt, subject: &str, role: Role, tenant: Option<&str>) -> anyhow::Result<String> {
    let (issuer, audience) = (&jwt.jwt_issuer, &jwt.jwt_audience);
    Ok(bff::auth::mint_hs256(
        jwt.secret()?,
        issuer,
        audience,
        subject,
        role,
        tenant,
        3600,
    )?)
}

/// What a saga's critical path cannot beat: its durable commits, broker hops and provider call,
/// each measured alone.
struct Bound {
    commit: Duration,
    broker: Duration,
    provider: Duration,
}

impl Bound {
    /// The bound's parts, and the curve's lightest load and best rate against their goals.
    fn figures(&self, curve: &[Point]) -> anyhow::Result<Vec<Figure>> {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let bound = self.commit * COMMITS_ON_PATH + self.broker * HOPS_ON_PATH + self.provider;
        let lightest = curve.first().context("a load")?;
        let best = curve.iter().map(|p| p.achieved).fold(0.0, f64::max);
        let path =
            format!("{COMMITS_ON_PATH} commits + {HOPS_ON_PATH} broker hops + 1 provider call");
        Ok(vec![
            Figure::info("durable commit (measured)", ms(self.commit), "ms"),
            Figure::info(
                "broker hop, send to arrival (measured)",
                ms(self.broker),
                "ms",
            ),
            Figure::info("payout provider call (measured)", ms(self.provider), "ms"),
            Figure::info(
                format!("saga p50 at {} sagas/s offered", lightest.offered),
                lightest.p50_ms,
                "ms",
            )
            .against(&path, ms(bound), "≤ 2", |r| r <= 2.0),
            Figure::info(
                format!("saga p99 at {} sagas/s offered", lightest.offered),
                lightest.p99_ms,
                "ms",
            ),
            Figure::info("sustained sagas/s (best achieved)", best, "sagas/s").against(
                "300 sagas/s goal",
                300.0,
                "≥ 1",
                |r| r >= 1.0,
            ),
        ])
    }
}

impl Point {
    /// The sagas that completed at this load, with how the others ended.
    fn figure(&self) -> Figure {
        Figure::info(
            format!(
                "sagas completed at {} sagas/s offered ({} of {}; {} compensated, {} parked, \
                 {} unfinished; {} step timeouts; {} sent again as the API asked, {} failed)",
                self.offered,
                self.completed,
                self.sent,
                self.compensated,
                self.parked,
                self.unfinished,
                self.step_timeouts,
                self.refused,
                self.errors
            ),
            self.achieved,
            "sagas/s",
        )
    }
}
