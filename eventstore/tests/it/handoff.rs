//! A process's transactions hand what they queue to its relay: written leased to it, handed
//! over with their ids once committed, never when rolled back; written free for claims when the
//! key's newest unpublished row is not that relay's; claimable by any relay once the lease
//! lapses. Only rows written free wake the relays.

use super::store;
use eventstore::outbox::{self, Handed, Handoff, Message};
use eventstore::{Append, ExpectedVersion, Notifications};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;

const LEASE: Duration = Duration::from_secs(30);

fn message(key: &str, body: u8) -> Message {
    Message {
        topic: "things".into(),
        key: key.into(),
        payload: vec![body],
        properties: BTreeMap::from([("message_id".into(), format!("{key}-{body}"))]),
    }
}

/// Queues `messages` in one transaction handed to `handoff`, committed or not.
async fn queue(pool: &PgPool, handoff: &Handoff, messages: &[Message], commit: bool) {
    let transaction = async {
        let mut tx = pool.begin().await?;
        outbox::enqueue(&mut tx, messages).await?;
        match commit {
            true => tx.commit().await.map_err(eventstore::Error::from),
            false => Err(eventstore::Error::EmptyAppend),
        }
    };
    let _ = outbox::handing_to(Some(handoff), transaction).await;
}

/// The rows handed over so far, in order: their ids and bodies.
fn received(handed: &mut mpsc::UnboundedReceiver<Handed>) -> Vec<(i64, u8)> {
    received_after(handed)
        .into_iter()
        .map(|(id, body, _)| (id, body))
        .collect()
}

/// The rows handed over so far, in order: their ids, bodies and the rows they follow.
fn received_after(handed: &mut mpsc::UnboundedReceiver<Handed>) -> Vec<(i64, u8, Option<i64>)> {
    let mut rows = Vec::new();
    while let Ok(Handed { rows: more, .. }) = handed.try_recv() {
        rows.extend(
            more.into_iter()
                .map(|r| (r.row.id, r.row.message.payload[0], r.after)),
        );
    }
    rows
}

/// `(id, lease_owner, attempts)` of every row, in id order.
async fn rows(pool: &PgPool) -> Vec<(i64, Option<String>, i32)> {
    sqlx::query_as("select id, lease_owner, attempts from outbox order by id")
        .fetch_all(pool)
        .await
        .expect("rows")
}

#[sqlx::test(migrations = false)]
async fn committed_messages_are_handed_over_leased_and_rolled_back_ones_never(db: PgPool) {
    let pool = store(db, 4).await;
    let (handoff, mut handed) = Handoff::new("relay-a", LEASE, Notifications::new(&pool));

    queue(&pool, &handoff, &[message("k1", 1), message("k2", 2)], true).await;
    queue(&pool, &handoff, &[message("k3", 3)], false).await;
    // Through a write with an append too: the events' statement queues them.
    let transaction = async {
        let mut tx = pool.begin().await?;
        let events = [super::event("thing-happened", b"{}")];
        let append = Append {
            stream_id: "thing-1",
            stream_type: "thing",
            expected: ExpectedVersion::NoStream,
            events: &events,
        };
        eventstore::write(&mut tx, &[append], &[message("k4", 4)], None).await?;
        tx.commit().await.map_err(eventstore::Error::from)
    };
    outbox::handing_to(Some(&handoff), transaction)
        .await
        .expect("write");

    let stored = rows(&pool).await;
    let ids: Vec<i64> = stored.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(
        received(&mut handed),
        vec![(ids[0], 1), (ids[1], 2), (ids[2], 4)],
        "the committed rows, with their ids, in order; not the rolled-back one"
    );
    for (_, owner, attempts) in &stored {
        assert_eq!(
            (owner.as_deref(), *attempts),
            (Some("relay-a"), 1),
            "written leased"
        );
    }
    let mut conn = pool.acquire().await.expect("connection");
    let claimed = outbox::claim(&mut conn, "relay-b", 10, LEASE)
        .await
        .expect("claim");
    assert!(claimed.is_empty(), "no other relay claims a leased row");
}

