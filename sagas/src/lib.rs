//! The saga coordinator (SPEC §5): saga definitions as pure step functions (`definition`), their
//! log and commands on the wire (`wire`), the durable runtime (`coordinator`: inputs in one
//! transaction each, commands through the outbox, timers in Postgres), the replayer of recorded
//! logs (`replay`) and the query API (`api`).
//! It consumes the four services' event topics and publishes their commands.

pub mod api;
pub mod archive;
pub mod coordinator;
pub mod definition;
pub mod metrics;
pub mod replay;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod wire;

use messaging::host;
use std::time::Duration;

/// The longest the timer task sleeps between two looks at the next due timer: no longer than
/// the shortest timer the definitions set (a refused compensation's first retry, half a 10 s step
/// timeout), so that a timer set while it sleeps does not fire late.
const TIMERS_LONGEST_WAIT: Duration = Duration::from_secs(5);

/// The coordinator: its consumers of the four event topics, the timer worker, the archiver
/// (sagas that ended more than `archive_after` ago) and the query API.
pub fn service(archive_after: Duration) -> host::Service {
    static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!();
    host::Service::new("sagas", &MIGRATIONS, move |tasks| {
        let (pool, stop) = (tasks.pool().clone(), tasks.shutdown().clone());
        let timers = {
            let (pool, stop, handoff) = (pool.clone(), stop.clone(), tasks.handoff().clone());
            async move {
                let stopped = stop.cancelled();
                coordinator::run_timers(&pool, Some(&handoff), TIMERS_LONGEST_WAIT, stopped).await;
                Ok(())
            }
        };
        let archiver = {
            let pool = pool.clone();
            async move {
                archive::run(&pool, archive_after, stop.cancelled()).await;
                Ok(())
            }
        };
        tasks
            .metrics()
            .register(|registry| metrics::SAGAS.register(registry));
        tasks
            .consume(coordinator::TrackingReplies)
            .consume(coordinator::CampaignsReplies)
            .consume(coordinator::CommissionsReplies)
            .consume(coordinator::PaymentsReplies)
            .spawn(timers)
            .spawn(archiver);
        Ok(api::router(pool))
    })
}
