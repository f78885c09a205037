//! Projection checkpoints: the global-log position a projection has applied up to.

use crate::Error;
use sqlx::PgConnection;

/// The position `name` has applied up to; 0 if it has never run (or was reset for a rebuild).
pub async fn load_checkpoint(conn: &mut PgConnection, name: &str) -> Result<i64, Error> {
    let position: Option<i64> =
        sqlx::query_scalar("select position from checkpoints where name = $1")
            .bind(name)
            .fetch_optional(conn)
            .await?;
    Ok(position.unwrap_or(0))
}

/// Stores the position `name` has applied up to. Call it in the transaction that updates the
/// read model, so the model and its checkpoint never disagree.
pub async fn store_checkpoint(
    conn: &mut PgConnection,
    name: &str,
    position: i64,
) -> Result<(), Error> {
    sqlx::query(
        "insert into checkpoints (name, position) values ($1, $2)
         on conflict (name) do update set position = excluded.position, updated_at = now()",
    )
    .bind(name)
    .bind(position)
    .execute(conn)
    .await?;
    Ok(())
}
