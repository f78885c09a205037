//! `pulsaga serve <process>` and `pulsaga migrate`: one process, with its database created and
//! migrated and the Pulsar namespace provisioned on start, until Ctrl-C or SIGTERM; or Apache
//! Pulsar standalone itself (`serve broker`).

use crate::settings::{Infrastructure, ServiceOptions};
use crate::{Process, Service};
use anyhow::Context;
use messaging::host;
use messaging::{Client, QueryApi, ServiceToken};
use pulsaga_platform::Settings;
use sqlx::PgPool;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Connects the service's database and migrates it.
pub async fn database(
    service: Service,
    name: &str,
    infrastructure: &Infrastructure,
) -> anyhow::Result<PgPool> {
    let pool = infrastructure.database(name).await?;
    let migrated = pulsaga_platform::service(service, &Settings::default());
    host::migrate(&pool, &migrated)
        .await
        .with_context(|| format!("migrating {}", service.name()))?;
    Ok(pool)
}

/// How long a starting process waits for PostgreSQL and the broker: a platform restarting
/// together, or a dependency restarting under it, is not a reason to exit.
const STARTUP_PATIENCE: Duration = Duration::from_secs(60);

/// `step`'s result, tried again every second while it fails, for `STARTUP_PATIENCE` at most.
async fn patiently<T, F: Future<Output = anyhow::Result<T>>>(
    mut step: impl FnMut() -> F,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + STARTUP_PATIENCE;
    loop {
        match step().await {
            Ok(done) => return Ok(done),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "not ready to start; trying again"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// A client of the broker, waited for patiently.
async fn connect(infrastructure: &Infrastructure) -> anyhow::Result<Client> {
    patiently(|| async {
        Client::connect(infrastructure.pulsar())
            .await
            .context("connecting to Pulsar")
    })
    .await
}

/// Provisions the Pulsar namespace the settings name: policies, topics with their schemas,
/// subscriptions, dead-letter topics (`messaging::admin`).
pub async fn provision(infrastructure: &Infrastructure) -> anyhow::Result<()> {
    let pulsar = infrastructure.pulsar();
    messaging::admin::Admin::new(&pulsar.admin_url)
        .provision(&pulsar)
        .await
        .with_context(|| {
            format!(
                "provisioning the Pulsar namespace {}/{}",
                pulsar.tenant, pulsar.namespace
            )
        })
}

pub async fn migrate_all(infrastructure: &Infrastructure) -> anyhow::Result<()> {
    provision(infrastructure).await?;
    let pulsar = infrastructure.pulsar();
    println!(
        "pulsar: {}/{} provisioned ({} topics with their Avro schemas)",
        pulsar.tenant,
        pulsar.namespace,
        schemas::TOPICS.len()
    );
    for service in Service::ALL {
        database(service, service.name(), infrastructure)
            .await?
            .close()
            .await;
        println!("{}: migrated", service.name());
    }
    Ok(())
}

/// `pulsaga serve <process>`.
#[derive(Debug, clap::Args)]
pub struct Args {
    pub process: Process,
    /// Where the query API listens (default: the service's port on 127.0.0.1).
    #[arg(long, env = "PULSAGA_LISTEN")]
    listen: Option<SocketAddr>,
    /// The service's database (default: named after the service).
    #[arg(long, env = "PULSAGA_DATABASE")]
    database: Option<String>,
    #[command(flatten)]
    options: ServiceOptions,
    /// Where `serve broker` keeps Apache Pulsar's data.
    #[arg(long, default_value = ".pulsaga/broker")]
    data_dir: std::path::PathBuf,
    /// How often a supervisor (`pulsaga up`) restarted this process; `/readyz` shows it.
    #[arg(long, env = "PULSAGA_RESTARTS", default_value_t = 0)]
    restarts: u32,
    #[command(flatten)]
    infrastructure: Infrastructure,
    /// The API's settings (boxed: the largest of the commands' settings).
    #[command(flatten)]
    api: Box<crate::settings::Api>,
    /// Threads that run the process's tasks (default: one per core). With 1, every task runs on
    /// the process's main thread, and no task is handed from one thread to another: where
    /// several processes share the cores, as under `pulsaga up` (which starts each with 1),
    /// those handoffs cost more CPU than the second thread gives.
    #[arg(long, env = "PULSAGA_WORKER_THREADS")]
    pub worker_threads: Option<std::num::NonZeroUsize>,
}

/// Runs the one process `args` names until `shutdown` (a signal, or `pulsaga up --in-process`
/// stopping its tasks).
pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Args {
        process,
        listen,
        database,
        options,
        data_dir,
        restarts,
        infrastructure,
        api,
        worker_threads: _,
    } = args;
    match process.service() {
        Some(service) => {
            let database = database.as_deref().unwrap_or(service.name());
            let listen = listen.unwrap_or(crate::default_listen(service));
            let token = api.services.token()?;
            let process = (service, database, listen, restarts);
            serve(process, &options, token, &infrastructure, shutdown).await
        }
        None if process == Process::Bff => {
            let listen = listen.unwrap_or(crate::BFF_LISTEN);
            bff(listen, &api, restarts, &infrastructure, shutdown).await
        }
        None if process == Process::Broker => {
            broker(listen, &data_dir, &infrastructure, shutdown).await
        }
        None => payout_simulator(listen.unwrap_or(crate::PAYOUT_SIM_LISTEN), shutdown).await,
    }
}

/// A service (its database's name, where its query API listens, how often it was restarted)
/// until `shutdown`.
async fn serve(
    (service, database_name, listen, restarts): (Service, &str, SocketAddr, u32),
    options: &ServiceOptions,
    token: ServiceToken,
    infrastructure: &Infrastructure,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = patiently(|| database(service, database_name, infrastructure)).await?;
    patiently(|| provision(infrastructure)).await?;
    let client = Arc::new(connect(infrastructure).await?);
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tracing::info!(service = service.name(), address = %listener.local_addr()?, "serving");
    let query = QueryApi {
        listener,
        token,
        restarts,
    };
    let settings = Settings {
        payout_provider_url: options.payout_provider_url.clone(),
        archive_after: options.archive_after(),
    };
    let process = pulsaga_platform::service(service, &settings);
    let run = host::run(&process, pool.clone(), client.clone(), query, shutdown).await;
    client.close().await;
    pool.close().await;
    run.with_context(|| format!("{} stopped", service.name()))
}

/// The HTTP API, until `shutdown`.
async fn bff(
    listen: SocketAddr,
    api: &crate::settings::Api,
    restarts: u32,
    infrastructure: &Infrastructure,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = bff::Settings {
        restarts,
        ..api.bff()?
    };
    let client = Arc::new(connect(infrastructure).await?);
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "API serving");
    let served = bff::serve(listener, client.clone(), settings, shutdown).await;
    client.close().await;
    Ok(served?)
}

/// Apache Pulsar standalone with its data under `data_dir`, on the ports of `PULSAR_URL` (or
/// `--listen`) and `PULSAR_ADMIN_URL`, its namespace provisioned, until `shutdown`.
async fn broker(
    listen: Option<SocketAddr>,
    data_dir: &std::path::Path,
    infrastructure: &Infrastructure,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let port_of = |url: &str| {
        url.rsplit_once(':')
            .and_then(|(_, port)| port.trim_end_matches('/').parse::<u16>().ok())
            .with_context(|| format!("{url} names no port"))
    };
    let settings = messaging::broker::StandaloneSettings {
        broker_port: match listen {
            Some(listen) => listen.port(),
            None => port_of(&infrastructure.pulsar_url)?,
        },
        web_port: port_of(&infrastructure.pulsar_admin_url)?,
        ..messaging::broker::StandaloneSettings::in_dir(data_dir)
    };
    let broker = messaging::broker::Standalone::start(&settings)
        .await
        .context("starting Apache Pulsar")?;
    let infrastructure = Infrastructure {
        pulsar_url: broker.url(),
        pulsar_admin_url: broker.admin_url(),
        ..infrastructure.clone()
    };
    provision(&infrastructure).await?;
    tracing::info!(
        url = %broker.url(),
        admin = %broker.admin_url(),
        version = messaging::broker::PULSAR_VERSION,
        started_in = ?broker.started_in(),
        "apache pulsar standalone serving"
    );
    shutdown.cancelled().await;
    broker.stop().await.context("stopping Apache Pulsar")?;
    Ok(())
}

/// The payout-provider simulator (see `payments::simulator` for its deterministic rules).
async fn payout_simulator(listen: SocketAddr, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "payout simulator serving");
    payments::simulator::serve(
        listener,
        payments::simulator::SimulatorRules::default(),
        shutdown,
    )
    .await?;
    Ok(())
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
