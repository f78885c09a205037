//! Order-to-payment and order-refund sagas across the four services and the coordinator, on the
//! real broker and databases: one paid out, one compensated because the payout provider declined
//! it, one refunded after its payout. Every saga
//! the test creates is then replayed from its log and must reproduce the commands it sent.

use pulsaga_tests::platform::{self, Platform};
use sagas::coordinator;
use sagas::definition::CATALOGUE;
use schemas::commands::RecordTrackingEvent;
use schemas::values::{Money, Order, TrackingKind};
use serde_json::Value;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

fn micros(at: time::OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1000).expect("micros")
}

fn eur(amount: i64) -> Money {
    Money {
        amount,
        currency: "EUR".into(),
    }
}

/// Records a conversion and waits for its saga to end; returns the saga id, its tracking id and
/// the saga's detail.
async fn convert(
    platform: &Platform,
    partner: Uuid,
    campaign: Uuid,
    order_id: &str,
    amount: i64,
) -> (Uuid, Uuid, Value) {
    let conversion = platform::conversion((partner, campaign), order_id, amount);
    let tracking_id = conversion.tracking_id;
    platform.send(tracking_id, &conversion).await;
    let saga_id = sagas::wire::saga_id_for(tracking_id);
    let url = format!("{}/sagas/{saga_id}", platform.urls.sagas);
    let detail = platform
        .wait_for(&url, Duration::from_secs(90), |b| {
            matches!(
                b["saga"]["status"].as_str(),
                Some("completed" | "compensated" | "parked")
            )
        })
        .await;
    (saga_id, tracking_id, detail)
}

/// Asserts that what a service lists at `url` (its array at the JSON pointer `at`) comes to
/// `expected`, each item's "amount status", sorted. Read models follow the log, so a saga may end
/// before its last events are projected: this waits up to ten seconds for them, then fails with
/// the last list it read.
async fn assert_listed(platform: &Platform, url: String, at: &str, expected: &[&str]) {
    platform
        .wait_for(&url, Duration::from_secs(10), |body| {
            amounts_and_statuses(body.pointer(at).unwrap_or(&Value::Null), &url) == expected
        })
        .await;
}

fn amounts_and_statuses(list: &Value, what: &str) -> Vec<String> {
    let mut items: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("{what} is a list"))
        .iter()
        .map(|item| {
            format!(
                "{} {}",
                item["amount"],
                item["status"].as_str().unwrap_or("?")
            )
        })
        .collect();
    items.sort();
    items
}

/// The saga's log, replayed through its definition, sends exactly the commands the coordinator
/// queued for it.
async fn assert_replays(platform: &Platform, saga_id: Uuid) {
    let pool = platform.sagas_pool();
    let mut conn = pool.acquire().await.expect("connection");
    let (_, log, _) = coordinator::load(&mut conn, saga_id).await.expect("load");
    sagas::replay::replay(&CATALOGUE, &log).unwrap_or_else(|e| panic!("saga {saga_id}: {e}"));
    let sent: Vec<(String, Vec<u8>)> = sagas::replay::commands(&log)
        .map(|s| {
            let body = sagas::wire::encode_command(&s.command).expect("encode").3;
            (s.command_id.to_string(), body)
        })
        .collect();
    let queued: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "select properties->>'message_id', payload from outbox where properties->>'saga_id' = $1 order by id",
    )
    .bind(saga_id.to_string())
    .fetch_all(&mut *conn)
    .await
    .expect("outbox");
    assert!(!queued.is_empty());
    assert_eq!(
        sent, queued,
        "saga {saga_id}: replay must reproduce the commands sent"
    );
}

