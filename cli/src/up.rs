//! `pulsaga up`: the whole platform on one machine. It uses `DATABASE_URL` and `PULSAR_URL` when
//! given; otherwise the PostgreSQL answering on 127.0.0.1:5432, or one it initialises and starts
//! from the system's binaries (data under `.pulsaga/postgres`, run as the `postgres` user when
//! started as root), and Apache Pulsar standalone (data under `.pulsaga/broker`). It migrates the
//! databases, provisions the Pulsar namespace, starts every service, the coordinator, the payout
//! simulator and the API as child processes of this binary, prints the URLs and a token per
//! role, and on Ctrl-C stops them all (SIGTERM: each finishes what it holds), the broker last.

use crate::proxy::Proxy;
use crate::settings::{Infrastructure, Jwt};
use crate::{Service, serve};
use anyhow::Context;
use messaging::ServiceToken;
use messaging::broker::{ProxiedListener, Standalone, StandaloneSettings};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

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
            log_filter: Some("warn".into()),
            database_proxy: false,
            broker_proxy: false,
        }
    }
}

/// A port for a process: its default, or a free one.
fn port(default: u16, any: bool) -> anyhow::Result<u16> {
    if !any {
        return Ok(default);
    }
    let socket = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(socket.local_addr()?.port())
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
            .child
            .start_kill()
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
    let mut postgres = None;
    let database_url = match &options.database_url {
        Some(url) => url.clone(),
        None => {
            let (url, started) = local_postgres(
                &options.data_dir,
                options.embedded_postgres,
                options.any_ports,
            )
            .await?;
            postgres = started;
            url
        }
    };
    let mut broker = None;
    let mut broker_proxy = None;
    let (pulsar_url, pulsar_admin_url) = match &options.pulsar_url {
        Some(_) if options.broker_proxy => {
            stop(Vec::new(), postgres, None).await;
            anyhow::bail!("only a broker of the platform's own can be put behind a proxy");
        }
        Some(url) => (url.clone(), options.pulsar_admin_url.clone()),
        None => {
            let proxied = if options.broker_proxy {
                let bind_port = port(0, true)?;
                let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], bind_port))).await?;
                let advertised_port = proxy.address().port();
                broker_proxy = Some(proxy);
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
            let urls = (started.url(), started.admin_url());
            broker = Some(started);
            urls
        }
    };
    let infrastructure = Infrastructure {
        database_url: database_url.clone(),
        database_connections: crate::settings::DATABASE_CONNECTIONS,
        database_idle_seconds: crate::settings::DATABASE_IDLE_SECONDS,
        pulsar_url: pulsar_url.clone(),
        pulsar_admin_url: pulsar_admin_url.clone(),
        pulsar_tenant: "public".into(),
        pulsar_namespace: "default".into(),
    };
    let prepared = prepare(options, &infrastructure).await;
    if let Err(error) = prepared {
        stop(Vec::new(), postgres, broker).await;
        return Err(error);
    }
    let database = |service: Service| format!("{}{}", options.database_prefix, service.name());
    let (database_proxy, processes_database_url) = if options.database_proxy {
        match proxied(&database_url).await {
            Ok((proxy, url)) => (Some(proxy), url),
            Err(error) => {
                stop(Vec::new(), postgres, broker).await;
                return Err(error);
            }
        }
    } else {
        (None, database_url.clone())
    };

    let processes_pulsar_url = match &broker_proxy {
        Some(proxy) => format!("pulsar://{}", proxy.address()),
        None => pulsar_url.clone(),
    };
    let service_token = ServiceToken::random();
    let shared_env = [
        ("DATABASE_URL", processes_database_url.as_str()),
        ("PULSAR_URL", processes_pulsar_url.as_str()),
        ("PULSAR_ADMIN_URL", pulsar_admin_url.as_str()),
        ("SERVICE_TOKEN", service_token.expose()),
    ];
    let mut children: Vec<Process> = Vec::new();
    let sim = format!("127.0.0.1:{}", port(7199, options.any_ports)?);
    children.push(Process::start(
        "payout-sim",
        &["serve", "payout-sim", "--listen", &sim],
        &[],
        options.log_filter.as_deref(),
    )?);
    let mut urls = Vec::new();
    for service in Service::ALL {
        for replica in 1..=options.replicas {
            // The first replica on the service's port; the others on free ones.
            let default_port = match replica {
                1 => crate::default_listen(service).port(),
                _ => 0,
            };
            let listen = format!(
                "127.0.0.1:{}",
                port(default_port, options.any_ports || replica > 1)?
            );
            let name = database(service);
            let mut args = vec![
                "serve",
                service.name(),
                "--listen",
                &listen,
                "--database",
                &name,
            ];
            let provider = format!("http://{sim}");
            if service == Service::Payments {
                args.extend(["--payout-provider-url", &provider]);
            }
            let process = match replica {
                1 => service.name().to_owned(),
                _ => format!("{}-{replica}", service.name()),
            };
            children.push(Process::start(
                process,
                &args,
                &shared_env,
                options.log_filter.as_deref(),
            )?);
            if replica == 1 {
                urls.push((service, format!("http://{listen}")));
            }
        }
    }
    let api_listen = if options.any_ports {
        SocketAddr::from(([127, 0, 0, 1], port(0, true)?))
    } else {
        options.listen
    };
    let api = format!("http://{api_listen}");
    let url_of = |s: Service| {
        urls.iter()
            .find(|(service, _)| *service == s)
            .map(|(_, url)| url.clone())
            .unwrap_or_default()
    };
    let api_env = [
        ("PULSAR_URL", processes_pulsar_url.clone()),
        ("PULSAR_ADMIN_URL", pulsar_admin_url.clone()),
        ("CAMPAIGNS_URL", url_of(Service::Campaigns)),
        ("TRACKING_URL", url_of(Service::Tracking)),
        ("COMMISSIONS_URL", url_of(Service::Commissions)),
        ("PAYMENTS_URL", url_of(Service::Payments)),
        ("SAGAS_URL", url_of(Service::Sagas)),
        ("SERVICE_TOKEN", service_token.expose().to_owned()),
        ("JWT_SECRET", String::from_utf8_lossy(secret).into_owned()),
        ("JWT_ISSUER", jwt.jwt_issuer.clone()),
        ("JWT_AUDIENCE", jwt.jwt_audience.clone()),
    ];
    let api_env: Vec<(&str, &str)> = api_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    children.push(Process::start(
        "bff",
        &["serve", "bff", "--listen", &api_listen.to_string()],
        &api_env,
        options.log_filter.as_deref(),
    )?);

    if let Err(error) = wait_ready(&api, &mut children).await {
        stop(children, postgres, broker).await;
        return Err(error);
    }
    Ok(Platform {
        api,
        urls,
        simulator: format!("http://{sim}"),
        database_url,
        pulsar_url,
        pulsar_admin_url,
        service_token,
        children,
        postgres,
        broker,
        database_proxy,
        broker_proxy,
    })
}

