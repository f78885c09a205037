//! `pulsaga demo`: a realistic scenario through the HTTP API, printed as it goes. An advertiser
//! registers a partner and creates two campaigns, one paying 25 cents per click and one paying
//! 10 % of each order; the partner brings two clicks and three orders, one of which the payout
//! provider declines (10 % of 6 660 is 666, the simulator's "account closed"). The demo waits for
//! every saga and shows the partner's commissions and payments and the compensated saga's log.
//! It fails if a saga ends otherwise.

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
    let advertiser = mint(Role::Advertiser, "demo-advertiser", Some(&advertiser_id))?;
    let admin = mint(Role::Admin, "demo-admin", None)?;
    let client = ApiClient::new(api);

    println!("demo: advertiser {advertiser_id}");
    let partner = client
        .post(
            "/v1/partners",
            &advertiser,
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
            &advertiser,
            campaign("Newsletter", json!({ "type": "fixed", "amount": 25 })),
        )
        .await?;
    let orders = client
        .post(
            "/v1/campaigns",
            &advertiser,
            campaign(
                "Spring sale",
                json!({ "type": "percent", "basis_points": 1_000 }),
            ),
        )
        .await?;
    client.succeeded(&partner, &advertiser).await?;
    let partner_id = id(&partner, "partner_id")?;
    let mut campaigns = Vec::new();
    for (accepted, what) in [(&clicks, "25 cents per click"), (&orders, "10 % per order")] {
        client.succeeded(accepted, &advertiser).await?;
        let campaign_id = id(accepted, "campaign_id")?;
        client
            .wait_for(&format!("/v1/campaigns/{campaign_id}"), &advertiser, |_| {
                true
            })
            .await?;
        let associated = client
            .post(
                &format!("/v1/campaigns/{campaign_id}/partners"),
                &advertiser,
                json!({ "partner_id": partner_id }),
            )
            .await?;
        client.succeeded(&associated, &advertiser).await?;
        println!("demo: campaign {campaign_id} ({what}), partner {partner_id} associated");
        campaigns.push(campaign_id);
    }
    let (click_campaign, order_campaign) = (&campaigns[0], &campaigns[1]);

    let mut sagas = Vec::new();
    for n in 1..=2 {
        let recorded = client
            .post(
                "/v1/tracking-events",
                &advertiser,
                json!({ "campaign_id": click_campaign, "partner_id": partner_id, "kind": "click" }),
            )
            .await?;
        println!("demo: recorded a click");
        sagas.push((format!("click-{n}"), id(&recorded, "saga_id")?, "completed"));
    }
    for (order, amount, expected) in [
        ("order-1001", 5_000, "completed"),
        ("order-1002", 12_000, "completed"),
        ("order-1003", 6_660, "compensated"),
    ] {
        let recorded = client
            .post(
                "/v1/tracking-events",
                &advertiser,
                json!({
                    "campaign_id": order_campaign,
                    "partner_id": partner_id,
                    "kind": "conversion",
                    "order": { "order_id": order, "amount": { "amount": amount, "currency": "EUR" } },
                }),
            )
            .await?;
        println!("demo: recorded the conversion of {order} ({amount} cents)");
        sagas.push((order.to_owned(), id(&recorded, "saga_id")?, expected));
    }

    println!();
    println!("{:<12} {:<38} status", "event", "saga");
    for (order, saga, expected) in &sagas {
        let detail = client
            .wait_for(&format!("/v1/sagas/{saga}"), &admin, |b| {
                matches!(
                    b["saga"]["status"].as_str(),
                    Some("completed" | "compensated" | "parked")
                )
            })
            .await?;
        let status = detail["saga"]["status"].as_str().unwrap_or_default();
        println!("{order:<12} {saga:<38} {status}");
        anyhow::ensure!(
            status == *expected,
            "saga {saga} ended {status}, not {expected}"
        );
    }

    let (_, declined) = &sagas
        .iter()
        .find(|(_, _, expected)| *expected == "compensated")
        .map(|(order, saga, _)| (order, saga))
        .context("the declined order")?;
    let (_, log) = client
        .send(
            reqwest::Method::GET,
            &format!("/v1/sagas/{declined}/compensations"),
            &admin,
            None,
        )
        .await?;
    println!();
    println!("compensation log of saga {declined}:");
    for entry in log["compensations"].as_array().into_iter().flatten() {
        println!(
            "  {:<24} {:<18} {}",
            entry["entry"].as_str().unwrap_or_default(),
            entry["step"].as_str().unwrap_or_default(),
            entry["reason"].as_str().unwrap_or_default()
        );
    }

    let partner_token = mint(Role::Partner, "demo-partner", Some(&partner_id))?;
    // A commission per click and order; a payment per order.
    for (what, count) in [("commissions", 5), ("payments", 3)] {
        let list = client
            .wait_for(
                &format!("/v1/partners/{partner_id}/{what}"),
                &partner_token,
                |l| l[what].as_array().is_some_and(|items| items.len() == count),
            )
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
    }
    println!();
    println!("demo: done; the API is at {api}/docs");
    Ok(())
}
