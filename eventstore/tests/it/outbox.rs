//! The outbox drained by several relays at once: each row published once per claim, per-key
//! order kept — and a naive SKIP LOCKED claim shown to break that order; a command's answer
//! queued again.

use super::store;
use eventstore::outbox::{self, Claimed, Message};
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Each transaction writes eight distinct keys and one claim's worth of rows holds 15 of them:
/// the other relay always finds keys that are free, and keys still overlap between claims.
const KEYS: usize = 32;
const TRANSACTIONS: usize = 60;
/// Transactions committed before the relays start, so that both find work on their first claim.
const BACKLOG: usize = 8;
const MESSAGES_PER_TRANSACTION: usize = 8;
const CLAIM: i64 = 16;
const LEASE: Duration = Duration::from_secs(30);
/// What the stand-in broker takes per message, so that two relays' publications interleave.
const PUBLISH_LATENCY: Duration = Duration::from_micros(300);

/// The stand-in for the broker: the order in which (key, sequence number) pairs arrived.
type Published = Arc<Mutex<Vec<(String, u64)>>>;

#[derive(Debug, Clone, Copy)]
enum Claim {
    Keyed,
    /// The plain "oldest N, FOR UPDATE SKIP LOCKED" claim, without the per-key rule.
    NaiveSkipLocked,
}

impl Claim {
    async fn claim(self, pool: &PgPool, relay: &str) -> Vec<Claimed> {
        let mut conn = pool.acquire().await.expect("connection");
        match self {
            Claim::Keyed => outbox::claim(&mut conn, relay, CLAIM, LEASE)
                .await
                .expect("claim"),
            Claim::NaiveSkipLocked => {
                let rows: Vec<(i64, String)> = sqlx::query_as(
                    "update outbox set lease_owner = $1, lease_until = now() + interval '30 seconds'
                      where id in (select id from outbox
                                    where published_at is null and lease_until is null
                                    order by id limit $2 for update skip locked)
                      returning id, key",
                )
                .bind(relay)
                .bind(CLAIM)
                .fetch_all(&mut *conn)
                .await
                .expect("naive claim");
                let mut claimed: Vec<Claimed> = rows
                    .into_iter()
                    .map(|(id, key)| Claimed {
                        id,
                        attempts: 1,
                        message: Message {
                            topic: String::new(),
                            key,
                            payload: Vec::new(),
                            properties: BTreeMap::new(),
                        },
                    })
                    .collect();
                claimed.sort_by_key(|c| c.id);
                claimed
            }
        }
    }
}

