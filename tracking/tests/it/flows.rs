//! Tracking's commands end to end: recording, confirming and failing tracking events, duplicates,
//! the fraud rule, rejections, time travel, and a projection rebuild checked against live.

use super::{Service, micros_now, start};
use schemas::commands::{ConfirmTrackingEvent, FailTrackingEvent, RecordTrackingEvent};
use schemas::values::{Money, Order, TrackingKind};
use sqlx::PgPool;
use uuid::Uuid;

fn conversion(campaign_id: Uuid, order_id: &str) -> RecordTrackingEvent {
    RecordTrackingEvent {
        tracking_id: Uuid::new_v4(),
        campaign_id,
        partner_id: Uuid::new_v4(),
        kind: TrackingKind::Conversion,
        order: Some(Order {
            order_id: order_id.into(),
            amount: Money {
                amount: 12_000,
                currency: "EUR".into(),
            },
        }),
        occurred_at: micros_now(),
    }
}

fn click(campaign_id: Uuid) -> RecordTrackingEvent {
    RecordTrackingEvent {
        kind: TrackingKind::Click,
        order: None,
        ..conversion(campaign_id, "")
    }
}

/// The (message type, causation id) of every message queued on tracking-events, in order.
async fn published(service: &Service) -> Vec<(String, String)> {
    sqlx::query_as(
        "select properties->>'message_type', properties->>'causation_id' from outbox
          where topic = 'tracking-events' order by id",
    )
    .fetch_all(&service.pool)
    .await
    .expect("outbox")
}

#[sqlx::test(migrations = false)]
async fn a_conversion_is_recorded_confirmed_and_published(db: PgPool) {
    let service = start(db).await;
    let campaign = Uuid::new_v4();
    let record = conversion(campaign, "order-1");
    let recorded = service.send(record.tracking_id, &record).await;
    assert_eq!(service.outcome(recorded).await["status"], "succeeded");

    let path = format!("/tracking-events/{}", record.tracking_id);
    let view = service.wait_for(&path, |b| b["status"] == "recorded").await;
    assert_eq!(
        (view["order_id"].as_str(), view["order_amount"].as_i64()),
        (Some("order-1"), Some(12_000))
    );
    let before_confirm = time::OffsetDateTime::now_utc();

    let confirmed = service
        .send(
            record.tracking_id,
            &ConfirmTrackingEvent {
                tracking_id: record.tracking_id,
            },
        )
        .await;
    assert_eq!(service.outcome(confirmed).await["status"], "succeeded");
    service
        .wait_for(&path, |b| b["status"] == "confirmed")
        .await;
    let stats = service
        .wait_for(&format!("/campaigns/{campaign}/stats"), |b| {
            b["confirmed"] == 1
        })
        .await;
    assert_eq!(
        (stats["conversions"].as_i64(), stats["clicks"].as_i64()),
        (Some(1), Some(0))
    );

    // As it stood before the confirmation.
    let as_of = before_confirm
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let (_, then) = service.get(&format!("{path}?as_of={as_of}")).await;
    assert_eq!(then["status"], "recorded");

    // Every event went to the outbox caused by its command, and the relay published it.
    let expected = [
        ("TrackingEventRecorded", recorded),
        ("OrderClaimed", recorded),
        ("TrackingEventConfirmed", confirmed),
    ];
    service.assert_published("tracking-events", &expected).await;
    service.stop().await;
}

