//! What a service keeps only for a while: the inbox (the ids of the messages it processed), the
//! outbox rows the broker confirmed, and the Idempotency-Key claims. Each is needed only as long
//! as its message can come again: a redelivery or a sender's resend after a timeout (the
//! longest a saga waits is minutes), a retried API request. `RETENTION` is far beyond that, and
//! as long as the event topics keep their messages. Events, command outcomes and checkpoints are
//! never pruned.
//!
//! Rows go in small batches, each its own short transaction: a long one would hold back the
//! global log of every service on the server.

use crate::Error;
use sqlx::PgPool;
use std::time::Duration;

/// How long pruned rows are kept: seven days, the event topics' retention.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Rows deleted per statement.
const BATCH: i64 = 5_000;

/// What one pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub inbox: u64,
    pub outbox: u64,
    pub idempotency_keys: u64,
}

/// Deletes the rows older than `retention`: inbox rows by when their message was processed,
/// outbox rows by when the broker confirmed them (never one still to publish), claims by when
/// they were made.
pub async fn prune(pool: &PgPool, retention: Duration) -> Result<Pruned, Error> {
    let seconds = retention.as_secs_f64();
    let batches = |sql: &'static str| async move {
        let mut total = 0;
        loop {
            let deleted = sqlx::query(sql)
                .bind(seconds)
                .bind(BATCH)
                .execute(pool)
                .await?
                .rows_affected();
            total += deleted;
            if deleted < BATCH.unsigned_abs() {
                return Ok::<u64, Error>(total);
            }
        }
    };
    Ok(Pruned {
        inbox: batches(
            "delete from inbox where ctid = any(array(
                 select ctid from inbox
                  where processed_at < now() - make_interval(secs => $1) limit $2))",
        )
        .await?,
        outbox: batches(
            "delete from outbox where id = any(array(
                 select id from outbox
                  where published_at < now() - make_interval(secs => $1) limit $2))",
        )
        .await?,
        idempotency_keys: batches(
            "delete from idempotency_keys where command_id = any(array(
                 select command_id from idempotency_keys
                  where claimed_at < now() - make_interval(secs => $1) limit $2))",
        )
        .await?,
    })
}