#[sqlx::test(migrations = false)]
async fn a_key_with_an_earlier_row_of_no_relay_or_another_is_written_free(db: PgPool) {
    let pool = store(db, 4).await;
    let (handoff, mut handed) = Handoff::new("relay-a", LEASE, Notifications::new(&pool));
    let (other, _other_handed) = Handoff::new("relay-b", LEASE, Notifications::new(&pool));
    let mut tx = pool.begin().await.expect("begin");
    outbox::enqueue(&mut tx, &[message("free", 1)])
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    queue(&pool, &other, &[message("theirs", 2)], true).await;

    queue(
        &pool,
        &handoff,
        &[message("free", 3), message("theirs", 4), message("ours", 5)],
        true,
    )
    .await;
    queue(&pool, &handoff, &[message("ours", 6)], true).await;

    let bodies: Vec<u8> = received(&mut handed).iter().map(|(_, b)| *b).collect();
    assert_eq!(
        bodies,
        vec![5, 6],
        "only keys whose earlier rows are the relay's own"
    );
    let mut conn = pool.acquire().await.expect("connection");
    let claimed = outbox::claim(&mut conn, "relay-c", 10, LEASE)
        .await
        .expect("claim");
    let claimed: Vec<u8> = claimed.iter().map(|c| c.message.payload[0]).collect();
    assert_eq!(
        claimed,
        vec![1, 3],
        "the free key's rows go to a claim in order; 'theirs' waits for relay-b's row"
    );
}

#[sqlx::test(migrations = false)]
async fn a_handed_row_whose_relay_died_is_claimed_once_its_lease_lapses(db: PgPool) {
    let pool = store(db, 4).await;
    let lease = Duration::from_millis(300);
    let (handoff, handed) = Handoff::new("dead-relay", lease, Notifications::new(&pool));
    queue(&pool, &handoff, &[message("k", 1), message("k", 2)], true).await;
    drop(handed);

    let mut conn = pool.acquire().await.expect("connection");
    let early = outbox::claim(&mut conn, "live-relay", 10, LEASE)
        .await
        .expect("claim");
    assert!(early.is_empty(), "leased for a while");
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let late = outbox::claim(&mut conn, "live-relay", 10, LEASE)
        .await
        .expect("claim");
    let bodies: Vec<u8> = late.iter().map(|c| c.message.payload[0]).collect();
    assert_eq!(bodies, vec![1, 2], "claimed in order once the lease lapsed");

    queue(&pool, &handoff, &[message("k", 3)], true).await;
    let after: Vec<Option<String>> = rows(&pool).await.into_iter().map(|r| r.1).collect();
    assert_eq!(
        after.last(),
        Some(&None),
        "with its relay gone, a handoff writes free rows"
    );
}

#[sqlx::test(migrations = false)]
async fn only_rows_written_free_wake_the_relays_and_handed_ones_wake_the_process(db: PgPool) {
    let pool = store(db, 4).await;
    let notifications = Notifications::new(&pool);
    let mut relays = notifications.wakeup(outbox::CHANNEL).await;
    let mut projections = notifications
        .wakeup_on(&[outbox::CHANNEL, outbox::HANDED])
        .await;
    let (handoff, _handed) = Handoff::new("relay-a", LEASE, notifications.clone());

    queue(&pool, &handoff, &[message("k", 1)], true).await;
    assert!(
        woken(&mut projections).await,
        "the process's own workers wake"
    );
    assert!(!woken(&mut relays).await, "no relay wakes for a handed row");

    let mut tx = pool.begin().await.expect("begin");
    outbox::enqueue(&mut tx, &[message("j", 2)])
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    assert!(woken(&mut relays).await, "a free row wakes the relays");
    assert!(woken(&mut projections).await, "and the projections");
}

/// Whether `wakeup` is woken within half a second.
async fn woken(wakeup: &mut eventstore::Wakeup) -> bool {
    let wait = wakeup.wait(Duration::from_secs(60));
    tokio::time::timeout(Duration::from_millis(500), wait)
        .await
        .is_ok()
}