async fn relay(
    claim: Claim,
    pool: PgPool,
    name: String,
    producing: Arc<AtomicBool>,
    published: Published,
) -> usize {
    let mut count = 0;
    loop {
        let still_producing = producing.load(Ordering::Acquire);
        let batch = claim.claim(&pool, &name).await;
        if batch.is_empty() {
            let mut conn = pool.acquire().await.expect("connection");
            if !still_producing && outbox::pending(&mut conn).await.expect("pending") == 0 {
                return count;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        // One producer writes the rows, so a key's ids increase in its commit order.
        for claimed in &batch {
            tokio::time::sleep(PUBLISH_LATENCY).await;
            published
                .lock()
                .expect("lock")
                .push((claimed.message.key.clone(), claimed.id as u64));
        }
        let ids: Vec<i64> = batch.iter().map(|c| c.id).collect();
        let mut conn = pool.acquire().await.expect("connection");
        let marked = outbox::mark_published(&mut conn, &name, &ids)
            .await
            .expect("mark");
        assert_eq!(
            marked as usize,
            ids.len(),
            "{name} lost a lease it was still using"
        );
        count += batch.len();
    }
}

/// Writes transactions `from..to` of outbox rows; keys spread over every transaction.
async fn produce(pool: &PgPool, from: usize, to: usize) {
    for t in from..to {
        let mut tx = pool.begin().await.expect("begin");
        let messages: Vec<Message> = (0..MESSAGES_PER_TRANSACTION)
            .map(|m| Message {
                topic: "things".into(),
                key: format!("key-{}", (t * 3 + m * 5) % KEYS),
                payload: vec![t as u8, m as u8],
                properties: BTreeMap::from([("message_id".into(), format!("{t}-{m}"))]),
            })
            .collect();
        outbox::enqueue(&mut tx, &messages).await.expect("enqueue");
        tx.commit().await.expect("commit");
    }
}

/// Writes a backlog, then runs one producer and two relays to the end; returns what the broker
/// received and each relay's count.
async fn drain_with_two_relays(pool: &PgPool, claim: Claim) -> (Vec<(String, u64)>, Vec<usize>) {
    produce(pool, 0, BACKLOG).await;
    let producing = Arc::new(AtomicBool::new(true));
    let published: Published = Arc::default();
    let relays: Vec<_> = ["relay-a", "relay-b"]
        .into_iter()
        .map(|name| {
            tokio::spawn(relay(
                claim,
                pool.clone(),
                name.to_owned(),
                producing.clone(),
                published.clone(),
            ))
        })
        .collect();
    produce(pool, BACKLOG, TRANSACTIONS).await;
    producing.store(false, Ordering::Release);
    let mut counts = Vec::new();
    for relay in relays {
        counts.push(relay.await.expect("relay"));
    }
    let published = published.lock().expect("lock").clone();
    (published, counts)
}

/// Pairs of (earlier, later) publications of one key that arrived out of order.
fn order_violations(published: &[(String, u64)]) -> usize {
    let mut last: HashMap<&str, u64> = HashMap::new();
    let mut violations = 0;
    for (key, sequence) in published {
        match last.insert(key, *sequence) {
            Some(previous) if previous > *sequence => violations += 1,
            _ => {}
        }
    }
    violations
}

#[sqlx::test(migrations = false)]
async fn two_relays_publish_each_row_once_in_per_key_order(db: PgPool) {
    let pool = store(db, 6).await;
    let (published, counts) = drain_with_two_relays(&pool, Claim::Keyed).await;

    let total = TRANSACTIONS * MESSAGES_PER_TRANSACTION;
    assert_eq!(published.len(), total, "each row published exactly once");
    let mut sequences: Vec<u64> = published.iter().map(|(_, s)| *s).collect();
    sequences.sort_unstable();
    sequences.dedup();
    assert_eq!(sequences.len(), total, "no row published twice");
    assert_eq!(order_violations(&published), 0, "per-key order broken");
    assert!(
        counts.iter().all(|&c| c > 0),
        "both relays took part: {counts:?}"
    );
    assert_eq!(counts.iter().sum::<usize>(), total);
}

#[sqlx::test(migrations = false)]
async fn a_naive_skip_locked_claim_breaks_per_key_order(db: PgPool) {
    let pool = store(db, 6).await;
    let (published, _) = drain_with_two_relays(&pool, Claim::NaiveSkipLocked).await;
    assert_eq!(published.len(), TRANSACTIONS * MESSAGES_PER_TRANSACTION);
    assert!(
        order_violations(&published) > 0,
        "the negative control should reorder some key"
    );
}

#[sqlx::test(migrations = false)]
async fn a_dead_relays_rows_go_to_another_relay_in_order(db: PgPool) {
    let pool = store(db, 2).await;
    let mut conn = pool.acquire().await.expect("connection");
    let message = |n: u8| Message {
        topic: "things".into(),
        key: "k".into(),
        payload: vec![n],
        properties: BTreeMap::new(),
    };
    outbox::enqueue(&mut conn, &[message(1), message(2)])
        .await
        .expect("enqueue");

    let short = Duration::from_secs(1);
    let taken = outbox::claim(&mut conn, "dying", 1, short)
        .await
        .expect("claim");
    assert_eq!(
        taken
            .iter()
            .map(|c| c.message.payload.clone())
            .collect::<Vec<_>>(),
        [vec![1]]
    );
    outbox::enqueue(&mut conn, &[message(3)])
        .await
        .expect("enqueue");
    // While the lease holds, nobody may publish the key's later rows ahead of row 1.
    assert!(
        outbox::claim(&mut conn, "other", 10, LEASE)
            .await
            .expect("claim")
            .is_empty()
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let resumed = loop {
        let claimed = outbox::claim(&mut conn, "other", 10, LEASE)
            .await
            .expect("claim");
        if !claimed.is_empty() {
            break claimed;
        }
        assert!(
            Instant::now() < deadline,
            "the expired lease was never taken over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let payloads: Vec<u8> = resumed.iter().map(|c| c.message.payload[0]).collect();
    assert_eq!(payloads, [1, 2, 3]);
    assert_eq!(resumed[0].attempts, 2, "the second claim of row 1");
    assert_eq!(
        outbox::mark_published(&mut conn, "dying", &[resumed[0].id])
            .await
            .expect("mark"),
        0,
        "a lost lease cannot mark"
    );

    // A relay that cannot reach the broker releases its claim for an immediate retry.
    let ids: Vec<i64> = resumed.iter().map(|c| c.id).collect();
    assert_eq!(
        outbox::release(&mut conn, "other", &ids)
            .await
            .expect("release"),
        3
    );
    let again = outbox::claim(&mut conn, "third", 10, LEASE)
        .await
        .expect("claim");
    assert_eq!(again.iter().map(|c| c.id).collect::<Vec<_>>(), ids);
    assert_eq!(
        outbox::mark_published(&mut conn, "third", &ids)
            .await
            .expect("mark"),
        3
    );
    assert_eq!(outbox::pending(&mut conn).await.expect("pending"), 0);
}

#[sqlx::test(migrations = false)]
async fn a_commands_answer_is_queued_again_once_published(db: PgPool) {
    let pool = store(db, 2).await;
    let mut conn = pool.acquire().await.expect("connection");
    let command = uuid::Uuid::now_v7();
    let caused = |cause: uuid::Uuid, id: &str, n: u8| Message {
        topic: "answers".into(),
        key: "k".into(),
        payload: vec![n],
        properties: BTreeMap::from([
            ("causation_id".into(), cause.to_string()),
            ("message_id".into(), id.into()),
        ]),
    };
    outbox::enqueue(
        &mut conn,
        &[
            caused(command, "a", 1),
            caused(uuid::Uuid::now_v7(), "x", 9),
            caused(command, "b", 2),
        ],
    )
    .await
    .expect("enqueue");
    assert_eq!(
        outbox::requeue_caused_by(&mut conn, command)
            .await
            .expect("requeue"),
        0,
        "the first answer is still waiting: it is the answer"
    );

    let publish_all = async |conn: &mut sqlx::PgConnection| {
        let claimed = outbox::claim(conn, "relay", 100, LEASE)
            .await
            .expect("claim");
        let ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
        outbox::mark_published(conn, "relay", &ids)
            .await
            .expect("mark");
        claimed
    };
    publish_all(&mut conn).await;
    for round in 0..2 {
        assert_eq!(
            outbox::requeue_caused_by(&mut conn, command)
                .await
                .expect("requeue"),
            2,
            "round {round}"
        );
        let again = publish_all(&mut conn).await;
        let sent: Vec<(String, u8)> = again
            .iter()
            .map(|c| {
                (
                    c.message.properties["message_id"].clone(),
                    c.message.payload[0],
                )
            })
            .collect();
        assert_eq!(
            sent,
            [("a".to_owned(), 1), ("b".to_owned(), 2)],
            "round {round}: the same messages, in their order, once each"
        );
    }
}