#[sqlx::test(migrations = false)]
async fn an_order_is_paid_out_and_a_declined_payout_is_compensated(db: PgPool) {
    let platform = Platform::start(db).await;
    let (partner, campaign) = platform.campaign(100_000).await;

    // 10 % of 5 000 is 500: the simulator pays it.
    let (paid, paid_tracking, detail) =
        convert(&platform, partner, campaign, "order-1", 5_000).await;
    assert_eq!(detail["saga"]["status"], "completed", "{detail}");
    assert_eq!(
        step_statuses(&detail),
        [
            ("reserve-budget", "succeeded"),
            ("assign-commission", "succeeded"),
            ("request-payment", "succeeded"),
            ("confirm-tracking", "succeeded"),
            ("trigger", "not_started"),
        ]
    );

    // 10 % of 6 660 is 666: the simulator declines it ("account closed").
    let (declined, declined_tracking, detail) =
        convert(&platform, partner, campaign, "order-2", 6_660).await;
    assert_eq!(detail["saga"]["status"], "compensated", "{detail}");
    let log = platform
        .wait_for(
            &format!("{}/sagas/{declined}/compensations", platform.urls.sagas),
            Duration::from_secs(5),
            |_| true,
        )
        .await;
    super::assert_unwound_for(&log, "account closed");

    // What the services show for both flows.
    let tracking = |id: Uuid| format!("{}/tracking-events/{id}", platform.urls.tracking);
    platform
        .wait_for(&tracking(paid_tracking), Duration::from_secs(10), |t| {
            t["status"] == "confirmed"
        })
        .await;
    let failed = platform
        .wait_for(&tracking(declined_tracking), Duration::from_secs(10), |t| {
            t["status"] == "failed"
        })
        .await;
    assert!(
        failed["failure_reason"]
            .as_str()
            .is_some_and(|r| r.contains("account closed")),
        "{failed}"
    );
    let urls = &platform.urls;
    let commissions = format!("{}/partners/{partner}/commissions", urls.commissions);
    assert_listed(
        &platform,
        commissions,
        "/commissions",
        &["500 assigned", "666 reversed"],
    )
    .await;
    let payments = format!("{}/partners/{partner}/payments", urls.payments);
    assert_listed(
        &platform,
        payments,
        "/payments",
        &["500 completed", "666 failed"],
    )
    .await;
    let reservations = format!("{}/campaigns/{campaign}/reservations", urls.campaigns);
    assert_listed(&platform, reservations, "", &["500 held", "666 released"]).await;

    for saga_id in [paid, declined] {
        assert_replays(&platform, saga_id).await;
    }
    platform.stop().await;
}

/// The (step, status) of each step of a saga's detail.
fn step_statuses(detail: &Value) -> Vec<(&str, &str)> {
    detail["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap_or_default(),
                s["status"].as_str().unwrap_or_default(),
            )
        })
        .collect()
}

/// A refund of a paid order (a chargeback) takes back what its order-to-payment saga did: the
/// order-refund saga reverses the commission, claws the payout back from the partner's balance,
/// releases the budget and confirms the refund. A second refund of the order is refused.
#[sqlx::test(migrations = false)]
async fn a_refunded_order_takes_its_commission_payout_and_budget_back(db: PgPool) {
    let platform = Platform::start(db).await;
    let (partner, campaign) = platform.campaign(100_000).await;
    let (order_saga, order_tracking, detail) =
        convert(&platform, partner, campaign, "order-1", 5_000).await;
    assert_eq!(detail["saga"]["status"], "completed", "{detail}");

    let refund = |tracking_id| RecordTrackingEvent {
        tracking_id,
        campaign_id: campaign,
        partner_id: partner,
        kind: TrackingKind::Refund,
        order: Some(Order {
            order_id: "order-1".into(),
            amount: eur(5_000),
        }),
        occurred_at: micros(time::OffsetDateTime::now_utc()),
    };
    let refund_tracking = Uuid::new_v4();
    platform
        .send(refund_tracking, &refund(refund_tracking))
        .await;
    let refund_saga = sagas::wire::saga_id_for(refund_tracking);
    let detail = platform
        .wait_for(
            &format!("{}/sagas/{refund_saga}", platform.urls.sagas),
            Duration::from_secs(90),
            |b| {
                matches!(
                    b["saga"]["status"].as_str(),
                    Some("completed" | "compensated" | "parked")
                )
            },
        )
        .await;
    assert_eq!(detail["saga"]["saga_type"], "order-refund", "{detail}");
    assert_eq!(detail["saga"]["status"], "completed", "{detail}");
    assert_eq!(
        step_statuses(&detail),
        [
            ("reverse-commission", "succeeded"),
            ("claw-back", "succeeded"),
            ("release-budget", "succeeded"),
            ("confirm-tracking", "succeeded"),
            ("trigger", "not_started"),
        ]
    );

    let tracking = |id: Uuid| format!("{}/tracking-events/{id}", platform.urls.tracking);
    let refunded = platform
        .wait_for(&tracking(refund_tracking), Duration::from_secs(10), |t| {
            t["status"] == "confirmed"
        })
        .await;
    assert_eq!(refunded["refund_of"], order_tracking.to_string());
    let urls = &platform.urls;
    let commissions = format!("{}/partners/{partner}/commissions", urls.commissions);
    assert_listed(&platform, commissions, "/commissions", &["500 reversed"]).await;
    let payments = platform
        .wait_for(
            &format!("{}/partners/{partner}/payments", platform.urls.payments),
            Duration::from_secs(10),
            |p| p["paid"][0]["clawed_back_amount"] == 500,
        )
        .await;
    let paid_out = amounts_and_statuses(&payments["payments"], "payments");
    assert_eq!(paid_out, ["500 clawed_back"]);
    let reservations = format!("{}/campaigns/{campaign}/reservations", urls.campaigns);
    // The budget is the campaign's again.
    assert_listed(&platform, reservations, "", &["500 released"]).await;

    // The order was refunded: a second refund is refused and starts no saga.
    let again = Uuid::new_v4();
    let command = platform.send(again, &refund(again)).await;
    let outcome = platform.outcome(&platform.urls.tracking, command).await;
    assert_eq!(outcome["code"], "order_already_refunded", "{outcome}");

    for saga_id in [order_saga, refund_saga] {
        assert_replays(&platform, saga_id).await;
    }
    platform.stop().await;
}

