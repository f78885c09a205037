//! `pulsaga up`: the whole platform on one machine. It uses `DATABASE_URL` and `PULSAR_URL` when
//! given; otherwise the PostgreSQL answering on 127.0.0.1:5432, or one it initialises and starts
//! from the system's binaries (data under `.pulsaga/postgres`, run as the `postgres` user when
//! started as root), and Apache Pulsar standalone (data under `.pulsaga/broker`). It migrates the
//! databases, provisions the Pulsar namespace, starts every service, the coordinator, the payout
//! simulator and the API as child processes of this binary (or, with `--in-process`, as tasks of
//! this one), prints the URLs and a token per role, and on Ctrl-C stops them all (each finishes
//! what it holds), the broker last.

mod launch;
mod postgres;
mod process;

use launch::start_processes;
use postgres::{LocalPostgres, local_postgres};
use process::{Log, Process, TEND_EVERY, stop};

use crate::proxy::Proxy;
use crate::settings::{Infrastructure, Jwt, Postgres};
use crate::{Service, serve};
use anyhow::Context;
use messaging::ServiceToken;
use messaging::broker::{ProxiedListener, Standalone, StandaloneSettings};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How `up` runs.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The PostgreSQL server (any database on it); default: local, found or started.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The Apache Pulsar broker; default: Apache Pulsar standalone started here.
    #[arg(long, env = "PULSAR_URL")]
    pub pulsar_url: Option<String>,
    /// The admin REST API of the broker at `PULSAR_URL`.
    #[arg(
        long,
        env = "PULSAR_ADMIN_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub pulsar_admin_url: String,
    /// Where the API listens.
    #[arg(long, default_value = "127.0.0.1:7100")]
    pub listen: SocketAddr,
    /// Give every process a free port instead of its default (several platforms on one machine).
    #[arg(long)]
    pub any_ports: bool,
    /// Prefixed to each service's database name.
    #[arg(long, default_value = "")]
    pub database_prefix: String,
    /// Where the embedded PostgreSQL and broker keep their data.
    #[arg(long, default_value = ".pulsaga")]
    pub data_dir: PathBuf,
    /// Start a PostgreSQL of its own (under `--data-dir`) even if one answers on 5432.
    #[arg(long)]
    pub embedded_postgres: bool,
    /// How many replicas of every service and of the coordinator to run, each on a port of its
    /// own; replicas share the work through Key_Shared subscriptions. The query URLs name the
    /// first.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4))]
    pub replicas: u32,
    /// Run `pulsaga demo` against the platform once it is ready.
    #[arg(long)]
    pub demo: bool,
    /// Run every service, the coordinator, the payout simulator and the API as tasks of this one
    /// process (each as `pulsaga serve` runs it, supervised the same way) instead of a child
    /// process each. They log through this process, under its `RUST_LOG`.
    #[arg(long)]
    pub in_process: bool,
    /// `RUST_LOG` for the processes (default: this process's environment).
    #[arg(skip)]
    pub log_filter: Option<String>,
    /// Connect the processes to PostgreSQL through a proxy the harness can cut
    /// ([`Platform::cut_database`]).
    #[arg(skip)]
    pub database_proxy: bool,
    /// Connect the processes to the broker it starts through a proxy the harness can cut
    /// ([`Platform::cut_broker`]).
    #[arg(skip)]
    pub broker_proxy: bool,
}

impl Options {
    /// A platform beside others, for a harness (the bench, chaos): every process on a free
    /// port, databases named with `prefix`, data in a temporary folder, warnings logged.
    pub fn on_free_ports(prefix: &str, database_url: Option<&str>) -> Options {
        Options {
            database_url: database_url.map(str::to_owned),
            pulsar_url: None,
            pulsar_admin_url: String::new(),
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            any_ports: true,
            database_prefix: prefix.to_owned(),
            data_dir: std::env::temp_dir().join(format!("pulsaga-{prefix}")),
            embedded_postgres: false,
            replicas: 1,
            demo: false,
            in_process: false,
            log_filter: Some("warn".into()),
            database_proxy: false,
            broker_proxy: false,
        }
    }

    /// How the platform's processes run and log.
    fn log(&self) -> Log {
        if self.in_process {
            Log::InProcess
        } else {
            Log::Child(self.log_filter.clone())
        }
    }
}

/// A port for a process: its default, or a free one.
fn port(default: u16, any: bool) -> anyhow::Result<u16> {
    if !any {
        return Ok(default);
    }
    // Below the ephemeral range (32768 and up on Linux): a port the system hands out for `:0`
    // can be taken by an outgoing connection's local end before the process binds it.
    use rand::Rng;
    let mut rng = rand::rng();
    (0..1000)
        .map(|_| rng.random_range(20_000..32_000))
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .context("finding a free port")
}

