//! Projections: read models fed from the service's global log, each with its checkpoint.
//!
//! A projection applies events in global-log order; the read model's changes and the checkpoint
//! commit together, so a crash never applies an event twice or skips one. Several instances of a
//! service may run the same projection: a transaction-scoped advisory lock on its name lets one
//! batch run at a time. A rebuild replays the log from zero into copies of the read model's
//! tables, in short transactions, compares what it built with what was live inside PostgreSQL
//! (their rows' hashes, then row for row where they differ or cannot be hashed), and swaps the
//! copies in (see [`rebuild`]). The copies' secondary (non-unique) indexes are built once at the
//! end, which costs a third of keeping them up to date row by row; unique ones stay, for the
//! lookups and the upserts of `apply`.

use crate::{Error, RecordedEvent, load_checkpoint, read_all, store_checkpoint};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use std::future::Future;
use std::time::Duration;

/// A read model built from the global log, held in `tables` and nowhere else.
pub trait Projection: Send + Sync {
    /// Names the checkpoint and the lock.
    fn name(&self) -> &'static str;

    /// Every table of the read model: a rebuild empties them and compares them with the live ones.
    /// While it replays, they have no secondary indexes: `apply` finds rows by a unique key.
    fn tables(&self) -> &'static [&'static str];

    /// Applies one event (ignoring the kinds it does not use) inside the batch's transaction. A
    /// projection implements this or [`apply_page`](Self::apply_page); each defaults to the other.
    fn apply(
        &self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        self.apply_page(tx, std::slice::from_ref(event))
    }

    /// Applies a page of consecutive events, in log order. By default one at a time; a projection
    /// that can fold a page in memory and write it in a few statements implements this instead.
    fn apply_page(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> impl Future<Output = Result<(), Error>> + Send {
        async move {
            for event in events {
                self.apply(tx, event).await?;
            }
            Ok(())
        }
    }
}

/// Events per transaction when keeping up with the log.
const BATCH: i64 = 500;

/// How long a woken projection lets commits gather before it applies them: each batch takes the
/// projection's lock and stores its checkpoint, so under load a batch per commit costs the
/// database more than this much lag in the read model costs its readers.
pub const GATHER: Duration = Duration::from_millis(50);
/// Events per page, and per transaction, when rebuilding.
const REBUILD_PAGE: i64 = 2000;

/// Applies the next batch of events after the checkpoint; returns how many it applied (0: caught
/// up, or another instance holds the batch).
pub async fn apply_batch<P: Projection>(pool: &PgPool, projection: &P) -> Result<usize, Error> {
    Ok(try_batch(pool, projection).await?.unwrap_or(0))
}

/// [`apply_batch`]; `None` when another instance holds the batch.
async fn try_batch<P: Projection>(pool: &PgPool, projection: &P) -> Result<Option<usize>, Error> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("select pg_try_advisory_xact_lock(hashtext($1))")
        .bind(projection.name())
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(None);
    }
    let after = load_checkpoint(&mut tx, projection.name()).await?;
    let page = read_all(&mut tx, after, BATCH).await?;
    projection.apply_page(&mut tx, &page.events).await?;
    if !page.events.is_empty() {
        store_checkpoint(&mut tx, projection.name(), page.next).await?;
    }
    tx.commit().await?;
    Ok(Some(page.events.len()))
}

/// How far a projection is behind the log.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Lag {
    /// Committed events it has not applied.
    pub events: i64,
    /// How long ago the oldest of them was recorded (0 when caught up).
    pub seconds: f64,
}

/// How far `name` is behind the log: the committed events after its checkpoint, and the age of
/// the oldest.
pub async fn lag(conn: &mut PgConnection, name: &str) -> Result<Lag, Error> {
    let after = load_checkpoint(conn, name).await?;
    let (events, seconds): (i64, Option<f64>) = sqlx::query_as(
        "select count(*), extract(epoch from clock_timestamp() - min(e.recorded_at))::float8
           from events e
          where (e.transaction_id, e.position)
                > (case when $1 = 0 then '0'::xid8
                        else eventstore_transaction_at($1) end, $1)
            and e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())",
    )
    .bind(after)
    .fetch_one(conn)
    .await?;
    Ok(Lag {
        events,
        seconds: seconds.unwrap_or(0.0).max(0.0),
    })
}

