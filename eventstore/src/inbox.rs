//! The consumer inbox: effectively-once processing on top of at-least-once delivery.

use crate::Error;
use sqlx::PgConnection;
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
    let inserted = sqlx::query(
        "insert into inbox (consumer, message_id) values ($1, $2) on conflict do nothing",
    )
    .bind(consumer)
    .bind(message_id)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}
