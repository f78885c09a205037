//! The service's global event log, read in an order that never skips a late commit.
//!
//! Positions come from an identity column, so they are handed out when a row is inserted, not
//! when its transaction commits: a reader that follows "position > last seen" passes over an
//! event whose transaction commits after a later-numbered one has been read, and never returns
//! to it. Instead every event records its top-level transaction id (`xid8`), and the log is read
//! in `(transaction_id, position)` order, only up to the oldest transaction still running
//! (`pg_snapshot_xmin`). Every transaction below that bound has ended, and any transaction that
//! starts later gets a larger id, so nothing can ever appear behind a reader's cursor.
//!
//! The cost is latency, not correctness: a long transaction anywhere on the server holds back
//! the events committed after it started until it ends.

use crate::stream::{EventRow, select_events};
use crate::{Error, RecordedEvent};
use sqlx::PgConnection;
use time::OffsetDateTime;

/// One page of the global log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub events: Vec<RecordedEvent>,
    /// The cursor for the next page: the position of the last event in this page, or the cursor
    /// that was passed in when the page is empty.
    pub next: i64,
}

/// Up to `limit` events of the global log that follow the event at position `after` (0: from the
/// beginning). A cursor is always the position of an event this function returned, so a
/// projection stores `next` as its checkpoint; a position that is not an event's (positions of
/// rolled-back appends are never used) is [`Error::UnknownPosition`]. Archived streams are out of
/// the log, but a cursor at one of their events stays valid (`crate::archive`).
pub async fn read_all(conn: &mut PgConnection, after: i64, limit: i64) -> Result<Page, Error> {
    // The cursor row is looked up rather than trusted: an unknown position yields no cursor and
    // so no rows, and the empty page is then told apart from the end of the log. The cursor is
    // a value by the time the scan starts, so the comparison bounds the index range scan.
    let rows: Vec<EventRow> = sqlx::query_as(select_events!(
        "e where (e.transaction_id, e.position)
                 > (case when $1 = 0 then '0'::xid8
                         else eventstore_transaction_at($1) end, $1)
           and e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
         order by e.transaction_id, e.position
         limit $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() && after != 0 {
        let known: bool = sqlx::query_scalar("select eventstore_transaction_at($1) is not null")
            .bind(after)
            .fetch_one(&mut *conn)
            .await?;
        if !known {
            return Err(Error::UnknownPosition(after));
        }
    }
    let events: Vec<RecordedEvent> = rows.into_iter().map(RecordedEvent::from).collect();
    let next = events.last().map_or(after, |e| e.position);
    Ok(Page { events, next })
}

/// Up to `limit` events recorded in `[from, to)` that follow the event at `after` (0: the first),
/// in global-log order: the audit view of a time range, paged like [`read_all`].
pub async fn read_all_between(
    conn: &mut PgConnection,
    from: OffsetDateTime,
    to: OffsetDateTime,
    after: i64,
    limit: i64,
) -> Result<Page, Error> {
    let rows: Vec<EventRow> = sqlx::query_as(select_events!(
        "e where (e.transaction_id, e.position)
                 > (case when $1 = 0 then '0'::xid8
                         else eventstore_transaction_at($1) end, $1)
           and e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
           and e.recorded_at >= $3 and e.recorded_at < $4
         order by e.transaction_id, e.position
         limit $2"
    ))
    .bind(after)
    .bind(limit)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?;
    let events: Vec<RecordedEvent> = rows.into_iter().map(RecordedEvent::from).collect();
    let next = events.last().map_or(after, |e| e.position);
    Ok(Page { events, next })
}