/// Applies batches until the projection has caught up with the log; returns the events applied.
pub async fn catch_up<P: Projection>(pool: &PgPool, projection: &P) -> Result<usize, Error> {
    let mut total = 0;
    loop {
        let applied = apply_batch(pool, projection).await?;
        total += applied;
        if applied == 0 {
            return Ok(total);
        }
    }
}

/// Keeps the projection up to date until `stop` resolves. Caught up (a batch short of `BATCH`
/// took every event there was), it waits for `wakeup` (the outbox's notification,
/// `outbox::CHANNEL`, and the process's own handoffs, `outbox::HANDED`), or `idle` at most: a
/// service's transactions that append events also queue them for publishing, so those are
/// theirs too. (A notification of its own on every append would cost more than the polling it
/// saves: PostgreSQL serializes the commits of all transactions that notify, and concurrent
/// appends then lose half their throughput.) Woken, it lets the commits of the next [`GATHER`]
/// come too, and applies them in one batch. While another instance holds the batch, it looks
/// again every [`GATHER`].
///
/// A page that fails is logged and tried again after a growing pause, up to `MAX_RETRY_PAUSE`:
/// the read model falls behind, but the service goes on taking commands, and the projection
/// catches up once the database is back (or the fault is fixed and the process restarted).
pub async fn run<P: Projection>(
    pool: &PgPool,
    projection: &P,
    mut wakeup: crate::Wakeup,
    idle: Duration,
    stop: impl Future<Output = ()>,
) -> Result<(), Error> {
    tokio::pin!(stop);
    let mut failures = 0u32;
    loop {
        match try_batch(pool, projection).await {
            Ok(Some(applied)) => {
                failures = 0;
                if applied as i64 >= BATCH {
                    continue;
                }
                tokio::select! {
                    _ = &mut stop => return Ok(()),
                    _ = async {
                        wakeup.wait(idle).await;
                        tokio::time::sleep(GATHER).await;
                    } => {}
                }
            }
            Ok(None) => {
                // Another instance applies a batch, perhaps read before the commits that woke
                // this one, whose process alone was woken by them (`outbox::HANDED`): look again.
                failures = 0;
                tokio::select! {
                    _ = &mut stop => return Ok(()),
                    _ = tokio::time::sleep(GATHER) => {}
                }
            }
            Err(error) => {
                failures += 1;
                let pause = MAX_RETRY_PAUSE.min(idle.saturating_mul(1 << failures.min(16)));
                tracing::error!(projection = projection.name(), failures, ?pause, %error, "projection failed; retrying");
                tokio::select! {
                    _ = &mut stop => return Ok(()),
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// The longest pause before a failed projection page is tried again.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(30);

/// What a rebuild found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuild {
    /// Events replayed.
    pub events: usize,
    /// Whether the rebuilt read model equals the one that was live.
    pub matches: bool,
    /// Rows only in the live model, and rows only in the rebuilt one (at most a few of each per
    /// table), each as `table (columns…)`.
    pub only_live: Vec<String>,
    pub only_rebuilt: Vec<String>,
}

/// Rebuilds the read model from zero beside the live one and swaps it in, comparing the two up to
/// the same position first.
///
/// The live projection is paused for the while (a session-level hold on its lock, which its
/// batches only try), so the live tables stay as they were and readers go on reading them. The
/// rebuild replays the log into copies of the tables in a schema of its own, one page per short
/// transaction, with `search_path` pointing there, so that `apply` writes the copies without
/// knowing. (One long transaction would hold back the global log of every service on the
/// server for as long as it ran: the log is read only up to the oldest running transaction.)
/// The copies have no secondary indexes while they fill; they are built once at the end. Then,
/// in one transaction, the live tables are dropped and the copies moved in. A rebuild that fails
/// leaves the live model untouched, and the next one clears its schema. `progress` is called with
/// the number of events replayed so far.
pub async fn rebuild<P: Projection>(
    pool: &PgPool,
    projection: &P,
    mut progress: impl FnMut(usize) + Send,
) -> Result<Rebuild, Error> {
    let mut hold = pool.acquire().await?;
    sqlx::query("select pg_advisory_lock(hashtext($1))")
        .bind(projection.name())
        .execute(&mut *hold)
        .await?;
    let rebuilt = replay_beside(pool, projection, &mut hold, &mut progress).await;
    // Released whatever happened; the lock would otherwise go with the connection only.
    sqlx::query("select pg_advisory_unlock(hashtext($1))")
        .bind(projection.name())
        .execute(&mut *hold)
        .await?;
    rebuilt
}

/// The schema a projection's rebuild fills; its name is the projection's, made an identifier.
fn rebuild_schema(projection: &str) -> String {
    let name: String = projection
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("pulsaga_rebuild_{name}")
}

/// Replays the log into copies of the projection's tables and swaps them in. Pages are read on
/// `reader` (the connection that holds the projection's lock) while the page before is applied
/// on another, so the server reads the log and writes the copies side by side.
async fn replay_beside<P: Projection>(
    pool: &PgPool,
    projection: &P,
    reader: &mut PgConnection,
    progress: &mut (impl FnMut(usize) + Send),
) -> Result<Rebuild, Error> {
    let schema = rebuild_schema(projection.name());
    let mut conn = pool.acquire().await?;
    let live_position = load_checkpoint(&mut conn, projection.name()).await?;
    let secondary = create_copies(&mut conn, &schema, projection.tables()).await?;
    let (pages, mut replay) = tokio::sync::mpsc::channel::<Vec<RecordedEvent>>(1);
    let read = async move {
        let mut after = 0;
        while after != live_position {
            let page = read_all(reader, after, REBUILD_PAGE).await?;
            if page.events.is_empty() {
                break;
            }
            let mut events = page.events;
            // Stop at the live model's position, which may fall inside the page.
            if let Some(i) = events.iter().position(|e| e.position == live_position) {
                events.truncate(i + 1);
            }
            after = events.last().map_or(page.next, |e| e.position);
            if pages.send(events).await.is_err() {
                break;
            }
        }
        Ok::<_, Error>(after)
    };
    let write = async {
        let mut events = 0;
        while let Some(page) = replay.recv().await {
            let mut tx = Connection::begin(&mut *conn).await?;
            sqlx::raw_sql(AssertSqlSafe(format!(
                "set local search_path = {schema}, public"
            )))
            .execute(&mut *tx)
            .await?;
            projection.apply_page(&mut tx, &page).await?;
            tx.commit().await?;
            events += page.len();
            progress(events);
        }
        Ok::<_, Error>(events)
    };
    let (after, events) = tokio::try_join!(read, write)?;
    for definition in secondary {
        sqlx::query(AssertSqlSafe(definition))
            .execute(&mut *conn)
            .await?;
    }
    swap_in(&mut conn, &schema, projection, after, events).await
}

/// Empty copies of the live `tables` in `schema`, with the live unique indexes (under their live
/// names: names are per schema, so they can while the copies are beside the live tables);
/// returns the definitions of the secondary indexes, to build once the rows are in.
async fn create_copies(
    conn: &mut PgConnection,
    schema: &str,
    tables: &[&str],
) -> Result<Vec<String>, Error> {
    sqlx::raw_sql(AssertSqlSafe(format!(
        "drop schema if exists {schema} cascade; create schema {schema};"
    )))
    .execute(&mut *conn)
    .await?;
    for table in tables {
        let sql = format!("create table {schema}.{table} (like public.{table} including all)");
        sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await?;
    }
    let indexes = |schema: &str| {
        sqlx::query_as::<_, (String, String, bool)>(
            "select c.relname::text, pg_get_indexdef(i.indexrelid), i.indisunique
               from pg_index i join pg_class c on c.oid = i.indexrelid
              where i.indrelid = any($1::text[]::regclass[])",
        )
        .bind(
            tables
                .iter()
                .map(|table| format!("{schema}.{table}"))
                .collect::<Vec<_>>(),
        )
    };
    let live_indexes = indexes("public").fetch_all(&mut *conn).await?;
    for (copy, definition, unique) in indexes(schema).fetch_all(&mut *conn).await? {
        let live = live_indexes
            .iter()
            .find(|(_, live, _)| unnamed(live) == unnamed(&definition))
            .map(|(name, _, _)| name.as_str());
        let sql = match (unique, live) {
            (true, Some(live)) if live != copy => {
                format!("alter index {schema}.{copy} rename to {live}")
            }
            (true, _) => continue,
            (false, _) => format!("drop index {schema}.{copy}"),
        };
        sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await?;
    }
    Ok(live_indexes
        .iter()
        .filter(|(_, _, unique)| !unique)
        .map(|(_, definition, _)| definition.replacen(" ON public.", &format!(" ON {schema}."), 1))
        .collect())
}

/// Compares the copies in `schema` with the live tables, then puts the copies in their place and
/// the checkpoint at `after`, in one transaction.
async fn swap_in<P: Projection>(
    conn: &mut PgConnection,
    schema: &str,
    projection: &P,
    after: i64,
    events: usize,
) -> Result<Rebuild, Error> {
    let tables = projection.tables();
    let mut tx = Connection::begin(&mut *conn).await?;
    // Room for the comparison to hash both models in memory instead of sorting them on disk.
    sqlx::raw_sql("set local work_mem = '64MB'")
        .execute(&mut *tx)
        .await?;
    let (mut only_live, mut only_rebuilt) = (Vec::new(), Vec::new());
    for table in tables {
        let (live, copy) = (format!("public.{table}"), format!("{schema}.{table}"));
        if same_rows(&mut tx, &live, &copy).await? {
            continue;
        }
        only_live.extend(rows_missing(&mut tx, table, &live, &copy).await?);
        only_rebuilt.extend(rows_missing(&mut tx, table, &copy, &live).await?);
    }
    for table in tables {
        let sql =
            format!("drop table public.{table}; alter table {schema}.{table} set schema public");
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *tx).await?;
    }
    sqlx::raw_sql(AssertSqlSafe(format!("drop schema {schema}")))
        .execute(&mut *tx)
        .await?;
    store_checkpoint(&mut tx, projection.name(), after).await?;
    tx.commit().await?;
    Ok(Rebuild {
        events,
        matches: only_live.is_empty() && only_rebuilt.is_empty(),
        only_live,
        only_rebuilt,
    })
}

/// An index definition without its name and its table's schema, to match a copy's index with
/// the live one it copies.
fn unnamed(definition: &str) -> String {
    let Some((head, tail)) = definition.split_once(" ON ") else {
        return definition.to_owned();
    };
    let kind = head.rsplit_once(' ').map_or(head, |(kind, _)| kind);
    let tail = tail.split_once('.').map_or(tail, |(_, table)| table);
    format!("{kind} ON {tail}")
}

/// Whether tables `a` and `b` hold the same rows, by their counts and the sums of their rows'
/// 64-bit hashes: a scan of each, where telling which rows differ builds a hash table of one to
/// probe with the other, both ways (on 100,000 rows, 33 ms against 86 ms a way). Equal sums of
/// different rows would take a collision of 64-bit hashes. A table with a column of a type
/// PostgreSQL cannot hash (`money`, `tsvector`, `bit`…) is not known to be the same: its rows
/// are compared one by one.
async fn same_rows(tx: &mut PgConnection, a: &str, b: &str) -> Result<bool, Error> {
    let sql = format!(
        "select (select (count(*), sum(hash_record_extended(t, 0))) from {a} t)
                is not distinct from
                (select (count(*), sum(hash_record_extended(t, 0))) from {b} t)"
    );
    let mut hashed = Connection::begin(&mut *tx).await?;
    match sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_one(&mut *hashed)
        .await
    {
        Ok(same) => {
            hashed.commit().await?;
            Ok(same)
        }
        Err(error) if no_hash_function(&error) => {
            hashed.rollback().await?;
            Ok(false)
        }
        Err(error) => Err(error.into()),
    }
}

/// Whether `error` is PostgreSQL's "could not identify an extended hash function for type …".
fn no_hash_function(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "42883")
}

/// Up to five rows of `from` that `other` lacks (counting duplicates), labelled with `table`.
async fn rows_missing(
    tx: &mut PgConnection,
    table: &str,
    from: &str,
    other: &str,
) -> Result<Vec<String>, Error> {
    let sql = format!(
        "select $1 || ' ' || d::text from (table {from} except all table {other}) d
         order by 1 limit 5"
    );
    Ok(sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(table)
        .fetch_all(tx)
        .await?)
}
