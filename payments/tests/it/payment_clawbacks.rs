//! Claw-backs end to end: a paid payout taken back from the partner's balance when its order is
//! refunded, once however often asked, and given back when the refund is undone; a payout never
//! made has nothing to claw back.

use super::Service;
use schemas::commands::{CancelClawBack, ClawBackPayment, RequestPayment};
use schemas::values::Money;
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test(migrations = false)]
async fn a_paid_payout_is_clawed_back_once_and_given_back(db: PgPool) {
    let service = Service::start(db).await;
    let partner = Uuid::new_v4();
    let request = RequestPayment {
        payment_id: Uuid::new_v4(),
        commission_id: Uuid::new_v4(),
        partner_id: partner,
        campaign_id: Uuid::new_v4(),
        amount: Money::new(1_200, "EUR"),
    };
    let paid = service.send(request.payment_id, &request).await;
    assert_eq!(service.outcome(paid).await["status"], "succeeded");
    service.payment(request.payment_id, "completed").await;

    let claw_back = ClawBackPayment {
        clawback_id: Uuid::new_v4(),
        payment_id: request.payment_id,
        reason: "order A-1 refunded".into(),
    };
    let clawed = service.send(request.payment_id, &claw_back).await;
    assert_eq!(service.outcome(clawed).await["status"], "succeeded");
    let view = service.payment(request.payment_id, "clawed_back").await;
    assert_eq!(view["clawback_id"], claw_back.clawback_id.to_string());
    let totals = |b: &serde_json::Value| {
        (
            b["paid"][0]["paid_amount"].as_i64(),
            b["paid"][0]["clawed_back_amount"].as_i64(),
        )
    };
    let listing = service
        .wait_for(&format!("/partners/{partner}/payments"), |b| {
            totals(b) == (Some(1_200), Some(1_200))
        })
        .await;
    assert_eq!(listing["paid"][0]["clawed_back_count"], 1);

    // Asked again (a resend), and by another claw-back.
    let again = service.send(request.payment_id, &claw_back).await;
    assert_eq!(service.outcome(again).await["status"], "succeeded");
    let other = ClawBackPayment {
        clawback_id: Uuid::new_v4(),
        ..claw_back.clone()
    };
    let refused = service.send(request.payment_id, &other).await;
    assert_eq!(
        service.outcome(refused).await["code"],
        "payment_already_clawed_back"
    );

    let cancel = CancelClawBack {
        clawback_id: claw_back.clawback_id,
        payment_id: request.payment_id,
        reason: "release-budget rejected".into(),
    };
    let cancelled = service.send(request.payment_id, &cancel).await;
    assert_eq!(service.outcome(cancelled).await["status"], "succeeded");
    service.payment(request.payment_id, "completed").await;
    service
        .wait_for(&format!("/partners/{partner}/payments"), |b| {
            totals(b) == (Some(1_200), Some(0))
        })
        .await;
    assert_eq!(
        service.payment_history(request.payment_id).await,
        [
            "PaymentRequested",
            "PayoutAttempted",
            "PaymentCompleted",
            "PaymentClawedBack",
            "PaymentClawBackCancelled"
        ]
    );

    // A payout never made: nothing to claw back, and nothing recorded.
    let never = ClawBackPayment {
        clawback_id: Uuid::new_v4(),
        payment_id: Uuid::new_v4(),
        reason: "order A-2 refunded".into(),
    };
    let nothing = service.send(never.payment_id, &never).await;
    assert_eq!(service.outcome(nothing).await["status"], "succeeded");
    let (status, _) = service
        .get(&format!("/payments/{}", never.payment_id))
        .await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    service.stop().await;
}
