//! `pulsaga chaos`: the platform of `pulsaga up` on free ports (two replicas of every service and
//! of the coordinator by default), with a PostgreSQL and an Apache Pulsar of its own, driven with
//! conversions (order-to-payment sagas), billable clicks and leads (commission-assignment sagas)
//! through its API while faults strike at random moments, reproducibly
//! from a seed: `kill -9` of a process, any replica (each is started again by the supervisor), a
//! broker restart after `kill -9`, an immediate-mode PostgreSQL restart, cuts of the links
//! between the processes and PostgreSQL and the broker (through proxies it controls), and payouts
//! the provider answers slowly, with 503 or not at all. When the load is sent and the faults are
//! over it waits for quiet, then checks from the outside that every accepted command took effect
//! once, every saga ended, no payout was made twice, no commission doubled, the budget balances
//! and every read model equals a fresh rebuild. It prints a JSON summary, with what a saga left in
//! the databases, and fails on any violation, naming the sagas involved.

mod check;

use check::Audit;

use crate::Service;
use crate::client::ApiClient;
use crate::settings::{Infrastructure, Jwt, Postgres};
use crate::up::{Options as UpOptions, Platform};
use anyhow::Context;
use bff::auth::Role;
use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Sagas to start, one tracking event each: mostly conversions, some clicks and leads.
    #[arg(long, default_value_t = 300)]
    pub sagas: usize,
    /// Tracking events sent per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Replicas of every service and of the coordinator (`pulsaga up --replicas`): each can be
    /// the one killed.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=4))]
    pub replicas: u32,
    /// `kill -9`s, each of a process chosen at random (not the provider simulator: its ledger is
    /// what the payments are checked against).
    #[arg(long, default_value_t = 4)]
    pub kills: usize,
    /// Restarts of Apache Pulsar, each after a `kill -9`.
    #[arg(long, default_value_t = 1)]
    pub broker_restarts: usize,
    /// Immediate-mode restarts of PostgreSQL: every connection cut, recovery from the WAL.
    #[arg(long, default_value_t = 1)]
    pub postgres_restarts: usize,
    /// Cuts of the link between the processes and PostgreSQL (a proxy drops every connection
    /// and refuses new ones for `CUT_OUTAGE`).
    #[arg(long, default_value_t = 1)]
    pub database_cuts: usize,
    /// Cuts of the link between the processes and the broker (a proxy drops every connection
    /// and refuses new ones for `CUT_OUTAGE`).
    #[arg(long, default_value_t = 1)]
    pub broker_cuts: usize,
    /// Seeds every random choice: the same seed strikes the same faults at the same moments of
    /// the load (default: from the clock; the summary shows it).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The longest wait for quiet once the load is sent, in seconds.
    #[arg(long, default_value_t = 600)]
    pub quiet_timeout: u64,
    /// Also write the JSON summary to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Something that goes wrong on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `kill -9` of the process at this index of `Platform::processes`.
    Kill(usize),
    BrokerRestart,
    PostgresRestart,
    DatabaseCut,
    BrokerCut,
}

/// How long a cut link, to PostgreSQL or to the broker, stays down.
const CUT_OUTAGE: Duration = Duration::from_secs(5);

/// One tracking event of the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Event {
    /// A conversion of that amount, on the campaign paying a percentage, with what the provider
    /// simulator does with its payout (10 % of it; see `payments::simulator::rule`).
    Order(i64, &'static str),
    /// A click or a lead, on the campaign paying a fixed amount per event.
    Billable(&'static str),
}

/// The events drawn, each with how often, in percent.
const EVENTS: [(Event, u32); 7] = [
    (Event::Order(5_000, "paid"), 58),
    (Event::Order(5_550, "503 first"), 8),
    (Event::Order(7_770, "slow first"), 8),
    (Event::Order(9_990, "lost first"), 8),
    (Event::Order(6_660, "declined"), 6),
    (Event::Billable("click"), 6),
    (Event::Billable("lead"), 6),
];

impl Event {
    fn kind(self) -> &'static str {
        match self {
            Event::Order(..) => "conversion",
            Event::Billable(kind) => kind,
        }
    }
}

