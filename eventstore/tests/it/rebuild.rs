//! A rebuild that fails part way: the live read model stays as it was, and the projection's lock
//! and the connection that read ahead are free for the next rebuild.

use super::{event, log_settled, store};
use eventstore::projection::{self, Projection};
use eventstore::{Error, ExpectedVersion, RecordedEvent};
use sqlx::{PgConnection, PgPool};
use std::time::Duration;

/// Counts each stream's events; with `poisoned`, fails on a page holding an event of the
/// `poison` stream.
struct Tally {
    poisoned: bool,
}

impl Projection for Tally {
    fn name(&self) -> &'static str {
        "tally"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["tallies"]
    }

    async fn apply_page(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), Error> {
        if self.poisoned && events.iter().any(|e| e.stream_id == "poison") {
            sqlx::query("select 1 / 0").execute(&mut *tx).await?;
        }
        sqlx::query(
            "insert into tallies (stream_id, events)
             select stream_id, count(*) from unnest($1::text[]) as e (stream_id) group by 1
             on conflict (stream_id) do update set events = tallies.events + excluded.events",
        )
        .bind(
            events
                .iter()
                .map(|e| e.stream_id.clone())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

async fn tallies(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("select stream_id, events from tallies order by 1")
        .fetch_all(pool)
        .await
        .expect("tallies")
}

#[sqlx::test(migrations = false)]
async fn a_rebuild_that_fails_leaves_the_live_model_and_frees_the_projection(db: PgPool) {
    let pool = store(db, 4).await;
    sqlx::raw_sql("create table tallies (stream_id text primary key, events bigint not null)")
        .execute(&pool)
        .await
        .expect("tallies");
    // The poison early in a log of many pages, so that the page after it is read while it fails.
    let mut conn = pool.acquire().await.expect("connection");
    for (stream, count) in [("first", 500), ("poison", 1), ("rest", 9_000)] {
        let events: Vec<_> = (0..count).map(|_| event("Counted", b"x")).collect();
        eventstore::append(
            &mut conn,
            stream,
            "tally",
            ExpectedVersion::NoStream,
            &events,
        )
        .await
        .expect("append");
    }
    while !log_settled(&pool).await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    projection::catch_up(&pool, &Tally { poisoned: false })
        .await
        .expect("live model");
    let live = tallies(&pool).await;

    let failed = projection::rebuild(&pool, &Tally { poisoned: true }, |_| {}).await;
    assert!(matches!(failed, Err(Error::Database(_))), "{failed:?}");
    assert_eq!(tallies(&pool).await, live, "the live model is untouched");

    // Held by the failed rebuild, the lock would keep this one waiting.
    let rebuilt = tokio::time::timeout(
        Duration::from_secs(30),
        projection::rebuild(&pool, &Tally { poisoned: false }, |_| {}),
    )
    .await
    .expect("the projection's lock is free")
    .expect("the next rebuild runs");
    assert!(rebuilt.matches, "{rebuilt:?}");
    assert_eq!(rebuilt.events, 9_501);
    assert_eq!(tallies(&pool).await, live);
}
