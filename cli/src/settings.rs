//! The settings every `pulsaga` command reads: flags, falling back to environment variables, with
//! defaults that work on one machine. Secrets are never printed (`hide_env_values`).

use anyhow::Context;
use clap::Args;
use messaging::{Broker, PulsarSettings};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

/// Where PostgreSQL and Pulsar are.
#[derive(Debug, Clone, Args)]
pub struct Infrastructure {
    /// Any database on the PostgreSQL server; each service uses its own database beside it.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pub database_url: String,
    /// The Pulsar broker (Apache Pulsar, or the local broker's proxy).
    #[arg(long, env = "PULSAR_URL", default_value = "pulsar://127.0.0.1:6650")]
    pub pulsar_url: String,
    #[arg(long, env = "PULSAR_TENANT", default_value = "public")]
    pub pulsar_tenant: String,
    #[arg(long, env = "PULSAR_NAMESPACE", default_value = "default")]
    pub pulsar_namespace: String,
    /// Which broker `PULSAR_URL` points at: Apache Pulsar gets the topic schemas registered;
    /// pulsar-lite gets the workarounds for its gaps.
    #[arg(long, env = "PULSAR_BROKER", value_enum, default_value_t = BrokerKind::PulsarLite)]
    pub pulsar_broker: BrokerKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BrokerKind {
    ApachePulsar,
    PulsarLite,
}

impl Infrastructure {
    pub fn pulsar(&self) -> PulsarSettings {
        PulsarSettings {
            tenant: self.pulsar_tenant.clone(),
            namespace: self.pulsar_namespace.clone(),
            ..PulsarSettings::new(
                self.pulsar_url.clone(),
                match self.pulsar_broker {
                    BrokerKind::ApachePulsar => Broker::ApachePulsar,
                    BrokerKind::PulsarLite => Broker::PulsarLite,
                },
            )
        }
    }

    fn server(&self) -> anyhow::Result<PgConnectOptions> {
        self.database_url
            .parse()
            .context("DATABASE_URL is not a PostgreSQL URL")
    }

    /// A pool on the service's own database, created on the server if it is missing.
    pub async fn database(&self, name: &str, connections: u32) -> anyhow::Result<PgPool> {
        let server = self.server()?;
        let mut admin = server.connect().await.context("connecting to PostgreSQL")?;
        let exists: bool =
            sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
                .bind(name)
                .fetch_one(&mut admin)
                .await?;
        if !exists {
            // The name is one of the services', never input; CREATE DATABASE takes no parameters.
            let create = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database \"{name}\"")))
                .execute(&mut admin)
                .await;
            // Another process may have created it meanwhile.
            if let Err(error) = create
                && error
                    .as_database_error()
                    .is_none_or(|e| e.code().as_deref() != Some("42P04"))
            {
                return Err(error).context(format!("creating database {name}"));
            }
        }
        admin.close().await?;
        PgPoolOptions::new()
            .max_connections(connections)
            .connect_with(server.database(name))
            .await
            .with_context(|| format!("connecting to database {name}"))
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default: info, quieter for the libraries).
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,pulsar=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
