//! Projection rebuild against a raw sequential read of the same events: tracking's read models
//! rebuilt from its log (with the comparison to the live model a rebuild makes), next to one
//! plain `select` of every event's row in log order; alternating round by round.

use super::{Figure, Scale, median};
use eventstore::projection;
use eventstore::{ExpectedVersion, Metadata, NewEvent};
use schemas::Message;
use schemas::events::{TrackingEvent, TrackingEventRecorded};
use schemas::values::TrackingKind;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use std::time::Instant;
use uuid::Uuid;

const DATABASE: &str = "pulsaga_bench_rebuild";

/// Records `count` clicks over a handful of campaigns, a thousand streams per transaction.
async fn fill(pool: &PgPool, count: usize) -> anyhow::Result<()> {
    let campaigns: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
    for chunk in 0..count.div_ceil(1000) {
        let mut tx = pool.begin().await?;
        for n in 0..1000.min(count - chunk * 1000) {
            let tracking_id = Uuid::new_v4();
            let event = TrackingEvent::Recorded(TrackingEventRecorded {
                tracking_id,
                campaign_id: campaigns[n % campaigns.len()],
                partner_id: Uuid::new_v4(),
                kind: TrackingKind::Click,
                order: None,
                occurred_at: 1_790_000_000_000_000,
                refund_of: None,
            });
            let new = NewEvent {
                event_id: Uuid::now_v7(),
                event_type: event.message_type().to_owned(),
                schema_version: TrackingEvent::TOPIC.version() as i32,
                payload: event.encode()?,
                metadata: Metadata::default(),
            };
            eventstore::append(
                &mut tx,
                &format!("tracking-event-{tracking_id}"),
                "tracking-event",
                ExpectedVersion::NoStream,
                &[new],
            )
            .await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Every column of every event, in the global log's order: what a rebuild has to read.
async fn raw_read(pool: &PgPool) -> anyhow::Result<usize> {
    let rows: Vec<sqlx::postgres::PgRow> =
        sqlx::query("select * from events order by transaction_id, position")
            .fetch_all(pool)
            .await?;
    Ok(rows.len())
}

pub async fn measure(server: &PgConnectOptions, scale: Scale) -> anyhow::Result<Vec<Figure>> {
    let (events, rounds) = scale.pick((500, 1), (20_000, 3), (100_000, 5));
    let pool = super::create_database(server, DATABASE).await?;
    messaging::host::migrate(&pool, &tracking::service()).await?;
    fill(&pool, events).await?;
    let views = tracking::projections::TrackingViews;
    projection::catch_up(&pool, &views).await?;
    let (mut rebuilds, mut reads, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut rate = [0.0; 2];
        for which in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            let started = Instant::now();
            let count = if which == 0 {
                let rebuilt = projection::rebuild(&pool, &views, |_| {}).await?;
                anyhow::ensure!(
                    rebuilt.matches,
                    "the rebuilt read model differs from the live one"
                );
                rebuilt.events
            } else {
                raw_read(&pool).await?
            };
            rate[which] = count as f64 / started.elapsed().as_secs_f64();
        }
        rebuilds.push(rate[0]);
        reads.push(rate[1]);
        ratios.push(rate[0] / rate[1]);
    }
    let ratio = median(&mut ratios);
    let mut figure = Figure::info(
        format!("projection rebuild, {events} events"),
        median(&mut rebuilds),
        "events/s",
    )
    .against("raw sequential read", median(&mut reads), "≥ 0.5", |r| {
        r >= 0.5
    });
    figure.ratio = Some(ratio);
    figure.met = Some(ratio >= 0.5);
    super::drop_database(server, pool, DATABASE).await?;
    Ok(vec![figure])
}
