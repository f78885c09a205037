//! The supervised child processes of `pulsaga up`: started, tended (one that dies is reported
//! and started again after a backoff), waited for until the API is ready, and stopped, the broker
//! and PostgreSQL last.

use super::postgres::LocalPostgres;
use anyhow::Context;
use messaging::broker::Standalone;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// A process of the platform: how it is started, and the one running now.
pub(super) struct Process {
    pub(super) name: String,
    pub(super) args: Vec<String>,
    pub(super) env: Vec<(String, String)>,
    pub(super) log: Option<String>,
    pub(super) child: Child,
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
    pub(super) fn start(
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
    pub(super) fn tend(&mut self) {
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

pub(super) fn spawn(
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
pub(super) async fn wait_ready(api: &str, children: &mut [Process]) -> anyhow::Result<()> {
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
pub(super) async fn stop(
    children: Vec<Process>,
    postgres: Option<LocalPostgres>,
    broker: Option<Standalone>,
) {
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
