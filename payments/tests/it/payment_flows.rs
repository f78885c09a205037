//! Payments end to end: a payout completed, declined, timed out and resolved by asking the
//! provider, lost and paid again with the same key, retried after a transient error, requested
//! twice, and left behind by a worker that died after the call; each paid at most once, as the
//! simulator's execution count shows. Plus the query API's errors and a projection rebuild.

use super::{Service, Simulator, database};
use messaging::consume::{Handler, Incoming};
use messaging::effects;
use payments::handlers;
use payments::payouts;
use payments::provider::{PayoutRequest, PayoutStatus};
use schemas::commands::RequestPayment;
use schemas::values::Money;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

fn payment(partner_id: Uuid, amount: i64) -> RequestPayment {
    RequestPayment {
        payment_id: Uuid::new_v4(),
        commission_id: Uuid::new_v4(),
        partner_id,
        campaign_id: Uuid::new_v4(),
        amount: Money {
            amount,
            currency: "EUR".into(),
        },
    }
}

/// The (message type, correlation id, causation id) of every message queued on
/// payments-events, in order, once each (a duplicate command queues its answer again, under the
/// same message id).
async fn published(service: &Service) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "select message_type, correlation_id, causation_id from (
           select distinct on (properties->>'message_id') id,
                  properties->>'message_type' as message_type,
                  properties->>'correlation_id' as correlation_id,
                  properties->>'causation_id' as causation_id
             from outbox where topic = 'payments-events'
            order by properties->>'message_id', id) first_queued
          order by id",
    )
    .fetch_all(&service.pool)
    .await
    .expect("outbox")
}

fn types(history: &[&str]) -> Vec<String> {
    history.iter().map(|t| (*t).to_owned()).collect()
}

/// Requests a payment of `amount` to `partner`, waits until it is `status`, and asserts the
/// events its stream holds then; returns the request and the payment's view.
async fn settled(
    service: &Service,
    (partner, amount): (Uuid, i64),
    status: &str,
    history: &[&str],
) -> (RequestPayment, serde_json::Value) {
    let request = payment(partner, amount);
    service.send(request.payment_id, &request).await;
    let view = service.payment(request.payment_id, status).await;
    assert_eq!(
        service.payment_history(request.payment_id).await,
        types(history)
    );
    (request, view)
}

const UNKNOWN_THEN_PAID: [&str; 4] = [
    "PaymentRequested",
    "PayoutAttempted",
    "PayoutOutcomeUnknown",
    "PaymentCompleted",
];