/// A running platform: its processes, and the PostgreSQL and broker it started.
pub struct Platform {
    /// The API's base URL (`http://host:port`).
    pub api: String,
    /// Each service's query API.
    pub urls: Vec<(Service, String)>,
    pub simulator: String,
    /// The PostgreSQL server the services' databases are on.
    pub database_url: String,
    pub pulsar_url: String,
    pub pulsar_admin_url: String,
    /// What the services' query APIs require; made for this platform.
    pub service_token: ServiceToken,
    children: Vec<Process>,
    postgres: Option<LocalPostgres>,
    broker: Option<Standalone>,
    /// Between the processes and PostgreSQL, when the harness asked for it.
    database_proxy: Option<Proxy>,
    /// Between the processes and the broker, when the harness asked for it.
    broker_proxy: Option<Proxy>,
}

impl Platform {
    /// Starts everything and waits until the API is ready.
    pub async fn start(options: &Options, jwt: &Jwt) -> anyhow::Result<Platform> {
        start(options, jwt).await
    }

    /// Stops the processes (API first), then the broker and PostgreSQL it started.
    pub async fn stop(self) {
        stop(self.children, self.postgres, self.broker).await;
    }

    /// Keeps every process running until `stop`: one that dies is reported with how it ended
    /// and started again after a backoff, 1 s doubling to 30 s while it keeps dying within a
    /// minute of its start. Each knows how often it was restarted and shows it on `/readyz`.
    pub async fn supervise(&mut self, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(TEND_EVERY) => {}
            }
            self.tend();
        }
    }

    /// One round of [`Platform::supervise`]: notices deaths, restarts what is due.
    pub fn tend(&mut self) {
        for process in &mut self.children {
            process.tend();
        }
    }

    /// The names of its processes, in the order [`Platform::kill`] takes them.
    pub fn processes(&self) -> Vec<&str> {
        self.children
            .iter()
            .map(|process| process.name.as_str())
            .collect()
    }

    /// Kills the `index`-th process with SIGKILL, as a crash would; tending starts it again.
    pub fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        let process = self.children.get_mut(index).context("no such process")?;
        process
            .running
            .kill()
            .with_context(|| format!("killing {}", process.name))
    }

    /// Kills the broker it started with SIGKILL and starts it again on the same ports and data.
    pub async fn restart_broker(&mut self) -> anyhow::Result<()> {
        let broker = self
            .broker
            .as_mut()
            .context("the platform's broker is not its own")?;
        broker.kill().await?;
        broker.restart().await?;
        Ok(())
    }

    /// Restarts the PostgreSQL it started in immediate mode: every connection is cut and the
    /// server recovers from its write-ahead log, as after a crash.
    pub async fn restart_postgres(&mut self) -> anyhow::Result<()> {
        self.postgres
            .as_ref()
            .context("the platform's PostgreSQL is not its own")?
            .restart_immediately()
            .await
    }

    /// Cuts every connection between the processes and PostgreSQL, and refuses new ones for
    /// `outage`.
    pub fn cut_database(&self, outage: Duration) -> anyhow::Result<()> {
        self.database_proxy
            .as_ref()
            .context("the platform's processes reach PostgreSQL without a proxy")?
            .cut(outage);
        Ok(())
    }

    /// Cuts every connection between the processes and the broker, and refuses new ones for
    /// `outage`.
    pub fn cut_broker(&self, outage: Duration) -> anyhow::Result<()> {
        self.broker_proxy
            .as_ref()
            .context("the platform's processes reach the broker without a proxy")?
            .cut(outage);
        Ok(())
    }

    /// The process id of the broker it started, if it started one.
    pub fn broker_pid(&self) -> Option<u32> {
        self.broker.as_ref().and_then(Standalone::pid)
    }
}

