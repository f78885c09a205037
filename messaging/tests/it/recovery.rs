//! Crashes: a `kill -9` of the broker mid-stream, a consumer pulsar-rs gives up on, and a relay
//! that dies holding leases. Nothing the broker confirmed is lost and nothing takes effect twice.

use super::{Fixture, Recorder, enqueue, message, settings};
use eventstore::outbox;
use messaging::consume::ConsumerStats;
use messaging::relay::RelaySettings;
use schemas::Message;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const KEYS: usize = 8;

/// For each `n` in `rounds`, one message per key with body `{key}:{n}`.
async fn enqueue_stream(fixture: &Fixture, rounds: std::ops::Range<usize>) {
    for n in rounds {
        let batch: Vec<_> = (0..KEYS)
            .map(|k| message(&format!("key-{k}"), &format!("{k}:{n}")))
            .collect();
        enqueue(&fixture.pool, &batch).await;
    }
}

/// Every message applied exactly once, in per-key order, and the outbox drained.
async fn assert_exactly_once_in_order(fixture: &Fixture, total: usize) {
    let effects = fixture
        .wait_for_effects(total, Duration::from_secs(120))
        .await;
    let ids: HashSet<_> = effects.iter().map(|(_, _, id, _)| *id).collect();
    assert_eq!(ids.len(), effects.len(), "a message took effect twice");
    assert_eq!(effects.len(), total);
    let mut next: HashMap<&str, usize> = HashMap::new();
    for (_, key, _, body) in &effects {
        let n: usize = body.split_once(':').expect("body").1.parse().expect("n");
        let expected = next.entry(key.as_str()).or_default();
        assert_eq!(n, *expected, "key {key} out of order");
        *expected += 1;
    }
    // A message can take effect before the relay has recorded the broker's receipt of it.
    let mut conn = fixture.pool.acquire().await.expect("connection");
    let deadline = Instant::now() + Duration::from_secs(30);
    while outbox::pending(&mut conn).await.expect("pending") > 0 {
        assert!(
            Instant::now() < deadline,
            "the outbox is not drained within 30 s of the last effect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[sqlx::test(migrations = false)]
async fn a_broker_killed_mid_stream_loses_nothing(db: PgPool) {
    let mut fixture = Fixture::with_own_broker(db).await;
    let per_key = 50;
    enqueue_stream(&fixture, 0..per_key).await;
    let consumer = fixture.consumer(settings("effects"), Recorder::named("r"));
    let mut relay_settings = RelaySettings::new("relay");
    relay_settings.batch = 16;
    let relay = fixture.relay(relay_settings);

    fixture.wait_for_effects(60, Duration::from_secs(60)).await;
    fixture.broker().kill().await.expect("kill -9 the broker");
    let during = fixture.effects().await.len();
    assert!(
        during < KEYS * per_key,
        "the broker died before the stream ended"
    );
    fixture
        .broker()
        .restart()
        .await
        .expect("restart the broker");

    assert_exactly_once_in_order(&fixture, KEYS * per_key).await;
    fixture.shutdown.cancel();
    relay.await.expect("relay").expect("relay run");
    consumer.await.expect("consumer");
}

#[sqlx::test(migrations = false)]
async fn a_relay_that_dies_holding_leases_is_taken_over(db: PgPool) {
    let fixture = Fixture::start(db).await;
    let per_key = 40;
    enqueue_stream(&fixture, 0..per_key).await;
    let consumer = fixture.consumer(settings("effects"), Recorder::named("r"));
    let short_lease = |name: &str| {
        let mut settings = RelaySettings::new(name);
        settings.batch = 16;
        settings.lease = Duration::from_secs(1);
        settings
    };
    let doomed = fixture.relay(short_lease("doomed"));
    fixture.wait_for_effects(40, Duration::from_secs(60)).await;
    // Aborted like a killed process: no cleanup, leases left behind, publishes cut off midway.
    doomed.abort();
    let _ = doomed.await;

    let survivor = fixture.relay(short_lease("survivor"));
    assert_exactly_once_in_order(&fixture, KEYS * per_key).await;
    fixture.shutdown.cancel();
    survivor.await.expect("relay").expect("relay run");
    consumer.await.expect("consumer");
}

/// The admin API call `method path`, with a JSON body if given; fails the test unless it succeeds
/// (or, with `gone_is_fine`, finds nothing there).
async fn admin(
    fixture: &Fixture,
    (method, path): (reqwest::Method, &str),
    body: Option<&str>,
    gone_is_fine: bool,
) {
    let url = format!("{}{path}", fixture.client.settings().admin_url);
    let mut request = reqwest::Client::new().request(method, &url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let status = request.send().await.expect("admin API").status();
    assert!(
        status.is_success() || (gone_is_fine && status == reqwest::StatusCode::NOT_FOUND),
        "{url}: {status}"
    );
}

/// pulsar-rs ends a consumer's stream when reconnecting meets an error its retries do not cover
/// (here: the broker closes the consumer and then refuses the subscription it had). The runner
/// subscribes again until it can, and goes on consuming.
#[sqlx::test(migrations = false)]
async fn a_consumer_that_pulsar_rs_gives_up_on_subscribes_again(db: PgPool) {
    let fixture = Fixture::start(db).await;
    let consumer_settings = settings("effects");
    let stats = consumer_settings.stats.clone();
    let consumer = fixture.consumer(consumer_settings, Recorder::named("r"));
    let relay = fixture.relay(RelaySettings::new("relay"));
    enqueue_stream(&fixture, 0..1).await;
    fixture
        .wait_for_effects(KEYS, Duration::from_secs(60))
        .await;

    let pulsar = fixture.client.settings();
    let namespace = format!(
        "/admin/v2/namespaces/{}/{}",
        pulsar.tenant, pulsar.namespace
    );
    let topic = pulsar.topic(schemas::commands::RegisterPartner::TOPIC.name);
    let subscription = format!(
        "/admin/v2/{}/subscription/effects?force=true",
        topic.replace("://", "/")
    );
    let policy = format!("{namespace}/autoSubscriptionCreation");
    admin(
        &fixture,
        (reqwest::Method::POST, &policy),
        Some(r#"{"allowAutoSubscriptionCreation": false}"#),
        false,
    )
    .await;
    // The broker takes the policy up asynchronously: until it has, the consumer it closes
    // subscribes again at once, so the subscription is deleted until that fails.
    let deadline = Instant::now() + Duration::from_secs(60);
    'lost: loop {
        admin(
            &fixture,
            (reqwest::Method::DELETE, &subscription),
            None,
            true,
        )
        .await;
        for _ in 0..40 {
            if ConsumerStats::get(&stats.resubscribed) > 0 {
                break 'lost;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            Instant::now() < deadline,
            "the runner did not notice its consumer's end within a minute"
        );
    }
    enqueue_stream(&fixture, 1..2).await;
    admin(&fixture, (reqwest::Method::DELETE, &policy), None, false).await;

    // The new subscription starts at the earliest message: the first ones come again and are
    // found in the inbox.
    assert_exactly_once_in_order(&fixture, 2 * KEYS).await;
    assert!(ConsumerStats::get(&stats.duplicates) >= KEYS as u64);
    fixture.shutdown.cancel();
    relay.await.expect("relay").expect("relay run");
    consumer.await.expect("consumer");
}
