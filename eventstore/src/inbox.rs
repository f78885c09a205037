//! The consumer inbox: effectively-once processing on top of at-least-once delivery.

use crate::Error;
use sqlx::PgConnection;
use std::collections::HashSet;
use uuid::Uuid;

/// Records that `consumer` processed `message_id`, in the caller's transaction. Returns `false`
/// when the message had been recorded before: the caller skips its effect (and the transaction
/// commits nothing new). Two consumers racing on one message serialise on the inbox row; the
/// second sees the first's commit and gets `false`.
pub async fn record_message(
    conn: &mut PgConnection,
    consumer: &str,
    message_id: Uuid,
) -> Result<bool, Error> {
    let new = record_messages(conn, consumer, &[message_id]).await?;
    Ok(new.first().copied().unwrap_or(false))
}

/// [`record_message`] for each of `message_ids`, in one statement: for each, whether it is new.
/// An id given twice is new the first time at most. The rows are inserted in id order, so that
/// two transactions recording overlapping ids wait for each other instead of deadlocking.
pub async fn record_messages(
    conn: &mut PgConnection,
    consumer: &str,
    message_ids: &[Uuid],
) -> Result<Vec<bool>, Error> {
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "insert into inbox (consumer, message_id)
         select $1, id from unnest($2::uuid[]) id order by id
         on conflict do nothing
         returning message_id",
    )
    .bind(consumer)
    .bind(message_ids)
    .fetch_all(conn)
    .await?;
    let mut inserted: HashSet<Uuid> = inserted.into_iter().collect();
    Ok(message_ids.iter().map(|id| inserted.remove(id)).collect())
}