pub async fn up(options: Options, jwt: &Jwt) -> anyhow::Result<()> {
    let mut platform = Platform::start(&options, jwt).await?;
    let secret = jwt.secret()?;
    let api = platform.api.clone();
    println!("Pulsaga is up.");
    println!();
    println!("  API        {api}/v1   (OpenAPI {api}/openapi.json, Swagger UI {api}/docs)");
    println!("  ready      {api}/readyz");
    for (service, url) in &platform.urls {
        println!("  {:<10} {url}", service.name());
    }
    println!(
        "  token      SERVICE_TOKEN={}   (the services' query APIs require it; export it for \
         `pulsaga saga` and `pulsaga events`)",
        platform.service_token.expose()
    );
    println!("  payout-sim {}", platform.simulator);
    println!(
        "  broker     {}   (admin {})",
        platform.pulsar_url, platform.pulsar_admin_url
    );
    println!();
    println!("Tokens (valid 12 h; `pulsaga token --role R --tenant T` mints more):");
    let advertiser = uuid::Uuid::new_v4().to_string();
    let mut admin = String::new();
    for (role, tenant) in [
        (bff::auth::Role::Admin, None),
        (bff::auth::Role::Auditor, None),
        (bff::auth::Role::Advertiser, Some(advertiser.as_str())),
    ] {
        let token = bff::auth::mint_hs256(
            secret,
            &jwt.jwt_issuer,
            &jwt.jwt_audience,
            role.name(),
            role,
            tenant,
            12 * 3600,
        )?;
        println!("  {:<10} {token}", role.name());
        if role == bff::auth::Role::Admin {
            admin = token;
        }
    }
    println!(
        "  (a partner's token names its partner id: pulsaga token --role partner --tenant <id>)"
    );
    println!();
    // The token travels in the fragment, which the browser never sends to a server.
    println!("Console (signed in as admin): {api}/ui/#token={admin}");
    println!();
    let outcome = if options.demo {
        crate::demo::run(&api, jwt).await
    } else {
        Ok(())
    };
    match &outcome {
        Ok(()) => {
            println!("Ctrl-C stops everything.");
            platform.supervise(serve::stop_on_signal()).await;
        }
        Err(error) => eprintln!("pulsaga: the demo failed: {error:#}"),
    }
    platform.stop().await;
    outcome
}

async fn start(options: &Options, jwt: &Jwt) -> anyhow::Result<Platform> {
    let secret = jwt
        .secret()
        .context("JWT_SECRET signs the development tokens `up` prints (any 32 bytes or more)")?;
    let (database_url, postgres) = match &options.database_url {
        Some(url) => (url.clone(), None),
        None => {
            let own = options.embedded_postgres;
            local_postgres(&options.data_dir, own, options.any_ports).await?
        }
    };
    let (pulsar_url, pulsar_admin_url, broker, broker_proxy) = match &options.pulsar_url {
        Some(_) if options.broker_proxy => {
            stop(Vec::new(), postgres, None).await;
            anyhow::bail!("only a broker of the platform's own can be put behind a proxy");
        }
        Some(url) => (url.clone(), options.pulsar_admin_url.clone(), None, None),
        None => {
            let (started, proxy) = start_broker(options).await?;
            (started.url(), started.admin_url(), Some(started), proxy)
        }
    };
    let infrastructure = Infrastructure {
        postgres: Postgres {
            url: database_url.clone(),
        },
        database_connections: crate::settings::DATABASE_CONNECTIONS,
        database_idle_seconds: crate::settings::DATABASE_IDLE_SECONDS,
        pulsar_url: pulsar_url.clone(),
        pulsar_admin_url: pulsar_admin_url.clone(),
        pulsar_tenant: "public".into(),
        pulsar_namespace: "default".into(),
    };
    let mut children = Vec::new();
    let broker_address = broker_proxy.as_ref().map(Proxy::address);
    let started = start_processes(
        options,
        secret,
        jwt,
        &infrastructure,
        broker_address,
        &mut children,
    );
    match started.await {
        Ok(started) => Ok(Platform {
            api: started.api,
            urls: started.urls,
            simulator: format!("http://{}", started.sim),
            database_url,
            pulsar_url,
            pulsar_admin_url,
            service_token: started.service_token,
            children,
            postgres,
            broker,
            database_proxy: started.database_proxy,
            broker_proxy,
        }),
        Err(error) => {
            stop(children, postgres, broker).await;
            Err(error)
        }
    }
}

/// Apache Pulsar standalone under `data_dir/broker`, behind a proxy of its own when
/// `broker_proxy` asks for one (the proxy is returned).
async fn start_broker(options: &Options) -> anyhow::Result<(Standalone, Option<Proxy>)> {
    let mut proxy = None;
    let proxied = if options.broker_proxy {
        let bind_port = port(0, true)?;
        let started = Proxy::start(SocketAddr::from(([127, 0, 0, 1], bind_port))).await?;
        let advertised_port = started.address().port();
        proxy = Some(started);
        Some(ProxiedListener {
            bind_port,
            advertised_port,
        })
    } else {
        None
    };
    eprintln!(
        "Starting Apache Pulsar {} standalone (data in {})…",
        messaging::broker::PULSAR_VERSION,
        options.data_dir.join("broker").display()
    );
    let started = Standalone::start(&StandaloneSettings {
        broker_port: port(6650, options.any_ports)?,
        web_port: port(8080, options.any_ports)?,
        proxied,
        ..StandaloneSettings::in_dir(options.data_dir.join("broker"))
    })
    .await
    .context("starting Apache Pulsar")?;
    eprintln!(
        "Apache Pulsar is up after {:.1} s.",
        started.started_in().as_secs_f64()
    );
    Ok((started, proxy))
}
