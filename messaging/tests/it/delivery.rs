//! Keyed delivery through the relay: per-key order across two Key_Shared consumers, lanes named
//! by the handler, messages that wait for a busy runner sharing a commit, and effectively-once
//! processing of duplicates.

use super::{Fixture, Recorder, Script, enqueue, message, settings};
use eventstore::outbox;
use messaging::consume::{self, ConsumerSettings, ConsumerStats};
use messaging::relay::RelaySettings;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const KEYS: usize = 12;
const PER_KEY: usize = 25;

#[sqlx::test(migrations = false)]
async fn per_key_order_holds_across_two_key_shared_consumers(db: PgPool) {
    let fixture = Fixture::start(db).await;
    let consumers = [
        fixture.consumer(settings("effects"), Recorder::named("a")),
        fixture.consumer(settings("effects"), Recorder::named("b")),
    ];
    // Interleave the keys across transactions, as many aggregates writing at once would.
    for n in 0..PER_KEY {
        let batch: Vec<_> = (0..KEYS)
            .map(|k| message(&format!("key-{k}"), &format!("{k}:{n}")))
            .collect();
        enqueue(&fixture.pool, &batch).await;
    }
    let relay = fixture.relay(RelaySettings::new("relay-1"));

    let effects = fixture
        .wait_for_effects(KEYS * PER_KEY, Duration::from_secs(60))
        .await;
    let mut next: HashMap<String, usize> = HashMap::new();
    let mut by_consumer: HashMap<String, HashSet<String>> = HashMap::new();
    for (consumer, key, _, body) in &effects {
        let (k, n) = body.split_once(':').expect("body");
        assert_eq!(key, &format!("key-{k}"));
        let expected = next.entry(key.clone()).or_default();
        assert_eq!(
            n.parse::<usize>().expect("n"),
            *expected,
            "key {key} out of order"
        );
        *expected += 1;
        by_consumer
            .entry(consumer.clone())
            .or_default()
            .insert(key.clone());
    }
    assert_eq!(effects.len(), KEYS * PER_KEY, "each message applied once");
    assert_eq!(
        by_consumer.len(),
        2,
        "both consumers took keys: {by_consumer:?}"
    );
    let (a, b) = (&by_consumer["a"], &by_consumer["b"]);
    assert!(
        a.is_disjoint(b),
        "Key_Shared gives each key to one consumer"
    );

    fixture.shutdown.cancel();
    relay.await.expect("relay").expect("relay run");
    for consumer in consumers {
        consumer.await.expect("consumer");
    }
}

/// What a process's transactions hand its relay is published without a claim or a notification:
/// this relay is woken on a channel no one notifies and would claim again only after an hour.
/// Per-key order holds across the handoffs; a rolled-back transaction's messages never go out.
#[sqlx::test(migrations = false)]
async fn a_relay_publishes_what_its_process_hands_it_without_claiming(db: PgPool) {
    let fixture = Fixture::start(db).await;
    let consumer = fixture.consumer(settings("effects"), Recorder::named("a"));
    let relay_settings = RelaySettings {
        idle_poll: Duration::from_secs(3600),
        ..RelaySettings::new("relay-1")
    };
    let notifications = eventstore::Notifications::new(&fixture.pool);
    let (handoff, handed) = outbox::Handoff::new("relay-1", relay_settings.lease, notifications);
    let relay = fixture.relay_on("nobody notifies this", Some(handed), relay_settings);
    // Its first claim, at start, finds nothing; all that follows is handed.
    tokio::time::sleep(Duration::from_millis(500)).await;

    for n in 0..PER_KEY {
        let batch: Vec<_> = (0..3)
            .map(|k| message(&format!("key-{k}"), &format!("{k}:{n}")))
            .collect();
        enqueue_handed(&fixture.pool, &handoff, &batch, n % 5 != 4).await;
    }
    let expected = 3 * PER_KEY / 5 * 4;
    let effects = fixture
        .wait_for_effects(expected, Duration::from_secs(30))
        .await;
    let mut last: HashMap<String, usize> = HashMap::new();
    for (_, key, _, body) in &effects {
        let n: usize = body.split_once(':').expect("body").1.parse().expect("n");
        assert_ne!(n % 5, 4, "a rolled-back message went out: {body}");
        let before = last.insert(key.clone(), n);
        assert!(before.is_none_or(|b| b < n), "key {key} out of order");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fixture.effects().await.len(), expected, "each once");
    let pending: i64 = sqlx::query_scalar("select count(*) from outbox where published_at is null")
        .fetch_one(&fixture.pool)
        .await
        .expect("pending");
    assert_eq!(pending, 0, "every row marked published");

    fixture.shutdown.cancel();
    relay.await.expect("relay").expect("relay run");
    consumer.await.expect("consumer");
}

