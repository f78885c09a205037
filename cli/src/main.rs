//! The `pulsaga` binary (SPEC §7): wires the crates together. It runs one process of the platform
//! (`serve`), migrates the service databases, and rebuilds read models (`replay`).

mod replay;
mod serve;
mod settings;

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

/// The services with a database and a query API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Service {
    Tracking,
}

impl Service {
    pub const ALL: [Service; 1] = [Service::Tracking];

    /// The service's database name, and its query API's default address.
    pub fn name(self) -> &'static str {
        match self {
            Service::Tracking => "tracking",
        }
    }

    pub fn default_listen(self) -> SocketAddr {
        let port = match self {
            Service::Tracking => 7102,
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one service: its consumers, outbox relay, projections and query API.
    Serve {
        service: Service,
        /// Where the query API listens (default: the service's port on 127.0.0.1).
        #[arg(long, env = "PULSAGA_LISTEN")]
        listen: Option<SocketAddr>,
        /// The service's database (default: named after the service).
        #[arg(long, env = "PULSAGA_DATABASE")]
        database: Option<String>,
        #[command(flatten)]
        infrastructure: Infrastructure,
    },
    /// Create the service databases that are missing and migrate them.
    Migrate {
        #[command(flatten)]
        infrastructure: Infrastructure,
    },
    /// Rebuild a service's read models from its event store and check them against the live ones.
    Replay {
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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    settings::init_logging();
    let result = match cli.command {
        Command::Serve {
            service,
            listen,
            database,
            infrastructure,
        } => {
            let database = database.as_deref().unwrap_or(service.name());
            serve::serve(
                service,
                database,
                listen.unwrap_or(service.default_listen()),
                &infrastructure,
            )
            .await
        }
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pulsaga: {error:#}");
            ExitCode::FAILURE
        }
    }
}
