//! The settings every `pulsaga` command reads: flags, falling back to environment variables, with
//! defaults that work on one machine. Secrets are never printed (`hide_env_values`).

use anyhow::Context;
use clap::Args;
use messaging::{PulsarSettings, ServiceToken};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use std::time::Duration;

/// How long a task waits for one of the pool's connections before it fails (a consumer retries;
/// a query API answers 503).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The default of `DATABASE_CONNECTIONS`.
pub const DATABASE_CONNECTIONS: u32 = 6;

/// The default of `DATABASE_IDLE_SECONDS`.
pub const DATABASE_IDLE_SECONDS: u64 = 30;

/// The PostgreSQL server.
#[derive(Debug, Clone, Args)]
pub struct Postgres {
    /// Any database on the PostgreSQL server; what runs uses databases of its own beside it.
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pub url: String,
}

impl Postgres {
    pub fn server(&self) -> anyhow::Result<PgConnectOptions> {
        self.url
            .parse()
            .context("DATABASE_URL is not a PostgreSQL URL")
    }
}

/// Where PostgreSQL and Pulsar are.
#[derive(Debug, Clone, Args)]
pub struct Infrastructure {
    #[command(flatten)]
    pub postgres: Postgres,
    /// The most connections the process's pool holds to its database, one of them listening for
    /// notifications; the outbox relay holds one more. Each replica holds its own: the default
    /// lets two platforms, or two replicas of every process, share PostgreSQL's default 100.
    #[arg(long, env = "DATABASE_CONNECTIONS", default_value_t = DATABASE_CONNECTIONS, value_parser = clap::value_parser!(u32).range(2..))]
    pub database_connections: u32,
    /// Seconds a connection may stay unused before the pool closes it, so that the connections a
    /// burst opened are given back.
    #[arg(long, env = "DATABASE_IDLE_SECONDS", default_value_t = DATABASE_IDLE_SECONDS)]
    pub database_idle_seconds: u64,
    /// The Apache Pulsar broker's binary protocol.
    #[arg(long, env = "PULSAR_URL", default_value = "pulsar://127.0.0.1:6650")]
    pub pulsar_url: String,
    /// The broker's admin REST API, through which the namespace is provisioned.
    #[arg(
        long,
        env = "PULSAR_ADMIN_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub pulsar_admin_url: String,
    #[arg(long, env = "PULSAR_TENANT", default_value = "public")]
    pub pulsar_tenant: String,
    #[arg(long, env = "PULSAR_NAMESPACE", default_value = "default")]
    pub pulsar_namespace: String,
}

impl Infrastructure {
    pub fn pulsar(&self) -> PulsarSettings {
        PulsarSettings {
            tenant: self.pulsar_tenant.clone(),
            namespace: self.pulsar_namespace.clone(),
            ..PulsarSettings::new(self.pulsar_url.clone(), self.pulsar_admin_url.clone())
        }
    }

    /// A pool on the service's own database, created on the server if it is missing.
    pub async fn database(&self, name: &str) -> anyhow::Result<PgPool> {
        let server = self.postgres.server()?;
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
        // No ping before each checkout: it is a round trip on every transaction, and a broken
        // connection fails the statement instead, which every caller already retries.
        PgPoolOptions::new()
            .max_connections(self.database_connections)
            .min_connections(0)
            .idle_timeout(Duration::from_secs(self.database_idle_seconds))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(server.database(name))
            .await
            .with_context(|| format!("connecting to database {name}"))
    }
}

/// What a service's own work needs: the payments service its payout provider, the coordinator
/// when to archive.
#[derive(Debug, Clone, Args)]
pub struct ServiceOptions {
    /// The payout provider the payments service calls.
    #[arg(
        long,
        env = "PAYOUT_PROVIDER_URL",
        default_value = "http://127.0.0.1:7199"
    )]
    pub payout_provider_url: String,
    /// How many days after a saga ended (completed or compensated) the coordinator archives it:
    /// out of the hot tables, still shown by id. Fractions of a day are allowed; 0 archives a
    /// saga within a minute of its end.
    #[arg(long, env = "PULSAGA_ARCHIVE_AFTER_DAYS", default_value_t = sagas::archive::DEFAULT_AGE.as_secs_f64() / DAY, value_parser = days)]
    pub archive_after_days: f64,
}

