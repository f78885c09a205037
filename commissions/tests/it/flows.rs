//! Commissions' commands end to end: assigning by fixed and percent rules, duplicates and retries,
//! reversal and its effect on totals, a reversal that overtakes its assignment, rejections, and a
//! projection rebuild checked against live.

use super::start;
use schemas::commands::{AssignCommission, ReinstateCommission, ReverseCommission};
use schemas::values::{CommissionRule, Money};
use sqlx::PgPool;
use uuid::Uuid;

fn money(amount: i64, currency: &str) -> Money {
    Money {
        amount,
        currency: currency.into(),
    }
}

fn assign(
    campaign_id: Uuid,
    partner_id: Uuid,
    rule: CommissionRule,
    order_amount: Option<Money>,
) -> AssignCommission {
    AssignCommission {
        commission_id: Uuid::new_v4(),
        campaign_id,
        partner_id,
        tracking_id: Uuid::new_v4(),
        rule,
        order_amount,
        currency: "EUR".into(),
    }
}

fn fixed(campaign_id: Uuid, partner_id: Uuid, amount: i64) -> AssignCommission {
    assign(
        campaign_id,
        partner_id,
        CommissionRule::Fixed { amount },
        None,
    )
}

fn reverse(commission_id: Uuid, reason: &str) -> ReverseCommission {
    ReverseCommission {
        commission_id,
        reason: reason.into(),
    }
}

fn types(messages: &[(String, String)]) -> Vec<&str> {
    messages.iter().map(|(t, _)| t.as_str()).collect()
}

#[sqlx::test(migrations = false)]
async fn fixed_and_percent_commissions_are_assigned_and_read_back(db: PgPool) {
    let service = start(db).await;
    let (campaign, partner) = (Uuid::new_v4(), Uuid::new_v4());
    let flat = fixed(campaign, partner, 300);
    // 2.5 % of 129.99 EUR is 324.975 cents, rounded down.
    let share = assign(
        campaign,
        partner,
        CommissionRule::Percent { basis_points: 250 },
        Some(money(12_999, "EUR")),
    );
    // Different keys are handled concurrently: the second is sent once the first is done, so that
    // the order of the listing and of the outbox is known.
    let flat_command = service.send(flat.commission_id, &flat).await;
    assert_eq!(service.outcome(flat_command).await["status"], "succeeded");
    let share_command = service.send(share.commission_id, &share).await;
    assert_eq!(service.outcome(share_command).await["status"], "succeeded");

    let view = service
        .wait_for(&format!("/commissions/{}", flat.commission_id), |b| {
            b["status"] == "assigned"
        })
        .await;
    assert_eq!(view["amount"], 300);
    assert_eq!(view["currency"], "EUR");
    assert_eq!(view["partner_id"], partner.to_string());
    assert_eq!(view["campaign_id"], campaign.to_string());
    assert_eq!(view["tracking_id"], flat.tracking_id.to_string());
    assert!(
        view["reason"].is_null() && view["reversed_at"].is_null(),
        "{view}"
    );
    assert!(view["assigned_at"].is_string(), "{view}");
    assert!(view.get("position").is_none(), "the cursor stays internal");
    let view = service
        .wait_for(&format!("/commissions/{}", share.commission_id), |b| {
            b["status"] == "assigned"
        })
        .await;
    assert_eq!(view["amount"], 324);

    // A partner's commissions in the order they were recorded, a page at a time.
    let listing = format!("/partners/{partner}/commissions");
    let all = service
        .wait_for(&listing, |b| {
            b["commissions"].as_array().map(Vec::len) == Some(2)
        })
        .await;
    assert_eq!(all["next"], serde_json::Value::Null);
    let ids: Vec<&str> = all["commissions"]
        .as_array()
        .expect("commissions")
        .iter()
        .filter_map(|c| c["commission_id"].as_str())
        .collect();
    let (flat_id, share_id) = (
        flat.commission_id.to_string(),
        share.commission_id.to_string(),
    );
    assert_eq!(ids, [flat_id.as_str(), share_id.as_str()]);
    let (_, first) = service.get(&format!("{listing}?limit=1")).await;
    assert_eq!(first["commissions"][0]["commission_id"], flat_id);
    let next = first["next"].as_i64().expect("a next page");
    let (_, second) = service
        .get(&format!("{listing}?limit=1&after={next}"))
        .await;
    assert_eq!(second["commissions"][0]["commission_id"], share_id);
    assert_eq!(second["next"], serde_json::Value::Null);

    let balance = service
        .wait_for(&format!("/partners/{partner}/balance"), |b| {
            b["commissions"] == 2
        })
        .await;
    assert_eq!(
        balance["currencies"],
        serde_json::json!([{
            "currency": "EUR", "assigned": 624, "reversed": 0, "net": 624,
            "assigned_count": 2, "reversed_count": 0,
        }])
    );
    let summary = service
        .wait_for(&format!("/campaigns/{campaign}/commissions/summary"), |b| {
            b["commissions"] == 2
        })
        .await;
    assert_eq!(summary["campaign_id"], campaign.to_string());
    assert_eq!(summary["currencies"], balance["currencies"]);

    // Every event went to the outbox caused by its command, and the relay published it.
    service
        .assert_published(
            "commissions-events",
            &[
                ("CommissionAssigned", flat_command),
                ("CommissionAssigned", share_command),
            ],
        )
        .await;
    service.stop().await;
}

