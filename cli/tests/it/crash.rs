//! `kill -9` of a service process mid-stream loses no accepted command and applies none twice.

use super::{Database, free_address, serve, wait_for};
use messaging::{Client, effects};
use schemas::commands::RecordTrackingEvent;
use schemas::values::TrackingKind;
use uuid::Uuid;

const COMMANDS: usize = 5_000;

#[tokio::test]
async fn a_service_killed_mid_stream_loses_nothing_and_applies_nothing_twice() {
    let pulsar = messaging::testing::settings().await;
    let database = Database::create().await;
    let listen = free_address();
    let mut process = serve("tracking", &[], &database, &pulsar, listen);
    let base = format!("http://{listen}");
    wait_for(&format!("{base}/events"), |_| true).await;

    let client = Client::connect(pulsar.clone()).await.expect("client");
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

    let mut restarted = serve("tracking", &[], &database, &pulsar, listen);
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

/// Records `count` conversions on a fresh campaign, sent as one burst, and waits until tracking has
/// each; returns their saga ids.
pub(super) async fn conversions(
    platform: &pulsaga_tests::platform::Platform,
    count: usize,
) -> Vec<Uuid> {
    let (partner, campaign) = platform.campaign(10_000_000).await;
    let mut sagas = Vec::new();
    let mut recorded = Vec::new();
    for n in 0..count {
        let order = format!("order-{n}");
        let conversion = pulsaga_tests::platform::conversion((partner, campaign), &order, 5_000);
        let tracking_id = conversion.tracking_id;
        recorded.push(platform.send(tracking_id, &conversion).await);
        sagas.push(sagas::wire::saga_id_for(tracking_id));
    }
    for command in recorded {
        platform.outcome(&platform.urls.tracking, command).await;
    }
    sagas
}

#[sqlx::test(migrations = false)]
async fn a_coordinator_killed_mid_stream_finishes_every_saga_on_restart(db: sqlx::PgPool) {
    let mut platform = pulsaga_tests::platform::Platform::start(db).await;
    // The coordinator runs as its own process, on the platform's sagas database and address.
    platform.stop_process("sagas").await;
    let listen: std::net::SocketAddr = platform
        .urls
        .sagas
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let database = platform.database_name("sagas").to_owned();
    let coordinator = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_pulsaga"))
            .args([
                "serve",
                "sagas",
                "--database",
                &database,
                "--listen",
                &listen.to_string(),
            ])
            .envs(messaging::testing::env(platform.client.settings()))
            .env("SERVICE_TOKEN", platform.service_token.expose())
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the coordinator")
    };
    // The triggers wait on their topic; the coordinator then takes them as one burst.
    let sagas = conversions(&platform, 40).await;
    let mut process = coordinator();
    let done = |status: &str| matches!(status, "completed" | "compensated" | "parked");
    let pool = platform.sagas_pool().clone();
    let count_done = || {
        let pool = pool.clone();
        async move {
            let statuses: Vec<String> = sqlx::query_scalar("select status from sagas")
                .fetch_all(&pool)
                .await
                .expect("sagas");
            statuses.iter().filter(|s| done(s)).count()
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while count_done().await < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "no saga finished before the kill"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    process.start_kill().expect("kill -9 the coordinator");
    process.wait().await.expect("reap");
    let finished_before = count_done().await;
    assert!(
        finished_before < sagas.len(),
        "the coordinator died with sagas in flight ({finished_before})"
    );

    let mut restarted = coordinator();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while count_done().await < sagas.len() {
        if std::time::Instant::now() >= deadline {
            let unfinished: Vec<(String, Option<String>)> = sqlx::query_as(
                "select status, current_step from sagas
                  where status not in ('completed', 'compensated', 'parked')",
            )
            .fetch_all(&pool)
            .await
            .expect("sagas");
            panic!(
                "only {} of {} sagas finished after the restart; unfinished (status, step): {unfinished:?}",
                count_done().await,
                sagas.len()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let statuses: Vec<String> = sqlx::query_scalar("select status from sagas")
        .fetch_all(&pool)
        .await
        .expect("sagas");
    assert!(statuses.iter().all(|s| s == "completed"), "{statuses:?}");
    // No command went out twice under different ids: one id per saga and topic, however often
    // it was sent.
    let doubled: i64 = sqlx::query_scalar(
        "select count(*) from (select properties->>'saga_id', topic from outbox
                                group by 1, 2 having count(distinct properties->>'message_id') > 1) d",
    )
    .fetch_one(&pool)
    .await
    .expect("outbox");
    assert_eq!(doubled, 0);
    restarted.start_kill().expect("stop");
    restarted.wait().await.expect("reap");
    platform.stop().await;
}