/// What the run found; every list is a violation.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub sagas: Sagas,
    pub faults: BTreeMap<String, usize>,
    /// Accepted commands that did not take effect, and sagas that never started.
    pub lost: Vec<String>,
    /// Sagas that did not end (completed or compensated).
    pub stuck: Vec<String>,
    /// Anything that happened twice: an event recorded, a saga started, a commission, a payout.
    pub doubled: Vec<String>,
    /// Budgets whose reservations differ from the commissions they pay.
    pub unbalanced: Vec<String>,
    /// Read models that differ from a fresh rebuild.
    pub projections_differ: Vec<String>,
    /// From the end of the load and the faults until quiet; null if quiet never came.
    pub seconds_to_quiet: Option<f64>,
    /// Bytes a saga added to the services' tables: as the run left them, then with everything
    /// prunable pruned and every ended saga archived (hot tables, and archive included).
    pub storage_per_saga: BTreeMap<String, f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Sagas {
    /// Tracking events sent, by kind.
    pub kinds: BTreeMap<String, usize>,
    pub sent: usize,
    pub accepted: usize,
    /// Conversions the API did not accept within `SEND_DEADLINE` (not a violation: nothing
    /// was promised for them).
    pub not_accepted: usize,
    pub completed: usize,
    /// Completed sagas by type.
    pub completed_by_type: BTreeMap<String, usize>,
    pub compensated: usize,
    /// Why the compensated sagas compensated: each reason up to its details, with a count.
    pub compensated_because: BTreeMap<String, usize>,
}

impl Summary {
    fn violations(&self) -> usize {
        self.lost.len()
            + self.stuck.len()
            + self.doubled.len()
            + self.unbalanced.len()
            + self.projections_differ.len()
    }
}

/// How long one conversion is sent again (a process down, the API shedding load) before it is
/// given up.
const SEND_DEADLINE: Duration = Duration::from_secs(180);

