//! Crashes: a `kill -9` of the broker mid-stream, and a relay that dies holding leases. Nothing
//! the broker confirmed is lost and nothing takes effect twice.

use super::{Fixture, Recorder, enqueue, message, settings};
use eventstore::outbox;
use messaging::relay::RelaySettings;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const KEYS: usize = 8;

async fn enqueue_stream(fixture: &Fixture, per_key: usize) {
    for n in 0..per_key {
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
    let mut conn = fixture.pool.acquire().await.expect("connection");
    assert_eq!(outbox::pending(&mut conn).await.expect("pending"), 0);
}

#[sqlx::test(migrations = false)]
async fn a_broker_killed_mid_stream_loses_nothing(_: PgPoolOptions, connect: PgConnectOptions) {
    let mut fixture = Fixture::with_own_broker(connect).await;
    let per_key = 50;
    enqueue_stream(&fixture, per_key).await;
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
async fn a_relay_that_dies_holding_leases_is_taken_over(
    _: PgPoolOptions,
    connect: PgConnectOptions,
) {
    let fixture = Fixture::start(connect).await;
    let per_key = 40;
    enqueue_stream(&fixture, per_key).await;
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
