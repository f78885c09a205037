//! `pulsaga bench`: the figures of SPEC §9, each next to its limit measured in the same run, with
//! variants alternating round by round and medians quoted (the machine is shared and noisy).
//! Writes `bench.json`, `bench.md` and `saga-latency.svg` (latency against offered load) to
//! `--out`, and prints the Markdown table.

mod append;
mod bounds;
mod chart;
mod codec;
mod cpu;
mod flow;
mod listing;
mod rebuild;
mod storage;

pub(crate) use flow::{campaign_for, set_up};
pub(crate) use storage::{storage, tables_before};

use anyhow::Context;
use cpu::Cpu;
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgPool};
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// A short run (under three minutes): fewer rounds, shorter loads.
    #[arg(long)]
    pub quick: bool,
    /// Seconds, not minutes: shows that every part runs (the test suite's check), measures
    /// nothing worth quoting.
    #[arg(long, hide = true, conflicts_with = "quick")]
    pub smoke: bool,
    /// Measure only these parts (default: all of them).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,
    /// Where the results go.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// The PostgreSQL server to measure on (its own databases are created and dropped).
    #[command(flatten)]
    pub postgres: crate::settings::Postgres,
}

/// The parts of the bench, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Avro against JSON, per message.
    Codec,
    /// Event-store append against a plain INSERT.
    Append,
    /// Projection rebuild against a raw read.
    Rebuild,
    /// The platform through its API: sagas under load, and command acceptance.
    Flow,
}

/// One offered load and what came of it.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Sagas started per second.
    pub offered: f64,
    /// Sagas completed per second, from the first conversion to the last completion.
    pub achieved: f64,
    pub completed: usize,
    /// Sagas that ended otherwise: compensated (a step failed or timed out), or parked.
    pub compensated: usize,
    pub parked: usize,
    /// Sagas still running when the bench stopped waiting (30 s without a saga ending).
    pub unfinished: usize,
    /// Step commands resent because their answer took longer than the step's timeout.
    pub step_timeouts: usize,
    pub sent: usize,
    /// Conversions the API asked to send again later (429 or 503 with `Retry-After`), and did.
    pub refused: usize,
    /// Conversions that failed for good (another error answer, or no answer).
    pub errors: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU seconds the load cost, from its first conversion until every saga had ended.
    pub cpu: Option<Cpu>,
}

/// One measured figure and what it is held against.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    /// The limit measured in the same run (or the fixed target), in the same unit.
    pub limit: Option<f64>,
    pub limit_name: String,
    /// value / limit.
    pub ratio: Option<f64>,
    pub goal: String,
    /// Whether the goal is met; `None` where the figure has no goal of its own.
    pub met: Option<bool>,
}

impl Figure {
    fn info(name: impl Into<String>, value: f64, unit: &str) -> Figure {
        Figure {
            name: name.into(),
            value,
            unit: unit.into(),
            limit: None,
            limit_name: String::new(),
            ratio: None,
            goal: String::new(),
            met: None,
        }
    }

    /// Next to `limit`, without a goal of its own.
    fn beside(mut self, limit_name: &str, limit: f64) -> Figure {
        self.limit = Some(limit);
        self.limit_name = limit_name.into();
        self.ratio = Some(self.value / limit);
        self
    }

    fn against(
        mut self,
        limit_name: &str,
        limit: f64,
        goal: &str,
        met: impl Fn(f64) -> bool,
    ) -> Figure {
        let ratio = self.value / limit;
        self.limit = Some(limit);
        self.limit_name = limit_name.into();
        self.ratio = Some(ratio);
        self.goal = goal.into();
        self.met = Some(met(ratio));
        self
    }
}

/// How long a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Smoke,
    Quick,
    Full,
}

impl Scale {
    /// The value for this scale.
    fn pick<T>(self, smoke: T, quick: T, full: T) -> T {
        match self {
            Scale::Smoke => smoke,
            Scale::Quick => quick,
            Scale::Full => full,
        }
    }
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A database of the bench's own on the server, dropped by [`drop_database`].
async fn create_database(server: &PgConnectOptions, name: &str) -> anyhow::Result<PgPool> {
    let mut admin = server.connect().await.context("connecting to PostgreSQL")?;
    // The names are the bench's own constants, never input.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "drop database if exists {name} with (force)"
    )))
    .execute(&mut admin)
    .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&mut admin)
        .await?;
    Ok(sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect_with(server.clone().database(name))
        .await?)
}

async fn drop_database(server: &PgConnectOptions, pool: PgPool, name: &str) -> anyhow::Result<()> {
    pool.close().await;
    let mut admin = server.connect().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "drop database if exists {name} with (force)"
    )))
    .execute(&mut admin)
    .await?;
    Ok(())
}

pub async fn run(options: &Options) -> anyhow::Result<()> {
    let server = options.postgres.server()?;
    let started = std::time::Instant::now();
    let scale = match (options.smoke, options.quick) {
        (true, _) => Scale::Smoke,
        (false, true) => Scale::Quick,
        (false, false) => Scale::Full,
    };
    let runs = |part| options.only.is_empty() || options.only.contains(&part);
    let mut figures = Vec::new();
    if runs(Part::Codec) {
        eprintln!("bench: Avro vs JSON");
        figures.extend(codec::measure(scale));
    }
    if runs(Part::Append) {
        eprintln!("bench: event-store append vs plain INSERT");
        figures.extend(append::measure(&server, scale).await?);
    }
    if runs(Part::Rebuild) {
        eprintln!("bench: projection rebuild vs raw read");
        figures.extend(rebuild::measure(&server, scale).await?);
    }
    let mut curve = Vec::new();
    if runs(Part::Flow) {
        eprintln!("bench: the platform through the API");
        let (flow_figures, points) = flow::measure(&options.postgres.url, scale).await?;
        figures.extend(flow_figures);
        curve = points;
    }

    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("creating {}", options.out.display()))?;
    let markdown = table(&figures);
    std::fs::write(
        options.out.join("bench.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "scale": format!("{scale:?}").to_lowercase(),
            "seconds": started.elapsed().as_secs_f64(),
            "figures": figures,
            "saga_latency_by_load": curve,
        }))?,
    )?;
    std::fs::write(options.out.join("bench.md"), &markdown)?;
    std::fs::write(options.out.join("saga-latency.svg"), chart::svg(&curve))?;
    println!("{markdown}");
    println!(
        "({:.0} s; results in {})",
        started.elapsed().as_secs_f64(),
        options.out.display()
    );
    Ok(())
}

fn number(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

fn table(figures: &[Figure]) -> String {
    let mut text =
        String::from("| figure | value | limit | ratio | goal |\n|---|---|---|---|---|\n");
    for f in figures {
        let limit = f
            .limit
            .map(|l| format!("{} {} ({})", number(l), f.unit, f.limit_name))
            .unwrap_or_else(|| "—".into());
        let ratio = f.ratio.map(number).unwrap_or_else(|| "—".into());
        let goal = match f.met {
            Some(true) => format!("{} — met", f.goal),
            Some(false) => format!("{} — missed", f.goal),
            None => "—".into(),
        };
        text.push_str(&format!(
            "| {} | {} {} | {limit} | {ratio} | {goal} |\n",
            f.name,
            number(f.value),
            f.unit
        ));
    }
    text
}