pub async fn run(options: &Options) -> anyhow::Result<()> {
    let seed = options.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let jwt = Jwt::random_hs256();
    let name = format!("chaos_{}_", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let up = UpOptions {
        embedded_postgres: true,
        database_proxy: true,
        broker_proxy: true,
        // The processes log errors only, unless `RUST_LOG` asks for more.
        log_filter: std::env::var_os("RUST_LOG")
            .is_none()
            .then(|| "error".into()),
        replicas: options.replicas,
        ..UpOptions::on_free_ports(&name, None)
    };
    eprintln!("chaos: seed {seed}; starting a platform of its own");
    let mut platform = Platform::start(&up, &jwt).await?;
    let summary = drive(&mut platform, &jwt, &name, options, seed).await;
    platform.stop().await;
    std::fs::remove_dir_all(&up.data_dir).ok();
    let summary = summary?;
    let text = serde_json::to_string_pretty(&summary)?;
    println!("{text}");
    if let Some(out) = &options.out {
        std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
    }
    anyhow::ensure!(
        summary.violations() == 0,
        "{} violations (seed {seed})",
        summary.violations()
    );
    Ok(())
}

/// One tracking event the API accepted.
#[derive(Debug, Clone)]
struct Accepted {
    command_id: String,
    saga_id: String,
}

async fn drive(
    platform: &mut Platform,
    jwt: &Jwt,
    database_prefix: &str,
    options: &Options,
    seed: u64,
) -> anyhow::Result<Summary> {
    let mut summary = Summary {
        seed,
        ..Summary::default()
    };
    let tenant = uuid::Uuid::new_v4().to_string();
    let mint = |subject: &str, role: Role, tenant: Option<&str>| {
        bff::auth::mint_hs256(
            jwt.secret()?,
            &jwt.jwt_issuer,
            &jwt.jwt_audience,
            subject,
            role,
            tenant,
            24 * 3600,
        )
        .map_err(anyhow::Error::from)
    };
    let advertiser = mint("chaos", Role::Advertiser, Some(&tenant))?;
    let api = ApiClient::new(&platform.api);
    let (campaign, partner) = crate::bench::set_up(&api, &advertiser).await?;
    let fixed = json!({ "type": "fixed", "amount": 25 });
    let per_event = crate::bench::campaign_for(&api, &advertiser, &partner, fixed).await?;
    let empty = crate::bench::tables_before(&platform.database_url, database_prefix).await?;

    let (events, schedule) = draw(options, &platform.processes(), seed);
    summary.count_load(&events);

    let sender = {
        let (http, base) = (api.http.clone(), api.base.clone());
        let (token, rate) = (advertiser.clone(), options.rate);
        let targets = Targets {
            per_order: campaign.clone(),
            per_event: per_event.clone(),
            partner: partner.clone(),
        };
        tokio::spawn(send_all(http, base, token, targets, events, seed, rate))
    };
    let accepted = strike_while_sending(platform, sender, schedule, &mut summary).await?;
    eprintln!(
        "chaos: {} tracking events accepted, {} faults struck; waiting for quiet",
        accepted.len(),
        summary.faults.values().sum::<usize>()
    );

    let audit = Audit::of(
        platform,
        crate::settings::service_client(&platform.service_token)?,
    );
    let pending = accepted.iter().map(|a| a.command_id.clone()).collect();
    let timeout = Duration::from_secs(options.quiet_timeout);
    summary.seconds_to_quiet = wait_for_quiet(platform, &audit, pending, timeout).await?;
    eprintln!("chaos: checking");
    audit.check_commands(&accepted, &mut summary).await?;
    audit.check_sagas(&accepted, &mut summary).await?;
    audit.check_once(&mut summary).await?;
    let money = ([campaign.as_str(), per_event.as_str()], partner.as_str());
    audit.check_money(money, &mut summary).await?;
    check_rebuilds(platform, database_prefix, &mut summary).await?;
    let storage = crate::bench::storage(&platform.database_url, database_prefix, empty).await?;
    summary.storage_per_saga = storage
        .into_iter()
        .map(|figure| {
            let name = figure.name.trim_start_matches("storage a saga adds, ");
            (name.to_owned(), figure.value.round())
        })
        .collect();
    Ok(summary)
}

impl Summary {
    /// Counts the kinds of the `events` the load will send, and its misbehaving payouts among
    /// the faults.
    fn count_load(&mut self, events: &[usize]) {
        for &event in events {
            let event = EVENTS[event].0;
            *self.sagas.kinds.entry(event.kind().into()).or_default() += 1;
            if let Event::Order(_, payout) = event {
                *self.faults.entry(format!("payout {payout}")).or_default() += 1;
            }
        }
        self.faults.remove("payout paid");
    }
}

/// Strikes the `schedule`'s faults, each at its moment, while `sender` sends the load, tending
/// the platform meanwhile; returns the tracking events the API accepted.
async fn strike_while_sending(
    platform: &mut Platform,
    sender: tokio::task::JoinHandle<(Vec<Accepted>, usize)>,
    schedule: Vec<(Duration, Fault)>,
    summary: &mut Summary,
) -> anyhow::Result<Vec<Accepted>> {
    let started = Instant::now();
    let mut faults = schedule.into_iter().peekable();
    let mut sender = Some(sender);
    let mut accepted = Vec::new();
    while sender.is_some() || faults.peek().is_some() {
        if let Some(task) = sender.take_if(|task| task.is_finished()) {
            let (sent, given_up) = task.await?;
            summary.sagas.sent = sent.len() + given_up;
            summary.sagas.not_accepted = given_up;
            accepted = sent;
        }
        if let Some((_, fault)) = faults.next_if(|(at, _)| started.elapsed() >= *at) {
            strike(platform, fault, summary).await;
        }
        platform.tend();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    summary.sagas.accepted = accepted.len();
    Ok(accepted)
}

/// Waits until the platform is quiet (see [`quiet`]), tending it meanwhile; the seconds it took,
/// or `None` if it was not quiet within `timeout`.
async fn wait_for_quiet(
    platform: &mut Platform,
    audit: &Audit,
    mut pending: HashSet<String>,
    timeout: Duration,
) -> anyhow::Result<Option<f64>> {
    let since = Instant::now();
    loop {
        if audit.quiet(&mut pending).await? {
            return Ok(Some(since.elapsed().as_secs_f64()));
        }
        if since.elapsed() > timeout {
            eprintln!(
                "chaos: no quiet within {} s; checking as it is",
                timeout.as_secs()
            );
            return Ok(None);
        }
        platform.tend();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Every projection of every service, rebuilt from its log, matches the live read model.
async fn check_rebuilds(
    platform: &Platform,
    database_prefix: &str,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let infrastructure = Infrastructure {
        postgres: Postgres {
            url: platform.database_url.clone(),
        },
        database_connections: 2,
        database_idle_seconds: crate::settings::DATABASE_IDLE_SECONDS,
        pulsar_url: platform.pulsar_url.clone(),
        pulsar_admin_url: platform.pulsar_admin_url.clone(),
        pulsar_tenant: "public".into(),
        pulsar_namespace: "default".into(),
    };
    for service in Service::ALL {
        let database = format!("{database_prefix}{}", service.name());
        let pool = crate::serve::database(service, &database, &infrastructure).await?;
        let rebuilt = crate::replay::rebuild(&pool, service, None, false).await?;
        pool.close().await;
        for (name, rebuild) in rebuilt.into_iter().filter(|(_, r)| !r.matches) {
            summary.projections_differ.push(format!(
                "{name}: only live {:?}, only rebuilt {:?}",
                rebuild.only_live, rebuild.only_rebuilt
            ));
        }
    }
    Ok(())
}

/// Everything random in a run, drawn in one order from `seed`, so that a seed replays the same
/// run: each tracking event (an index into `EVENTS`), and the faults, each at a moment of the
/// load (spread over its middle four fifths, so that the platform is busy when they strike).
fn draw(options: &Options, processes: &[&str], seed: u64) -> (Vec<usize>, Vec<(Duration, Fault)>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let total_weight: u32 = EVENTS.iter().map(|(_, weight)| weight).sum();
    let events: Vec<usize> = (0..options.sagas)
        .map(|_| {
            let mut draw = rng.random_range(0..total_weight);
            EVENTS
                .iter()
                .position(|(_, weight)| {
                    let hit = draw < *weight;
                    draw = draw.saturating_sub(*weight);
                    hit
                })
                .unwrap_or(0)
        })
        .collect();
    let load = Duration::from_secs_f64(options.sagas as f64 / options.rate);
    (events, plan(processes, options, load, &mut rng))
}

fn plan(
    processes: &[&str],
    options: &Options,
    load: Duration,
    rng: &mut SmallRng,
) -> Vec<(Duration, Fault)> {
    let targets: Vec<usize> = processes
        .iter()
        .enumerate()
        .filter(|(_, name)| **name != "payout-sim")
        .map(|(index, _)| index)
        .collect();
    let mut faults: Vec<Fault> = (0..options.kills)
        .filter_map(|_| targets.choose(rng).map(|&index| Fault::Kill(index)))
        .collect();
    faults.extend(std::iter::repeat_n(
        Fault::BrokerRestart,
        options.broker_restarts,
    ));
    faults.extend(std::iter::repeat_n(
        Fault::PostgresRestart,
        options.postgres_restarts,
    ));
    faults.extend(std::iter::repeat_n(
        Fault::DatabaseCut,
        options.database_cuts,
    ));
    faults.extend(std::iter::repeat_n(Fault::BrokerCut, options.broker_cuts));
    faults.shuffle(rng);
    let mut moments: Vec<Duration> = faults
        .iter()
        .map(|_| load.mul_f64(rng.random_range(0.1..0.9)))
        .collect();
    moments.sort();
    moments.into_iter().zip(faults).collect()
}

async fn strike(platform: &mut Platform, fault: Fault, summary: &mut Summary) {
    let (kind, outcome) = match fault {
        Fault::Kill(index) => {
            let name = platform.processes()[index];
            (format!("kill -9 {name}"), platform.kill(index))
        }
        Fault::BrokerRestart => ("broker restart".into(), platform.restart_broker().await),
        Fault::PostgresRestart => ("postgres restart".into(), platform.restart_postgres().await),
        Fault::DatabaseCut => (
            "database link cut".into(),
            platform.cut_database(CUT_OUTAGE),
        ),
        Fault::BrokerCut => ("broker link cut".into(), platform.cut_broker(CUT_OUTAGE)),
    };
    match outcome {
        Ok(()) => {
            eprintln!("chaos: {kind}");
            *summary.faults.entry(kind).or_default() += 1;
        }
        Err(error) => eprintln!("chaos: {kind} failed: {error:#}"),
    }
}

/// Where the events go: conversions to the campaign paying a percentage of each order, clicks
/// and leads to the one paying a fixed amount per event; all for one partner.
struct Targets {
    per_order: String,
    per_event: String,
    partner: String,
}

/// Sends one tracking event per drawn event at `rate`, each with an Idempotency-Key of its own,
/// so that sending one again (its answer lost, a process down, the API shedding load) is the same
/// command. Returns the accepted ones and how many were given up.
async fn send_all(
    http: reqwest::Client,
    base: String,
    token: String,
    targets: Targets,
    events: Vec<usize>,
    seed: u64,
    rate: f64,
) -> (Vec<Accepted>, usize) {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut sends = tokio::task::JoinSet::new();
    for (n, event) in events.into_iter().enumerate() {
        ticker.tick().await;
        let event = EVENTS[event].0;
        let body = match event {
            Event::Order(amount, _) => json!({
                "campaign_id": targets.per_order, "partner_id": targets.partner, "kind": "conversion",
                "order": {
                    "order_id": format!("chaos-{seed}-{n}"),
                    "amount": { "amount": amount, "currency": "EUR" },
                },
            }),
            Event::Billable(kind) => json!({
                "campaign_id": targets.per_event, "partner_id": targets.partner, "kind": kind,
            }),
        };
        let request = http
            .post(format!("{base}/v1/tracking-events"))
            .bearer_auth(&token)
            .header("Idempotency-Key", format!("chaos-{seed}-{n}"))
            .json(&body);
        sends.spawn(send_until_accepted(request));
    }
    let (mut accepted, mut given_up) = (Vec::new(), 0);
    while let Some(done) = sends.join_next().await {
        match done {
            Ok(Some(answer)) => accepted.push(answer),
            _ => given_up += 1,
        }
    }
    (accepted, given_up)
}

async fn send_until_accepted(request: reqwest::RequestBuilder) -> Option<Accepted> {
    let deadline = Instant::now() + SEND_DEADLINE;
    while Instant::now() < deadline {
        let response = request.try_clone()?.send().await;
        let wait = match response {
            Ok(response) if response.status().is_success() => {
                let answer: Value = response.json().await.ok()?;
                return Some(Accepted {
                    command_id: answer["command_id"].as_str()?.to_owned(),
                    saga_id: answer["saga_id"].as_str()?.to_owned(),
                });
            }
            Ok(response)
                if response.status().is_server_error()
                    || response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS =>
            {
                response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok()?.parse().ok())
                    .map_or(Duration::from_secs(1), Duration::from_secs)
            }
            Ok(response) => {
                eprintln!("chaos: a tracking event was refused: {}", response.status());
                return None;
            }
            Err(_) => Duration::from_secs(1),
        };
        tokio::time::sleep(wait).await;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        options: Options,
    }

    fn options(args: &[&str]) -> Options {
        Cli::parse_from(std::iter::once("chaos").chain(args.iter().copied())).options
    }

    /// The processes in the order `pulsaga up` starts them.
    fn processes() -> Vec<&'static str> {
        std::iter::once("payout-sim")
            .chain(Service::ALL.iter().map(|service| service.name()))
            .chain(["bff"])
            .collect()
    }

    #[test]
    fn a_seed_draws_the_same_run_and_another_seed_another() {
        let options = options(&["--sagas", "200", "--kills", "5"]);
        let processes = processes();
        let (events, faults) = draw(&options, &processes, 7);
        assert_eq!(
            (events.clone(), faults.clone()),
            draw(&options, &processes, 7)
        );
        assert_ne!(events, draw(&options, &processes, 8).0);

        assert_eq!(events.len(), 200);
        let drawn: HashSet<Event> = events.iter().map(|&event| EVENTS[event].0).collect();
        for kind in [
            Event::Order(6_660, "declined"),
            Event::Billable("click"),
            Event::Billable("lead"),
        ] {
            assert!(drawn.contains(&kind), "{kind:?} drawn");
        }
        assert_eq!(faults.len(), 5 + 1 + 1 + 1 + 1);
        let load = Duration::from_secs(20);
        assert!(faults.windows(2).all(|pair| pair[0].0 <= pair[1].0));
        assert!(
            faults
                .iter()
                .all(|(at, _)| *at >= load / 10 && *at <= load * 9 / 10)
        );
        assert!(
            faults.iter().all(|(_, fault)| *fault != Fault::Kill(0)),
            "never the simulator"
        );
    }
}
