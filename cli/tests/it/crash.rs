//! `kill -9` of a service process mid-stream loses no accepted command and applies none twice.

use super::{Database, broker, free_address, serve, wait_for};
use messaging::effects;
use messaging::{Broker, Client, PulsarSettings};
use schemas::commands::RecordTrackingEvent;
use schemas::values::TrackingKind;
use uuid::Uuid;

const COMMANDS: usize = 5_000;

#[tokio::test]
async fn a_service_killed_mid_stream_loses_nothing_and_applies_nothing_twice() {
    let broker = broker().await;
    let database = Database::create().await;
    let listen = free_address();
    let mut process = serve("tracking", &database, &broker, listen);
    let base = format!("http://{listen}");
    wait_for(&format!("{base}/events"), |_| true).await;

    let client = Client::connect(PulsarSettings::new(broker.url(), Broker::PulsarLite))
        .await
        .expect("client");
    let campaign = Uuid::new_v4();
    let mut messages = Vec::new();
    for n in 0..COMMANDS {
        let command = RecordTrackingEvent {
            tracking_id: Uuid::new_v4(),
            campaign_id: campaign,
            partner_id: Uuid::new_v4(),
            kind: TrackingKind::Click,
            order: None,
            occurred_at: n as i64,
        };
        let properties = effects::first_of_flow(Uuid::new_v4(), &command, None, None);
        messages.push(
            effects::outgoing(&command, &command.tracking_id.to_string(), &properties)
                .expect("encode"),
        );
    }
    for result in client.publish_all(&messages).await {
        result.expect("publish");
    }

    let stats = format!("{base}/campaigns/{campaign}/stats");
    wait_for(&stats, |b| b["clicks"].as_i64().is_some_and(|c| c >= 30)).await;
    process.start_kill().expect("kill -9");
    process.wait().await.expect("reap");
    let pool = database.pool().await;
    let applied_before: i64 = sqlx::query_scalar("select count(*) from inbox")
        .fetch_one(&pool)
        .await
        .expect("inbox");
    assert!(
        applied_before < COMMANDS as i64,
        "the process died before the stream ended ({applied_before})"
    );

    let mut restarted = serve("tracking", &database, &broker, listen);
    wait_for(&stats, |b| b["clicks"] == COMMANDS).await;
    let recorded: i64 = sqlx::query_scalar(
        "select count(*) from events where event_type = 'TrackingEventRecorded'",
    )
    .fetch_one(&pool)
    .await
    .expect("events");
    let outcomes: i64 = sqlx::query_scalar("select count(*) from command_outcomes")
        .fetch_one(&pool)
        .await
        .expect("outcomes");
    assert_eq!(
        (recorded, outcomes),
        (COMMANDS as i64, COMMANDS as i64),
        "each command applied exactly once"
    );

    restarted.start_kill().expect("stop");
    restarted.wait().await.expect("reap");
    pool.close().await;
    database.drop().await;
}