#[sqlx::test(migrations = false)]
async fn a_payment_is_paid_out_and_read_back(db: PgPool) {
    let service = Service::start(db).await;
    let partner = Uuid::new_v4();
    let request = payment(partner, 12_000);
    let command = service.send(request.payment_id, &request).await;
    assert_eq!(service.outcome(command).await["status"], "succeeded");

    let view = service.payment(request.payment_id, "completed").await;
    // As of each of its first two events (requested, then attempted), as of now, and before.
    let (_, events) = service
        .get(&format!("/streams/payment-{}", request.payment_id))
        .await;
    let path = format!("/payments/{}", request.payment_id);
    for (n, expected) in [(0, "requested"), (1, "attempted")] {
        let at = events[n]["recorded_at"].as_str().expect("recorded_at");
        let (_, then) = service.get(&format!("{path}?as_of={at}")).await;
        assert_eq!(then["status"], expected, "{then}");
    }
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let (_, latest) = service.get(&format!("{path}?as_of={now}")).await;
    assert_eq!(
        (latest["status"].as_str(), latest["amount"].as_i64()),
        (Some("completed"), Some(12_000))
    );
    let (status, _) = service
        .get(&format!("{path}?as_of=2000-01-01T00:00:00Z"))
        .await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    assert_eq!(
        (
            view["partner_id"].as_str(),
            view["amount"].as_i64(),
            view["currency"].as_str(),
            view["reason"].as_str(),
        ),
        (
            Some(partner.to_string().as_str()),
            Some(12_000),
            Some("EUR"),
            None
        )
    );
    let reference = view["provider_reference"].as_str().expect("reference");
    assert!(reference.starts_with("po_"), "{view}");
    assert_eq!(
        service.payment_history(request.payment_id).await,
        types(&["PaymentRequested", "PayoutAttempted", "PaymentCompleted"])
    );

    let listing = service
        .wait_for(&format!("/partners/{partner}/payments"), |b| {
            b["paid"][0]["paid_count"] == 1
        })
        .await;
    assert_eq!(
        listing["paid"],
        serde_json::json!([{ "currency": "EUR", "paid_amount": 12_000, "paid_count": 1,
                             "clawed_back_amount": 0, "clawed_back_count": 0 }])
    );
    assert_eq!(
        listing["payments"][0]["payment_id"],
        request.payment_id.to_string()
    );

    // Every event is published in the command's flow, caused by it, the worker's included.
    let command = command.to_string();
    let expected = ["PaymentRequested", "PayoutAttempted", "PaymentCompleted"]
        .map(|t| (t.to_owned(), command.clone(), command.clone()));
    assert_eq!(published(&service).await, expected);
    let stats = service.simulator.stats().await;
    assert_eq!((stats.requests, stats.executions), (1, 1));
    assert_eq!(service.payouts_due().await, 0, "nothing is left to pay");
    service.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_declined_payout_fails_the_payment_with_the_reason(db: PgPool) {
    let service = Service::start(db).await;
    let partner = Uuid::new_v4();
    let failed = ["PaymentRequested", "PayoutAttempted", "PaymentFailed"];
    let (_, view) = settled(&service, (partner, 4_666), "failed", &failed).await;
    assert_eq!(view["reason"], "account closed");
    let (_, listing) = service.get(&format!("/partners/{partner}/payments")).await;
    assert_eq!(listing["paid"], serde_json::json!([]), "nothing was paid");
    let stats = service.simulator.stats().await;
    assert_eq!((stats.executions, stats.declines), (0, 1));

    // A request that breaks a rule is rejected and never reaches the provider.
    let invalid = payment(partner, 0);
    let refused = service.send(invalid.payment_id, &invalid).await;
    let outcome = service.outcome(refused).await;
    assert_eq!(
        (outcome["status"].as_str(), outcome["code"].as_str()),
        (Some("rejected"), Some("invalid_amount"))
    );
    let (status, _) = service
        .get(&format!("/payments/{}", invalid.payment_id))
        .await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    assert_eq!(service.simulator.stats().await.requests, 1);
    assert_eq!(service.payouts_due().await, 0);
    service.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_timed_out_payout_is_resolved_by_asking_the_provider(db: PgPool) {
    let service = Service::start(db).await;
    // The simulator pays 777 but answers after the service's timeout.
    let to = (Uuid::new_v4(), 1_777);
    let (request, view) = settled(&service, to, "completed", &UNKNOWN_THEN_PAID).await;
    let stats = service.simulator.stats().await;
    assert_eq!(
        (stats.requests, stats.executions),
        (1, 1),
        "resolved by asking, never by paying again"
    );
    assert!(stats.lookups >= 1, "{stats:?}");
    let recorded = service
        .simulator
        .provider()
        .lookup(&request.payment_id.to_string())
        .await;
    assert_eq!(
        recorded.expect("lookup").map(|p| p.reference),
        view["provider_reference"].as_str().map(str::to_owned)
    );
    service.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_call_the_provider_never_saw_is_paid_with_the_same_key(db: PgPool) {
    let service = Service::start(db).await;
    // The simulator loses the first 999 call: a timeout, and no record of the key.
    settled(
        &service,
        (Uuid::new_v4(), 999),
        "completed",
        &UNKNOWN_THEN_PAID,
    )
    .await;
    let stats = service.simulator.stats().await;
    assert_eq!((stats.requests, stats.executions), (2, 1), "{stats:?}");
    assert!(stats.lookups >= 1, "asked before paying again: {stats:?}");
    service.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_transient_provider_error_is_retried_and_completes(db: PgPool) {
    let service = Service::start(db).await;
    // The simulator answers the first 555 call with 503.
    // A refusal to serve is not an unknown outcome.
    let paid = ["PaymentRequested", "PayoutAttempted", "PaymentCompleted"];
    settled(&service, (Uuid::new_v4(), 2_555), "completed", &paid).await;
    let stats = service.simulator.stats().await;
    assert_eq!((stats.requests, stats.executions), (2, 1), "{stats:?}");
    service.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_payment_requested_again_is_paid_once(db: PgPool) {
    let service = Service::start(db).await;
    let request = payment(Uuid::new_v4(), 3_000);
    let id = Uuid::new_v4();
    service.send_as(id, request.payment_id, &request).await;
    service.send_as(id, request.payment_id, &request).await;
    // A new command with the same data is a retry by a client: accepted, nothing changes.
    let retry = service.send(request.payment_id, &request).await;
    let outcome = service.outcome(retry).await;
    assert_eq!(
        (outcome["status"].as_str(), outcome["code"].as_str()),
        (Some("succeeded"), Some("already_applied"))
    );
    assert_eq!(service.outcome(id).await["status"], "succeeded");
    // The same payment id with other data is refused.
    let changed = RequestPayment {
        amount: Money {
            amount: 3_001,
            currency: "EUR".into(),
        },
        ..request.clone()
    };
    let refused = service.send(request.payment_id, &changed).await;
    assert_eq!(
        service.outcome(refused).await["code"],
        "payment_already_requested"
    );
    service.payment(request.payment_id, "completed").await;
    let inbox: i64 = sqlx::query_scalar("select count(*) from inbox")
        .fetch_one(&service.pool)
        .await
        .expect("inbox");
    assert_eq!(inbox, 3, "the duplicate delivery was skipped by the inbox");
    let stats = service.simulator.stats().await;
    assert_eq!((stats.requests, stats.executions), (1, 1), "{stats:?}");

    // Negative control: another payment with the same data is paid, and counted.
    let other = RequestPayment {
        payment_id: Uuid::new_v4(),
        ..request
    };
    service.send(other.payment_id, &other).await;
    service.payment(other.payment_id, "completed").await;
    assert_eq!(service.simulator.stats().await.executions, 2);
    service.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_payout_left_by_a_dead_worker_is_resolved_without_paying_again(db: PgPool) {
    let simulator = Simulator::start().await;
    let pool = database(db).await;
    let request = payment(Uuid::new_v4(), 5_000);
    let command = Uuid::new_v4();
    // The request is handled as the consumer handles it, before the service runs.
    let incoming = Incoming {
        message: request.clone(),
        key: request.payment_id.to_string(),
        properties: effects::first_of_flow(command, &request, Some("partner-1".into()), None),
    };
    let mut tx = pool.begin().await.expect("begin");
    handlers::Request
        .handle(&mut tx, &incoming)
        .await
        .expect("handle");
    tx.commit().await.expect("commit");
    // A worker claims the payout and pays it, then dies before recording the answer; its lease
    // has run out by the time the service starts again.
    let claimed = payouts::claim(&pool, 10, Duration::ZERO)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let paid = simulator
        .provider()
        .pay(&PayoutRequest {
            idempotency_key: request.payment_id.to_string(),
            payment_id: request.payment_id,
            partner_id: request.partner_id,
            amount: request.amount.amount,
            currency: request.amount.currency.clone(),
        })
        .await
        .expect("pay");
    assert_eq!(paid.status, PayoutStatus::Paid);

    let service = Service::start_with(pool, simulator).await;
    let view = service.payment(request.payment_id, "completed").await;
    assert_eq!(
        view["provider_reference"].as_str(),
        Some(paid.reference.as_str())
    );
    assert_eq!(
        service.payment_history(request.payment_id).await,
        types(&["PaymentRequested", "PayoutAttempted", "PaymentCompleted"])
    );
    let stats = service.simulator.stats().await;
    assert_eq!(
        (stats.requests, stats.executions),
        (1, 1),
        "the worker asked and did not pay: {stats:?}"
    );
    assert!(stats.lookups >= 1, "{stats:?}");
    // The completion is caused by the requesting command, in its flow.
    let command = command.to_string();
    let completed: Vec<_> = published(&service)
        .await
        .into_iter()
        .filter(|(t, _, _)| t == "PaymentCompleted")
        .collect();
    assert_eq!(
        completed,
        [("PaymentCompleted".to_owned(), command.clone(), command)]
    );
    assert_eq!(service.payouts_due().await, 0);
    service.stop().await;
}

#[sqlx::test(migrations = false)]
async fn the_query_api_answers_errors_as_problems(db: PgPool) {
    let service = Service::start(db).await;
    let cases = [
        (format!("/payments/{}", Uuid::new_v4()), 404),
        ("/payments/not-a-uuid".to_owned(), 400),
        (
            format!("/partners/{}/payments?limit=0", Uuid::new_v4()),
            400,
        ),
        (
            format!("/partners/{}/payments?surprise=1", Uuid::new_v4()),
            400,
        ),
    ];
    for (path, expected) in cases {
        let (status, content_type, _) = service.get_with_type(&path).await;
        assert_eq!(status.as_u16(), expected, "{path}");
        assert_eq!(content_type, "application/problem+json", "{path}");
    }
    let partner = Uuid::new_v4();
    let (status, empty) = service.get(&format!("/partners/{partner}/payments")).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(
        empty,
        serde_json::json!({ "partner_id": partner, "payments": [], "paid": [] })
    );
    service.stop().await;
}

#[sqlx::test(migrations = false)]
async fn the_read_models_rebuild_to_the_live_state(db: PgPool) {
    let service = Service::start(db).await;
    let partners = [Uuid::new_v4(), Uuid::new_v4()];
    let requests = [
        payment(partners[0], 1_000),
        payment(partners[0], 2_500),
        payment(partners[0], 666),
        payment(partners[1], 1_777),
        payment(partners[1], 400),
    ];
    for request in &requests {
        service.send(request.payment_id, request).await;
    }
    for request in &requests {
        let status = if request.amount.amount % 1000 == 666 {
            "failed"
        } else {
            "completed"
        };
        service.payment(request.payment_id, status).await;
    }
    let listing = service
        .wait_for(&format!("/partners/{}/payments", partners[0]), |b| {
            b["paid"][0]["paid_count"] == 2
        })
        .await;
    assert_eq!(listing["paid"][0]["paid_amount"], 3_500);
    assert_eq!(listing["payments"].as_array().map(Vec::len), Some(3));

    let views = payments::projections::PaymentViews;
    let drift = "update partner_payouts set paid_amount = 99";
    let events = service.assert_rebuild_repairs(&views, drift, "99").await;
    assert!(events >= 16, "{events}");
    let (_, listing) = service
        .get(&format!("/partners/{}/payments", partners[0]))
        .await;
    assert_eq!(
        listing["paid"][0]["paid_amount"], 3_500,
        "the rebuild repaired it"
    );
    service.stop().await;
}
