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
    let mut differ = Vec::new();
    let mut found = false;
    match service {
        Service::Campaigns => {
            rebuild_one(
                &pool,
                &campaigns::projections::CampaignViews,
                only,
                &mut found,
                &mut differ,
            )
            .await?;
        }
        Service::Tracking => {
            rebuild_one(
                &pool,
                &tracking::projections::TrackingViews,
                only,
                &mut found,
                &mut differ,
            )
            .await?;
        }
        Service::Commissions => {
            rebuild_one(
                &pool,
                &commissions::projections::CommissionViews,
                only,
                &mut found,
                &mut differ,
            )
            .await?;
        }
        Service::Payments => {
            rebuild_one(
                &pool,
                &payments::projections::PaymentViews,
                only,
                &mut found,
                &mut differ,
            )
            .await?;
        }
        // The coordinator keeps its saga rows in the transactions that append to the logs: it
        // has no projection to rebuild.
        Service::Sagas => {}
    }
    if !found {
        bail!(
            "{} has no projection {}",
            service.name(),
            only.unwrap_or_default()
        );
    }
    if !differ.is_empty() {
        bail!("rebuilt state differs from live for {}", differ.join(", "));
    }
    Ok(())
}

async fn rebuild_one<P: Projection>(
    pool: &PgPool,
    projection: &P,
    only: Option<&str>,
    found: &mut bool,
    differ: &mut Vec<&'static str>,
) -> anyhow::Result<()> {
    if only.is_some_and(|name| name != projection.name()) {
        return Ok(());
    }
    *found = true;
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
    let rebuild: Rebuild =
        projection::rebuild(pool, projection, |n| bar.set_position(n as u64)).await?;
    bar.finish();
    if rebuild.matches {
        println!(
            "{}: {} events replayed; the rebuilt state equals the live one",
            projection.name(),
            rebuild.events
        );
    } else {
        println!(
            "{}: {} events replayed; the rebuilt state DIFFERS from the live one (now replaced)",
            projection.name(),
            rebuild.events
        );
        for row in &rebuild.only_live {
            println!("  only in live:    {row}");
        }
        for row in &rebuild.only_rebuilt {
            println!("  only in rebuilt: {row}");
        }
        differ.push(projection.name());
    }
    Ok(())
}
