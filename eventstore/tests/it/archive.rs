//! Archived streams: out of the hot log and its scans, still read by id (through the query route
//! too), and a cursor at an archived event still valid for readers and for the lag.

use super::api::{decode, fold, get};
use super::{event, log_settled, store};
use axum::http::StatusCode;
use eventstore::archive::{archive_streams, read_stream_or_archived};
use eventstore::projection::lag;
use eventstore::{Error, ExpectedVersion, append, read_all, read_stream, store_checkpoint};
use sqlx::PgPool;
use std::time::Duration;

#[sqlx::test(migrations = false)]
async fn an_archived_stream_leaves_the_log_and_is_still_read_by_id(db: PgPool) {
    let pool = store(db, 4).await;
    let mut conn = pool.acquire().await.expect("connection");
    let done = [event("Opened", b"one"), event("Closed", b"two")];
    append(
        &mut conn,
        "done-1",
        "thing",
        ExpectedVersion::NoStream,
        &done,
    )
    .await
    .expect("append");
    append(
        &mut conn,
        "live-1",
        "thing",
        ExpectedVersion::NoStream,
        &[event("Opened", b"three")],
    )
    .await
    .expect("append");
    while !log_settled(&pool).await {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = read_all(&mut conn, 0, 10).await.expect("read_all").events;
    assert_eq!(before.len(), 3);
    // A reader, and a projection's checkpoint, that stand at the stream's last event.
    let cursor = before[1].position;
    store_checkpoint(&mut conn, "views", cursor)
        .await
        .expect("checkpoint");

    let mut tx = pool.begin().await.expect("begin");
    let moved = archive_streams(&mut tx, &["done-1".to_owned()])
        .await
        .expect("archive");
    tx.commit().await.expect("commit");
    assert_eq!(moved, 2);

    assert!(
        read_stream(&mut conn, "done-1", 1, None)
            .await
            .expect("read")
            .is_empty(),
        "out of the hot log"
    );
    let archived = read_stream_or_archived(&mut conn, "done-1", 1, None)
        .await
        .expect("read archived");
    let seen = |events: &[eventstore::RecordedEvent]| {
        events
            .iter()
            .map(|e| (e.position, e.version, e.event_id, e.payload.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(seen(&archived), seen(&before[..2]), "as recorded");
    let live = read_stream_or_archived(&mut conn, "live-1", 1, None)
        .await
        .expect("read live");
    assert_eq!(seen(&live), seen(&before[2..]));

    let log = read_all(&mut conn, 0, 10).await.expect("read_all").events;
    assert_eq!(seen(&log), seen(&before[2..]), "the log skips the archive");
    let next = read_all(&mut conn, cursor, 10)
        .await
        .expect("a cursor at an archived event");
    assert_eq!(seen(&next.events), seen(&before[2..]));
    assert_eq!(lag(&mut conn, "views").await.expect("lag").events, 1);
    assert!(matches!(
        read_all(&mut conn, before[2].position + 1_000, 10).await,
        Err(Error::UnknownPosition(_))
    ));

    let router = eventstore::api::routes(pool.clone(), decode, fold);
    let (status, _, body) = get(&router, "/streams/done-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let texts: Vec<&str> = body
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["data"]["text"].as_str().expect("text"))
        .collect();
    assert_eq!(texts, ["one", "two"]);
}
