//! The `pulsaga` binary (SPEC §7): wires the crates together. It runs one process of the platform
//! (`serve`) or all of them (`up`), drives a demo through the API (`demo`), shows sagas and events
//! to an operator (`saga`, `events`), measures the platform (`bench`), migrates the service databases, rebuilds read models
//! (`replay`) and mints development tokens (`token`).

mod bench;
mod chaos;
mod client;
mod demo;
mod dlq;
mod inspect;
mod proxy;
mod replay;
mod serve;
mod settings;
mod up;

use bff::auth::Role;
use clap::builder::TypedValueParser;
use clap::{Parser, Subcommand, ValueEnum};
use settings::Infrastructure;
use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "pulsaga",
    version,
    about = "Event-sourced saga orchestration on Apache Pulsar"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The services with a database and a query API: the API's own list of them.
pub use bff::services::Service;

/// A service named on the command line (its name is also its database's).
fn service_arg() -> impl clap::builder::TypedValueParser<Value = Service> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Service::ALL.map(Service::name))
        .map(|name| Service::from_name(&name).expect("one of the possible values"))
}

/// A service's query API's default address (the defaults of `settings::ServiceUrls`).
pub fn default_listen(service: Service) -> SocketAddr {
    let port = match service {
        Service::Campaigns => 7101,
        Service::Tracking => 7102,
        Service::Commissions => 7103,
        Service::Payments => 7104,
        Service::Sagas => 7105,
    };
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// What `serve` can run: a service, or the payout-provider simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Process {
    Campaigns,
    Tracking,
    Commissions,
    Payments,
    Sagas,
    PayoutSim,
    /// Apache Pulsar standalone (the distribution `scripts/setup.sh` fetches), for development.
    Broker,
    /// The HTTP API.
    Bff,
}

impl Process {
    /// The process's name, as its traces carry it.
    fn name(self) -> &'static str {
        match self {
            Process::PayoutSim => "payout-sim",
            Process::Broker => "broker",
            Process::Bff => "bff",
            other => other.service().map_or("pulsaga", Service::name),
        }
    }

    fn service(self) -> Option<Service> {
        match self {
            Process::Campaigns => Some(Service::Campaigns),
            Process::Tracking => Some(Service::Tracking),
            Process::Commissions => Some(Service::Commissions),
            Process::Payments => Some(Service::Payments),
            Process::Sagas => Some(Service::Sagas),
            Process::PayoutSim | Process::Broker | Process::Bff => None,
        }
    }
}

/// The HTTP API's default address.
pub const BFF_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7100);

/// The payout-provider simulator's default address.
pub const PAYOUT_SIM_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7199);

/// Parses a role by the name tokens carry, offering the four names in `--help`.
fn role_parser() -> impl clap::builder::TypedValueParser<Value = Role> {
    clap::builder::PossibleValuesParser::new(Role::ALL.map(Role::name)).map(|name| {
        Role::ALL
            .into_iter()
            .find(|role| role.name() == name)
            .expect("a possible value names a role")
    })
}

