//! The HTTP API end to end, with a real server in front of the whole platform: a campaign, a
//! partner and conversions through `/v1`, one saga paid out and one compensated, seen in the
//! partner views, the saga routes, the correlation view and the metrics — and the requests the
//! API refuses.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bff::auth::{Key, Role, Verifier, mint_hs256};
use pulsaga_tests::platform::Platform;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SECRET: &[u8] = b"a development secret of at least 32 bytes";
const ISSUER: &str = "pulsaga";
const AUDIENCE: &str = "pulsaga-api";

/// The API served on a free port in front of `platform`.
struct Api {
    base: String,
    http: reqwest::Client,
    stop: CancellationToken,
}

impl Api {
    async fn start(platform: &Platform, key: &Key) -> Api {
        Api::start_with_rate(platform, key, 1000).await
    }

    /// The API verifying HS256 tokens signed with `SECRET`.
    async fn hs256(platform: &Platform) -> Api {
        let key = Key::Hs256 {
            secret: SECRET.to_vec(),
        };
        Api::start(platform, &key).await
    }

    async fn start_with_rate(platform: &Platform, key: &Key, rate: u32) -> Api {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listen");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let settings = bff::Settings {
            services: bff::services::ServiceUrls {
                campaigns: platform.urls.campaigns.clone(),
                tracking: platform.urls.tracking.clone(),
                commissions: platform.urls.commissions.clone(),
                payments: platform.urls.payments.clone(),
                sagas: platform.urls.sagas.clone(),
            },
            service_token: platform.service_token.clone(),
            verifier: Verifier::new(key, ISSUER, AUDIENCE, 30).expect("verifier"),
            rate_per_second: std::num::NonZeroU32::new(rate).expect("rate"),
            max_in_flight: 512,
            restarts: 0,
        };
        let stop = CancellationToken::new();
        tokio::spawn(bff::serve(
            listener,
            platform.client.clone(),
            settings,
            stop.clone(),
        ));
        Api {
            base,
            http: reqwest::Client::new(),
            stop,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    /// POSTs and expects `202 Accepted`; returns the answer.
    async fn post(&self, path: &str, token: &str, body: Value) -> Value {
        let (status, answer) = self
            .call(reqwest::Method::POST, path, token, Some(&body))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{path}: {answer}");
        answer
    }

    /// Polls `path` until it answers 200 with a body that satisfies `done`.
    async fn wait_for(&self, path: &str, token: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = self.get(path, token).await;
            if status == StatusCode::OK && done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never got there; last: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST /v1/tracking-events` with `body` as the caller of `token`.
    async fn track(&self, token: &str, body: &Value) -> (StatusCode, Value) {
        let post = reqwest::Method::POST;
        self.call(post, "/v1/tracking-events", token, Some(body))
            .await
    }

    /// Waits for a command's outcome and expects success.
    async fn succeeded(&self, accepted: &Value, token: &str) {
        let path = format!(
            "/v1/commands/{}",
            accepted["command_id"].as_str().expect("id")
        );
        let outcome = self
            .wait_for(&path, token, |b| b["status"] != "pending")
            .await;
        assert_eq!(outcome["status"], "succeeded", "{outcome}");
    }

    /// Registers a partner and creates a campaign paying `rule` out of `budget` EUR, as the
    /// advertiser of `token`; returns their ids once both commands succeeded.
    async fn partner_and_campaign(
        &self,
        token: &str,
        budget: i64,
        rule: Value,
    ) -> (String, String) {
        let partner =
            json!({ "name": "Pat", "email": "pat@example.com", "payout_account": "NL00" });
        let partner = self.post("/v1/partners", token, partner).await;
        let campaign = json!({
            "name": "Spring sale",
            "budget": { "amount": budget, "currency": "EUR" },
            "commission_rule": rule,
            "valid_until": "2099-01-01T00:00:00Z",
        });
        let campaign = self.post("/v1/campaigns", token, campaign).await;
        self.succeeded(&partner, token).await;
        self.succeeded(&campaign, token).await;
        let id = |accepted: &Value, key: &str| accepted[key].as_str().expect("id").to_owned();
        (id(&partner, "partner_id"), id(&campaign, "campaign_id"))
    }
}

fn token(role: Role, tenant: Option<&str>) -> String {
    mint_hs256(SECRET, ISSUER, AUDIENCE, role.name(), role, tenant, 600).expect("token")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[sqlx::test(migrations = false)]
async fn a_flow_through_the_api_pays_one_order_and_compensates_another(db: PgPool) {
    let platform = Platform::start(db).await;
    let api = Api::hs256(&platform).await;
    let advertiser_id = Uuid::new_v4().to_string();
    let advertiser = token(Role::Advertiser, Some(&advertiser_id));
    let admin = token(Role::Admin, None);

    let percent = json!({ "type": "percent", "basis_points": 1_000 });
    let (partner_id, campaign_id) = api
        .partner_and_campaign(&advertiser, 100_000, percent)
        .await;
    let shown = api
        .wait_for(&format!("/v1/campaigns/{campaign_id}"), &advertiser, |_| {
            true
        })
        .await;
    assert_eq!(
        shown["advertiser_id"],
        advertiser_id.as_str(),
        "owned by its creator"
    );
    let associated = api
        .post(
            &format!("/v1/campaigns/{campaign_id}/partners"),
            &advertiser,
            json!({ "partner_id": partner_id }),
        )
        .await;
    api.succeeded(&associated, &advertiser).await;

    // 10 % of 5 000 is paid; 10 % of 6 660 is 666, which the payout simulator declines.
    let mut sagas = Vec::new();
    for (order, amount) in [("order-1", 5_000), ("order-2", 6_660)] {
        let recorded = api
            .post(
                "/v1/tracking-events",
                &advertiser,
                json!({
                    "campaign_id": campaign_id,
                    "partner_id": partner_id,
                    "kind": "conversion",
                    "order": { "order_id": order, "amount": { "amount": amount, "currency": "EUR" } },
                }),
            )
            .await;
        sagas.push((
            recorded["saga_id"].as_str().expect("saga id").to_owned(),
            recorded["command_id"]
                .as_str()
                .expect("command id")
                .to_owned(),
        ));
    }
    let finished = |b: &Value| {
        matches!(
            b["saga"]["status"].as_str(),
            Some("completed" | "compensated")
        )
    };
    let paid = api
        .wait_for(&format!("/v1/sagas/{}", sagas[0].0), &admin, finished)
        .await;
    assert_eq!(paid["saga"]["status"], "completed", "{paid}");
    let declined = api
        .wait_for(&format!("/v1/sagas/{}", sagas[1].0), &admin, finished)
        .await;
    assert_eq!(declined["saga"]["status"], "compensated", "{declined}");
    let (_, log) = api
        .get(&format!("/v1/sagas/{}/compensations", sagas[1].0), &admin)
        .await;
    super::assert_unwound_for(&log, "account closed");

    // The partner sees its commission and payment for each order; another partner sees nothing.
    let as_partner = token(Role::Partner, Some(&partner_id));
    let statuses = |list: &Value, key: &str| -> Vec<(i64, String)> {
        let mut pairs: Vec<(i64, String)> = list[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["amount"].as_i64().unwrap_or_default(),
                    c["status"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        pairs.sort();
        pairs
    };
    let commissions = api
        .wait_for(
            &format!("/v1/partners/{partner_id}/commissions"),
            &as_partner,
            |l| {
                statuses(l, "commissions")
                    == [(500, "assigned".to_owned()), (666, "reversed".to_owned())]
            },
        )
        .await;
    assert_eq!(statuses(&commissions, "commissions").len(), 2);
    // Paged as the caller asks: one at a time, by cursor; a bad limit is the caller's error.
    let path = format!("/v1/partners/{partner_id}/commissions");
    let (_, first) = api.get(&format!("{path}?limit=1"), &as_partner).await;
    let next = first["next"].as_i64().expect("a next page");
    let (_, second) = api
        .get(&format!("{path}?limit=1&after={next}"), &as_partner)
        .await;
    let mut paged: Vec<(i64, String)> = [first, second]
        .iter()
        .flat_map(|page| statuses(page, "commissions"))
        .collect();
    paged.sort();
    assert_eq!(paged, statuses(&commissions, "commissions"));
    let (status, _) = api.get(&format!("{path}?limit=0"), &as_partner).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, one) = api
        .get(
            &format!("/v1/partners/{partner_id}/payments?limit=1"),
            &as_partner,
        )
        .await;
    assert_eq!(one["payments"].as_array().map(Vec::len), Some(1), "{one}");
    api.wait_for(
        &format!("/v1/partners/{partner_id}/payments"),
        &as_partner,
        |l| statuses(l, "payments") == [(500, "completed".to_owned()), (666, "failed".to_owned())],
    )
    .await;
    let stranger = token(Role::Partner, Some(&Uuid::new_v4().to_string()));
    let (status, _) = api
        .get(&format!("/v1/partners/{partner_id}/payments"), &stranger)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The whole paid flow, across the services, in causal order.
    let auditor = token(Role::Auditor, None);
    let flow = api
        .wait_for(
            &format!("/v1/audit/correlations/{}", sagas[0].1),
            &auditor,
            |f| {
                f["events"].as_array().is_some_and(|events| {
                    events
                        .iter()
                        .any(|e| e["event_type"] == "TrackingEventConfirmed")
                })
            },
        )
        .await;
    let events = flow["events"].as_array().expect("events");
    let services: std::collections::BTreeSet<&str> = events
        .iter()
        .filter_map(|e| e["service"].as_str())
        .collect();
    assert_eq!(
        services.into_iter().collect::<Vec<_>>(),
        ["campaigns", "commissions", "payments", "sagas", "tracking"]
    );
    let position = |event_type: &str| {
        events
            .iter()
            .position(|e| e["event_type"] == event_type)
            .unwrap_or_else(|| panic!("{event_type} in the flow"))
    };
    assert!(position("TrackingEventRecorded") < position("BudgetReserved"));
    assert!(position("BudgetReserved") < position("CommissionAssigned"));
    assert!(position("CommissionAssigned") < position("TrackingEventConfirmed"));

    // Each entity's state, folded by its service, now and as of a time in its past.
    let stream_of = |event_type: &str| {
        let event = &events[position(event_type)];
        let (service, stream) = (&event["service"], &event["stream_id"]);
        let path = format!(
            "/v1/audit/{}/streams/{}/state",
            service.as_str().expect("service"),
            stream.as_str().expect("stream")
        );
        (
            path,
            event["recorded_at"].as_str().expect("time").to_owned(),
        )
    };
    let state_of = async |event_type: &str, as_of: Option<&str>| {
        let (path, _) = stream_of(event_type);
        let path = match as_of {
            Some(at) => format!("{path}?as_of={}", at.replace('+', "%2B")),
            None => path,
        };
        let (status, body) = api.get(&path, &auditor).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body
    };
    let payment = state_of("PaymentCompleted", None).await;
    assert_eq!(payment["state"]["status"], "completed", "{payment}");
    assert_eq!(
        payment["state"]["request"]["amount"]["amount"], 500,
        "{payment}"
    );
    let (_, requested_at) = stream_of("PaymentRequested");
    let requested = state_of("PaymentRequested", Some(&requested_at)).await;
    assert_eq!(requested["state"]["status"], "requested", "{requested}");
    assert_eq!(requested["version"], 1, "{requested}");
    let commission = state_of("CommissionAssigned", None).await;
    assert_eq!(commission["state"]["status"], "assigned", "{commission}");
    let tracking = state_of("TrackingEventConfirmed", None).await;
    assert_eq!(tracking["state"][1], "confirmed", "{tracking}");
    let campaign = state_of("BudgetReserved", None).await;
    assert!(campaign["state"]["spent"].as_i64() > Some(0), "{campaign}");
    let (saga_stream, _) = stream_of("SagaStarted");
    let (_, saga) = api.get(&saga_stream, &auditor).await;
    assert_eq!(saga["state"]["status"], "completed", "{saga}");
    let (_, before) = api
        .get(
            &format!("{saga_stream}?as_of=2000-01-01T00:00:00Z"),
            &auditor,
        )
        .await;
    assert_eq!(before["status"], 404, "no saga before it started: {before}");

    // Metrics: the API's requests, and each process's consumers and sagas.
    let metrics = |url: String| async move {
        reqwest::get(url)
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    };
    let api_metrics = metrics(format!("{}/metrics", api.base)).await;
    assert!(
        api_metrics.contains(
            r#"pulsaga_http_requests_total{method="POST",route="/v1/tracking-events",status="202"} 2"#
        ),
        "{api_metrics}"
    );
    let saga_metrics = metrics(format!("{}/metrics", platform.urls.sagas)).await;
    for line in [
        r#"pulsaga_saga_transitions_total{saga_type="order-to-payment",status="completed"} 1"#,
        r#"pulsaga_saga_transitions_total{saga_type="order-to-payment",status="compensated"} 1"#,
        r#"pulsaga_saga_duration_seconds_count{saga_type="order-to-payment",status="completed"} 1"#,
        r#"pulsaga_consumer_applied_total{topic="payments-events"}"#,
    ] {
        assert!(saga_metrics.contains(line), "{line} in {saga_metrics}");
    }
    let tracking_metrics = metrics(format!("{}/metrics", platform.urls.tracking)).await;
    assert!(
        tracking_metrics
            .contains(r#"pulsaga_consumer_applied_total{topic="campaign-tracking-events"} 2"#),
        "{tracking_metrics}"
    );

    api.stop.cancel();
    platform.stop().await;
}

/// A token signed by hand: `header` and `claims` as given, HS256 over them with `secret`.
fn signed(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    let mut jwt_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jwt_header.typ = header["typ"].as_str().map(str::to_owned);
    jsonwebtoken::encode(&jwt_header, claims, &key).expect("sign")
}

fn claims(role: &str, tenant: Option<&str>) -> Value {
    json!({ "sub": "someone", "role": role, "tenant": tenant, "iss": ISSUER, "aud": AUDIENCE,
            "exp": now() + 600, "nbf": now() })
}

#[sqlx::test(migrations = false)]
async fn bad_tokens_other_tenants_and_bad_bodies_are_refused(db: PgPool) {
    let platform = Platform::start(db).await;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let public_pem = std::fs::read(fixtures.join("jwt-test-rs256.pub")).expect("public key");
    let private_pem = std::fs::read(fixtures.join("jwt-test-rs256.key")).expect("private key");
    let rs_api = Api::start(
        &platform,
        &Key::Rs256 {
            public_pem: public_pem.clone(),
        },
    )
    .await;
    let rs_token = |claims: &Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            claims,
            &jsonwebtoken::EncodingKey::from_rsa_pem(&private_pem).expect("private key"),
        )
        .expect("sign")
    };
    let good = rs_token(&claims("admin", None));
    let (status, _) = rs_api.get("/v1/sagas", &good).await;
    assert_eq!(status, StatusCode::OK, "the control: a good RS256 token");

    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims("admin", None).to_string())
    );
    let mut wrong_aud = claims("admin", None);
    wrong_aud["aud"] = json!("someone-else");
    let mut wrong_iss = claims("admin", None);
    wrong_iss["iss"] = json!("https://evil.example");
    let mut expired = claims("admin", None);
    expired["exp"] = json!(now() - 120);
    let mut nbf_text = claims("admin", None);
    nbf_text["nbf"] = json!(now().to_string());
    let mut no_exp = claims("admin", None);
    no_exp.as_object_mut().expect("object").remove("exp");
    let refused = [
        ("alg none", unsigned),
        // The RS public key used as an HS secret: the classic algorithm confusion.
        (
            "HS256 against RS256",
            signed(&json!({"typ": "JWT"}), &claims("admin", None), &public_pem),
        ),
        ("wrong aud", rs_token(&wrong_aud)),
        ("wrong iss", rs_token(&wrong_iss)),
        ("expired", rs_token(&expired)),
        ("nbf as a string", rs_token(&nbf_text)),
        ("no exp", rs_token(&no_exp)),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (what, token) in refused {
        let (status, problem) = rs_api.get("/v1/sagas", &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {problem}");
        assert_eq!(problem["status"], 401, "{what}: problem+json");
    }
    let (status, _) = rs_api.get("/v1/sagas", "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no token");
    rs_api.stop.cancel();

    // ES256: its own key verifies; an RS256 token does not.
    let es_pem = std::fs::read(fixtures.join("jwt-test-es256.key")).expect("EC private key");
    let es_api = Api::start(
        &platform,
        &Key::Es256 {
            public_pem: std::fs::read(fixtures.join("jwt-test-es256.pub")).expect("EC public key"),
        },
    )
    .await;
    let es_token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims("auditor", None),
        &jsonwebtoken::EncodingKey::from_ec_pem(&es_pem).expect("EC key"),
    )
    .expect("sign");
    assert_eq!(es_api.get("/v1/sagas", &es_token).await.0, StatusCode::OK);
    assert_eq!(
        es_api.get("/v1/sagas", &good).await.0,
        StatusCode::UNAUTHORIZED,
        "an RS256 token against ES256"
    );
    es_api.stop.cancel();

    let api = Api::hs256(&platform).await;
    let owner = token(Role::Advertiser, Some(&Uuid::new_v4().to_string()));
    let campaign = api
        .post(
            "/v1/campaigns",
            &owner,
            json!({
                "name": "Mine",
                "budget": { "amount": 1_000, "currency": "EUR" },
                "commission_rule": { "type": "fixed", "amount": 10 },
                "valid_until": "2099-01-01T00:00:00Z",
            }),
        )
        .await;
    let campaign_id = campaign["campaign_id"].as_str().expect("id").to_owned();
    // A command's outcome is its issuer's (and admins') to see.
    let command = format!(
        "/v1/commands/{}",
        campaign["command_id"].as_str().expect("command id")
    );
    api.wait_for(&command, &owner, |b| b["status"] == "succeeded")
        .await;
    let (status, _) = api.get(&command, &token(Role::Auditor, None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "someone else's command");
    let (status, _) = api.get(&command, &token(Role::Admin, None)).await;
    assert_eq!(status, StatusCode::OK, "an admin sees every command");
    let path = format!("/v1/campaigns/{campaign_id}");
    api.wait_for(&path, &owner, |_| true).await;
    let other = token(Role::Advertiser, Some(&Uuid::new_v4().to_string()));
    let (status, problem) = api.get(&path, &other).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another tenant's campaign: {problem}"
    );
    let click =
        json!({ "campaign_id": campaign_id, "partner_id": Uuid::new_v4(), "kind": "click" });
    let (status, _) = api.track(&owner, &click).await;
    assert_eq!(status, StatusCode::ACCEPTED, "its owner tracks on it");
    let (status, _) = api.track(&other, &click).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "nor can another track on it, once the API knows whose it is"
    );
    let (status, problem) = api
        .track(
            &owner,
            &json!({
                "campaign_id": campaign_id, "partner_id": Uuid::new_v4(), "kind": "conversion",
                "order": { "order_id": "A-1\u{0}", "amount": { "amount": 100, "currency": "EUR" } },
            }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "NUL in an order id: {problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("control characters")),
        "{problem}"
    );
    // A refund carries the order it refunds; a click carries none.
    for (kind, order) in [
        ("refund", None),
        (
            "click",
            Some(json!({ "order_id": "A-1", "amount": { "amount": 100, "currency": "EUR" } })),
        ),
    ] {
        let body = json!({
            "campaign_id": campaign_id, "partner_id": Uuid::new_v4(), "kind": kind,
            "order": order,
        });
        let (status, problem) = api.track(&owner, &body).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{kind}: {problem}"
        );
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("refund")),
            "{problem}"
        );
    }
    let (status, _) = api.get("/v1/sagas", &owner).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "an advertiser is no operator"
    );

    let valid = json!({ "name": "P", "email": "p@example.com", "payout_account": "NL00" });
    let mut unknown = valid.clone();
    unknown["colour"] = json!("red");
    let mut server_owned = valid.clone();
    server_owned["partner_id"] = json!(Uuid::new_v4());
    let big = json!({ "name": "x".repeat(bff::BODY_LIMIT), "email": "p@example.com", "payout_account": "NL00" });
    let mut nul = valid.clone();
    nul["name"] = json!("Evil\u{0}Corp");
    let mut escape = valid.clone();
    escape["payout_account"] = json!("NL00\u{1b}[2J");
    for (what, body, expected) in [
        ("unknown field", unknown, StatusCode::UNPROCESSABLE_ENTITY),
        ("NUL in a name", nul, StatusCode::UNPROCESSABLE_ENTITY),
        (
            "an escape sequence",
            escape,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "server-owned id",
            server_owned,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("over 64 KiB", big, StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        let (status, problem) = api
            .call(reqwest::Method::POST, "/v1/partners", &owner, Some(&body))
            .await;
        assert_eq!(status, expected, "{what}: {problem}");
        assert_eq!(problem["status"], expected.as_u16(), "{what}: problem+json");
    }

    // The same Idempotency-Key is the same command, with the same ids.
    let retried: Vec<Value> = post_twice_with_one_key(&api, &owner, &valid).await;
    assert_eq!(retried[0], retried[1]);
    // With another body it is refused, never dropped as a duplicate of the first.
    let mut other_body = valid.clone();
    other_body["name"] = json!("Somebody else");
    let (status, problem) = post_with_key(&api, &owner, "/v1/partners", &other_body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("another request body")),
        "{problem}"
    );
    // On another route the key is another key: the campaign is created.
    let campaign_body = json!({
        "name": "Same key, other route",
        "budget": { "amount": 1_000, "currency": "EUR" },
        "commission_rule": { "type": "fixed", "amount": 10 },
        "valid_until": "2099-01-01T00:00:00Z",
    });
    let (status, created) = post_with_key(&api, &owner, "/v1/campaigns", &campaign_body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    assert_ne!(created["command_id"], retried[0]["command_id"]);
    api.succeeded(&created, &owner).await;

    let (status, document) = api.get("/openapi.json", &owner).await;
    assert_eq!(status, StatusCode::OK);
    assert!(document["paths"]["/v1/tracking-events"]["post"].is_object());
    api.stop.cancel();

    // One request a second, in bursts of two: the third at once is refused, for that caller only.
    let slow = Api::start_with_rate(
        &platform,
        &Key::Hs256 {
            secret: SECRET.to_vec(),
        },
        1,
    )
    .await;
    let auditor = token(Role::Auditor, None);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(slow.get("/v1/sagas", &auditor).await.0);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let (status, _) = slow.get("/v1/sagas", &token(Role::Admin, None)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "another caller has its own allowance"
    );
    slow.stop.cancel();
    platform.stop().await;
}

const KEY: &str = "register-pat-once";

/// Posts `body` to `path` under the Idempotency-Key `KEY`; the status and the JSON answer.
async fn post_with_key(api: &Api, token: &str, path: &str, body: &Value) -> (StatusCode, Value) {
    let response = api
        .http
        .post(format!("{}{path}", api.base))
        .bearer_auth(token)
        .header("Idempotency-Key", KEY)
        .json(body)
        .send()
        .await
        .expect("request");
    (response.status(), response.json().await.expect("json"))
}

/// Posts `body` twice under one Idempotency-Key; returns both answers.
async fn post_twice_with_one_key(api: &Api, token: &str, body: &Value) -> Vec<Value> {
    let mut answers = Vec::new();
    for _ in 0..2 {
        let (status, answer) = post_with_key(api, token, "/v1/partners", body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        answers.push(answer);
    }
    answers
}

/// The read routes, the content association and the operator actions through HTTP, each with
/// its role and tenant rules: the owner advertiser, another advertiser, a partner, an auditor
/// and an admin.
#[sqlx::test(migrations = false)]
async fn every_route_answers_by_role_and_tenant(db: PgPool) {
    let platform = Platform::start(db).await;
    let api = Api::hs256(&platform).await;
    let owner = token(Role::Advertiser, Some(&Uuid::new_v4().to_string()));
    let other = token(Role::Advertiser, Some(&Uuid::new_v4().to_string()));
    let (admin, auditor) = (token(Role::Admin, None), token(Role::Auditor, None));
    let status = async |path: &str, token: &str| api.get(path, token).await.0;

    let before = time::OffsetDateTime::now_utc();
    let fixed = json!({ "type": "fixed", "amount": 10 });
    let (partner_id, campaign_id) = api.partner_and_campaign(&owner, 10_000, fixed).await;
    let campaign_path = format!("/v1/campaigns/{campaign_id}");
    api.wait_for(&campaign_path, &owner, |_| true).await;

    // Content: its owner associates it; another advertiser's campaign does not exist for it.
    let content = json!({ "kind": "banner", "url": "https://example.com/b.png", "title": "B", "tags": ["spring"] });
    let content_path = format!("{campaign_path}/content");
    let associated = api.post(&content_path, &owner, content.clone()).await;
    api.succeeded(&associated, &owner).await;
    let (refused, _) = api
        .call(reqwest::Method::POST, &content_path, &other, Some(&content))
        .await;
    assert_eq!(
        refused,
        StatusCode::NOT_FOUND,
        "another advertiser's campaign"
    );
    let shown = api
        .wait_for(&campaign_path, &owner, |c| {
            c["content"].as_array().is_some_and(|c| c.len() == 1)
        })
        .await;
    assert_eq!(shown["content"][0]["title"], "B", "{shown}");

    // The campaign list: the owner's own, every one for an auditor, none of it for another.
    let listed = |body: &Value| {
        body["items"]
            .as_array()
            .or_else(|| body.as_array())
            .is_some_and(|items| {
                items
                    .iter()
                    .any(|c| c["campaign_id"] == campaign_id.as_str())
            })
    };
    assert!(listed(&api.get("/v1/campaigns", &owner).await.1));
    assert!(listed(&api.get("/v1/campaigns", &auditor).await.1));
    assert!(!listed(&api.get("/v1/campaigns", &other).await.1));
    let as_partner = token(Role::Partner, Some(&partner_id));
    assert_eq!(
        status("/v1/campaigns", &as_partner).await,
        StatusCode::FORBIDDEN
    );

    // As of a time: before the campaign existed there was none; a malformed time is refused.
    let at = |t: time::OffsetDateTime| t.format(&Rfc3339).expect("time");
    let earlier = format!(
        "{campaign_path}?as_of={}",
        at(before - time::Duration::hours(1))
    );
    assert_eq!(status(&earlier, &owner).await, StatusCode::NOT_FOUND);
    let now = format!(
        "{campaign_path}?as_of={}",
        at(time::OffsetDateTime::now_utc())
    );
    assert_eq!(status(&now, &owner).await, StatusCode::OK);
    let (malformed, problem) = api
        .get(&format!("{campaign_path}?as_of=yesterday"), &owner)
        .await;
    assert!(malformed.is_client_error(), "{malformed}: {problem}");

    // A click: its tracking event and the campaign's stats, to the owner and overseers only.
    let click = api
        .post(
            "/v1/tracking-events",
            &owner,
            json!({ "campaign_id": campaign_id, "partner_id": partner_id, "kind": "click" }),
        )
        .await;
    let tracking_path = format!(
        "/v1/tracking-events/{}",
        click["tracking_id"].as_str().expect("id")
    );
    api.wait_for(&tracking_path, &owner, |t| t["kind"] == "click")
        .await;
    assert_eq!(status(&tracking_path, &auditor).await, StatusCode::OK);
    assert_eq!(status(&tracking_path, &other).await, StatusCode::NOT_FOUND);
    let stats_path = format!("{campaign_path}/stats");
    api.wait_for(&stats_path, &owner, |s| s["clicks"] == 1)
        .await;
    assert_eq!(status(&stats_path, &admin).await, StatusCode::OK);
    assert_eq!(status(&stats_path, &other).await, StatusCode::NOT_FOUND);

    // A partner: to itself and overseers; to another partner it does not exist.
    let partner_path = format!("/v1/partners/{partner_id}");
    let shown = api.wait_for(&partner_path, &as_partner, |_| true).await;
    assert_eq!(shown["name"], "Pat");
    assert_eq!(status(&partner_path, &auditor).await, StatusCode::OK);
    let someone = token(Role::Partner, Some(&Uuid::new_v4().to_string()));
    assert_eq!(status(&partner_path, &someone).await, StatusCode::NOT_FOUND);
    assert_eq!(status(&partner_path, &owner).await, StatusCode::FORBIDDEN);

    // The audit: a stream's events and a service's log, for overseers only.
    let stream = format!("/v1/audit/campaigns/streams/campaign-{campaign_id}");
    let (ok, events) = api.get(&stream, &auditor).await;
    assert_eq!(ok, StatusCode::OK, "{events}");
    let types = messaging::testing::event_types(&events);
    assert_eq!(
        types.first().map(String::as_str),
        Some("CampaignCreated"),
        "{types:?}"
    );
    assert!(types.iter().any(|t| t == "ContentAssociated"), "{types:?}");
    assert_eq!(status(&stream, &owner).await, StatusCode::FORBIDDEN);
    assert_eq!(
        status("/v1/audit/nowhere/streams/x", &auditor).await,
        StatusCode::NOT_FOUND
    );
    let (ok, log) = api.get("/v1/audit/tracking/events?limit=5", &admin).await;
    assert_eq!(ok, StatusCode::OK, "{log}");
    assert!(
        log["events"].as_array().is_some_and(|e| !e.is_empty()),
        "{log}"
    );
    assert_eq!(
        status("/v1/audit/tracking/events", &as_partner).await,
        StatusCode::FORBIDDEN
    );

    // Operator actions: admins only, on a saga in a state they apply to. (The partner was never
    // associated, so this saga compensated.)
    let saga = click["saga_id"].as_str().expect("saga id");
    api.wait_for(&format!("/v1/sagas/{saga}"), &admin, |s| {
        s["saga"]["status"] == "compensated"
    })
    .await;
    let act = async |action: &str, token: &str| {
        api.call(
            reqwest::Method::POST,
            &format!("/v1/sagas/{saga}/{action}"),
            token,
            None,
        )
        .await
        .0
    };
    assert_eq!(
        act("retry", &admin).await,
        StatusCode::CONFLICT,
        "a completed saga"
    );
    assert_eq!(act("compensate", &auditor).await, StatusCode::FORBIDDEN);
    assert_eq!(act("dance", &admin).await, StatusCode::NOT_FOUND);
    api.stop.cancel();
    platform.stop().await;
}