impl ServiceOptions {
    pub fn archive_after(&self) -> Duration {
        Duration::from_secs_f64(self.archive_after_days * DAY)
    }
}

/// Seconds in a day.
const DAY: f64 = 86_400.0;

/// A number of days: finite, not negative, at most a century.
fn days(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(days) if (0.0..=36_500.0).contains(&days) => Ok(days),
        _ => Err(format!("{text:?} is not a number of days from 0 to 36500")),
    }
}

/// Where the services' query APIs answer.
#[derive(Debug, Clone, Args)]
pub struct ServiceUrls {
    #[arg(long, env = "CAMPAIGNS_URL", default_value = "http://127.0.0.1:7101")]
    pub campaigns_url: String,
    #[arg(long, env = "TRACKING_URL", default_value = "http://127.0.0.1:7102")]
    pub tracking_url: String,
    #[arg(long, env = "COMMISSIONS_URL", default_value = "http://127.0.0.1:7103")]
    pub commissions_url: String,
    #[arg(long, env = "PAYMENTS_URL", default_value = "http://127.0.0.1:7104")]
    pub payments_url: String,
    #[arg(long, env = "SAGAS_URL", default_value = "http://127.0.0.1:7105")]
    pub sagas_url: String,
    /// The token the services' query APIs require (at least 32 characters): a service takes it,
    /// and the API and these commands present it.
    #[arg(long, env = "SERVICE_TOKEN", hide_env_values = true)]
    pub service_token: Option<String>,
}

impl ServiceUrls {
    pub fn token(&self) -> anyhow::Result<ServiceToken> {
        let token = self.service_token.as_deref().context(
            "SERVICE_TOKEN is required: the services' query APIs answer only callers that \
             present it (`pulsaga up` makes one and prints it)",
        )?;
        Ok(ServiceToken::new(token)?)
    }

    /// An HTTP client that presents the service token.
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        service_client(&self.token()?)
    }

    pub fn of(&self, service: crate::Service) -> &str {
        match service {
            crate::Service::Campaigns => &self.campaigns_url,
            crate::Service::Tracking => &self.tracking_url,
            crate::Service::Commissions => &self.commissions_url,
            crate::Service::Payments => &self.payments_url,
            crate::Service::Sagas => &self.sagas_url,
        }
    }
}

/// An HTTP client of the services' query APIs, presenting `token`.
pub fn service_client(token: &ServiceToken) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .default_headers(token.headers())
        .build()?)
}

/// How the BFF finds the services and verifies tokens.
#[derive(Debug, Clone, Args)]
pub struct Api {
    #[command(flatten)]
    pub services: ServiceUrls,
    #[command(flatten)]
    pub jwt: Jwt,
    /// Requests per second per caller (bursts of twice as many).
    #[arg(long, env = "PULSAGA_RATE_LIMIT", default_value_t = 200)]
    pub rate_limit: u32,
    /// Requests handled at once; more wait a second for their turn, then are answered 503 with
    /// `Retry-After`.
    #[arg(long, env = "PULSAGA_MAX_IN_FLIGHT", default_value_t = 512)]
    pub max_in_flight: usize,
}