#[derive(Debug, Subcommand)]
enum SagaCommand {
    /// Sagas by type, status, campaign, partner or how long they have been stalled.
    List {
        #[command(flatten)]
        filter: inspect::SagaFilter,
    },
    /// One saga: each step's status and its whole log.
    Show { id: uuid::Uuid },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one process: a service (its consumers, outbox relay, projections and query API), the
    /// API, the payout-provider simulator, or Apache Pulsar standalone (`broker`).
    Serve(serve::Args),
    /// The whole platform on this machine, until Ctrl-C: every service, the coordinator, the
    /// payout simulator and the API, on the local PostgreSQL and Apache Pulsar standalone unless
    /// told otherwise.
    Up {
        #[command(flatten)]
        options: Box<up::Options>,
        #[command(flatten)]
        jwt: settings::Jwt,
    },
    /// Drive a realistic scenario through the API and print what happened.
    Demo {
        /// The API's base URL.
        #[arg(long, env = "PULSAGA_API", default_value = "http://127.0.0.1:7100")]
        api: String,
        #[command(flatten)]
        jwt: settings::Jwt,
    },
    /// Sagas as the coordinator sees them.
    Saga {
        #[command(subcommand)]
        command: SagaCommand,
        #[arg(long, value_enum, default_value_t = inspect::Output::Table, global = true)]
        output: inspect::Output,
        #[command(flatten)]
        services: settings::ServiceUrls,
    },
    /// A service's events: one stream, or its whole log (and, with --follow, what comes next).
    Events {
        #[arg(value_parser = service_arg())]
        service: Service,
        #[arg(long)]
        stream: Option<String>,
        #[arg(long)]
        follow: bool,
        #[arg(long, value_enum, default_value_t = inspect::Output::Table)]
        output: inspect::Output,
        #[command(flatten)]
        services: settings::ServiceUrls,
    },
    /// Dead letters of every service, through the API with an admin's token: list them, show
    /// one, re-drive one to its topic.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
        #[arg(long, value_enum, default_value_t = inspect::Output::Table, global = true)]
        output: inspect::Output,
        #[command(flatten)]
        caller: dlq::Caller,
    },
    /// Measure the figures of SPEC §9 against their limits; writes JSON, Markdown and a chart.
    Bench {
        #[command(flatten)]
        options: bench::Options,
    },
    /// Drive sagas through a platform of its own while processes, the broker and PostgreSQL are
    /// killed and restarted at random; then check that nothing was lost, stuck, doubled or left
    /// unbalanced. Prints a JSON summary; fails on any violation.
    Chaos {
        #[command(flatten)]
        options: chaos::Options,
    },
    /// Mint a development token (HS256, signed with JWT_SECRET).
    Token {
        #[arg(long, value_parser = role_parser())]
        role: Role,
        /// The advertiser or partner id the caller acts for.
        #[arg(long)]
        tenant: Option<String>,
        /// The caller's name (default: the role).
        #[arg(long)]
        subject: Option<String>,
        /// How long the token is valid, in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        #[command(flatten)]
        jwt: settings::Jwt,
    },
    /// Create the service databases that are missing and migrate them.
    Migrate {
        #[command(flatten)]
        infrastructure: Infrastructure,
    },
    /// Rebuild a service's read models from its event store and check them against the live ones.
    Replay {
        #[arg(value_parser = service_arg())]
        service: Service,
        /// Only this projection (default: all of the service's).
        #[arg(long)]
        projection: Option<String>,
        /// The service's database (default: named after the service).
        #[arg(long, env = "PULSAGA_DATABASE")]
        database: Option<String>,
        #[command(flatten)]
        infrastructure: Infrastructure,
    },
}

fn token(
    role: Role,
    tenant: Option<&str>,
    subject: Option<&str>,
    ttl: u64,
    jwt: &settings::Jwt,
) -> anyhow::Result<()> {
    let token = bff::auth::mint_hs256(
        jwt.secret()?,
        &jwt.jwt_issuer,
        &jwt.jwt_audience,
        subject.unwrap_or(role.name()),
        role,
        tenant,
        ttl,
    )?;
    println!("{token}");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let service = match &cli.command {
        Command::Serve(args) => args.process.name(),
        _ => "pulsaga",
    };
    // Outside the runtime: the exporter's blocking HTTP client is made and dropped here.
    let telemetry = settings::init_telemetry(service);
    let result = runtime(&cli.command)
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli.command)));
    drop(telemetry);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pulsaga: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The runtime `pulsaga serve --worker-threads` asks for; tokio's default otherwise.
fn runtime(command: &Command) -> tokio::runtime::Builder {
    let threads = match command {
        Command::Serve(args) => args.worker_threads,
        _ => None,
    };
    match threads.map(std::num::NonZeroUsize::get) {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve::run(args, serve::stop_on_signal()).await,
        Command::Up { options, jwt } => up::up(*options, &jwt).await,
        Command::Bench { options } => bench::run(&options).await,
        Command::Chaos { options } => chaos::run(&options).await,
        Command::Demo { api, jwt } => demo::run(&api, &jwt).await,
        Command::Saga {
            command,
            output,
            services,
        } => match command {
            SagaCommand::List { filter } => inspect::saga_list(&services, &filter, output).await,
            SagaCommand::Show { id } => inspect::saga_show(&services, id, output).await,
        },
        Command::Dlq {
            command,
            output,
            caller,
        } => dlq::run(command, &caller, output).await,
        Command::Events {
            service,
            stream,
            follow,
            output,
            services,
        } => {
            let http = services.client()?;
            inspect::events(
                &http,
                services.of(service),
                stream.as_deref(),
                follow,
                output,
            )
            .await
        }
        Command::Token {
            role,
            tenant,
            subject,
            ttl,
            jwt,
        } => token(role, tenant.as_deref(), subject.as_deref(), ttl, &jwt),
        Command::Migrate { infrastructure } => serve::migrate_all(&infrastructure).await,
        Command::Replay {
            service,
            projection,
            database,
            infrastructure,
        } => {
            let database = database.as_deref().unwrap_or(service.name());
            replay::replay(service, database, projection.as_deref(), &infrastructure).await
        }
    }
}
