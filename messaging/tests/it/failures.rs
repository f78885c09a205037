//! Retries with growing delays, dead letters after exactly the configured attempts, conflicts
//! retried without limit, other keys flowing while one key fails, and dead letters recorded,
//! published by the relay and re-driven.

use super::{Fixture, Recorder, Script, message, settings};
use eventstore::dead_letter::{self, Redrive};
use messaging::consume::ConsumerStats;
use messaging::relay::RelaySettings;
use messaging::testing::{self, DeadLetter};
use schemas::Message;
use schemas::commands::RegisterPartner;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

async fn dead_letters(fixture: &Fixture, subscription: &str, count: usize) -> Vec<DeadLetter> {
    testing::dead_letters(
        fixture.client.settings(),
        RegisterPartner::TOPIC,
        Some(subscription),
        count,
    )
    .await
}

#[sqlx::test(migrations = false)]
async fn failing_keys_retry_with_backoff_then_dead_letter_while_others_flow(db: PgPool) {
    let fixture = Fixture::start(db).await;
    let recorder = Recorder::named("r")
        .script("slow", Script::FailTransiently(3))
        .script("poison", Script::Poison);
    let settings = settings("effects");
    let contended = 3 * settings.max_attempts;
    let recorder = recorder.script("contended", Script::Conflicts(contended));
    let (stats, backoff, max_attempts) = (
        settings.stats.clone(),
        settings.backoff,
        settings.max_attempts,
    );
    let consumer = fixture.consumer(settings, recorder.clone());
    let relay = fixture.relay(RelaySettings::new("relay"));

    let poison = message("p", "poison");
    fixture
        .client
        .publish(&message("s", "slow"))
        .await
        .expect("publish");
    fixture.client.publish(&poison).await.expect("publish");
    fixture
        .client
        .publish(&message("p", "after-poison"))
        .await
        .expect("publish");
    fixture
        .client
        .publish(&message("c", "contended"))
        .await
        .expect("publish");
    for n in 0..10 {
        fixture
            .client
            .publish(&message("other", &format!("other-{n}")))
            .await
            .expect("publish");
    }

    let effects = fixture.wait_for_effects(13, Duration::from_secs(60)).await;
    let bodies: Vec<&str> = effects
        .iter()
        .map(|(_, _, _, body)| body.as_str())
        .collect();
    assert!(!bodies.contains(&"poison"));
    // Lost races are decided again as often as it takes: far more than max_attempts, no letter.
    assert!(bodies.contains(&"contended"));
    assert_eq!(recorder.attempts("contended").len(), contended as usize + 1);
    assert_eq!(ConsumerStats::get(&stats.conflicts), u64::from(contended));

    // The slow message succeeded on its fourth attempt, each after at least its growing backoff.
    // (Only the lower bound is a property: a busy machine stretches any wait.)
    let slow = recorder.attempts("slow");
    assert_eq!(slow.len(), 4);
    let gaps: Vec<Duration> = slow.windows(2).map(|w| w[1] - w[0]).collect();
    let delays: Vec<Duration> = (1..=3).map(|attempt| backoff.delay(attempt)).collect();
    assert!(delays.windows(2).all(|w| w[1] > w[0]), "{delays:?}");
    for (n, (gap, delay)) in gaps.iter().zip(&delays).enumerate() {
        assert!(
            gap >= delay,
            "gap {n} of {gaps:?} shorter than the backoff {delays:?}"
        );
    }

    // The poison message was tried exactly max_attempts times, then dead-lettered; its key's next
    // message waited for it, and the other key did not.
    let poisoned = recorder.attempts("poison");
    assert_eq!(poisoned.len(), max_attempts as usize);
    let last_poison = *poisoned.last().expect("attempts");
    assert!(
        recorder.attempts("after-poison")[0] > last_poison,
        "per-key order through the dead letter"
    );
    let others_done = (0..10)
        .map(|n| recorder.attempts(&format!("other-{n}"))[0])
        .max()
        .expect("others");
    assert!(
        others_done < last_poison,
        "the other key flowed while the poison key was retried"
    );

    let letters = dead_letters(&fixture, "effects", 1).await;
    let letter = &letters[0];
    let props = &letter.properties;
    assert_eq!(letter.payload, poison.payload, "the original body");
    assert_eq!(
        props["message_id"], poison.properties["message_id"],
        "the original properties"
    );
    assert_eq!(props["error_kind"], "attempts_exhausted");
    assert_eq!(props["attempts"], max_attempts.to_string());
    assert!(props["error"].contains("scripted poison"));
    // As Pulsar's own clients write them: the full topic name, and `ledger:entry:partition:batch`.
    assert_eq!(
        props["REAL_TOPIC"],
        fixture
            .client
            .settings()
            .topic("campaigns-partner-registration")
    );
    let origin: Vec<&str> = props["ORIGIN_MESSAGE_ID"].split(':').collect();
    assert_eq!(origin.len(), 4, "{}", props["ORIGIN_MESSAGE_ID"]);
    assert!(origin[..2].iter().all(|n| n.parse::<u64>().is_ok()));
    assert_eq!(origin[2..], ["-1", "-1"], "no partition, no batch");
    assert_eq!(ConsumerStats::get(&stats.dead_lettered), 1);
    assert_eq!(
        ConsumerStats::get(&stats.retries),
        3 + (max_attempts as u64 - 1)
    );

    fixture.shutdown.cancel();
    consumer.await.expect("consumer");
    relay.await.expect("relay").expect("relay ran");
}

