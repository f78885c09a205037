//! `pulsaga replay <service>`: rebuilds read models from the event store with a progress bar, and
//! checks that each rebuilt model equals the live one.

use crate::Service;
use crate::settings::Infrastructure;
use anyhow::bail;
use eventstore::projection::{self, Projection, Rebuild};
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;

pub async fn replay(
    service: Service,
    database: &str,
    only: Option<&str>,
    infrastructure: &Infrastructure,
) -> anyhow::Result<()> {
    let pool = crate::serve::database(service, database, infrastructure).await?;
    let rebuilt = rebuild(&pool, service, only, true).await?;
    if rebuilt.is_empty() {
        bail!(
            "{} has no projection {}",
            service.name(),
            only.unwrap_or_default()
        );
    }
    let mut differ = Vec::new();
    for (name, rebuild) in &rebuilt {
        if rebuild.matches {
            println!(
                "{name}: {} events replayed; the rebuilt state equals the live one",
                rebuild.events
            );
        } else {
            println!(
                "{name}: {} events replayed; the rebuilt state DIFFERS from the live one (now replaced)",
                rebuild.events
            );
            for row in &rebuild.only_live {
                println!("  only in live:    {row}");
            }
            for row in &rebuild.only_rebuilt {
                println!("  only in rebuilt: {row}");
            }
            differ.push(*name);
        }
    }
    if !differ.is_empty() {
        bail!("rebuilt state differs from live for {}", differ.join(", "));
    }
    Ok(())
}

/// Rebuilds `service`'s projections (only the one named `only`, if given) beside the live ones,
/// compares each with its live state and swaps it in; with `progress`, a bar per projection.
pub async fn rebuild(
    pool: &PgPool,
    service: Service,
    only: Option<&str>,
    progress: bool,
) -> anyhow::Result<Vec<(&'static str, Rebuild)>> {
    let mut rebuilt = Vec::new();
    let run = (only, progress);
    match service {
        Service::Campaigns => {
            let views = &campaigns::projections::CampaignViews;
            rebuild_one(pool, views, run, &mut rebuilt).await?;
        }
        Service::Tracking => {
            let views = &tracking::projections::TrackingViews;
            rebuild_one(pool, views, run, &mut rebuilt).await?;
        }
        Service::Commissions => {
            let views = &commissions::projections::CommissionViews;
            rebuild_one(pool, views, run, &mut rebuilt).await?;
        }
        Service::Payments => {
            let views = &payments::projections::PaymentViews;
            rebuild_one(pool, views, run, &mut rebuilt).await?;
        }
        // The coordinator keeps its saga rows in the transactions that append to the logs: it
        // has no projection to rebuild.
        Service::Sagas => {}
    }
    Ok(rebuilt)
}

async fn rebuild_one<P: Projection>(
    pool: &PgPool,
    projection: &P,
    (only, progress): (Option<&str>, bool),
    rebuilt: &mut Vec<(&'static str, Rebuild)>,
) -> anyhow::Result<()> {
    if only.is_some_and(|name| name != projection.name()) {
        return Ok(());
    }
    let bar = if progress {
        let total: i64 = sqlx::query_scalar("select count(*) from events")
            .fetch_one(pool)
            .await?;
        let bar = ProgressBar::new(u64::try_from(total).unwrap_or(0));
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} events ({per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(projection.name());
        bar
    } else {
        ProgressBar::hidden()
    };
    let rebuild = projection::rebuild(pool, projection, |n| bar.set_position(n as u64)).await?;
    bar.finish();
    rebuilt.push((projection.name(), rebuild));
    Ok(())
}
