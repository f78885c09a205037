//! The `pulsaga` binary (SPEC §7). Today it migrates the service databases; the commands that run
//! and inspect the platform arrive with the crates they wire together.

use clap::{Parser, Subcommand};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use std::process::ExitCode;

/// The databases of SPEC §1, one per service that keeps state.
const SERVICE_DATABASES: [&str; 5] = ["campaigns", "tracking", "commissions", "payments", "sagas"];

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

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the service databases that are missing and bring their event stores up to date.
    Migrate {
        /// Any database on the server; the service databases are created beside it.
        #[arg(
            long,
            env = "DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres",
            hide_env_values = true
        )]
        database_url: String,
    },
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("invalid database URL")]
    DatabaseUrl(#[source] sqlx::Error),
    #[error("database {database}: {source}")]
    Database {
        database: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database {database}: {source}")]
    EventStore {
        database: String,
        #[source]
        source: eventstore::Error,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Migrate { database_url } => migrate(&database_url).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pulsaga: {}", error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

async fn migrate(database_url: &str) -> Result<(), Error> {
    let server: PgConnectOptions = database_url.parse().map_err(Error::DatabaseUrl)?;
    let admin_name = server.get_database().unwrap_or("postgres").to_owned();
    let mut admin = server.connect().await.map_err(|source| Error::Database {
        database: admin_name.clone(),
        source,
    })?;
    for database in SERVICE_DATABASES {
        create_database_if_missing(&mut admin, database)
            .await
            .map_err(|source| Error::Database {
                database: database.to_owned(),
                source,
            })?;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(server.clone().database(database))
            .await
            .map_err(|source| Error::Database {
                database: database.to_owned(),
                source,
            })?;
        eventstore::migrate(&pool)
            .await
            .map_err(|source| Error::EventStore {
                database: database.to_owned(),
                source,
            })?;
        pool.close().await;
        println!("{database}: migrated");
    }
    admin.close().await.map_err(|source| Error::Database {
        database: admin_name,
        source,
    })
}

async fn create_database_if_missing(
    admin: &mut PgConnection,
    name: &str,
) -> Result<(), sqlx::Error> {
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(name)
            .fetch_one(&mut *admin)
            .await?;
    if !exists {
        // Names come from SERVICE_DATABASES, never from input; CREATE DATABASE takes no parameters.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database \"{name}\"")))
            .execute(&mut *admin)
            .await?;
    }
    Ok(())
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