/// Queues `messages` in one transaction handed to `handoff`: committed, or rolled back.
async fn enqueue_handed(
    pool: &PgPool,
    handoff: &outbox::Handoff,
    messages: &[outbox::Message],
    commit: bool,
) {
    let mut tx = pool.begin().await.expect("begin");
    let transaction = async {
        outbox::enqueue(&mut tx, messages).await?;
        match commit {
            true => tx.commit().await.map_err(eventstore::Error::from),
            false => Err(eventstore::Error::EmptyAppend),
        }
    };
    let _ = outbox::handing_to(Some(handoff), transaction).await;
}

/// Two transactions' handoffs may reach the relay in the other order than their commits: the
/// later row waits for the row it follows.
#[sqlx::test(migrations = false)]
async fn a_handed_row_waits_for_the_row_it_follows(db: PgPool) {
    let fixture = Fixture::start(db).await;
    let consumer = fixture.consumer(settings("effects"), Recorder::named("a"));
    let relay_settings = RelaySettings::new("relay-1");
    let notifications = eventstore::Notifications::new(&fixture.pool);
    let (handoff, mut committed) =
        outbox::Handoff::new("relay-1", relay_settings.lease, notifications);
    let (to_relay, handed) = tokio::sync::mpsc::unbounded_channel();
    let relay = fixture.relay_on("nobody notifies this", Some(handed), relay_settings);

    for body in ["first", "second"] {
        enqueue_handed(&fixture.pool, &handoff, &[message("key-1", body)], true).await;
    }
    let first = committed.recv().await.expect("first handed");
    let second = committed.recv().await.expect("second handed");
    assert_eq!(second.rows[0].after, Some(first.rows[0].row.id));
    to_relay.send(second).expect("hand the second over");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fixture.effects().await.is_empty(), "the second waits");
    to_relay.send(first).expect("hand the first over");

    let effects = fixture.wait_for_effects(2, Duration::from_secs(30)).await;
    let bodies: Vec<&str> = effects
        .iter()
        .map(|(_, _, _, body)| body.as_str())
        .collect();
    assert_eq!(bodies, ["first", "second"]);

    fixture.shutdown.cancel();
    relay.await.expect("relay").expect("relay run");
    consumer.await.expect("consumer");
}