/// How tokens are signed and checked: the algorithm is pinned here, never read from a token.
#[derive(Debug, Clone, Args)]
pub struct Jwt {
    #[arg(long, env = "JWT_ALGORITHM", value_enum, default_value_t = JwtAlgorithm::Hs256)]
    pub jwt_algorithm: JwtAlgorithm,
    /// The HS256 secret (at least 32 bytes), for development.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// A PEM file with the RS256 or ES256 public key, for production.
    #[arg(long, env = "JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<std::path::PathBuf>,
    #[arg(long, env = "JWT_ISSUER", default_value = "pulsaga")]
    pub jwt_issuer: String,
    #[arg(long, env = "JWT_AUDIENCE", default_value = "pulsaga-api")]
    pub jwt_audience: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JwtAlgorithm {
    Hs256,
    Rs256,
    Es256,
}

impl Jwt {
    /// HS256 with a secret of its own, for a harness that mints every token it uses.
    pub fn random_hs256() -> Jwt {
        let secret =
            uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string();
        Jwt {
            jwt_algorithm: JwtAlgorithm::Hs256,
            jwt_secret: Some(secret),
            jwt_public_key: None,
            jwt_issuer: "pulsaga".into(),
            jwt_audience: "pulsaga-api".into(),
        }
    }

    /// The HS256 secret, required for development tokens.
    pub fn secret(&self) -> anyhow::Result<&[u8]> {
        self.jwt_secret
            .as_deref()
            .map(str::as_bytes)
            .context("JWT_SECRET is required with JWT_ALGORITHM=hs256")
    }

    pub fn verifier(&self) -> anyhow::Result<bff::auth::Verifier> {
        use bff::auth::Key;
        let pem = || -> anyhow::Result<Vec<u8>> {
            let path = self
                .jwt_public_key
                .as_ref()
                .context("JWT_PUBLIC_KEY names the PEM file with the public key")?;
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        };
        let key = match self.jwt_algorithm {
            JwtAlgorithm::Hs256 => Key::Hs256 {
                secret: self.secret()?.to_vec(),
            },
            JwtAlgorithm::Rs256 => Key::Rs256 { public_pem: pem()? },
            JwtAlgorithm::Es256 => Key::Es256 { public_pem: pem()? },
        };
        Ok(bff::auth::Verifier::new(
            &key,
            &self.jwt_issuer,
            &self.jwt_audience,
            bff::auth::MAX_LEEWAY_SECS,
        )?)
    }
}

impl Api {
    pub fn bff(&self) -> anyhow::Result<bff::Settings> {
        Ok(bff::Settings {
            services: bff::services::ServiceUrls {
                campaigns: self.services.campaigns_url.clone(),
                tracking: self.services.tracking_url.clone(),
                commissions: self.services.commissions_url.clone(),
                payments: self.services.payments_url.clone(),
                sagas: self.services.sagas_url.clone(),
            },
            service_token: self.services.token()?,
            verifier: self.jwt.verifier()?,
            rate_per_second: std::num::NonZeroU32::new(self.rate_limit)
                .context("PULSAGA_RATE_LIMIT must be at least 1")?,
            max_in_flight: self.max_in_flight,
            restarts: 0,
        })
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default: info, quieter for the libraries), and traces:
/// every span belongs to an OpenTelemetry trace, carried through Pulsar by `traceparent`, and is
/// exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set.
/// The returned guard flushes the spans still buffered when the process ends.
pub fn init_telemetry(service: &'static str) -> Telemetry {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // pulsar-rs logs each connection's first attempt as a warning ("Retry #0"): its retries
    // show at error level, and only those.
    let logs = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,pulsar=warn"))
        .add_directive("pulsar::retry_op=error".parse().expect("a valid directive"));
    let mut provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().with_resource(
        opentelemetry_sdk::Resource::builder()
            .with_service_name(service)
            .build(),
    );
    let export = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some());
    if export {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => provider = provider.with_batch_exporter(exporter),
            Err(error) => eprintln!("pulsaga: not exporting traces: {error}"),
        }
    }
    let provider = provider.build();
    let traces = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("pulsaga"))
        .with_filter(EnvFilter::new("info,sqlx=off,pulsar=off"));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(logs),
        )
        .with(traces)
        .init();
    Telemetry(provider)
}

/// Flushes and stops trace export when dropped.
#[derive(Debug)]
pub struct Telemetry(opentelemetry_sdk::trace::SdkTracerProvider);

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(error) = self.0.shutdown() {
            eprintln!("pulsaga: flushing traces failed: {error}");
        }
    }
}
