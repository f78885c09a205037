//! Retries with growing delays, dead letters after exactly the configured attempts, conflicts
//! retried without limit, and other keys flowing while one key fails.

use super::{Fixture, Recorder, Script, message, settings};
use messaging::consume::ConsumerStats;
use messaging::testing::{self, DeadLetter};
use schemas::Message;
use schemas::commands::RegisterPartner;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::time::Duration;

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
async fn failing_keys_retry_with_backoff_then_dead_letter_while_others_flow(
    _: PgPoolOptions,
    connect: PgConnectOptions,
) {
    let fixture = Fixture::start(connect).await;
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
}

#[sqlx::test(migrations = false)]
async fn rejected_and_undecodable_messages_are_dead_lettered_at_once(
    _: PgPoolOptions,
    connect: PgConnectOptions,
) {
    let fixture = Fixture::start(connect).await;
    let recorder = Recorder::named("r").script("rejected", Script::Reject);
    let settings = settings("effects");
    let stats = settings.stats.clone();
    let consumer = fixture.consumer(settings, recorder.clone());

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

    fixture.shutdown.cancel();
    consumer.await.expect("consumer");
}