#[sqlx::test(migrations = false)]
async fn a_message_delivered_twice_takes_effect_once(db: PgPool) {
    let fixture = Fixture::start(db).await;
    let twice = message("key-1", "twice");
    let once = message("key-1", "once");
    // The same message published twice, as a relay that lost its lease would.
    fixture.client.publish(&twice).await.expect("publish");
    fixture.client.publish(&twice).await.expect("publish again");
    fixture.client.publish(&once).await.expect("publish");

    // Two consumers on separate subscriptions both receive every message and race to apply it;
    // sharing one inbox, they apply it once between them.
    let mut first = settings("race-a");
    first.inbox = "effects".into();
    let mut second = settings("race-b");
    second.inbox = "effects".into();
    let (stats_a, stats_b) = (first.stats.clone(), second.stats.clone());
    let consumers = [
        fixture.consumer(first, Recorder::named("a")),
        fixture.consumer(second, Recorder::named("b")),
    ];
    let effects = fixture.wait_for_effects(2, Duration::from_secs(30)).await;
    // Every subscription gets all three deliveries; wait until all six are handled.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let handled = || {
        [&stats_a, &stats_b]
            .iter()
            .map(|s| ConsumerStats::get(&s.applied) + ConsumerStats::get(&s.duplicates))
            .sum::<u64>()
    };
    while handled() < 6 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of 6 deliveries handled",
            handled()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let applied = ConsumerStats::get(&stats_a.applied) + ConsumerStats::get(&stats_b.applied);
    assert_eq!(applied, 2, "two distinct messages, applied once each");
    assert_eq!(fixture.effects().await.len(), 2);
    let bodies: Vec<&str> = effects
        .iter()
        .map(|(_, _, _, body)| body.as_str())
        .collect();
    assert_eq!(bodies, ["twice", "once"]);

    fixture.shutdown.cancel();
    for consumer in consumers {
        consumer.await.expect("consumer");
    }
}

#[sqlx::test(migrations = false)]
async fn a_burst_larger_than_the_connection_queue_waits_instead_of_failing(db: PgPool) {
    let fixture = Fixture::start(db).await;
    // pulsar-rs fails sends beyond its connection queue with SlowDown unless producers block.
    let burst: Vec<_> = (0..2_000)
        .map(|n| message(&format!("key-{}", n % 500), &n.to_string()))
        .collect();
    let results = fixture.client.publish_all(&burst).await;
    let failures: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} sends failed, first: {:?}",
        failures.len(),
        failures.first()
    );
}