/// A proxy to the PostgreSQL server at `database_url`, and the URL that reaches it through it.
async fn proxied(database_url: &str) -> anyhow::Result<(Proxy, String)> {
    let mut url = reqwest::Url::parse(database_url).context("DATABASE_URL is not a URL")?;
    let host = url
        .host_str()
        .context("DATABASE_URL names no host")?
        .to_owned();
    let port = url.port().unwrap_or(5432);
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .with_context(|| format!("{host} resolves to no address"))?;
    let proxy = Proxy::start(target).await?;
    url.set_host(Some("127.0.0.1"))?;
    url.set_port(Some(proxy.address().port()))
        .map_err(|()| anyhow::anyhow!("DATABASE_URL cannot take a port"))?;
    Ok((proxy, url.to_string()))
}

/// Creates and migrates every service's database and provisions the Pulsar namespace.
async fn prepare(options: &Options, infrastructure: &Infrastructure) -> anyhow::Result<()> {
    serve::provision(infrastructure).await?;
    for service in Service::ALL {
        let name = format!("{}{}", options.database_prefix, service.name());
        serve::database(service, &name, infrastructure)
            .await?
            .close()
            .await;
    }
    Ok(())
}

/// A process of the platform: how it is started, and the one running now.
struct Process {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: Option<String>,
    child: Child,
    /// How often it was started again.
    restarts: u32,
    /// Deaths in a row within a minute of a start: the backoff doubles with each.
    failures: u32,
    started: Instant,
    /// When a process that died is started again.
    restart_at: Option<Instant>,
}