/// The order-refund saga's trigger: a refund of a confirmed conversion names it, once per order.
#[sqlx::test(migrations = false)]
async fn a_refund_of_a_confirmed_conversion_is_recorded_once_and_names_it(db: PgPool) {
    let service = start(db).await;
    let campaign = Uuid::new_v4();
    let order = conversion(campaign, "order-9");
    let refund = |tracking_id| RecordTrackingEvent {
        tracking_id,
        kind: TrackingKind::Refund,
        ..order.clone()
    };
    let recorded = service.send(order.tracking_id, &order).await;
    assert_eq!(service.outcome(recorded).await["status"], "succeeded");
    let early = refund(Uuid::new_v4());
    let id = service.send(early.tracking_id, &early).await;
    assert_eq!(
        service.outcome(id).await["code"],
        "order_not_refundable",
        "its conversion's saga has not completed"
    );
    let confirm = ConfirmTrackingEvent {
        tracking_id: order.tracking_id,
    };
    let confirmed = service.send(order.tracking_id, &confirm).await;
    assert_eq!(service.outcome(confirmed).await["status"], "succeeded");

    let first = refund(Uuid::new_v4());
    let refunded = service.send(first.tracking_id, &first).await;
    assert_eq!(service.outcome(refunded).await["status"], "succeeded");
    let view = service
        .wait_for(&format!("/tracking-events/{}", first.tracking_id), |b| {
            b["status"] == "recorded"
        })
        .await;
    assert_eq!(view["kind"], "refund");
    assert_eq!(view["refund_of"], order.tracking_id.to_string());
    let again = refund(Uuid::new_v4());
    let id = service.send(again.tracking_id, &again).await;
    assert_eq!(service.outcome(id).await["code"], "order_already_refunded");
    let mut unknown = refund(Uuid::new_v4());
    if let Some(o) = unknown.order.as_mut() {
        o.order_id = "never-ordered".into();
    }
    let id = service.send(unknown.tracking_id, &unknown).await;
    assert_eq!(service.outcome(id).await["code"], "order_not_tracked");

    let stats = service
        .wait_for(&format!("/campaigns/{campaign}/stats"), |b| {
            b["refunds"] == 1
        })
        .await;
    assert_eq!(stats["conversions"], 1, "{stats}");
    // The first refund's saga fails: the order can be refunded again.
    let fail = FailTrackingEvent {
        tracking_id: first.tracking_id,
        reason: "release-budget rejected".into(),
    };
    let failed = service.send(first.tracking_id, &fail).await;
    assert_eq!(service.outcome(failed).await["status"], "succeeded");
    let retried = service.send(again.tracking_id, &again).await;
    assert_eq!(
        service.outcome(retried).await["status"],
        "succeeded",
        "a refund after a failed one"
    );

    let refund_messages: Vec<String> = published(&service)
        .await
        .into_iter()
        .filter(|(_, cause)| *cause == refunded.to_string())
        .map(|(message_type, _)| message_type)
        .collect();
    assert_eq!(refund_messages, ["TrackingEventRecorded", "OrderRefunded"]);
    service.wait_until_published().await;
    service.stop().await;
}

#[sqlx::test(migrations = false)]
async fn the_same_command_twice_has_one_effect_and_is_answered_again(db: PgPool) {
    let service = start(db).await;
    let record = click(Uuid::new_v4());
    let id = Uuid::new_v4();
    service.send_as(id, record.tracking_id, &record).await;
    assert_eq!(service.outcome(id).await["status"], "succeeded");
    service.wait_until_published().await;
    // Redelivered, or resent by a sender whose answer was lost: not applied again, but its answer
    // is published again under the same message id.
    service.send_as(id, record.tracking_id, &record).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while published(&service).await.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the duplicate was never answered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A new command with the same data is a retry by a client: accepted, nothing changes.
    let retry = service.send(record.tracking_id, &record).await;
    let outcome = service.outcome(retry).await;
    assert_eq!(
        (outcome["status"].as_str(), outcome["code"].as_str()),
        (Some("succeeded"), Some("already_applied"))
    );

    let (_, events) = service
        .get(&format!("/streams/tracking-event-{}", record.tracking_id))
        .await;
    assert_eq!(events.as_array().expect("events").len(), 1, "{events}");
    let inbox: i64 = sqlx::query_scalar("select count(*) from inbox")
        .fetch_one(&service.pool)
        .await
        .expect("inbox");
    assert_eq!(inbox, 2, "the duplicate delivery was skipped by the inbox");
    let answers: Vec<(String, String)> = sqlx::query_as(
        "select properties->>'message_type', properties->>'message_id' from outbox
          where topic = 'tracking-events' order by id",
    )
    .fetch_all(&service.pool)
    .await
    .expect("outbox");
    let types: Vec<&str> = answers.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "TrackingEventRecorded",
            "TrackingEventRecorded",
            "CommandAlreadyApplied"
        ]
    );
    assert_eq!(answers[0].1, answers[1].1, "the same message again");
    service.wait_until_published().await;
    service.stop().await;
}

