//! What a saga leaves in the databases: the services' tables before and after a load, pruned and
//! archived, and the bench's databases dropped at the end.

use super::Figure;
use anyhow::Context;
use std::time::Duration;

/// The services' databases, one pool each.
async fn service_pools(
    database_url: &str,
    prefix: &str,
) -> anyhow::Result<Vec<(crate::Service, sqlx::PgPool)>> {
    let server: sqlx::postgres::PgConnectOptions = database_url.parse()?;
    let mut pools = Vec::new();
    for service in crate::Service::ALL {
        let name = format!("{prefix}{}", service.name());
        let pool = sqlx::PgPool::connect_with(server.clone().database(&name)).await?;
        pools.push((service, pool));
    }
    Ok(pools)
}

/// Bytes in the services' tables, indexes and TOAST included: (all of them, the archive left out).
async fn table_bytes(pools: &[(crate::Service, sqlx::PgPool)]) -> anyhow::Result<(i64, i64)> {
    let (mut all, mut hot) = (0, 0);
    for (_, pool) in pools {
        let (a, h): (i64, i64) = sqlx::query_as(
            "select coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint,
                    coalesce(sum(pg_total_relation_size(c.oid))
                               filter (where c.relname not like 'archived\\_%'), 0)::bigint
               from pg_class c join pg_namespace n on n.oid = c.relnamespace
              where c.relkind = 'r' and n.nspname = 'public'",
        )
        .fetch_one(pool)
        .await?;
        all += a;
        hot += h;
    }
    Ok((all, hot))
}

/// The size of the services' tables (all, and without the archive) before a load.
pub(crate) async fn tables_before(database_url: &str, prefix: &str) -> anyhow::Result<(i64, i64)> {
    let pools = service_pools(database_url, prefix).await?;
    let empty = table_bytes(&pools).await?;
    for (_, pool) in pools {
        pool.close().await;
    }
    Ok(empty)
}

/// What a saga adds to the services' tables, beyond their size before the load (`empty`): as
/// the run left them, then after pruning all that can be pruned and archiving every ended saga
/// (retention and age 0) and compacting the tables, with and without the archive.
pub(crate) async fn storage(
    database_url: &str,
    prefix: &str,
    empty: (i64, i64),
) -> anyhow::Result<Vec<Figure>> {
    let pools = service_pools(database_url, prefix).await?;
    let sagas_pool = &pools
        .iter()
        .find(|(service, _)| *service == crate::Service::Sagas)
        .context("the coordinator's database")?
        .1;
    let sagas: i64 = sqlx::query_scalar("select count(*) from sagas")
        .fetch_one(sagas_pool)
        .await?;
    let (left, _) = table_bytes(&pools).await?;
    for (service, pool) in &pools {
        eventstore::prune::prune(pool, Duration::ZERO).await?;
        if *service == crate::Service::Sagas {
            sagas::archive::archive_ended(pool, Duration::ZERO).await?;
        }
        sqlx::raw_sql("vacuum full").execute(pool).await?;
    }
    let (all, hot) = table_bytes(&pools).await?;
    for (_, pool) in pools {
        pool.close().await;
    }
    let per_saga = |bytes: i64, before: i64| (bytes - before) as f64 / sagas.max(1) as f64;
    Ok(vec![
        Figure::info(
            format!("storage a saga adds, as the run left it ({sagas} sagas)"),
            per_saga(left, empty.0),
            "bytes",
        ),
        Figure::info(
            "storage a saga adds, pruned and archived: hot tables",
            per_saga(hot, empty.1),
            "bytes",
        ),
        Figure::info(
            "storage a saga adds, pruned and archived: archive included",
            per_saga(all, empty.0),
            "bytes",
        ),
    ])
}

/// Drops the databases `up` created for the bench.
pub(super) async fn drop_databases(database_url: &str, prefix: &str) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(database_url).await?;
    let names: Vec<String> =
        sqlx::query_scalar("select datname from pg_database where starts_with(datname, $1)")
            .bind(prefix)
            .fetch_all(&pool)
            .await?;
    for name in names {
        // Names the bench made from its own prefix and the services' names.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "drop database if exists \"{name}\" with (force)"
        )))
        .execute(&pool)
        .await?;
    }
    pool.close().await;
    Ok(())
}