/// The consumer's handler and stats, the consumer and the relay.
type Running = (
    Arc<Recorder>,
    Arc<ConsumerStats>,
    JoinHandle<()>,
    JoinHandle<Result<(), messaging::Error>>,
);

/// A consumer whose handler rejects the message `rejected`, and a relay, running on `fixture`.
fn rejecting(fixture: &Fixture) -> Running {
    let recorder = Recorder::named("r").script("rejected", Script::Reject);
    let settings = settings("effects");
    let stats = settings.stats.clone();
    let consumer = fixture.consumer(settings, recorder.clone());
    (
        recorder,
        stats,
        consumer,
        fixture.relay(RelaySettings::new("relay")),
    )
}

#[sqlx::test(migrations = false)]
async fn rejected_and_undecodable_messages_are_dead_lettered_at_once(db: PgPool) {
    let fixture = Fixture::start(db).await;
    let (recorder, stats, consumer, relay) = rejecting(&fixture);

    let mut garbage = message("k", "garbage");
    garbage.payload = vec![0xff; 7];
    let mut anonymous = message("k", "anonymous");
    anonymous.properties.remove("message_id");
    for outgoing in [
        message("k", "rejected"),
        garbage,
        anonymous,
        message("k", "fine"),
    ] {
        fixture.client.publish(&outgoing).await.expect("publish");
    }
    let effects = fixture.wait_for_effects(1, Duration::from_secs(30)).await;
    assert_eq!(
        effects[0].3, "fine",
        "the key goes on after its dead letters"
    );
    assert_eq!(
        recorder.attempts("rejected").len(),
        1,
        "a permanent failure is not retried"
    );

    let letters = dead_letters(&fixture, "effects", 3).await;
    let kinds: Vec<(String, String)> = letters
        .iter()
        .map(|l| {
            let p = &l.properties;
            (p["error_kind"].clone(), p["attempts"].clone())
        })
        .collect();
    let expected = [
        ("permanent", "1"),
        ("undecodable", "1"),
        ("undecodable", "1"),
    ];
    assert_eq!(kinds, expected.map(|(k, a)| (k.to_owned(), a.to_owned())));
    // Seven 0xff bytes are a number whose continuation bit never ends.
    assert!(
        letters[1].properties["error"].contains("ends before its last field"),
        "{:?}",
        letters[1].properties
    );
    assert!(letters[2].properties["error"].contains("message_id"));
    assert_eq!(ConsumerStats::get(&stats.dead_lettered), 3);

    // The same three, recorded for operators: the rejected one decoded, the others not.
    let recorded: Vec<(String, String, bool, String)> = sqlx::query_as(
        "select topic, cause, body is not null, error from dead_letters
          order by dead_lettered_at",
    )
    .fetch_all(&fixture.pool)
    .await
    .expect("dead letters");
    let recorded: Vec<(&str, &str, bool)> = recorded
        .iter()
        .map(|(topic, cause, decoded, _)| (topic.as_str(), cause.as_str(), *decoded))
        .collect();
    assert_eq!(
        recorded,
        [
            ("campaigns-partner-registration", "permanent", true),
            ("campaigns-partner-registration", "undecodable", false),
            ("campaigns-partner-registration", "undecodable", false),
        ]
    );

    fixture.shutdown.cancel();
    consumer.await.expect("consumer");
    relay.await.expect("relay").expect("relay ran");
}

