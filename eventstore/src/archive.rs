//! Archived streams: the streams their owner is done with (a finished saga's log), moved out of
//! the hot `events` table into `archived_events`, so that the tables every append and every
//! global-log scan touch stay the size of the live work. An archived stream is still read by its
//! id, with its events as they were recorded; it is out of the global log and of correlation
//! reads. Its events keep their positions, so a cursor at one of them stays valid.
//!
//! Archiving is for streams that take no more events: an append to an archived stream id would
//! start a new stream. The owner decides when that is (the coordinator: a saga that ended a
//! while ago) and moves the streams in its own transaction, beside its own bookkeeping.

use crate::stream::{read_range, select_events, stream_range};
use crate::{Error, RecordedEvent, read_stream};
use sqlx::PgConnection;

/// Moves every event of `stream_ids` into the archive (their snapshots go), in the caller's
/// transaction; returns how many events moved.
pub async fn archive_streams(conn: &mut PgConnection, stream_ids: &[String]) -> Result<u64, Error> {
    let moved = sqlx::query(
        "with moved as (delete from events where stream_id = any($1) returning *)
         insert into archived_events select * from moved",
    )
    .bind(stream_ids)
    .execute(&mut *conn)
    .await?;
    sqlx::query("delete from snapshots where stream_id = any($1)")
        .bind(stream_ids)
        .execute(conn)
        .await?;
    Ok(moved.rows_affected())
}

/// [`read_stream`], or the stream as archived once it is no longer in the hot log: for the readers
/// of history (query APIs, audits), not for deciding (an archived stream takes no events).
pub async fn read_stream_or_archived(
    conn: &mut PgConnection,
    stream_id: &str,
    from_version: i64,
    to_version: Option<i64>,
) -> Result<Vec<RecordedEvent>, Error> {
    let hot = read_stream(conn, stream_id, from_version, to_version).await?;
    if !hot.is_empty() {
        return Ok(hot);
    }
    let sql = select_events!(from "archived_events", stream_range!());
    read_range(conn, sql, stream_id, (from_version, to_version)).await
}
