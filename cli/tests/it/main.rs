//! The `pulsaga` binary as an operator runs it: real processes against the real PostgreSQL and
//! Apache Pulsar, including `kill -9` in the middle of a stream.

mod archive;
mod bench;
mod chaos;
mod compose;
mod console;
mod crash;
mod hostile;
mod replicas;
mod up;

use messaging::PulsarSettings;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use uuid::Uuid;

/// `pulsaga up`, stopped with SIGTERM when dropped — also when the test fails — so that it stops
/// its processes (a SIGKILL would leave them running).
struct Up(tokio::process::Child);

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            for _ in 0..300 {
                if self.0.try_wait().is_ok_and(|status| status.is_some()) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The PostgreSQL that `pulsaga up --embedded-postgres` started in `data_dir` (its port is the
/// fourth line of `postmaster.pid`; it trusts local connections).
async fn embedded_postgres(data_dir: &std::path::Path) -> sqlx::PgPool {
    let pid_file = std::fs::read_to_string(data_dir.join("postgres/postmaster.pid"))
        .expect("the embedded PostgreSQL's pid file");
    let port = pid_file.lines().nth(3).expect("the port line").trim();
    sqlx::PgPool::connect(&format!("postgres://postgres@127.0.0.1:{port}/postgres"))
        .await
        .expect("connect to the embedded PostgreSQL")
}

/// A database of its own on the test server, dropped at the end.
struct Database {
    name: String,
    server_url: String,
}

impl Database {
    async fn create() -> Database {
        let server_url =
            std::env::var("DATABASE_URL").expect("DATABASE_URL (bash scripts/setup.sh exports it)");
        let name = format!("pulsaga_cli_{}", Uuid::new_v4().simple());
        let pool = sqlx::PgPool::connect(&server_url).await.expect("server");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&pool)
            .await
            .expect("create");
        pool.close().await;
        Database { name, server_url }
    }

    async fn pool(&self) -> sqlx::PgPool {
        let options: sqlx::postgres::PgConnectOptions = self.server_url.parse().expect("url");
        sqlx::PgPool::connect_with(options.database(&self.name))
            .await
            .expect("pool")
    }

    async fn drop(self) {
        let pool = sqlx::PgPool::connect(&self.server_url)
            .await
            .expect("server");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "drop database {} with (force)",
            self.name
        )))
        .execute(&pool)
        .await
        .expect("drop");
    }
}

fn free_address() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("port");
    listener.local_addr().expect("address")
}

/// `pulsaga serve <service> [args]` as a child process.
fn serve(
    service: &str,
    args: &[&str],
    database: &Database,
    pulsar: &PulsarSettings,
    listen: SocketAddr,
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pulsaga"))
        .args([
            "serve",
            service,
            "--database",
            &database.name,
            "--listen",
            &listen.to_string(),
        ])
        .args(args)
        .env("DATABASE_URL", &database.server_url)
        .env("SERVICE_TOKEN", SERVICE_TOKEN.expose())
        .envs(messaging::testing::env(pulsar))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn pulsaga")
}

/// The token of the services these tests start.
static SERVICE_TOKEN: std::sync::LazyLock<messaging::ServiceToken> =
    std::sync::LazyLock::new(messaging::ServiceToken::random);

/// Polls `url` (of a service's query API) until it answers 200 with JSON for which `done` holds.
async fn wait_for(url: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let client = messaging::testing::service_client(&SERVICE_TOKEN);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(url).send().await
            && response.status().is_success()
            && let Ok(body) = response.json::<serde_json::Value>().await
            && done(&body)
        {
            return body;
        }
        assert!(Instant::now() < deadline, "{url} never got there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