/// How often a supervisor looks at its processes.
const TEND_EVERY: Duration = Duration::from_millis(200);

/// A process up this long is stable: its next death starts the backoff over.
const STABLE: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Process {
    fn start(
        name: impl Into<String>,
        args: &[&str],
        env: &[(&str, &str)],
        log: Option<&str>,
    ) -> anyhow::Result<Process> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let child = spawn(&args, &env, log, 0)?;
        Ok(Process {
            name: name.into(),
            args,
            env,
            log: log.map(str::to_owned),
            child,
            restarts: 0,
            failures: 0,
            started: Instant::now(),
            restart_at: None,
        })
    }

    /// Notices a death, or starts the process again once its backoff ran out.
    fn tend(&mut self) {
        let now = Instant::now();
        if let Some(due) = self.restart_at {
            if now < due {
                return;
            }
            match spawn(
                &self.args,
                &self.env,
                self.log.as_deref(),
                self.restarts + 1,
            ) {
                Ok(child) => {
                    self.child = child;
                    self.restarts += 1;
                    self.started = now;
                    self.restart_at = None;
                    eprintln!(
                        "pulsaga: {} started again (restart {})",
                        self.name, self.restarts
                    );
                }
                Err(error) => {
                    let backoff = self.backoff();
                    eprintln!(
                        "pulsaga: starting {} again failed: {error:#}; next try in {backoff:?}",
                        self.name
                    );
                    self.restart_at = Some(now + backoff);
                }
            }
            return;
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            self.failures = if self.started.elapsed() >= STABLE {
                0
            } else {
                self.failures + 1
            };
            let backoff = self.backoff();
            eprintln!(
                "pulsaga: {} exited ({status}) after {:.1} s; starting it again in {backoff:?}",
                self.name,
                self.started.elapsed().as_secs_f64()
            );
            self.restart_at = Some(now + backoff);
        }
    }

    fn backoff(&self) -> Duration {
        Duration::from_secs(1)
            .saturating_mul(2u32.saturating_pow(self.failures.saturating_sub(1)))
            .min(MAX_BACKOFF)
    }
}

fn spawn(
    args: &[String],
    env: &[(String, String)],
    log: Option<&str>,
    restarts: u32,
) -> anyhow::Result<Child> {
    let binary = std::env::current_exe().context("finding this binary")?;
    let mut command = Command::new(binary);
    if let Some(filter) = log {
        command.env("RUST_LOG", filter);
    }
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("PULSAGA_RESTARTS", restarts.to_string())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting pulsaga {}", args.join(" ")))
}

/// Waits until the API answers `/readyz`, failing early if a process exits.
async fn wait_ready(api: &str, children: &mut [Process]) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for process in children.iter_mut() {
            if let Some(status) = process.child.try_wait()? {
                anyhow::bail!(
                    "{} exited ({status}) before the platform was ready",
                    process.name
                );
            }
        }
        if let Ok(response) = http.get(format!("{api}/readyz")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the platform was not ready within two minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops the API first and the payout simulator last, each with SIGTERM and a grace period.
async fn stop(children: Vec<Process>, postgres: Option<LocalPostgres>, broker: Option<Standalone>) {
    for Process {
        name, mut child, ..
    } in children.into_iter().rev()
    {
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("pulsaga: {name} did not stop within 20 s; killing it");
                let _ = child.kill().await;
            }
        }
    }
    if let Some(broker) = broker
        && let Err(error) = broker.stop().await
    {
        eprintln!("pulsaga: stopping Apache Pulsar failed: {error}");
    }
    if let Some(postgres) = postgres {
        postgres.stop().await;
    }
}