/// Fast-forwards a saga's durable timers while it waits on its payment (and only then: other
/// steps are not what this is about), so that its timeouts come due now. Returns its detail.
async fn fast_forward_payment(platform: &Platform, saga_id: Uuid) -> Value {
    let (_, body) = platform
        .get(&format!("{}/sagas/{saga_id}", platform.urls.sagas))
        .await;
    if body["saga"]["status"] == "running" && body["saga"]["current_step"] == "request-payment" {
        sqlx::query("update saga_timers set due_at = now() where saga_id = $1")
            .bind(saga_id)
            .execute(platform.sagas_pool())
            .await
            .expect("fast-forward");
    }
    body
}

/// Payments is down past the payment step's timeouts, then comes back: each saga asks payments
/// to cancel instead of compensating a payment that may still happen, and ends either paid and
/// completed, or never paid (cancelled or declined) and compensated; never paid and compensated.
/// The provider answers some payouts slowly (the cancel then finds them in flight) or declines.
#[sqlx::test(migrations = false)]
async fn a_payment_that_times_out_is_cancelled_or_paid_and_never_both(db: PgPool) {
    let mut platform = Platform::start(db).await;
    let (partner, campaign) = platform.campaign(100_000).await;
    platform.stop_process("payments").await;
    // 10 % commissions: paid, paid slowly (777), declined (666), lost once (999), paid.
    let orders = [5_000, 7_770, 6_660, 9_990, 3_000];
    let mut sagas = Vec::new();
    for (n, amount) in orders.into_iter().enumerate() {
        let conversion = platform::conversion((partner, campaign), &format!("pivot-{n}"), amount);
        let tracking_id = conversion.tracking_id;
        platform.send(tracking_id, &conversion).await;
        sagas.push(sagas::wire::saga_id_for(tracking_id));
    }
    let cancels = |detail: &Value| {
        detail["timeline"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["sent"]["command"] == "cancel_payment")
            .count()
    };

    // Time passes while payments is down: every payment's attempts time out, and each saga
    // asks payments to cancel, again and again, without compensating anything.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    for &saga_id in &sagas {
        loop {
            let body = fast_forward_payment(&platform, saga_id).await;
            // Not started yet, or running: nothing is compensated while payments is down.
            let status = body["saga"]["status"].as_str();
            assert!(matches!(status, None | Some("running")), "{status:?}");
            if cancels(&body) >= 2 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "saga {saga_id} never asked to cancel its payment"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Payments comes back, taking the requests and the cancels in whatever order.
    let token = platform.service_token.clone();
    let (query, _) = messaging::testing::query_api(&token).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let service = payments::service(payments::PayoutSettings::new(
        platform.urls.simulator.clone(),
    ));
    let (pool, client) = (platform.pool("payments").clone(), platform.client.clone());
    let payments = tokio::spawn({
        let stop = stop.clone();
        async move { messaging::host::run(&service, pool, client, query, stop).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut ended = Vec::new();
    for &saga_id in &sagas {
        let body = loop {
            let body = fast_forward_payment(&platform, saga_id).await;
            if matches!(
                body["saga"]["status"].as_str(),
                Some("completed" | "compensated" | "parked")
            ) {
                break body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "saga {saga_id} never ended: {}",
                body["saga"]
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        ended.push((saga_id, body));
    }

    let http = reqwest::Client::new();
    let mut paid = 0;
    for (saga_id, body) in &ended {
        let payment_id = Uuid::new_v5(saga_id, b"payment");
        let payout = http
            .get(format!("{}/payouts/{payment_id}", platform.urls.simulator))
            .send()
            .await
            .expect("the provider's ledger");
        let payout_paid = payout.status().is_success()
            && payout.json::<Value>().await.expect("payout")["status"] == "paid";
        match body["saga"]["status"].as_str() {
            Some("completed") => {
                assert!(payout_paid, "completed without a payout: {body}");
                paid += 1;
            }
            Some("compensated") => {
                assert!(!payout_paid, "paid and compensated: {body}");
            }
            _ => panic!("neither paid nor compensated: {body}"),
        }
        assert_replays(&platform, *saga_id).await;
    }
    let (_, stats) = platform
        .get(&format!("{}/stats", platform.urls.simulator))
        .await;
    assert_eq!(
        stats["executions"], paid,
        "each payout executed once: {stats}"
    );
    let declined = ended
        .iter()
        .find(|(saga_id, _)| *saga_id == sagas[2])
        .map(|(_, body)| body["saga"]["status"].clone());
    assert_eq!(
        declined,
        Some(Value::from("compensated")),
        "666 is declined"
    );
    stop.cancel();
    payments.await.expect("payments").expect("payments run");
    platform.stop().await;
}
