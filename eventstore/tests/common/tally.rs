//! The tallies read model the rebuild tests replay: each stream's events counted, in a table
//! `tallies (stream_id text primary key, events bigint)` the test creates.

use eventstore::projection::Projection;
use eventstore::{Error, RecordedEvent};
use sqlx::PgConnection;

/// Counts each stream's events; with `poisoned`, fails on a page holding an event of the
/// `poison` stream.
pub struct Tally {
    pub poisoned: bool,
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
