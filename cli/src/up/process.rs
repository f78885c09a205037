//! The supervised processes of `pulsaga up`: started, tended (one that dies is reported and
//! started again after a backoff), waited for until the API is ready, and stopped, the broker and
//! PostgreSQL last. Each is a child process of this binary, or, with `--in-process`, a task of
//! this process running the same `pulsaga serve` command.

use super::postgres::LocalPostgres;
use anyhow::Context;
use messaging::broker::Standalone;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A process of the platform: how it is started, and the one running now.
pub(super) struct Process {
    pub(super) name: String,
    pub(super) args: Vec<String>,
    pub(super) env: Vec<(String, String)>,
    pub(super) log: Log,
    pub(super) running: Running,
    /// How often it was started again.
    pub(super) restarts: u32,
    /// Deaths in a row within a minute of a start: the backoff doubles with each.
    pub(super) failures: u32,
    pub(super) started: Instant,
    /// When a process that died is started again.
    pub(super) restart_at: Option<Instant>,
}

/// How often a supervisor looks at its processes.
pub(super) const TEND_EVERY: Duration = Duration::from_millis(200);

/// A process up this long is stable: its next death starts the backoff over.
pub(super) const STABLE: Duration = Duration::from_secs(60);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Process {
    /// Starts `pulsaga <args>` with `env`: a child process logging as `log` says, or a task of
    /// this process when `log` is [`Log::InProcess`].
    pub(super) fn start(
        name: impl Into<String>,
        args: &[&str],
        env: &[(&str, &str)],
        log: Log,
    ) -> anyhow::Result<Process> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let running = spawn(&args, &env, &log, 0)?;
        Ok(Process {
            name: name.into(),
            args,
            env,
            log,
            running,
            restarts: 0,
            failures: 0,
            started: Instant::now(),
            restart_at: None,
        })
    }

    /// Notices a death, or starts the process again once its backoff ran out.
    pub(super) fn tend(&mut self) {
        let now = Instant::now();
        if let Some(due) = self.restart_at {
            if now < due {
                return;
            }
            match spawn(&self.args, &self.env, &self.log, self.restarts + 1) {
                Ok(running) => {
                    self.running = running;
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
        if let Some(status) = self.running.ended() {
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

/// How a process of the platform runs, and logs.
#[derive(Debug, Clone)]
pub(super) enum Log {
    /// A child process, with `RUST_LOG` set to the filter when there is one.
    Child(Option<String>),
    /// A task of this process, logging through its subscriber.
    InProcess,
}

/// A process of the platform as it runs now.
pub(super) enum Running {
    Child(Child),
    Task {
        stop: CancellationToken,
        task: JoinHandle<()>,
    },
}

impl Running {
    /// How it ended, if it did.
    fn ended(&mut self) -> Option<String> {
        match self {
            Running::Child(child) => child.try_wait().ok().flatten().map(|s| s.to_string()),
            Running::Task { task, .. } => task.is_finished().then(|| "its task ended".into()),
        }
    }

    /// Ends it at once, as a crash would: SIGKILL, or the task dropped where it stands.
    pub(super) fn kill(&mut self) -> anyhow::Result<()> {
        match self {
            Running::Child(child) => Ok(child.start_kill()?),
            Running::Task { task, .. } => {
                task.abort();
                Ok(())
            }
        }
    }

    /// Asks it to stop (SIGTERM, or its stop token: it finishes what it holds) and waits 20 s
    /// before killing it.
    async fn stop(self, name: &str) {
        match self {
            Running::Child(mut child) => {
                if let Some(pid) = child.id() {
                    let _ = Command::new("kill")
                        .args(["-TERM", &pid.to_string()])
                        .status()
                        .await;
                }
                if tokio::time::timeout(Duration::from_secs(20), child.wait())
                    .await
                    .is_err()
                {
                    eprintln!("pulsaga: {name} did not stop within 20 s; killing it");
                    let _ = child.kill().await;
                }
            }
            Running::Task { stop, mut task } => {
                stop.cancel();
                if tokio::time::timeout(Duration::from_secs(20), &mut task)
                    .await
                    .is_err()
                {
                    eprintln!("pulsaga: {name} did not stop within 20 s; dropping it");
                    task.abort();
                }
            }
        }
    }
}

pub(super) fn spawn(
    args: &[String],
    env: &[(String, String)],
    log: &Log,
    restarts: u32,
) -> anyhow::Result<Running> {
    let filter = match log {
        Log::InProcess => return in_process(args, env, restarts),
        Log::Child(filter) => filter,
    };
    let binary = std::env::current_exe().context("finding this binary")?;
    let mut command = Command::new(binary);
    if let Some(filter) = filter {
        command.env("RUST_LOG", filter);
    }
    // The processes share this machine's cores: each runs its tasks on one thread, unless
    // told otherwise (`pulsaga serve --worker-threads`).
    if std::env::var_os("PULSAGA_WORKER_THREADS").is_none() {
        command.env("PULSAGA_WORKER_THREADS", "1");
    }
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("PULSAGA_RESTARTS", restarts.to_string())
        .kill_on_drop(true)
        .spawn()
        .map(Running::Child)
        .with_context(|| format!("starting pulsaga {}", args.join(" ")))
}

/// `pulsaga <args>` (a `serve` command) as a task of this process: each of `env`'s variables
/// given as the flag it stands for (`DATABASE_URL` as `--database-url`), so that what a child
/// process would read from its environment this task reads from its own arguments.
fn in_process(args: &[String], env: &[(String, String)], restarts: u32) -> anyhow::Result<Running> {
    let flags = env.iter().flat_map(|(name, value)| {
        [
            format!("--{}", name.to_lowercase().replace('_', "-")),
            value.clone(),
        ]
    });
    let argv = ["pulsaga".to_owned()]
        .into_iter()
        .chain(args.iter().cloned())
        .chain(flags)
        .chain(["--restarts".to_owned(), restarts.to_string()]);
    let serve = match <crate::Cli as clap::Parser>::try_parse_from(argv)?.command {
        crate::Command::Serve(serve) => serve,
        _ => anyhow::bail!(
            "only `pulsaga serve` runs in process, not `pulsaga {}`",
            args.join(" ")
        ),
    };
    let name = serve.process.name();
    let stop = CancellationToken::new();
    let shutdown = stop.clone();
    let task = tokio::spawn(async move {
        if let Err(error) = crate::serve::run(serve, shutdown).await {
            eprintln!("pulsaga: {name} failed: {error:#}");
        }
    });
    Ok(Running::Task { stop, task })
}

/// Waits until the API answers `/readyz`, failing early if a process exits.
pub(super) async fn wait_ready(api: &str, children: &mut [Process]) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for process in children.iter_mut() {
            if let Some(status) = process.running.ended() {
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

/// Stops the API first and the payout simulator last, each asked to stop and given a grace
/// period.
pub(super) async fn stop(
    children: Vec<Process>,
    postgres: Option<LocalPostgres>,
    broker: Option<Standalone>,
) {
    for Process { name, running, .. } in children.into_iter().rev() {
        running.stop(&name).await;
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