#[sqlx::test(migrations = false)]
async fn the_same_command_twice_has_one_effect(db: PgPool) {
    let service = start(db).await;
    let partner = Uuid::new_v4();
    let command = fixed(Uuid::new_v4(), partner, 300);
    let id = Uuid::new_v4();
    service.send_as(id, command.commission_id, &command).await;
    service.send_as(id, command.commission_id, &command).await;
    // A new command with the same data is a retry by a client: accepted, nothing changes.
    let retry = service.send(command.commission_id, &command).await;
    let outcome = service.outcome(retry).await;
    assert_eq!(
        (outcome["status"].as_str(), outcome["code"].as_str()),
        (Some("succeeded"), Some("already_applied"))
    );
    let first = service.outcome(id).await;
    assert_eq!(
        (first["status"].as_str(), first["code"].as_str()),
        (Some("succeeded"), None)
    );

    let (_, events) = service
        .get(&format!("/streams/commission-{}", command.commission_id))
        .await;
    let events = events.as_array().expect("events").clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["data"]["amount"]["amount"], 300);
    let inbox: i64 = sqlx::query_scalar("select count(*) from inbox")
        .fetch_one(&service.pool)
        .await
        .expect("inbox");
    assert_eq!(inbox, 2, "the duplicate delivery was skipped by the inbox");
    assert_eq!(
        types(&service.published("commissions-events").await),
        ["CommissionAssigned", "CommandAlreadyApplied"]
    );
    let balance = service
        .wait_for(&format!("/partners/{partner}/balance"), |b| {
            b["commissions"] == 1
        })
        .await;
    assert_eq!(balance["currencies"][0]["assigned"], 300);
    service.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_reversal_takes_the_commission_out_of_the_balance(db: PgPool) {
    let service = start(db).await;
    let (campaign, partner) = (Uuid::new_v4(), Uuid::new_v4());
    let kept = fixed(campaign, partner, 500);
    let taken_back = fixed(campaign, partner, 300);
    let first = service.send(kept.commission_id, &kept).await;
    assert_eq!(service.outcome(first).await["status"], "succeeded");
    let assigned = service.send(taken_back.commission_id, &taken_back).await;
    assert_eq!(service.outcome(assigned).await["status"], "succeeded");
    let before_reversal = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let reversal = reverse(taken_back.commission_id, "payout declined");
    let reversed = service.send(taken_back.commission_id, &reversal).await;
    assert_eq!(service.outcome(reversed).await["status"], "succeeded");

    let view = service
        .wait_for(&format!("/commissions/{}", taken_back.commission_id), |b| {
            b["status"] == "reversed"
        })
        .await;
    assert_eq!(
        (view["reason"].as_str(), view["amount"].as_i64()),
        (Some("payout declined"), Some(300))
    );
    assert!(view["reversed_at"].is_string(), "{view}");
    // As it stood before the reversal, and before it existed.
    let path = format!("/commissions/{}", taken_back.commission_id);
    let (_, then) = service
        .get(&format!("{path}?as_of={before_reversal}"))
        .await;
    assert_eq!(
        (then["status"].as_str(), then["amount"].as_i64()),
        (Some("assigned"), Some(300)),
        "{then}"
    );
    let (status, _) = service
        .get(&format!("{path}?as_of=2000-01-01T00:00:00Z"))
        .await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    let balance = service
        .wait_for(&format!("/partners/{partner}/balance"), |b| {
            b["reversed_commissions"] == 1
        })
        .await;
    assert_eq!(
        balance["currencies"],
        serde_json::json!([{
            "currency": "EUR", "assigned": 800, "reversed": 300, "net": 500,
            "assigned_count": 2, "reversed_count": 1,
        }])
    );
    let summary = service
        .wait_for(&format!("/campaigns/{campaign}/commissions/summary"), |b| {
            b["reversed_commissions"] == 1
        })
        .await;
    assert_eq!(summary["currencies"], balance["currencies"]);
    let (_, reversed_only) = service
        .get(&format!("/partners/{partner}/commissions?status=reversed"))
        .await;
    let rows = reversed_only["commissions"]
        .as_array()
        .expect("commissions");
    assert_eq!(rows.len(), 1, "{reversed_only}");
    assert_eq!(
        rows[0]["commission_id"],
        taken_back.commission_id.to_string()
    );

    // A compensation retried, and the saga's step retried after it: neither changes anything.
    let again = service.send(taken_back.commission_id, &reversal).await;
    assert_eq!(service.outcome(again).await["code"], "already_applied");
    let late = service.send(taken_back.commission_id, &taken_back).await;
    assert_eq!(service.outcome(late).await["code"], "already_applied");
    let (_, balance) = service.get(&format!("/partners/{partner}/balance")).await;
    assert_eq!(balance["currencies"][0]["net"], 500);

    let messages = service.published("commissions-events").await;
    assert_eq!(
        types(&messages),
        [
            "CommissionAssigned",
            "CommissionAssigned",
            "CommissionReversed",
            "CommandAlreadyApplied",
            "CommandAlreadyApplied",
        ]
    );
    assert_eq!(messages[2].1, reversed.to_string());

    // The refund that reversed it is undone: reinstated as it was, once.
    let reinstate = ReinstateCommission {
        commission_id: taken_back.commission_id,
        reason: "claw-back rejected".into(),
    };
    let reinstated = service.send(taken_back.commission_id, &reinstate).await;
    assert_eq!(service.outcome(reinstated).await["status"], "succeeded");
    let view = service
        .wait_for(&format!("/commissions/{}", taken_back.commission_id), |b| {
            b["status"] == "assigned"
        })
        .await;
    assert_eq!(view["amount"], 300);
    let balance = service
        .wait_for(&format!("/partners/{partner}/balance"), |b| {
            b["reversed_commissions"] == 0
        })
        .await;
    assert_eq!(balance["currencies"][0]["net"], 800, "{balance}");
    let again = service.send(taken_back.commission_id, &reinstate).await;
    assert_eq!(service.outcome(again).await["code"], "already_applied");
    let messages = service.published("commissions-events").await;
    assert_eq!(
        types(&messages[5..]),
        ["CommissionReinstated", "CommandAlreadyApplied"]
    );
    service.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_reversal_that_overtakes_its_assignment_voids_it(db: PgPool) {
    let service = start(db).await;
    let partner = Uuid::new_v4();
    let assignment = fixed(Uuid::new_v4(), partner, 300);
    let id = assignment.commission_id;
    let reversed = service.send(id, &reverse(id, "assignment timed out")).await;
    assert_eq!(service.outcome(reversed).await["status"], "succeeded");
    let view = service
        .wait_for(&format!("/commissions/{id}"), |b| b["status"] == "voided")
        .await;
    assert_eq!(view["reason"], "assignment timed out");
    assert!(
        view["partner_id"].is_null() && view["amount"].is_null(),
        "{view}"
    );

    let assigned = service.send(id, &assignment).await;
    let outcome = service.outcome(assigned).await;
    assert_eq!(
        (outcome["status"].as_str(), outcome["code"].as_str()),
        (Some("rejected"), Some("commission_reversed"))
    );
    assert!(
        outcome["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&id.to_string())),
        "{outcome}"
    );

    let (_, events) = service.get(&format!("/streams/commission-{id}")).await;
    let events = events.as_array().expect("events").clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event_type"], "CommissionVoided");
    let (_, balance) = service.get(&format!("/partners/{partner}/balance")).await;
    assert_eq!(
        (
            balance["commissions"].as_i64(),
            balance["currencies"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0)),
        "a voided commission pays nothing: {balance}"
    );
    assert_eq!(
        types(&service.published("commissions-events").await),
        ["CommissionVoided", "CommandRejected"]
    );
    service.stop().await;
}

#[sqlx::test(migrations = false)]
async fn rule_breaking_commands_are_rejected_with_their_reason(db: PgPool) {
    let service = start(db).await;
    let (campaign, partner) = (Uuid::new_v4(), Uuid::new_v4());
    let percent = CommissionRule::Percent { basis_points: 250 };
    let invalid_currency = AssignCommission {
        currency: "euro".into(),
        ..fixed(campaign, partner, 300)
    };
    let cases = [
        (
            assign(campaign, partner, percent, None),
            "order_amount_required",
            "order amount",
        ),
        (
            assign(campaign, partner, percent, Some(money(1_000, "USD"))),
            "currency_mismatch",
            "USD",
        ),
        (
            fixed(campaign, partner, 0),
            "invalid_commission_rule",
            "positive",
        ),
        (invalid_currency, "invalid_currency", "euro"),
    ];
    let mut rejected = Vec::new();
    for (command, code, says) in cases {
        let sent = service.send(command.commission_id, &command).await;
        let outcome = service.outcome(sent).await;
        assert_eq!(
            (outcome["status"].as_str(), outcome["code"].as_str()),
            (Some("rejected"), Some(code))
        );
        assert!(
            outcome["reason"].as_str().is_some_and(|r| r.contains(says)),
            "{outcome}"
        );
        assert_eq!(outcome["aggregate_id"], command.commission_id.to_string());
        rejected.push(command.commission_id);
    }

    let first = fixed(campaign, partner, 300);
    let accepted = service.send(first.commission_id, &first).await;
    assert_eq!(service.outcome(accepted).await["status"], "succeeded");
    let other_event = AssignCommission {
        tracking_id: Uuid::new_v4(),
        ..first.clone()
    };
    let refused = service.send(first.commission_id, &other_event).await;
    let outcome = service.outcome(refused).await;
    assert_eq!(outcome["code"], "commission_already_assigned");
    assert!(
        outcome["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&first.commission_id.to_string())),
        "{outcome}"
    );
    let view = service
        .wait_for(&format!("/commissions/{}", first.commission_id), |b| {
            b["status"] == "assigned"
        })
        .await;
    assert_eq!(
        view["tracking_id"],
        first.tracking_id.to_string(),
        "the first assignment stands"
    );

    for id in rejected {
        let (status, _) = service.get(&format!("/commissions/{id}")).await;
        assert_eq!(
            status,
            reqwest::StatusCode::NOT_FOUND,
            "a rejected command changes nothing"
        );
    }
    let rejections = service
        .published("commissions-events")
        .await
        .into_iter()
        .filter(|(t, _)| t == "CommandRejected")
        .count();
    assert_eq!(
        rejections, 5,
        "each rejection is published for whoever waits on the command"
    );
    service.stop().await;
}

#[sqlx::test(migrations = false)]
async fn the_read_models_rebuild_to_the_live_state(db: PgPool) {
    let service = start(db).await;
    let campaign = Uuid::new_v4();
    let partners = [Uuid::new_v4(), Uuid::new_v4()];
    let mut last = Uuid::nil();
    for n in 0..6_i64 {
        let command = fixed(campaign, partners[(n % 2) as usize], 100 * (n + 1));
        last = service.send(command.commission_id, &command).await;
        if n % 3 == 0 {
            // Assignment and reversal travel on different topics, so a reversal sent at once may
            // overtake its assignment and void the commission instead.
            service.outcome(last).await;
            let reversal = reverse(command.commission_id, "saga compensated");
            last = service.send(command.commission_id, &reversal).await;
        }
    }
    let orphan = Uuid::new_v4();
    service
        .send(orphan, &reverse(orphan, "assignment timed out"))
        .await;
    service.outcome(last).await;
    service
        .wait_for(&format!("/campaigns/{campaign}/commissions/summary"), |b| {
            b["commissions"] == 6 && b["reversed_commissions"] == 2
        })
        .await;
    service
        .wait_for(&format!("/commissions/{orphan}"), |b| {
            b["status"] == "voided"
        })
        .await;

    let views = commissions::projections::CommissionViews;
    let drift = "update partner_balances set assigned = 99999";
    let events = service.assert_rebuild_repairs(&views, drift, "99999").await;
    assert!(events >= 9, "{events}");
    let partner = partners[0];
    let (_, balance) = service.get(&format!("/partners/{partner}/balance")).await;
    // Partner 0 was assigned commissions 1, 3 and 5 (100, 300, 500) and the first was reversed.
    assert_eq!(
        (
            balance["currencies"][0]["assigned"].as_i64(),
            balance["currencies"][0]["net"].as_i64()
        ),
        (Some(900), Some(800)),
        "the rebuild repaired it: {balance}"
    );
    service.stop().await;
}