/// A burst over a thousand keys on one Key_Shared consumer: all of it arrives.
#[sqlx::test(migrations = false)]
async fn a_burst_over_many_keys_is_all_delivered(db: PgPool) {
    let fixture = Fixture::start(db).await;
    let settings = settings("effects");
    let stats = settings.stats.clone();
    let consumer = fixture.consumer(settings, Recorder::named("r"));
    let burst: Vec<_> = (0..1_000)
        .map(|n| message(&format!("key-{n}"), &n.to_string()))
        .collect();
    for result in fixture.client.publish_all(&burst).await {
        result.expect("publish");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while ConsumerStats::get(&stats.applied) < 1_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of 1000 applied ({} received)",
            ConsumerStats::get(&stats.applied),
            ConsumerStats::get(&stats.received)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fixture.shutdown.cancel();
    consumer.await.expect("consumer");
}

/// Handles four slow messages under four keys; returns whether any two handlings overlapped.
async fn overlapping(db: PgPool, recorder: std::sync::Arc<Recorder>) -> bool {
    let fixture = Fixture::start(db).await;
    let bodies: Vec<String> = (0..4).map(|n| format!("slow-{n}")).collect();
    let recorder = bodies.iter().fold(recorder, |r, body| {
        r.script(body, Script::Slow(Duration::from_millis(150)))
    });
    let consumer = fixture.consumer(settings("effects"), recorder.clone());
    for (n, body) in bodies.iter().enumerate() {
        fixture
            .client
            .publish(&message(&format!("key-{n}"), body))
            .await
            .expect("publish");
    }
    fixture.wait_for_effects(4, Duration::from_secs(30)).await;
    fixture.shutdown.cancel();
    consumer.await.expect("consumer");
    let spans: Vec<_> = bodies.iter().map(|b| recorder.span(b)).collect();
    spans
        .iter()
        .enumerate()
        .any(|(i, a)| spans.iter().skip(i + 1).any(|b| a.0 < b.1 && b.0 < a.1))
}

/// The transactions the effects of `bodies` were committed in, one per effect, in commit order.
async fn transactions(fixture: &Fixture, bodies: &[String]) -> Vec<i64> {
    sqlx::query_scalar("select txid from effects where body = any($1) order by seq")
        .bind(bodies)
        .fetch_all(&fixture.pool)
        .await
        .expect("transactions")
}

/// Waits until the handler has started on `body`.
async fn started(recorder: &Recorder, body: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while recorder.attempts(body).is_empty() {
        assert!(std::time::Instant::now() < deadline, "{body} never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[sqlx::test(migrations = false)]
async fn messages_that_arrive_while_every_batch_is_busy_share_a_commit(db: PgPool) {
    let fixture = Fixture::start(db).await;
    let slow: Vec<String> = (0..consume::BATCHES).map(|n| format!("slow-{n}")).collect();
    let recorder = slow.iter().fold(Recorder::named("r"), |r, body| {
        r.script(body, Script::Slow(Duration::from_millis(600)))
    });
    let consumer = fixture.consumer(settings("effects"), recorder.clone());
    // Each slow one in hand before the next is sent: every batch busy with one of them.
    for body in &slow {
        fixture
            .client
            .publish(&message(body, body))
            .await
            .expect("publish");
        started(&recorder, body).await;
    }
    let quick: Vec<String> = (0..20).map(|n| format!("quick-{n}")).collect();
    for body in &quick {
        fixture
            .client
            .publish(&message(body, body))
            .await
            .expect("publish");
    }
    let effects = fixture
        .wait_for_effects(slow.len() + quick.len(), Duration::from_secs(30))
        .await;
    assert_eq!(
        effects.len(),
        slow.len() + quick.len(),
        "each message applied once"
    );
    let slow_transactions: HashSet<i64> = transactions(&fixture, &slow).await.into_iter().collect();
    assert_eq!(
        slow_transactions.len(),
        slow.len(),
        "the slow ones side by side"
    );
    let quick_transactions: HashSet<i64> =
        transactions(&fixture, &quick).await.into_iter().collect();
    assert!(
        quick_transactions.len() < quick.len() / 2,
        "the quick ones waited together: {} transactions for {}",
        quick_transactions.len(),
        quick.len()
    );
    fixture.shutdown.cancel();
    consumer.await.expect("consumer");
}

/// The messages of a lane that wait behind a slow one are handled together when it is done, in
/// order, in one transaction; the control: each alone when their lane is theirs.
#[sqlx::test(migrations = false)]
async fn the_messages_waiting_in_a_lane_share_a_commit_in_order(db: PgPool) {
    let fixture = Fixture::start(db).await;
    let recorder = Recorder::one_lane("r").script("slow", Script::Slow(Duration::from_millis(600)));
    let consumer = fixture.consumer(settings("effects"), recorder.clone());
    fixture
        .client
        .publish(&message("slow", "slow"))
        .await
        .expect("publish");
    started(&recorder, "slow").await;
    let waiting: Vec<String> = (0..20).map(|n| format!("waiting-{n}")).collect();
    for (n, body) in waiting.iter().enumerate() {
        // Under keys of their own: the handler's lane, not the key, holds them back.
        fixture
            .client
            .publish(&message(&format!("key-{n}"), body))
            .await
            .expect("publish");
    }
    let effects = fixture
        .wait_for_effects(1 + waiting.len(), Duration::from_secs(30))
        .await;
    let bodies: Vec<&str> = effects.iter().map(|(.., body)| body.as_str()).collect();
    let expected: Vec<&str> = std::iter::once("slow")
        .chain(waiting.iter().map(String::as_str))
        .collect();
    assert_eq!(bodies, expected, "the lane's order");
    let shared: HashSet<i64> = transactions(&fixture, &waiting).await.into_iter().collect();
    assert!(
        shared.len() <= 2,
        "those that waited went together: {} transactions for {}",
        shared.len(),
        waiting.len()
    );
    fixture.shutdown.cancel();
    consumer.await.expect("consumer");
}

/// A runner stopped while a message waits for another attempt leaves it unacknowledged: the
/// next runner of the subscription gets it again.
#[sqlx::test(migrations = false)]
async fn a_message_waiting_for_a_retry_when_the_runner_stops_is_delivered_again(db: PgPool) {
    let fixture = Fixture::start(db).await;
    let recorder = Recorder::named("r").script("failing", Script::Poison);
    let waiting = ConsumerSettings {
        backoff: consume::Backoff {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(60),
        },
        ..settings("effects")
    };
    let first = fixture.consumer(waiting, recorder.clone());
    fixture
        .client
        .publish(&message("failing", "failing"))
        .await
        .expect("publish");
    started(&recorder, "failing").await;
    fixture.shutdown.cancel();
    first.await.expect("first runner");

    recorder.unscript("failing");
    let fixture = Fixture {
        shutdown: tokio_util::sync::CancellationToken::new(),
        ..fixture
    };
    let second = fixture.consumer(settings("effects"), recorder.clone());
    let effects = fixture.wait_for_effects(1, Duration::from_secs(30)).await;
    assert_eq!(effects[0].3, "failing");
    assert_eq!(recorder.attempts("failing").len(), 2, "tried again once");
    fixture.shutdown.cancel();
    second.await.expect("second runner");
}

#[sqlx::test(migrations = false)]
async fn messages_of_one_lane_wait_for_each_other_whatever_their_keys(db: PgPool) {
    assert!(
        !overlapping(db, Recorder::one_lane("r")).await,
        "one lane: one message at a time"
    );
}

#[sqlx::test(migrations = false)]
async fn messages_of_different_keys_run_together(db: PgPool) {
    assert!(
        overlapping(db, Recorder::named("r")).await,
        "the control: lanes by key overlap"
    );
}

/// How often the outbox has been vacuumed by hand (autovacuum counts apart).
async fn outbox_vacuums(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("select vacuum_count from pg_stat_user_tables where relname = 'outbox'")
        .fetch_one(pool)
        .await
        .expect("outbox statistics")
}

/// The relay vacuums the outbox every `vacuum_every` published messages, whatever the server's
/// autovacuum does: a claim must not get dearer as dead rows pile up.
#[sqlx::test(migrations = false)]
async fn the_relay_vacuums_the_outbox_as_it_publishes(db: PgPool) {
    let fixture = Fixture::start(db).await;
    let batch: Vec<_> = (0..100)
        .map(|n| message(&format!("key-{n}"), &n.to_string()))
        .collect();
    enqueue(&fixture.pool, &batch).await;
    assert_eq!(outbox_vacuums(&fixture.pool).await, 0);
    let mut relay_settings = RelaySettings::new("relay");
    relay_settings.batch = 16;
    relay_settings.vacuum_every = 40;
    let relay = fixture.relay(relay_settings);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut conn = fixture.pool.acquire().await.expect("connection");
        if eventstore::outbox::pending(&mut conn)
            .await
            .expect("pending")
            == 0
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the outbox never drained"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fixture.shutdown.cancel();
    relay.await.expect("relay").expect("relay run");
    // 100 messages in rounds of at most 16: a vacuum after every 40 to 55 of them.
    assert!((1..=2).contains(&outbox_vacuums(&fixture.pool).await));
}

#[sqlx::test(migrations = false)]
async fn a_message_long_in_hand_is_reported_and_still_applied(db: PgPool) {
    let fixture = Fixture::start(db).await;
    let recorder =
        Recorder::named("r").script("sluggish", Script::Slow(Duration::from_millis(900)));
    let consumer_settings = ConsumerSettings {
        long_in_hand: Duration::from_millis(200),
        ..settings("effects")
    };
    let stats = consumer_settings.stats.clone();
    let consumer = fixture.consumer(consumer_settings, recorder);
    for (key, body) in [("key-1", "sluggish"), ("key-2", "brisk")] {
        fixture
            .client
            .publish(&message(key, body))
            .await
            .expect("publish");
    }
    fixture.wait_for_effects(2, Duration::from_secs(30)).await;
    assert_eq!(
        ConsumerStats::get(&stats.long_in_hand),
        1,
        "the slow one only"
    );
    fixture.shutdown.cancel();
    consumer.await.expect("consumer");
    // Counted after the commit that made the effect visible: final once the consumer has ended.
    assert_eq!(ConsumerStats::get(&stats.applied), 2);
}
