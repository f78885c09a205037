//! Snapshots of long streams: a state folded up to a version, kept so that loading a stream of
//! 200,000 events reads one row and the events after it. One snapshot per stream, the latest;
//! the owner encodes the state and names the encoding (`kind`), and takes a snapshot in the
//! transaction that appends, so it never runs ahead of the events.

use crate::Error;
use sqlx::PgConnection;

/// A stream's snapshot: the state it encodes is the stream folded up to `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub version: i64,
    pub state: Vec<u8>,
}

/// The stream's latest snapshot of `kind`, if there is one.
pub async fn load(
    conn: &mut PgConnection,
    stream_id: &str,
    kind: &str,
) -> Result<Option<Snapshot>, Error> {
    let row: Option<(i64, Vec<u8>)> =
        sqlx::query_as("select version, state from snapshots where stream_id = $1 and kind = $2")
            .bind(stream_id)
            .bind(kind)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(version, state)| Snapshot { version, state }))
}

/// Keeps `state`, the stream folded up to `version`, as its snapshot of `kind`, unless one of
/// that kind at a later version is kept already.
pub async fn store(
    conn: &mut PgConnection,
    stream_id: &str,
    kind: &str,
    version: i64,
    state: &[u8],
) -> Result<(), Error> {
    sqlx::query(
        "insert into snapshots (stream_id, kind, version, state) values ($1, $2, $3, $4)
         on conflict (stream_id) do update
            set kind = excluded.kind, version = excluded.version, state = excluded.state,
                taken_at = now()
          where snapshots.kind <> excluded.kind or snapshots.version < excluded.version",
    )
    .bind(stream_id)
    .bind(kind)
    .bind(version)
    .bind(state)
    .execute(conn)
    .await?;
    Ok(())
}
