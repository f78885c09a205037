//! Appends with expected versions, idempotency by event id, and stream reads.

use super::{event, store};
use eventstore::{
    Appended, Error, ExpectedVersion, Metadata, append, read_stream, read_stream_as_of,
};
use sqlx::PgPool;
use std::sync::Arc;
use time::OffsetDateTime;
use tokio::sync::Barrier;
use uuid::Uuid;

const WRITERS: usize = 64;
const EVENTS_PER_WRITER: usize = 5;

#[derive(Debug, Default)]
struct WriterReport {
    event_ids: Vec<Uuid>,
    conflicts: usize,
}

#[sqlx::test(migrations = false)]
async fn concurrent_writers_get_conflicts_and_never_overwrite(db: PgPool) {
    let pool = store(db, WRITERS as u32 + 1).await;
    let start = Arc::new(Barrier::new(WRITERS));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let pool = pool.clone();
        let start = start.clone();
        writers.push(tokio::spawn(async move {
            let mut conn = pool.acquire().await.expect("connection");
            let mut report = WriterReport::default();
            let mut known_version = 0;
            start.wait().await;
            for n in 0..EVENTS_PER_WRITER {
                let new = event("Counted", format!("writer {writer} event {n}").as_bytes());
                loop {
                    let expected = ExpectedVersion::Exact(known_version);
                    match append(
                        &mut conn,
                        "counter",
                        "counter",
                        expected,
                        std::slice::from_ref(&new),
                    )
                    .await
                    {
                        Ok(Appended::Written { version, .. }) => {
                            known_version = version;
                            report.event_ids.push(new.event_id);
                            break;
                        }
                        Err(Error::Conflict {
                            actual,
                            expected: reported,
                            ..
                        }) => {
                            assert_eq!(reported, expected);
                            assert!(actual > known_version, "a conflict reports a newer version");
                            report.conflicts += 1;
                            known_version = actual;
                        }
                        other => panic!("writer {writer}: unexpected outcome {other:?}"),
                    }
                }
            }
            report
        }));
    }
    let mut written = Vec::new();
    let mut conflicts = 0;
    for writer in writers {
        let report = writer.await.expect("writer task");
        written.extend(report.event_ids);
        conflicts += report.conflicts;
    }

    let mut conn = pool.acquire().await.expect("connection");
    let stored = read_stream(&mut conn, "counter", 1, None)
        .await
        .expect("read");
    let versions: Vec<i64> = stored.iter().map(|e| e.version).collect();
    let total = (WRITERS * EVENTS_PER_WRITER) as i64;
    assert_eq!(
        versions,
        (1..=total).collect::<Vec<_>>(),
        "versions are contiguous"
    );
    let mut stored_ids: Vec<Uuid> = stored.iter().map(|e| e.event_id).collect();
    stored_ids.sort();
    written.sort();
    assert_eq!(
        stored_ids, written,
        "every acknowledged append is stored, nothing else"
    );
    assert!(conflicts > 0, "64 writers at once must collide");
}

#[sqlx::test(migrations = false)]
async fn appending_the_same_events_again_is_a_no_op(db: PgPool) {
    let pool = store(db, 2).await;
    let mut conn = pool.acquire().await.expect("connection");
    let batch = vec![event("Opened", b"a"), event("Renamed", b"b")];

    let first = append(&mut conn, "s-1", "thing", ExpectedVersion::NoStream, &batch)
        .await
        .expect("append");
    assert!(matches!(first, Appended::Written { version: 2, .. }));

    // A retry of the same command: same ids, same content, whatever version it expects.
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Any,
        ExpectedVersion::Exact(2),
    ] {
        let mut retry = batch.clone();
        retry[0].metadata = Metadata {
            traceparent: Some("00-retry-01".into()),
            ..Metadata::default()
        };
        let again = append(&mut conn, "s-1", "thing", expected, &retry)
            .await
            .expect("retry");
        assert_eq!(again, Appended::AlreadyWritten { version: 2 });
    }
    assert_eq!(
        read_stream(&mut conn, "s-1", 1, None)
            .await
            .expect("read")
            .len(),
        2
    );

    // The same id with other content is an error, and writes nothing.
    let mut changed = batch.clone();
    changed[1].payload = b"c".to_vec();
    let err = append(
        &mut conn,
        "s-1",
        "thing",
        ExpectedVersion::Exact(2),
        &changed,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::IdempotencyMismatch { event_id } if event_id == batch[1].event_id),
        "{err:?}"
    );

    // So is the same id in another stream, or a batch that only partly repeats an earlier one.
    let err = append(
        &mut conn,
        "s-2",
        "thing",
        ExpectedVersion::NoStream,
        &batch[..1],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::IdempotencyMismatch { .. }), "{err:?}");
    let partial = vec![batch[0].clone(), event("Closed", b"d")];
    let err = append(
        &mut conn,
        "s-1",
        "thing",
        ExpectedVersion::Exact(2),
        &partial,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::IdempotencyMismatch { event_id } if event_id == batch[0].event_id),
        "{err:?}"
    );

    let stored = read_stream(&mut conn, "s-1", 1, None).await.expect("read");
    assert_eq!(
        stored
            .iter()
            .map(|e| e.payload.as_slice())
            .collect::<Vec<_>>(),
        [b"a", b"b"]
    );
    assert!(
        read_stream(&mut conn, "s-2", 1, None)
            .await
            .expect("read")
            .is_empty()
    );
}

