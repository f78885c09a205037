//! Pruning: old inbox rows, old published outbox rows and old Idempotency-Key claims go; recent
//! ones, and outbox rows still to publish however old, stay.

use super::store;
use eventstore::prune::{Pruned, prune};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

#[sqlx::test(migrations = false)]
async fn pruning_removes_only_what_is_older_than_the_retention(db: PgPool) {
    let pool = store(db, 2).await;
    let day = |n: i32| format!("now() - interval '{n} days'");
    for (age, n) in [(10, 3), (1, 2)] {
        for _ in 0..n {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "insert into inbox (consumer, message_id, processed_at) values ('c', $1, {})",
                day(age)
            )))
            .bind(Uuid::new_v4())
            .execute(&pool)
            .await
            .expect("inbox");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "insert into idempotency_keys (command_id, fingerprint, claimed_at)
                 values ($1, $1, {})",
                day(age)
            )))
            .bind(Uuid::new_v4())
            .execute(&pool)
            .await
            .expect("claim");
        }
    }
    // Published long ago, published lately, and never published though created long ago.
    for published in [Some(day(10)), Some(day(1)), None] {
        let published = published.unwrap_or_else(|| "null".into());
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "insert into outbox (topic, key, payload, created_at, published_at)
             values ('t', 'k', '\\x00', {}, {published})",
            day(10)
        )))
        .execute(&pool)
        .await
        .expect("outbox");
    }

    let week = Duration::from_secs(7 * 24 * 3600);
    let pruned = prune(&pool, week).await.expect("prune");
    assert_eq!(
        pruned,
        Pruned {
            inbox: 3,
            outbox: 1,
            idempotency_keys: 3,
        }
    );
    let left = |table: &str| {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
            .fetch_one(&pool)
    };
    assert_eq!(left("inbox").await.expect("inbox"), 2);
    assert_eq!(left("idempotency_keys").await.expect("claims"), 2);
    let pending: i64 = sqlx::query_scalar("select count(*) from outbox where published_at is null")
        .fetch_one(&pool)
        .await
        .expect("outbox");
    assert_eq!((left("outbox").await.expect("outbox"), pending), (2, 1));
    assert_eq!(prune(&pool, week).await.expect("again"), Pruned::default());
}
