//! What `pulsaga chaos` checks once the load is sent and the faults are over, from the outside:
//! quiet (every accepted command answered, no saga running, every projection caught up), then
//! every accepted command took effect once, every saga ended, no payout was made twice, no
//! commission doubled, the budget balances.

use super::{Accepted, Summary};
use crate::Service;
use anyhow::Context;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// Where the checks look, and the client they look with (it presents the service token).
pub(super) struct Audit {
    http: reqwest::Client,
    api: String,
    sagas: String,
    tracking: String,
    commissions: String,
    payments: String,
    campaigns: String,
    simulator: String,
}

impl Audit {
    /// The platform's API, its services' query APIs and its payout simulator, asked with `http`.
    pub(super) fn of(platform: &crate::up::Platform, http: reqwest::Client) -> Audit {
        let service = |s: Service| {
            platform
                .urls
                .iter()
                .find(|(service, _)| *service == s)
                .map(|(_, url)| url.clone())
                .unwrap_or_default()
        };
        Audit {
            http,
            api: platform.api.clone(),
            sagas: service(Service::Sagas),
            tracking: service(Service::Tracking),
            commissions: service(Service::Commissions),
            payments: service(Service::Payments),
            campaigns: service(Service::Campaigns),
            simulator: platform.simulator.clone(),
        }
    }

    /// Quiet: every accepted command has its outcome, no saga is running or compensating, and every
    /// projection has caught up with its log.
    pub(super) async fn quiet(&self, pending: &mut HashSet<String>) -> anyhow::Result<bool> {
        let mut settled = Vec::new();
        for id in pending.iter() {
            let outcome = self.get(&format!("{}/commands/{id}", self.tracking)).await;
            if outcome.is_some_and(|outcome| outcome["status"] != "pending") {
                settled.push(id.clone());
            }
        }
        for id in settled {
            pending.remove(&id);
        }
        if !pending.is_empty() {
            return Ok(false);
        }
        for status in ["running", "compensating"] {
            let listed = self
                .get(&format!("{}/sagas?status={status}&limit=1", self.sagas))
                .await;
            if listed.is_none_or(|body| body["sagas"].as_array().is_none_or(|s| !s.is_empty())) {
                return Ok(false);
            }
        }
        let Some(ready) = self.get(&format!("{}/readyz", self.api)).await else {
            return Ok(false);
        };
        let caught_up = ready["projections"].as_object().is_some_and(|services| {
            services
                .values()
                .filter_map(Value::as_object)
                .flat_map(|projections| projections.values())
                .all(|lag| lag["events"] == 0)
        });
        Ok(caught_up)
    }