/// A PostgreSQL this command started.
struct LocalPostgres {
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
}

impl LocalPostgres {
    async fn restart_immediately(&self) -> anyhow::Result<()> {
        let status = pg_command(&self.bin, "pg_ctl", self.as_postgres)
            .args(["-D", &self.data.to_string_lossy(), "-l"])
            .arg(self.data.join("server.log"))
            .args(["-m", "immediate", "-w", "restart"])
            .stdout(std::process::Stdio::null())
            .status()
            .await?;
        anyhow::ensure!(
            status.success(),
            "PostgreSQL did not restart; see {}",
            self.data.join("server.log").display()
        );
        Ok(())
    }

    async fn stop(self) {
        let _ = pg_command(&self.bin, "pg_ctl", self.as_postgres)
            .args([
                "-D",
                &self.data.to_string_lossy(),
                "-m",
                "fast",
                "-w",
                "stop",
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .await;
    }
}

/// `tool` from `bin`, run as the `postgres` user when this process is root (PostgreSQL refuses
/// to run as root).
fn pg_command(bin: &Path, tool: &str, as_postgres: bool) -> Command {
    let path = bin.join(tool);
    if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    }
}

/// The PostgreSQL answering on 127.0.0.1:5432 (unless `own`), or one started from the system's
/// binaries with its data under `data_dir/postgres`.
async fn local_postgres(
    data_dir: &Path,
    own: bool,
    any_port: bool,
) -> anyhow::Result<(String, Option<LocalPostgres>)> {
    let default = "postgres://postgres@127.0.0.1:5432/postgres".to_owned();
    if !own
        && tokio::net::TcpStream::connect("127.0.0.1:5432")
            .await
            .is_ok()
    {
        return Ok((default, None));
    }
    let bin = postgres_bin().context(
        "no PostgreSQL answers on 127.0.0.1:5432 and none is installed (apt-get install postgresql)",
    )?;
    let as_postgres = is_root().await;
    let data = std::path::absolute(data_dir.join("postgres"))?;
    if !data.join("PG_VERSION").exists() {
        std::fs::create_dir_all(&data)?;
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres", &data.to_string_lossy()])
                .status()
                .await?;
            anyhow::ensure!(status.success(), "chown of {} failed", data.display());
            let reachable = Command::new("runuser")
                .args([
                    "-u",
                    "postgres",
                    "--",
                    "test",
                    "-w",
                    &data.to_string_lossy(),
                ])
                .status()
                .await?;
            anyhow::ensure!(
                reachable.success(),
                "the postgres user cannot reach {} (a parent folder is closed to it); pass --data-dir \
                 a folder it can reach, such as /var/tmp/pulsaga",
                data.display()
            );
        }
        let status = pg_command(&bin, "initdb", as_postgres)
            .args([
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "-A",
                "trust",
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .await?;
        anyhow::ensure!(status.success(), "initdb failed");
    }
    let port = port(5432, any_port)?;
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1",
        data.display()
    );
    let status = pg_command(&bin, "pg_ctl", as_postgres)
        .args(["-D", &data.to_string_lossy(), "-l"])
        .arg(data.join("server.log"))
        .args(["-o", &options, "-w", "start"])
        .stdout(std::process::Stdio::null())
        .status()
        .await?;
    anyhow::ensure!(
        status.success(),
        "PostgreSQL did not start; see {}",
        data.join("server.log").display()
    );
    Ok((
        format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        Some(LocalPostgres {
            bin,
            data,
            as_postgres,
        }),
    ))
}

/// The newest `/usr/lib/postgresql/<version>/bin` (Debian's layout).
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

async fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .await
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}
