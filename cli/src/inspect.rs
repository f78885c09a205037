//! The operator's view from a terminal: `pulsaga saga list|show` and `pulsaga events`, read from
//! the services' query APIs and printed as tables, or as JSON with `--output json`.

use crate::settings::ServiceUrls;
use anyhow::Context;
use serde_json::Value;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Filters of `saga list`, as the coordinator's API takes them.
#[derive(Debug, Clone, clap::Args)]
pub struct SagaFilter {
    /// commission-assignment, order-to-payment or order-refund.
    #[arg(long = "type")]
    pub saga_type: Option<String>,
    /// Sagas that started with this version of their type's definition.
    #[arg(long)]
    pub definition_version: Option<u32>,
    /// running, compensating, completed, compensated or parked.
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long)]
    pub campaign: Option<uuid::Uuid>,
    #[arg(long)]
    pub partner: Option<uuid::Uuid>,
    /// Sagas unfinished and unchanged for this many seconds.
    #[arg(long)]
    pub stalled_for: Option<f64>,
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

async fn get(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let response = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("calling {url}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(
        status.is_success(),
        "{url}: {status} {}",
        body["detail"].as_str().unwrap_or_default()
    );
    Ok(body)
}

pub fn json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or("-")
}

pub async fn saga_list(
    urls: &ServiceUrls,
    filter: &SagaFilter,
    output: Output,
) -> anyhow::Result<()> {
    let mut query = vec![format!("limit={}", filter.limit)];
    let pairs = [
        ("type", filter.saga_type.clone()),
        ("version", filter.definition_version.map(|v| v.to_string())),
        ("status", filter.status.clone()),
        ("campaign_id", filter.campaign.map(|c| c.to_string())),
        ("partner_id", filter.partner.map(|p| p.to_string())),
        ("stalled_for", filter.stalled_for.map(|s| s.to_string())),
    ];
    query.extend(
        pairs
            .into_iter()
            .filter_map(|(key, value)| Some(format!("{key}={}", value?))),
    );
    let body = get(
        &urls.client()?,
        &format!("{}/sagas?{}", urls.sagas_url, query.join("&")),
    )
    .await?;
    if output == Output::Json {
        return json(&body);
    }
    println!(
        "{:<38} {:<22} {:<13} {:<26}",
        "saga", "type", "status", "updated"
    );
    for saga in body["sagas"].as_array().into_iter().flatten() {
        println!(
            "{:<38} {:<22} {:<13} {:<26}",
            text(saga, "saga_id"),
            text(saga, "saga_type"),
            text(saga, "status"),
            text(saga, "updated_at")
        );
    }
    Ok(())
}

pub async fn saga_show(urls: &ServiceUrls, id: uuid::Uuid, output: Output) -> anyhow::Result<()> {
    let body = get(&urls.client()?, &format!("{}/sagas/{id}", urls.sagas_url)).await?;
    if output == Output::Json {
        return json(&body);
    }
    let saga = &body["saga"];
    println!("saga    {}", text(saga, "saga_id"));
    println!("type    {}", text(saga, "saga_type"));
    println!("status  {}", text(saga, "status"));
    println!();
    println!("{:<20} {:<12} attempts", "step", "status");
    for step in body["steps"].as_array().into_iter().flatten() {
        println!(
            "{:<20} {:<12} {}",
            text(step, "step"),
            text(step, "status"),
            step["attempts"]
        );
    }
    println!();
    println!("timeline:");
    for entry in body["timeline"].as_array().into_iter().flatten() {
        println!(
            "  {:<34} {:<28} {:<18} {}",
            text(entry, "recorded_at"),
            text(entry, "entry"),
            entry["step"].as_str().unwrap_or(""),
            entry["reason"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// A service's events: one stream, or its global log from the start (and, with `follow`, as
/// they come).
pub async fn events(
    http: &reqwest::Client,
    base: &str,
    stream: Option<&str>,
    follow: bool,
    output: Output,
) -> anyhow::Result<()> {
    let print = |event: &Value| -> anyhow::Result<()> {
        if output == Output::Json {
            println!("{}", serde_json::to_string(event)?);
        } else {
            println!(
                "{:>8} {:<34} {:<28} {} v{}",
                event["position"],
                text(event, "recorded_at"),
                text(event, "event_type"),
                text(event, "stream_id"),
                event["version"]
            );
        }
        Ok(())
    };
    if let Some(stream) = stream {
        let body = get(http, &format!("{base}/streams/{stream}")).await?;
        for event in body.as_array().into_iter().flatten() {
            print(event)?;
        }
        return Ok(());
    }
    let mut after = 0;
    loop {
        let page = get(http, &format!("{base}/events?after={after}&limit=500")).await?;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        for event in &events {
            print(event)?;
        }
        after = page["next"].as_i64().unwrap_or(after);
        if events.is_empty() {
            if !follow {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