    /// The JSON of a 2xx answer to a GET, or `None`.
    async fn get(&self, url: &str) -> Option<Value> {
        let response = self.http.get(url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// Every accepted tracking event succeeded, as the tracking service, which decides them, recorded
    /// (asked there: the API's rate limit is for clients, not for an audit of thousands).
    pub(super) async fn check_commands(
        &self,
        accepted: &[Accepted],
        summary: &mut Summary,
    ) -> anyhow::Result<()> {
        for conversion in accepted {
            let id = &conversion.command_id;
            let outcome = self
                .get(&format!("{}/commands/{id}", self.tracking))
                .await
                .unwrap_or_default();
            if outcome["status"] != "succeeded" {
                summary.lost.push(format!(
                    "command {id} of saga {}: {}",
                    conversion.saga_id, outcome
                ));
            }
        }
        Ok(())
    }

    /// Every accepted tracking event's saga exists and ended.
    pub(super) async fn check_sagas(
        &self,
        accepted: &[Accepted],
        summary: &mut Summary,
    ) -> anyhow::Result<()> {
        for conversion in accepted {
            let id = &conversion.saga_id;
            let Some(saga) = self.get(&format!("{}/sagas/{id}", self.sagas)).await else {
                summary.lost.push(format!("saga {id} never started"));
                continue;
            };
            match saga["saga"]["status"].as_str() {
                Some("completed") => {
                    summary.sagas.completed += 1;
                    let saga_type = saga["saga"]["saga_type"].as_str().unwrap_or("?");
                    *summary
                        .sagas
                        .completed_by_type
                        .entry(saga_type.to_owned())
                        .or_default() += 1;
                }
                Some("compensated") => {
                    summary.sagas.compensated += 1;
                    let reason = saga["saga"]["reason"].as_str().unwrap_or("no reason given");
                    let kind = reason.split_once(": ").map_or(reason, |(kind, _)| kind);
                    *summary
                        .sagas
                        .compensated_because
                        .entry(kind.to_owned())
                        .or_default() += 1;
                }
                other => {
                    // Why it stopped: the last reason its log gives (a parked saga's is the
                    // compensation that kept failing), else the saga's own.
                    let last_reason = saga["timeline"].as_array().and_then(|log| {
                        log.iter().rev().find_map(|entry| entry["reason"].as_str())
                    });
                    summary.stuck.push(format!(
                        "saga {id}: {} at {} ({})",
                        other.unwrap_or("?"),
                        saga["saga"]["current_step"],
                        last_reason
                            .or(saga["saga"]["reason"].as_str())
                            .unwrap_or("no reason given")
                    ))
                }
            }
        }
        Ok(())
    }

    /// A service's whole log, page by page.
    async fn log(&self, service_url: &str) -> anyhow::Result<Vec<Value>> {
        let (mut events, mut after) = (Vec::new(), 0);
        loop {
            let page = self
                .get(&format!("{service_url}/events?after={after}&limit=1000"))
                .await
                .with_context(|| format!("reading the log of {service_url}"))?;
            let page_events = page["events"].as_array().cloned().unwrap_or_default();
            if page_events.is_empty() {
                return Ok(events);
            }
            after = page["next"].as_i64().context("a next position")?;
            events.extend(page_events);
        }
    }

    /// No tracking event was recorded twice and no saga started twice.
    pub(super) async fn check_once(&self, summary: &mut Summary) -> anyhow::Result<()> {
        for (url, event_type) in [
            (&self.tracking, "TrackingEventRecorded"),
            (&self.sagas, "SagaStarted"),
        ] {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for event in self.log(url).await? {
                if event["event_type"] == event_type {
                    let stream = event["stream_id"].as_str().unwrap_or_default().to_owned();
                    *counts.entry(stream).or_default() += 1;
                }
            }
            for (stream, count) in counts.into_iter().filter(|(_, count)| *count > 1) {
                summary
                    .doubled
                    .push(format!("{event_type} {count} times on {stream}"));
            }
        }
        Ok(())
    }

    /// No commission twice for one tracking event, no payout made twice, and each campaign's
    /// reservations equal the net of its commissions.
    pub(super) async fn check_money(
        &self,
        (campaigns, partner): ([&str; 2], &str),
        summary: &mut Summary,
    ) -> anyhow::Result<()> {
        self.check_commissions(partner, summary).await?;
        self.check_payouts(partner, summary).await?;
        self.check_budgets(campaigns, summary).await
    }

    /// No tracking event has two commissions.
    async fn check_commissions(&self, partner: &str, summary: &mut Summary) -> anyhow::Result<()> {
        let mut commissions = Vec::new();
        let mut after = None;
        loop {
            let cursor = after.map_or(String::new(), |position: i64| format!("&after={position}"));
            let page = self
                .get(&format!(
                    "{}/partners/{partner}/commissions?limit=1000{cursor}",
                    self.commissions
                ))
                .await
                .context("the partner's commissions")?;
            commissions.extend(page["commissions"].as_array().cloned().unwrap_or_default());
            match page["next"].as_i64() {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let mut by_tracking: HashMap<String, usize> = HashMap::new();
        for commission in &commissions {
            let tracking = commission["tracking_id"].as_str().unwrap_or_default();
            *by_tracking.entry(tracking.to_owned()).or_default() += 1;
        }
        for (tracking, count) in by_tracking.into_iter().filter(|(_, count)| *count > 1) {
            summary
                .doubled
                .push(format!("{count} commissions for tracking event {tracking}"));
        }
        Ok(())
    }

    /// Each completed order-to-payment saga has one completed payment, paid once by the provider.
    async fn check_payouts(&self, partner: &str, summary: &mut Summary) -> anyhow::Result<()> {
        let stats = self
            .get(&format!("{}/stats", self.simulator))
            .await
            .context("the provider's stats")?;
        let mut payments = Vec::new();
        loop {
            let page = self
                .get(&format!(
                    "{}/partners/{partner}/payments?limit=1000&offset={}",
                    self.payments,
                    payments.len()
                ))
                .await
                .context("the partner's payments")?;
            let page_payments = page["payments"].as_array().cloned().unwrap_or_default();
            if page_payments.is_empty() {
                break;
            }
            payments.extend(page_payments);
        }
        let completed: Vec<&Value> = payments
            .iter()
            .filter(|payment| payment["status"] == "completed")
            .collect();
        let orders_completed = summary
            .sagas
            .completed_by_type
            .get("order-to-payment")
            .copied()
            .unwrap_or_default();
        if orders_completed != completed.len() {
            summary.unbalanced.push(format!(
                "{orders_completed} order-to-payment sagas completed, {} payments completed",
                completed.len()
            ));
        }
        let executions = stats["executions"].as_u64().unwrap_or_default();
        if executions != completed.len() as u64 {
            summary.doubled.push(format!(
                "the provider made {executions} payouts for {} completed payments",
                completed.len()
            ));
        }
        for payment in completed {
            let id = payment["payment_id"].as_str().unwrap_or_default();
            let payout = self.get(&format!("{}/payouts/{id}", self.simulator)).await;
            let paid = payout.is_some_and(|payout| {
                payout["status"] == "paid" && payout["reference"] == payment["provider_reference"]
            });
            if !paid {
                summary
                    .doubled
                    .push(format!("payment {id} is completed without its payout"));
            }
        }
        Ok(())
    }

    /// Each campaign's reservations equal the net of its commissions.
    async fn check_budgets(
        &self,
        campaigns: [&str; 2],
        summary: &mut Summary,
    ) -> anyhow::Result<()> {
        for campaign in campaigns {
            let reserved = self
                .get(&format!("{}/campaigns/{campaign}", self.campaigns))
                .await
                .context("the campaign")?["reserved"]
                .as_i64()
                .unwrap_or_default();
            let net: i64 = self
                .get(&format!(
                    "{}/campaigns/{campaign}/commissions/summary",
                    self.commissions
                ))
                .await
                .context("the campaign's commissions")?["currencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|currency| currency["net"].as_i64())
                .sum();
            if reserved != net {
                summary.unbalanced.push(format!(
                    "campaign {campaign}: {reserved} reserved, commissions net {net}"
                ));
            }
        }
        Ok(())
    }
}
