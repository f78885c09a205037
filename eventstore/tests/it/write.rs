//! A handling's appends, outbox messages and command outcome written in one statement: each part
//! as it is written alone, and a conflict on any stream reported as one.

use super::{event, store};
use eventstore::outbox::{self, Message};
use eventstore::{
    Append, Appended, Error, ExpectedVersion, Outcome, OutcomeRecord, load_outcome, read_stream,
    write, write_with,
};
use sqlx::PgPool;
use std::collections::BTreeMap;
use uuid::Uuid;

fn message(key: &str) -> Message {
    Message {
        topic: "things".into(),
        key: key.into(),
        payload: key.as_bytes().to_vec(),
        properties: BTreeMap::from([("message_id".into(), Uuid::new_v4().to_string())]),
    }
}

fn succeeded(command_id: Uuid) -> OutcomeRecord<'static> {
    OutcomeRecord {
        command_id,
        command_type: "Record",
        aggregate_id: "a",
        actor: Some("tester"),
        outcome: &Outcome::Succeeded,
    }
}

#[sqlx::test(migrations = false)]
async fn appends_messages_and_the_outcome_are_written_together(db: PgPool) {
    let pool = store(db, 1).await;
    let mut conn = pool.acquire().await.expect("connection");
    let (one, two) = ([event("A1", b"1")], [event("B1", b"1"), event("B2", b"2")]);
    let command = Uuid::new_v4();
    let appended = write(
        &mut conn,
        &[
            Append {
                stream_id: "a",
                stream_type: "thing",
                expected: ExpectedVersion::NoStream,
                events: &one,
            },
            Append {
                stream_id: "b",
                stream_type: "thing",
                expected: ExpectedVersion::Any,
                events: &two,
            },
        ],
        &[message("a"), message("b")],
        Some(succeeded(command)),
    )
    .await
    .expect("write");
    assert!(
        matches!(
            appended[..],
            [
                Appended::Written { version: 1, .. },
                Appended::Written { version: 2, .. }
            ]
        ),
        "{appended:?}"
    );
    let b = read_stream(&mut conn, "b", 1, None).await.expect("read");
    assert_eq!(
        b.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(),
        ["B1", "B2"]
    );
    let queued = outbox::claim(&mut conn, "relay", 10, std::time::Duration::from_secs(5))
        .await
        .expect("claim");
    assert_eq!(
        queued
            .iter()
            .map(|c| c.message.key.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"],
        "queued in order"
    );
    let outcome = load_outcome(&mut conn, command).await.expect("load");
    assert_eq!(outcome.map(|o| o.outcome), Some(Outcome::Succeeded));

    // Without appends: a reply and the outcome of a command that changed nothing.
    let refused = Uuid::new_v4();
    let rejected = Outcome::Rejected {
        code: "no".into(),
        reason: "because".into(),
    };
    let none = write(
        &mut conn,
        &[],
        &[message("c")],
        Some(OutcomeRecord {
            outcome: &rejected,
            ..succeeded(refused)
        }),
    )
    .await
    .expect("write");
    assert!(none.is_empty());
    assert_eq!(outbox::pending(&mut conn).await.expect("pending"), 3);
    let outcome = load_outcome(&mut conn, refused).await.expect("load");
    assert_eq!(outcome.map(|o| o.outcome), Some(rejected));
}

#[sqlx::test(migrations = false)]
async fn a_conflict_on_any_stream_is_reported(db: PgPool) {
    let pool = store(db, 2).await;
    let mut conn = pool.acquire().await.expect("connection");
    let first = [event("A1", b"1")];
    let append = |events| Append {
        stream_id: "a",
        stream_type: "thing",
        expected: ExpectedVersion::NoStream,
        events,
    };
    write(&mut conn, &[append(&first)], &[], None)
        .await
        .expect("first");
    let again = [event("A1", b"again")];
    let other = [event("B1", b"1")];
    let mut tx = pool.begin().await.expect("begin");
    let result = write(
        &mut tx,
        &[
            Append {
                stream_id: "b",
                ..append(&other)
            },
            append(&again),
        ],
        &[message("a")],
        Some(succeeded(Uuid::new_v4())),
    )
    .await;
    assert!(
        matches!(&result, Err(Error::Conflict { stream_id, actual: 1, .. }) if stream_id == "a"),
        "{result:?}"
    );
    tx.rollback().await.expect("rollback");
    assert!(
        read_stream(&mut conn, "b", 1, None)
            .await
            .expect("read")
            .is_empty()
    );

    let reused = [first[0].clone()];
    let mut changed = reused.clone();
    changed[0].payload = b"other".to_vec();
    let result = write(
        &mut conn,
        &[Append {
            stream_id: "c",
            ..append(&changed)
        }],
        &[],
        None,
    )
    .await;
    assert!(
        matches!(result, Err(Error::IdempotencyMismatch { event_id }) if event_id == reused[0].event_id),
        "{result:?}"
    );
}

/// A caller's own statements go in the same statement as the append, each with its values.
#[sqlx::test(migrations = false)]
async fn a_callers_own_parts_are_written_with_the_append(db: PgPool) {
    let pool = store(db, 1).await;
    let mut conn = pool.acquire().await.expect("connection");
    sqlx::raw_sql(
        "create table notes (stream_id text, note text); insert into notes values ('a', 'old')",
    )
    .execute(&mut *conn)
    .await
    .expect("notes table");
    let events = [event("A1", b"1")];
    let (stream, note) = ("a".to_owned(), "new".to_owned());
    let insert = |query: &mut sqlx::QueryBuilder<sqlx::Postgres>| {
        query
            .push("insert into notes values (")
            .push_bind(stream.clone())
            .push(", ")
            .push_bind(note.clone())
            .push(")");
    };
    let delete = |query: &mut sqlx::QueryBuilder<sqlx::Postgres>| {
        query
            .push("delete from notes where note = ")
            .push_bind("old");
    };
    let appended = write_with(
        &mut conn,
        &[Append {
            stream_id: "a",
            stream_type: "thing",
            expected: ExpectedVersion::NoStream,
            events: &events,
        }],
        &[],
        None,
        &[&insert, &delete],
    )
    .await
    .expect("write");
    assert!(matches!(
        appended[..],
        [Appended::Written { version: 1, .. }]
    ));
    let notes: Vec<(String, String)> = sqlx::query_as("select stream_id, note from notes")
        .fetch_all(&mut *conn)
        .await
        .expect("notes");
    assert_eq!(notes, [("a".to_owned(), "new".to_owned())]);
    assert_eq!(
        read_stream(&mut conn, "a", 1, None)
            .await
            .expect("read")
            .len(),
        1
    );
}