/// The dead letters' ids and causes, oldest first.
async fn recorded(fixture: &Fixture) -> Vec<(uuid::Uuid, String)> {
    sqlx::query_as("select id, cause from dead_letters order by dead_lettered_at")
        .fetch_all(&fixture.pool)
        .await
        .expect("dead letters")
}

async fn redrive(fixture: &Fixture, id: uuid::Uuid) -> Redrive {
    let mut tx = fixture.pool.begin().await.expect("begin");
    let redrive = dead_letter::redrive(&mut tx, id, "ops@example.com", Some("bug fixed"))
        .await
        .expect("redrive");
    tx.commit().await.expect("commit");
    redrive
}

#[sqlx::test(migrations = false)]
async fn a_redriven_dead_letter_is_handled_and_one_that_fails_again_comes_back(db: PgPool) {
    let fixture = Fixture::start(db).await;
    let (recorder, stats, consumer, relay) = rejecting(&fixture);

    let rejected = message("k", "rejected");
    let mut garbage = message("g", "garbage");
    garbage.payload = vec![0xff; 7];
    fixture.client.publish(&rejected).await.expect("publish");
    fixture.client.publish(&garbage).await.expect("publish");
    let deadline = Instant::now() + Duration::from_secs(30);
    let letters = loop {
        let letters = recorded(&fixture).await;
        if letters.len() == 2 {
            break letters;
        }
        assert!(Instant::now() < deadline, "two dead letters within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(fixture.effects().await.is_empty());
    let id = |cause: &str| {
        letters
            .iter()
            .find(|(_, c)| c == cause)
            .map(|(id, _)| *id)
            .expect("a dead letter of that cause")
    };
    let (rejected_id, garbage_id) = (id("permanent"), id("undecodable"));

    // The bug is fixed; the operator re-drives the rejected message: it is handled, under its
    // own message id, and carries where it came from.
    recorder.unscript("rejected");
    let Redrive::Queued(queued) = redrive(&fixture, rejected_id).await else {
        panic!("the first re-drive queues the message");
    };
    assert_eq!(queued.payload, rejected.payload);
    assert_eq!(queued.properties["redriven_from"], rejected_id.to_string());
    let effects = fixture.wait_for_effects(1, Duration::from_secs(30)).await;
    assert_eq!(effects[0].3, "rejected");
    assert_eq!(
        effects[0].2.to_string(),
        rejected.properties["message_id"],
        "the original message id"
    );
    assert!(
        matches!(redrive(&fixture, rejected_id).await, Redrive::AlreadyRedriven { by: Some(by), .. } if by == "ops@example.com"),
        "a dead letter is re-driven once"
    );
    assert!(matches!(
        redrive(&fixture, uuid::Uuid::new_v4()).await,
        Redrive::NotFound
    ));

    // Garbage stays garbage: re-driven, it is dead-lettered again, as a new dead letter.
    assert!(matches!(
        redrive(&fixture, garbage_id).await,
        Redrive::Queued(_)
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while recorded(&fixture).await.len() < 3 {
        assert!(Instant::now() < deadline, "the garbage back within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let letters = recorded(&fixture).await;
    assert_eq!(letters[2].1, "undecodable");
    assert_eq!(fixture.effects().await.len(), 1);

    fixture.shutdown.cancel();
    consumer.await.expect("consumer");
    relay.await.expect("relay").expect("relay ran");
    // Counted once the dead letter's transaction has committed: final once the consumer ended.
    assert_eq!(ConsumerStats::get(&stats.dead_lettered), 3);
}
