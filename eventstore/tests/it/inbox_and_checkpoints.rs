//! The inbox detects duplicates, also between racing consumers; checkpoints commit with their
//! transaction.

use super::store;
use eventstore::{load_checkpoint, record_message, record_messages, store_checkpoint};
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use uuid::Uuid;

/// Whether `consumer` had not processed `message` yet (its inbox now records it).
async fn recorded(conn: &mut PgConnection, consumer: &str, message: Uuid) -> bool {
    record_message(conn, consumer, message)
        .await
        .expect("record the message")
}

#[sqlx::test(migrations = false)]
async fn a_message_is_processed_once_per_consumer(db: PgPool) {
    let pool = store(db, 2).await;
    let mut conn = pool.acquire().await.expect("connection");
    let message = Uuid::new_v4();
    assert!(recorded(&mut conn, "tracking", message).await, "first");
    assert!(!recorded(&mut conn, "tracking", message).await, "again");
    assert!(
        recorded(&mut conn, "campaigns", message).await,
        "other consumer"
    );

    // Rolled back with its effect, the message counts as not processed.
    let other = Uuid::new_v4();
    let mut tx = pool.begin().await.expect("begin");
    assert!(recorded(&mut tx, "tracking", other).await, "in tx");
    tx.rollback().await.expect("rollback");
    assert!(
        recorded(&mut conn, "tracking", other).await,
        "after rollback"
    );
}

#[sqlx::test(migrations = false)]
async fn messages_recorded_together_are_each_new_once(db: PgPool) {
    let pool = store(db, 2).await;
    let mut conn = pool.acquire().await.expect("connection");
    let (seen, fresh, twice) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    assert!(recorded(&mut conn, "tracking", seen).await, "first");
    let new = record_messages(&mut conn, "tracking", &[twice, seen, fresh, twice])
        .await
        .expect("record the messages");
    assert_eq!(new, [true, false, true, false], "in the order given");
    assert!(!recorded(&mut conn, "tracking", fresh).await, "recorded");
}

#[sqlx::test(migrations = false)]
async fn racing_consumers_apply_a_message_once(db: PgPool) {
    let pool = store(db, 3).await;
    let message = Uuid::new_v4();
    let mut first = pool.begin().await.expect("begin");
    assert!(recorded(&mut first, "tracking", message).await, "first");

    let racer = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut second = pool.begin().await.expect("begin");
            let fresh = recorded(&mut second, "tracking", message).await;
            second.commit().await.expect("commit");
            fresh
        }
    });
    // The racer must be waiting on the first consumer's inbox row before the first one commits.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and datname = current_database()",
        )
        .fetch_one(&pool)
        .await
        .expect("activity");
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the racer never blocked"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.commit().await.expect("commit");
    assert!(
        !racer.await.expect("racer"),
        "the second consumer must see a duplicate"
    );
}

#[sqlx::test(migrations = false)]
async fn checkpoints_move_with_their_transaction(db: PgPool) {
    let pool = store(db, 2).await;
    let mut conn = pool.acquire().await.expect("connection");
    assert_eq!(
        load_checkpoint(&mut conn, "balances").await.expect("load"),
        0
    );
    store_checkpoint(&mut conn, "balances", 42)
        .await
        .expect("store");
    assert_eq!(
        load_checkpoint(&mut conn, "balances").await.expect("load"),
        42
    );

    let mut tx = pool.begin().await.expect("begin");
    store_checkpoint(&mut tx, "balances", 99)
        .await
        .expect("store");
    tx.rollback().await.expect("rollback");
    assert_eq!(
        load_checkpoint(&mut conn, "balances").await.expect("load"),
        42
    );
    assert_eq!(load_checkpoint(&mut conn, "other").await.expect("load"), 0);
}

#[sqlx::test(migrations = false)]
async fn command_outcomes_are_recorded_once(db: PgPool) {
    use eventstore::{Outcome, OutcomeRecord, load_outcome, record_outcome};
    let pool = store(db, 2).await;
    let mut conn = pool.acquire().await.expect("connection");
    let command = Uuid::new_v4();
    assert_eq!(load_outcome(&mut conn, command).await.expect("load"), None);

    let rejected = Outcome::Rejected {
        code: "budget_exhausted".into(),
        reason: "no budget left".into(),
    };
    for outcome in [&rejected, &Outcome::Succeeded] {
        record_outcome(
            &mut conn,
            OutcomeRecord {
                command_id: command,
                command_type: "ReserveBudget",
                aggregate_id: "campaign-1",
                actor: None,
                outcome,
            },
        )
        .await
        .expect("record");
    }
    let outcome = load_outcome(&mut conn, command)
        .await
        .expect("load")
        .expect("recorded");
    assert_eq!(outcome.outcome, rejected, "the first outcome stands");
    assert_eq!(
        (outcome.command_type.as_str(), outcome.aggregate_id.as_str()),
        ("ReserveBudget", "campaign-1")
    );

    for (id, expected) in [
        (Uuid::new_v4(), Outcome::Succeeded),
        (Uuid::new_v4(), Outcome::AlreadyApplied),
    ] {
        record_outcome(
            &mut conn,
            OutcomeRecord {
                command_id: id,
                command_type: "AssociatePartner",
                aggregate_id: "campaign-1",
                actor: Some("admin"),
                outcome: &expected,
            },
        )
        .await
        .expect("record");
        assert_eq!(
            load_outcome(&mut conn, id)
                .await
                .expect("load")
                .expect("recorded")
                .outcome,
            expected
        );
    }
}

/// A projection's lag counts the committed events after its checkpoint, and ages the oldest.
#[sqlx::test(migrations = false)]
async fn a_projection_lags_by_the_events_after_its_checkpoint(db: PgPool) {
    use eventstore::projection::lag;
    let pool = store(db, 2).await;
    let mut conn = pool.acquire().await.expect("connection");
    let caught_up = lag(&mut conn, "views").await.expect("lag");
    assert_eq!(
        (caught_up.events, caught_up.seconds),
        (0, 0.0),
        "an empty log"
    );

    let events = [
        super::event("A", b"1"),
        super::event("B", b"2"),
        super::event("C", b"3"),
    ];
    eventstore::append(
        &mut conn,
        "s-1",
        "thing",
        eventstore::ExpectedVersion::NoStream,
        &events,
    )
    .await
    .expect("append");
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The log hands out (and the lag counts) only what no running transaction on the server
    // can still precede: other tests' transactions hold it back for a while.
    while !super::log_settled(&pool).await {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let behind = lag(&mut conn, "views").await.expect("lag");
    assert_eq!(behind.events, 3);
    assert!(behind.seconds >= 0.05, "{behind:?}");

    let page = eventstore::read_all(&mut conn, 0, 2).await.expect("read");
    store_checkpoint(&mut conn, "views", page.next)
        .await
        .expect("checkpoint");
    assert_eq!(lag(&mut conn, "views").await.expect("lag").events, 1);
    let page = eventstore::read_all(&mut conn, page.next, 10)
        .await
        .expect("read");
    store_checkpoint(&mut conn, "views", page.next)
        .await
        .expect("checkpoint");
    let caught_up = lag(&mut conn, "views").await.expect("lag");
    assert_eq!((caught_up.events, caught_up.seconds), (0, 0.0));
}
