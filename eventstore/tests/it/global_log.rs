//! The global log: pages, cursors, and the guarantee that a follower never skips an event whose
//! transaction commits late — shown next to a naive position cursor that does skip them.

use super::{event, log_settled, store};
use eventstore::{Error, ExpectedVersion, append, read_all};
use sqlx::{PgPool, Row};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

const WRITERS: usize = 16;
const COMMITS_PER_WRITER: usize = 60;
/// One commit in this many is held open after its append, so later-numbered events commit first.
const DELAY_ONE_IN: usize = 20;
const DELAY: Duration = Duration::from_millis(40);
const PAGE: i64 = 50;
const IDLE_POLL: Duration = Duration::from_millis(2);

/// How a follower reads the next page after a cursor: (event ids, new cursor).
#[derive(Debug, Clone, Copy)]
enum Follower {
    GapSafe,
    NaivePosition,
}

impl Follower {
    async fn page(self, pool: &PgPool, after: i64) -> (Vec<Uuid>, i64) {
        let mut conn = pool.acquire().await.expect("connection");
        match self {
            Follower::GapSafe => {
                let page = read_all(&mut conn, after, PAGE).await.expect("read_all");
                (page.events.iter().map(|e| e.event_id).collect(), page.next)
            }
            Follower::NaivePosition => {
                let rows = sqlx::query(
                    "select position, event_id from events where position > $1 order by position limit $2",
                )
                .bind(after)
                .bind(PAGE)
                .fetch_all(&mut *conn)
                .await
                .expect("naive read");
                let next = rows.last().map_or(after, |r| r.get::<i64, _>("position"));
                (rows.iter().map(|r| r.get("event_id")).collect(), next)
            }
        }
    }

    /// Follows the log until the writers are done and a page comes back empty; returns what it saw.
    async fn follow(self, pool: PgPool, writers_done: Arc<AtomicBool>) -> HashSet<Uuid> {
        let mut seen = HashSet::new();
        let mut cursor = 0;
        loop {
            // Caught up means: the writers are done, and (for the gap-safe reader) every commit
            // is below the bound it reads to, checked before the page that comes back empty.
            let done = writers_done.load(Ordering::Acquire)
                && (matches!(self, Follower::NaivePosition) || log_settled(&pool).await);
            let (ids, next) = self.page(&pool, cursor).await;
            cursor = next;
            if ids.is_empty() {
                if done {
                    return seen;
                }
                tokio::time::sleep(IDLE_POLL).await;
            }
            for id in ids {
                assert!(seen.insert(id), "{self:?} read event {id} twice");
            }
        }
    }
}

#[sqlx::test(migrations = false)]
async fn followers_never_skip_late_commits_unlike_a_position_cursor(db: PgPool) {
    let pool = store(db, WRITERS as u32 + 4).await;
    let writers_done = Arc::new(AtomicBool::new(false));
    let followers: Vec<_> = [Follower::GapSafe, Follower::NaivePosition]
        .into_iter()
        .map(|follower| {
            (
                follower,
                tokio::spawn(follower.follow(pool.clone(), writers_done.clone())),
            )
        })
        .collect();

    // One late commit for certain, so that the control below does not rest on chance alone: an
    // event appended first is committed only after a later-numbered one was committed, and the
    // followers (polling every few milliseconds) have had time to read past it.
    let mut late = pool.begin().await.expect("begin");
    append(
        &mut late,
        "late",
        "late",
        ExpectedVersion::Any,
        &[event("Late", b"l")],
    )
    .await
    .expect("append");
    let mut conn = pool.acquire().await.expect("connection");
    append(
        &mut conn,
        "early",
        "early",
        ExpectedVersion::Any,
        &[event("Early", b"e")],
    )
    .await
    .expect("append");
    drop(conn);
    tokio::time::sleep(Duration::from_millis(300)).await;
    late.commit().await.expect("commit");

    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let pool = pool.clone();
        writers.push(tokio::spawn(async move {
            for n in 0..COMMITS_PER_WRITER {
                let mut tx = pool.begin().await.expect("begin");
                let stream = format!("writer-{writer}");
                append(
                    &mut tx,
                    &stream,
                    "writer",
                    ExpectedVersion::Any,
                    &[event("Wrote", b"x"), event("Wrote", b"y")],
                )
                .await
                .expect("append");
                if (writer * COMMITS_PER_WRITER + n).is_multiple_of(DELAY_ONE_IN) {
                    tokio::time::sleep(DELAY).await;
                }
                tx.commit().await.expect("commit");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    writers_done.store(true, Ordering::Release);

    let committed: HashSet<Uuid> = sqlx::query_scalar("select event_id from events")
        .fetch_all(&pool)
        .await
        .expect("all events")
        .into_iter()
        .collect();
    assert_eq!(committed.len(), WRITERS * COMMITS_PER_WRITER * 2 + 2);
    for (follower, task) in followers {
        let seen = task.await.expect("follower");
        assert!(seen.is_subset(&committed));
        let skipped = committed.len() - seen.len();
        match follower {
            Follower::GapSafe => assert_eq!(skipped, 0, "the gap-safe follower skipped events"),
            // The negative control: the same workload does make a position cursor skip events,
            // so the assertion above can fail.
            Follower::NaivePosition => assert!(
                skipped > 0,
                "the naive follower should have skipped late commits"
            ),
        }
    }
}

#[sqlx::test(migrations = false)]
async fn the_log_pages_by_cursor_and_rejects_unknown_positions(db: PgPool) {
    let pool = store(db, 2).await;
    let mut conn = pool.acquire().await.expect("connection");
    for stream in ["a", "b", "c"] {
        append(
            &mut conn,
            stream,
            "letter",
            ExpectedVersion::NoStream,
            &[event("One", b"1"), event("Two", b"2")],
        )
        .await
        .expect("append");
    }
    // A rolled-back append uses up positions that never become events.
    let mut tx = pool.begin().await.expect("begin");
    append(
        &mut tx,
        "d",
        "letter",
        ExpectedVersion::NoStream,
        &[event("Gone", b"0")],
    )
    .await
    .expect("append");
    drop(tx);
    append(
        &mut conn,
        "e",
        "letter",
        ExpectedVersion::NoStream,
        &[event("Last", b"9")],
    )
    .await
    .expect("append");

    let deadline = Instant::now() + Duration::from_secs(30);
    while !log_settled(&pool).await {
        assert!(
            Instant::now() < deadline,
            "a transaction on the server never ended"
        );
        tokio::time::sleep(IDLE_POLL).await;
    }
    let mut cursor = 0;
    let mut streams = Vec::new();
    loop {
        let page = read_all(&mut conn, cursor, 2).await.expect("page");
        if page.events.is_empty() {
            assert_eq!(page.next, cursor, "an empty page keeps the cursor");
            break;
        }
        assert!(page.events.len() <= 2);
        streams.extend(page.events.iter().map(|e| e.stream_id.clone()));
        cursor = page.next;
    }
    assert_eq!(streams, ["a", "a", "b", "b", "c", "c", "e"]);

    let gone: i64 = sqlx::query_scalar("select max(position) - 1 from events")
        .fetch_one(&mut *conn)
        .await
        .expect("gap");
    assert!(
        matches!(read_all(&mut conn, gone, 10).await, Err(Error::UnknownPosition(p)) if p == gone)
    );
    assert!(matches!(
        read_all(&mut conn, 10_000, 10).await,
        Err(Error::UnknownPosition(10_000))
    ));
}
