//! Event-store append against its physical limit: `eventstore::append` next to a plain INSERT of
//! the same rows into a table with the same columns and indexes, durable commits, 1 and 8
//! clients, single events and batches of 10; variants alternate round by round on one database.

use super::{Figure, Scale, median};
use eventstore::{ExpectedVersion, Metadata, NewEvent, append};
use sqlx::postgres::PgConnectOptions;
use sqlx::{PgConnection, PgPool};
use std::time::{Duration, Instant};
use uuid::Uuid;

const DATABASE: &str = "pulsaga_bench_append";

#[derive(Debug, Clone, Copy)]
struct Scenario {
    clients: usize,
    batch: usize,
    goal: f64,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        clients: 1,
        batch: 1,
        goal: 0.9,
    },
    Scenario {
        clients: 8,
        batch: 1,
        goal: 0.8,
    },
    Scenario {
        clients: 1,
        batch: 10,
        goal: 0.8,
    },
    Scenario {
        clients: 8,
        batch: 10,
        goal: 0.8,
    },
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Variant {
    Append,
    PlainInsert,
}

fn batch_of(size: usize) -> Vec<NewEvent> {
    (0..size)
        .map(|n| NewEvent {
            event_id: Uuid::new_v4(),
            event_type: "TrackingEventRecorded".into(),
            schema_version: 1,
            payload: vec![n as u8; 120],
            metadata: Metadata {
                message_id: Some(Uuid::new_v4()),
                correlation_id: Some(Uuid::new_v4()),
                causation_id: Some(Uuid::new_v4()),
                saga_id: None,
                tenant: Some("advertiser-1".into()),
                actor: Some("bench".into()),
                traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            },
        })
        .collect()
}

/// The same rows as `append` writes, by the plainest statement that writes them.
async fn plain_insert(
    conn: &mut PgConnection,
    stream_id: &str,
    first_version: i64,
    events: &[NewEvent],
) {
    sqlx::query(
        "insert into plain_events (stream_id, stream_type, version, event_id, event_type, schema_version,
                                   payload, message_id, correlation_id, causation_id, saga_id, tenant, actor,
                                   traceparent)
         select $1, 'bench', $2 + n.ord - 1, n.event_id, n.event_type, n.schema_version, n.payload,
                n.message_id, n.correlation_id, n.causation_id, n.saga_id, n.tenant, n.actor, n.traceparent
           from unnest($3::uuid[], $4::text[], $5::int[], $6::bytea[], $7::uuid[], $8::uuid[], $9::uuid[],
                       $10::uuid[], $11::text[], $12::text[], $13::text[])
                with ordinality as n (event_id, event_type, schema_version, payload, message_id,
                                      correlation_id, causation_id, saga_id, tenant, actor, traceparent, ord)",
    )
    .bind(stream_id)
    .bind(first_version)
    .bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.event_type.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.schema_version).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.payload.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.metadata.message_id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.metadata.correlation_id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.metadata.causation_id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.metadata.saga_id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.metadata.tenant.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.metadata.actor.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.metadata.traceparent.clone()).collect::<Vec<_>>())
    .execute(conn)
    .await
    .expect("plain insert during the bench");
}

/// One client writing to its own stream for `duration`; returns the events it wrote.
async fn client(pool: PgPool, variant: Variant, batch: usize, duration: Duration) -> u64 {
    let mut conn = pool.acquire().await.expect("connection");
    let stream_id = Uuid::new_v4().to_string();
    let mut version = 0;
    let mut written = 0;
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let events = batch_of(batch);
        match variant {
            Variant::Append => {
                let expected = if version == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(version)
                };
                version = append(&mut conn, &stream_id, "bench", expected, &events)
                    .await
                    .expect("append during the bench")
                    .version();
            }
            Variant::PlainInsert => {
                plain_insert(&mut conn, &stream_id, version + 1, &events).await;
                version += batch as i64;
            }
        }
        written += batch as u64;
    }
    written
}

async fn events_per_second(
    pool: &PgPool,
    variant: Variant,
    scenario: Scenario,
    duration: Duration,
) -> f64 {
    let clients: Vec<_> = (0..scenario.clients)
        .map(|_| tokio::spawn(client(pool.clone(), variant, scenario.batch, duration)))
        .collect();
    let mut total = 0;
    for client in clients {
        total += client.await.expect("client");
    }
    total as f64 / duration.as_secs_f64()
}

pub async fn measure(server: &PgConnectOptions, scale: Scale) -> anyhow::Result<Vec<Figure>> {
    let (rounds, duration) = scale.pick(
        (1, Duration::from_millis(100)),
        (3, Duration::from_millis(700)),
        (7, Duration::from_secs(2)),
    );
    let pool = super::create_database(server, DATABASE).await?;
    eventstore::migrate(&pool).await?;
    // Same columns, defaults, identity and indexes as events; no function.
    sqlx::raw_sql("create table plain_events (like events including all)")
        .execute(&pool)
        .await?;
    let mut figures = Vec::new();
    for scenario in SCENARIOS {
        let (mut appends, mut plains, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate which variant goes first, so drift in the machine favours neither.
            let order = if round % 2 == 0 {
                [Variant::Append, Variant::PlainInsert]
            } else {
                [Variant::PlainInsert, Variant::Append]
            };
            let mut rate = [0.0; 2];
            for variant in order {
                rate[variant as usize] =
                    events_per_second(&pool, variant, scenario, duration).await;
            }
            appends.push(rate[0]);
            plains.push(rate[1]);
            ratios.push(rate[0] / rate[1]);
        }
        let ratio = median(&mut ratios);
        let (append_rate, plain_rate) = (median(&mut appends), median(&mut plains));
        let mut figure = Figure::info(
            format!(
                "append, {} client(s), batch of {}",
                scenario.clients, scenario.batch
            ),
            append_rate,
            "events/s",
        )
        .against(
            "plain INSERT",
            plain_rate,
            &format!("≥ {:.1}", scenario.goal),
            |r| r >= scenario.goal,
        );
        // The median of the per-round ratios, not the ratio of the medians.
        figure.ratio = Some(ratio);
        figure.met = Some(ratio >= scenario.goal);
        figures.push(figure);
    }
    super::drop_database(server, pool, DATABASE).await?;
    Ok(figures)
}
