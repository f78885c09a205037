//! `pulsaga serve <service>` and `pulsaga migrate`: one service process, with its database
//! created and migrated on start, until Ctrl-C or SIGTERM.

use crate::Service;
use crate::settings::Infrastructure;
use anyhow::Context;
use messaging::Client;
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Connects the service's database and migrates it.
pub async fn database(
    service: Service,
    name: &str,
    infrastructure: &Infrastructure,
) -> anyhow::Result<PgPool> {
    let pool = infrastructure.database(name, 16).await?;
    match service {
        Service::Tracking => tracking::migrate(&pool).await,
    }
    .with_context(|| format!("migrating {}", service.name()))?;
    Ok(pool)
}

pub async fn migrate_all(infrastructure: &Infrastructure) -> anyhow::Result<()> {
    for service in Service::ALL {
        database(service, service.name(), infrastructure)
            .await?
            .close()
            .await;
        println!("{}: migrated", service.name());
    }
    Ok(())
}

pub async fn serve(
    service: Service,
    database_name: &str,
    listen: SocketAddr,
    infrastructure: &Infrastructure,
) -> anyhow::Result<()> {
    let pool = database(service, database_name, infrastructure).await?;
    let client = Arc::new(
        Client::connect(infrastructure.pulsar())
            .await
            .context("connecting to Pulsar")?,
    );
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let shutdown = stop_on_signal();
    tracing::info!(service = service.name(), address = %listener.local_addr()?, "serving");
    let run = match service {
        Service::Tracking => tracking::run(pool.clone(), client.clone(), listener, shutdown).await,
    };
    client.close().await;
    pool.close().await;
    run.with_context(|| format!("{} stopped", service.name()))
}

/// A token cancelled by Ctrl-C or SIGTERM: the process then stops receiving, finishes what it
/// holds, and exits.
pub fn stop_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate => {}
        }
        tracing::info!("stopping");
        cancel.cancel();
    });
    token
}
