//! `pulsaga demo`: a realistic scenario through the HTTP API, printed as it goes. An advertiser
//! registers a partner and creates two campaigns, one paying 25 cents per click and one paying
//! 10 % of each order; the partner brings two clicks and three orders, one of which the payout
//! provider declines (10 % of 6 660 is 666, the simulator's "account closed"). Then the first
//! order is refunded (a chargeback): its commission is reversed, its payout clawed back and its
//! budget released. The demo waits for every saga and shows the compensated saga's log, the
//! refund's steps, and the partner's commissions and payments. It fails if a saga ends otherwise.

use crate::client::ApiClient;
use crate::settings::Jwt;
use anyhow::Context;
use bff::auth::Role;
use serde_json::{Value, json};

fn id(value: &Value, name: &str) -> anyhow::Result<String> {
    value[name]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{name} in {value}"))
}

/// The API, and the tokens the scenario acts with.
struct Demo {
    client: ApiClient,
    advertiser: String,
    admin: String,
}

/// A saga the scenario started: what started it, its id, and how it must end.
type Started = (String, String, &'static str);

/// Runs the scenario against the API at `api`, with tokens signed by `jwt`'s secret.
pub async fn run(api: &str, jwt: &Jwt) -> anyhow::Result<()> {
    let secret = jwt.secret()?;
    let mint = |role: Role, subject: &str, tenant: Option<&str>| {
        bff::auth::mint_hs256(
            secret,
            &jwt.jwt_issuer,
            &jwt.jwt_audience,
            subject,
            role,
            tenant,
            3600,
        )
    };
    let advertiser_id = uuid::Uuid::new_v4().to_string();
    let demo = Demo {
        client: ApiClient::new(api),
        advertiser: mint(Role::Advertiser, "demo-advertiser", Some(&advertiser_id))?,
        admin: mint(Role::Admin, "demo-admin", None)?,
    };
    println!("demo: advertiser {advertiser_id}");
    let (partner_id, click_campaign, order_campaign) = demo.set_up().await?;

    let mut sagas = Vec::new();
    for n in 1..=2 {
        let click =
            json!({ "campaign_id": click_campaign, "partner_id": partner_id, "kind": "click" });
        let saga = demo.track(click).await?;
        println!("demo: recorded a click");
        sagas.push((format!("click-{n}"), saga, "completed"));
    }
    let order = |kind: &str, order: &str, amount: i64| {
        json!({
            "campaign_id": order_campaign,
            "partner_id": partner_id,
            "kind": kind,
            "order": { "order_id": order, "amount": { "amount": amount, "currency": "EUR" } },
        })
    };
    for (id, amount, expected) in [
        ("order-1001", 5_000, "completed"),
        ("order-1002", 12_000, "completed"),
        ("order-1003", 6_660, "compensated"),
    ] {
        let saga = demo.track(order("conversion", id, amount)).await?;
        println!("demo: recorded the conversion of {id} ({amount} cents)");
        sagas.push((id.to_owned(), saga, expected));
    }
    demo.await_sagas(&sagas).await?;
    let (_, declined, _) = sagas
        .iter()
        .find(|(_, _, expected)| *expected == "compensated")
        .context("the declined order")?;
    demo.show_compensations(declined).await?;

    // A chargeback: the first order is returned after its commission was paid.
    let refund = demo.track(order("refund", "order-1001", 5_000)).await?;
    println!();
    println!("demo: recorded the refund of order-1001 (a chargeback)");
    let refunded = [("refund-1001".to_owned(), refund.clone(), "completed")];
    demo.await_sagas(&refunded).await?;
    demo.show_steps(&refund).await?;

    let partner = mint(Role::Partner, "demo-partner", Some(&partner_id))?;
    demo.show_partner(&partner_id, &partner).await?;
    println!();
    println!("demo: done; the API is at {api}/docs");
    Ok(())
}

impl Demo {
    /// Registers the partner and creates both campaigns with the partner associated; returns
    /// the partner's id and the click and order campaigns' ids.
    async fn set_up(&self) -> anyhow::Result<(String, String, String)> {
        let (client, advertiser) = (&self.client, &self.advertiser);
        let partner = client
            .post(
                "/v1/partners",
                advertiser,
                json!({ "name": "Pat's Deals", "email": "pat@example.com", "payout_account": "NL91ABNA0417164300" }),
            )
            .await?;
        let campaign = |name: &str, rule: Value| {
            json!({
                "name": name,
                "budget": { "amount": 1_000_000, "currency": "EUR" },
                "commission_rule": rule,
                "valid_until": "2099-01-01T00:00:00Z",
            })
        };
        let clicks = client
            .post(
                "/v1/campaigns",
                advertiser,
                campaign("Newsletter", json!({ "type": "fixed", "amount": 25 })),
            )
            .await?;
        let orders = client
            .post(
                "/v1/campaigns",
                advertiser,
                campaign(
                    "Spring sale",
                    json!({ "type": "percent", "basis_points": 1_000 }),
                ),
            )
            .await?;
        client.succeeded(&partner, advertiser).await?;
        let partner_id = id(&partner, "partner_id")?;
        let mut campaigns = Vec::new();
        for (accepted, what) in [(&clicks, "25 cents per click"), (&orders, "10 % per order")] {
            client.succeeded(accepted, advertiser).await?;
            let campaign_id = id(accepted, "campaign_id")?;
            client
                .wait_for(&format!("/v1/campaigns/{campaign_id}"), advertiser, |_| {
                    true
                })
                .await?;
            let associated = client
                .post(
                    &format!("/v1/campaigns/{campaign_id}/partners"),
                    advertiser,
                    json!({ "partner_id": partner_id }),
                )
                .await?;
            client.succeeded(&associated, advertiser).await?;
            println!("demo: campaign {campaign_id} ({what}), partner {partner_id} associated");
            campaigns.push(campaign_id);
        }
        let order_campaign = campaigns.pop().context("the order campaign")?;
        let click_campaign = campaigns.pop().context("the click campaign")?;
        Ok((partner_id, click_campaign, order_campaign))
    }

    /// Records a tracking event; returns the id of the saga it starts.
    async fn track(&self, event: Value) -> anyhow::Result<String> {
        let recorded = self
            .client
            .post("/v1/tracking-events", &self.advertiser, event)
            .await?;
        id(&recorded, "saga_id")
    }

    /// Waits for each saga to end, printing how, and fails unless it ended as expected.
    async fn await_sagas(&self, sagas: &[Started]) -> anyhow::Result<()> {
        println!();
        println!("{:<12} {:<38} status", "event", "saga");
        for (event, saga, expected) in sagas {
            let detail = self
                .client
                .wait_for(&format!("/v1/sagas/{saga}"), &self.admin, |b| {
                    matches!(
                        b["saga"]["status"].as_str(),
                        Some("completed" | "compensated" | "parked")
                    )
                })
                .await?;
            let status = detail["saga"]["status"].as_str().unwrap_or_default();
            println!("{event:<12} {saga:<38} {status}");
            anyhow::ensure!(
                status == *expected,
                "saga {saga} ended {status}, not {expected}"
            );
        }
        Ok(())
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (_, body) = self
            .client
            .send(reqwest::Method::GET, path, &self.admin, None)
            .await?;
        Ok(body)
    }

    async fn show_compensations(&self, saga: &str) -> anyhow::Result<()> {
        let log = self.get(&format!("/v1/sagas/{saga}/compensations")).await?;
        println!();
        println!("compensation log of saga {saga}:");
        for entry in log["compensations"].as_array().into_iter().flatten() {
            println!(
                "  {:<24} {:<18} {}",
                entry["entry"].as_str().unwrap_or_default(),
                entry["step"].as_str().unwrap_or_default(),
                entry["reason"].as_str().unwrap_or_default()
            );
        }
        Ok(())
    }

    async fn show_steps(&self, saga: &str) -> anyhow::Result<()> {
        let detail = self.get(&format!("/v1/sagas/{saga}")).await?;
        println!();
        println!(
            "steps of the {} saga {saga}:",
            detail["saga"]["saga_type"].as_str().unwrap_or_default()
        );
        for step in detail["steps"].as_array().into_iter().flatten() {
            println!(
                "  {:<20} {}",
                step["step"].as_str().unwrap_or_default(),
                step["status"].as_str().unwrap_or_default()
            );
        }
        Ok(())
    }

    /// The partner's commissions and payments as the partner sees them, once the refund shows:
    /// a commission per click and order (the refunded one reversed), a payment per order (the
    /// refunded one clawed back).
    async fn show_partner(&self, partner_id: &str, token: &str) -> anyhow::Result<()> {
        for (what, count, refunded) in [
            ("commissions", 5, "reversed"),
            ("payments", 3, "clawed_back"),
        ] {
            let list = self
                .client
                .wait_for(&format!("/v1/partners/{partner_id}/{what}"), token, |l| {
                    let items = l[what].as_array();
                    items.is_some_and(|items| {
                        items.len() == count && items.iter().any(|i| i["status"] == refunded)
                    })
                })
                .await?;
            println!();
            println!("the partner's {what}:");
            for item in list[what].as_array().into_iter().flatten() {
                println!(
                    "  {:>8} {}  {}",
                    item["amount"].as_i64().unwrap_or_default(),
                    item["currency"].as_str().unwrap_or_default(),
                    item["status"].as_str().unwrap_or_default()
                );
            }
            for total in list["paid"].as_array().into_iter().flatten() {
                println!(
                    "  paid {} {}, clawed back {} {}",
                    total["paid_amount"].as_i64().unwrap_or_default(),
                    total["currency"].as_str().unwrap_or_default(),
                    total["clawed_back_amount"].as_i64().unwrap_or_default(),
                    total["currency"].as_str().unwrap_or_default()
                );
            }
        }
        Ok(())
    }
}