#[sqlx::test(migrations = false)]
async fn rule_breaking_commands_are_rejected_with_their_reason(db: PgPool) {
    let service = start(db).await;
    let campaign = Uuid::new_v4();
    let first = conversion(campaign, "order-7");
    let fraud = conversion(campaign, "order-7");
    let accepted = service.send(first.tracking_id, &first).await;
    assert_eq!(service.outcome(accepted).await["status"], "succeeded");
    let refused = service.send(fraud.tracking_id, &fraud).await;
    let outcome = service.outcome(refused).await;
    assert_eq!(
        (outcome["status"].as_str(), outcome["code"].as_str()),
        (Some("rejected"), Some("duplicate_order"))
    );
    assert!(
        outcome["reason"]
            .as_str()
            .is_some_and(|r| r.contains("order-7")),
        "{outcome}"
    );
    let (status, _) = service
        .get(&format!("/tracking-events/{}", fraud.tracking_id))
        .await;
    assert_eq!(
        status,
        reqwest::StatusCode::NOT_FOUND,
        "a rejected command changes nothing"
    );

    let mut no_order = conversion(campaign, "x");
    no_order.order = None;
    let id = service.send(no_order.tracking_id, &no_order).await;
    assert_eq!(service.outcome(id).await["code"], "order_required");

    let failed = service
        .send(
            first.tracking_id,
            &FailTrackingEvent {
                tracking_id: first.tracking_id,
                reason: "payout declined".into(),
            },
        )
        .await;
    assert_eq!(service.outcome(failed).await["status"], "succeeded");
    let late = service
        .send(
            first.tracking_id,
            &ConfirmTrackingEvent {
                tracking_id: first.tracking_id,
            },
        )
        .await;
    assert_eq!(
        service.outcome(late).await["code"],
        "tracking_event_already_failed"
    );
    let view = service
        .wait_for(&format!("/tracking-events/{}", first.tracking_id), |b| {
            b["status"] == "failed"
        })
        .await;
    assert_eq!(view["failure_reason"], "payout declined");

    let rejections: Vec<(String, String)> = published(&service)
        .await
        .into_iter()
        .filter(|(t, _)| t == "CommandRejected")
        .collect();
    assert_eq!(
        rejections.len(),
        3,
        "each rejection is published for whoever waits on the command"
    );
    service.stop().await;
}

#[sqlx::test(migrations = false)]
async fn the_read_models_rebuild_to_the_live_state(db: PgPool) {
    let service = start(db).await;
    let campaign = Uuid::new_v4();
    let mut last = Uuid::nil();
    for n in 0..6 {
        let record = if n % 2 == 0 {
            click(campaign)
        } else {
            conversion(campaign, &format!("order-{n}"))
        };
        last = service.send(record.tracking_id, &record).await;
        if n == 3 {
            // Topics carry no order between them: confirm once the recording is in, as a saga does.
            service.outcome(last).await;
            service
                .send(
                    record.tracking_id,
                    &ConfirmTrackingEvent {
                        tracking_id: record.tracking_id,
                    },
                )
                .await;
        }
    }
    service.outcome(last).await;
    service
        .wait_for(&format!("/campaigns/{campaign}/stats"), |b| {
            b["clicks"] == 3 && b["conversions"] == 3 && b["confirmed"] == 1
        })
        .await;

    let indexes = || async {
        sqlx::query_scalar::<_, String>(
            "select indexdef from pg_indexes where tablename in ('tracking_events',
                    'campaign_tracking_stats') order by indexname",
        )
        .fetch_all(&service.pool)
        .await
        .expect("indexes")
    };
    let before = indexes().await;
    let views = tracking::projections::TrackingViews;
    let drift = "update campaign_tracking_stats set clicks = 99";
    let events = service.assert_rebuild_repairs(&views, drift, "99").await;
    assert!(events >= 10, "{events}");
    assert_eq!(
        indexes().await,
        before,
        "the indexes the rebuild set aside are back"
    );
    assert!(before.iter().any(|i| i.contains("tracking_events_partner")));
    let (_, stats) = service.get(&format!("/campaigns/{campaign}/stats")).await;
    assert_eq!(stats["clicks"], 3, "the rebuild repaired it");
    service.stop().await;
}