#[sqlx::test(migrations = false)]
async fn expected_versions_are_enforced(db: PgPool) {
    let pool = store(db, 2).await;
    let mut conn = pool.acquire().await.expect("connection");
    let err = append(
        &mut conn,
        "s",
        "thing",
        ExpectedVersion::Exact(3),
        &[event("A", b"1")],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Conflict { actual: 0, .. }), "{err:?}");

    append(
        &mut conn,
        "s",
        "thing",
        ExpectedVersion::NoStream,
        &[event("A", b"1")],
    )
    .await
    .expect("create");
    let err = append(
        &mut conn,
        "s",
        "thing",
        ExpectedVersion::NoStream,
        &[event("A", b"2")],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Conflict { actual: 1, .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "stream s is at version 1, the append expected no stream"
    );

    let any = append(
        &mut conn,
        "s",
        "thing",
        ExpectedVersion::Any,
        &[event("A", b"3")],
    )
    .await
    .expect("any");
    assert_eq!(any.version(), 2);
    assert!(matches!(
        append(&mut conn, "s", "thing", ExpectedVersion::Any, &[]).await,
        Err(Error::EmptyAppend)
    ));
}

#[sqlx::test(migrations = false)]
async fn streams_read_by_version_range_and_as_of_a_time(db: PgPool) {
    let pool = store(db, 2).await;
    let mut conn = pool.acquire().await.expect("connection");
    let metadata = Metadata {
        message_id: Some(Uuid::new_v4()),
        correlation_id: Some(Uuid::new_v4()),
        causation_id: Some(Uuid::new_v4()),
        saga_id: Some(Uuid::new_v4()),
        tenant: Some("advertiser-1".into()),
        actor: Some("alice".into()),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
    };
    let mut first = event("Created", b"v1");
    first.metadata = metadata.clone();
    append(
        &mut conn,
        "c-1",
        "campaign",
        ExpectedVersion::NoStream,
        &[first.clone()],
    )
    .await
    .expect("v1");
    let between: OffsetDateTime = sqlx::query_scalar("select clock_timestamp()")
        .fetch_one(&mut *conn)
        .await
        .expect("now");
    append(
        &mut conn,
        "c-1",
        "campaign",
        ExpectedVersion::Exact(1),
        &[event("Renamed", b"v2"), event("Renamed", b"v3")],
    )
    .await
    .expect("v2, v3");

    let all = read_stream(&mut conn, "c-1", 1, None).await.expect("all");
    assert_eq!(all.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(all[0].event_id, first.event_id);
    assert_eq!(all[0].metadata, metadata, "metadata round-trips");
    assert_eq!(
        (all[0].stream_type.as_str(), all[0].event_type.as_str()),
        ("campaign", "Created")
    );
    assert!(
        all.windows(2)
            .all(|w| w[0].position < w[1].position && w[0].recorded_at <= w[1].recorded_at)
    );

    let middle = read_stream(&mut conn, "c-1", 2, Some(2))
        .await
        .expect("range");
    assert_eq!(middle.iter().map(|e| e.version).collect::<Vec<_>>(), [2]);

    let then = read_stream_as_of(&mut conn, "c-1", between)
        .await
        .expect("as of");
    assert_eq!(then.iter().map(|e| e.version).collect::<Vec<_>>(), [1]);
    let before = read_stream_as_of(
        &mut conn,
        "c-1",
        all[0].recorded_at - time::Duration::microseconds(1),
    )
    .await
    .expect("before");
    assert!(before.is_empty());
    assert!(
        read_stream(&mut conn, "nope", 1, None)
            .await
            .expect("unknown")
            .is_empty()
    );
}
