//! Runs Apache Pulsar standalone (broker, bookie and metadata store in one JVM) as a child
//! process: the official binary distribution, which `scripts/setup.sh` fetches from Maven Central
//! and unpacks once into a cache. `pulsaga up`, `pulsaga serve broker`, the test command and the
//! tests that restart a broker use it; production points `PULSAR_URL` at a cluster instead.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The Apache Pulsar release the project runs and is tested on.
pub const PULSAR_VERSION: &str = "4.0.8";
/// The environment variable naming the unpacked distribution (`scripts/setup.sh` sets it).
pub const HOME_ENV: &str = "PULSAR_HOME";
const READY_TIMEOUT: Duration = Duration::from_secs(180);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a healthy broker may take before it can create a topic (open a new ledger).
const WRITABLE_TIMEOUT: Duration = Duration::from_secs(45);
/// Starts after a `kill -9` before a restart gives up.
const RESTART_ATTEMPTS: u32 = 3;

/// Why the broker could not run.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(
        "Apache Pulsar {PULSAR_VERSION} not found: set {HOME_ENV} to the unpacked distribution \
         (bash scripts/setup.sh fetches it)"
    )]
    NotFound,
    #[error("cannot start Apache Pulsar ({path})")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Apache Pulsar exited before it was ready; see {log}")]
    Exited { log: PathBuf },
    #[error("Apache Pulsar was not healthy within {READY_TIMEOUT:?}; see {log}")]
    NotReady { log: PathBuf },
    #[error(
        "Apache Pulsar was healthy but could not create a topic within {WRITABLE_TIMEOUT:?}; see {log}"
    )]
    NotWritable { log: PathBuf },
    #[error("broker I/O")]
    Io(#[from] std::io::Error),
}

/// Where the distribution is, where the broker keeps its data, and its ports.
#[derive(Debug, Clone)]
pub struct StandaloneSettings {
    /// The unpacked distribution; `None` takes `PULSAR_HOME`, then the cache `setup.sh` fills.
    pub home: Option<PathBuf>,
    /// Its configuration, bookie journal and ledgers, metadata and logs.
    pub data_dir: PathBuf,
    /// The binary protocol's port (`pulsar://`); 0 takes a free one.
    pub broker_port: u16,
    /// The admin REST API's port (`http://`); 0 takes a free one.
    pub web_port: u16,
    /// A second listener for clients that reach the broker through a proxy.
    pub proxied: Option<ProxiedListener>,
}

/// A listener for clients behind a TCP proxy (`pulsaga chaos` cuts their link with it). A
/// client follows the address a topic lookup answers, so a proxy on the service URL alone is
/// bypassed after the first lookup. The broker listens for these clients on `bind_port`, where
/// the proxy forwards, and answers their lookups with `advertised_port`, the proxy's; clients on
/// the broker port are answered with the broker port, as without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxiedListener {
    pub bind_port: u16,
    pub advertised_port: u16,
}

impl StandaloneSettings {
    /// Free ports, the distribution found as [`StandaloneSettings::home`] says.
    pub fn in_dir(data_dir: impl Into<PathBuf>) -> Self {
        StandaloneSettings {
            home: None,
            data_dir: data_dir.into(),
            broker_port: 0,
            web_port: 0,
            proxied: None,
        }
    }
}

/// An Apache Pulsar standalone process on loopback. Killed when dropped; [`Standalone::stop`]
/// stops it cleanly.
#[derive(Debug)]
pub struct Standalone {
    home: PathBuf,
    data_dir: PathBuf,
    broker_port: u16,
    web_port: u16,
    child: Child,
    started_in: Duration,
}

impl Standalone {
    /// Starts the broker and waits until its health check passes and it can create a topic.
    pub async fn start(settings: &StandaloneSettings) -> Result<Self, BrokerError> {
        let home = match &settings.home {
            Some(home) => home.clone(),
            None => find_home().ok_or(BrokerError::NotFound)?,
        };
        if !home.join("bin/pulsar").is_file() {
            return Err(BrokerError::NotFound);
        }
        std::fs::create_dir_all(&settings.data_dir)?;
        let data_dir = std::path::absolute(&settings.data_dir)?;
        let port = |port: u16| if port == 0 { free_port() } else { Ok(port) };
        let broker_port = port(settings.broker_port)?;
        let web_port = port(settings.web_port)?;
        let config = configuration(
            &std::fs::read_to_string(home.join("conf/standalone.conf"))?,
            broker_port,
            web_port,
            settings.proxied,
        );
        std::fs::write(data_dir.join("standalone.conf"), config)?;
        let mut broker = Standalone {
            child: spawn(&home, &data_dir)?,
            home,
            data_dir,
            broker_port,
            web_port,
            started_in: Duration::ZERO,
        };
        broker.wait_until_ready().await?;
        Ok(broker)
    }

    /// `pulsar://127.0.0.1:<port>`, what clients connect to.
    pub fn url(&self) -> String {
        format!("pulsar://127.0.0.1:{}", self.broker_port)
    }

    /// `http://127.0.0.1:<port>`, the admin REST API.
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.web_port)
    }

    /// How long the last start took, from spawning the JVM to a passing health check.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The JVM's process id, to measure its CPU and memory.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the broker at once (SIGKILL), as a crash would.
    pub async fn kill(&mut self) -> Result<(), BrokerError> {
        self.child.kill().await?;
        Ok(())
    }

    /// Starts the broker again on the same ports and data, and waits until it is healthy and can
    /// create a topic. Now and then a standalone started right after a `kill -9` passes its
    /// health check but cannot open a new ledger for minutes ("Not enough non-faulty bookies
    /// available"); such a start is killed and made again, up to `RESTART_ATTEMPTS` times.
    pub async fn restart(&mut self) -> Result<(), BrokerError> {
        let mut attempt = 1;
        loop {
            self.child = spawn(&self.home, &self.data_dir)?;
            match self.wait_until_ready().await {
                Err(BrokerError::NotWritable { log }) if attempt < RESTART_ATTEMPTS => {
                    tracing::warn!(attempt, log = %log.display(), "apache pulsar cannot create topics; starting it again");
                    self.kill().await?;
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// Stops the broker with SIGTERM (it closes its ledgers and cursors), killing it if it has
    /// not exited within half a minute.
    pub async fn stop(mut self) -> Result<(), BrokerError> {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
            if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
                .await
                .is_ok()
            {
                return Ok(());
            }
            tracing::warn!("apache pulsar ignored SIGTERM; killing it");
        }
        self.kill().await
    }

    async fn wait_until_ready(&mut self) -> Result<(), BrokerError> {
        let log = self.data_dir.join("pulsar.log");
        let started = Instant::now();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let health = format!("{}/admin/v2/brokers/health", self.admin_url());
        loop {
            if self.child.try_wait()?.is_some() {
                return Err(BrokerError::Exited { log });
            }
            let healthy = http
                .get(&health)
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if healthy {
                self.started_in = started.elapsed();
                return self.wait_until_writable(&http).await;
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(BrokerError::NotReady { log });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Standalone {
    /// Waits until the broker can create a topic, which opens a new ledger on the bookie: its
    /// health check passes on a ledger it already has.
    async fn wait_until_writable(&mut self, http: &reqwest::Client) -> Result<(), BrokerError> {
        let probe = format!(
            "{}/admin/v2/persistent/public/default/pulsaga-probe-{}",
            self.admin_url(),
            uuid::Uuid::new_v4().simple()
        );
        let deadline = Instant::now() + WRITABLE_TIMEOUT;
        loop {
            let created = http.put(&probe).send().await.is_ok_and(|response| {
                response.status().is_success() || response.status() == reqwest::StatusCode::CONFLICT
            });
            if created {
                let _ = http.delete(format!("{probe}?force=true")).send().await;
                return Ok(());
            }
            if self.child.try_wait()?.is_some() || Instant::now() > deadline {
                return Err(BrokerError::NotWritable {
                    log: self.data_dir.join("pulsar.log"),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The distribution's `standalone.conf` with the project's settings in place of its own:
/// loopback only; topics never deleted while idle (a service's topic may be quiet for hours);
/// no websocket proxy; a caught-up cursor looking for new entries again after 1 ms, not 10 (a saga
/// crosses the broker ten times, and the bench measured less CPU a saga with it, not more); a
/// cursor's acknowledgements persisted within a fifth of a second and the
/// bookie's journal synced before an entry is confirmed, so that a `kill -9` of the broker
/// loses no confirmed message and redelivers few acknowledged ones; caches sized for a laptop;
/// and the BookKeeper client's health check off: it quarantines a bookie for half an hour after
/// a burst of errors (right after a restart from `kill -9` the bookie answers errors for a few
/// seconds), and a standalone has only the one bookie. With a proxied listener, the broker port
/// is the listener named `internal` and the proxy's the one named `proxied`.
fn configuration(
    shipped: &str,
    broker_port: u16,
    web_port: u16,
    proxied: Option<ProxiedListener>,
) -> String {
    let advertised = match proxied {
        None => vec![("advertisedAddress", "127.0.0.1".to_owned())],
        Some(ProxiedListener {
            bind_port,
            advertised_port,
        }) => vec![
            (
                "advertisedListeners",
                format!(
                    "internal:pulsar://127.0.0.1:{broker_port},\
                     proxied:pulsar://127.0.0.1:{advertised_port}"
                ),
            ),
            ("internalListenerName", "internal".to_owned()),
            (
                "bindAddresses",
                format!("proxied:pulsar://127.0.0.1:{bind_port}"),
            ),
        ],
    };
    let ours = [
        ("bindAddress", "127.0.0.1".to_owned()),
        ("brokerServicePort", broker_port.to_string()),
        ("webServicePort", web_port.to_string()),
        ("brokerDeleteInactiveTopicsEnabled", "false".to_owned()),
        ("webSocketServiceEnabled", "false".to_owned()),
        ("managedLedgerDefaultMarkDeleteRateLimit", "5".to_owned()),
        ("managedLedgerNewEntriesCheckDelayInMillis", "1".to_owned()),
        ("journalSyncData", "true".to_owned()),
        ("bookkeeperClientHealthCheckEnabled", "false".to_owned()),
        ("managedLedgerCacheSizeMB", "64".to_owned()),
        ("dbStorage_writeCacheMaxSizeMb", "32".to_owned()),
        ("dbStorage_readAheadCacheMaxSizeMb", "32".to_owned()),
        ("dbStorage_rocksDB_blockCacheSize", "16777216".to_owned()),
    ]
    .into_iter()
    .chain(advertised)
    .collect::<Vec<_>>();
    let mut lines: Vec<String> = shipped
        .lines()
        .filter(|line| {
            let key = line.split_once('=').map(|(key, _)| key.trim());
            !ours.iter().any(|(ours, _)| key == Some(*ours))
        })
        .map(str::to_owned)
        .collect();
    lines.push("# Pulsaga's settings (messaging/src/broker.rs)".to_owned());
    lines.extend(ours.iter().map(|(key, value)| format!("{key}={value}")));
    lines.join("\n") + "\n"
}

fn spawn(home: &Path, data_dir: &Path) -> Result<Child, BrokerError> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join("pulsar.log"))?;
    let script = home.join("bin/pulsar");
    Command::new(&script)
        .args(["standalone", "--no-functions-worker", "--no-stream-storage"])
        .arg("--bookkeeper-dir")
        .arg(data_dir.join("bookkeeper"))
        .arg("--metadata-dir")
        .arg(data_dir.join("metadata"))
        .arg("--bookkeeper-port")
        .arg(free_port()?.to_string())
        .env("PULSAR_STANDALONE_CONF", data_dir.join("standalone.conf"))
        .env("PULSAR_LOG_DIR", data_dir.join("logs"))
        // Two cores and a laptop's memory: a small heap, G1 rather than the shipped ZGC (which
        // wants cores of its own), and no GC log.
        .env(
            "PULSAR_MEM",
            "-Xms256m -Xmx768m -XX:MaxDirectMemorySize=512m",
        )
        .env("PULSAR_GC", "-XX:+UseG1GC -XX:+PerfDisableSharedMem")
        .env("PULSAR_GC_LOG", "-Xlog:disable")
        .current_dir(home)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| BrokerError::Spawn {
            path: script,
            source,
        })
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// `PULSAR_HOME`, else where `scripts/setup.sh` unpacks the distribution.
fn find_home() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os(HOME_ENV) {
        return Some(PathBuf::from(home));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))?;
    let home = cache.join(format!("pulsaga/apache-pulsar-{PULSAR_VERSION}"));
    home.is_dir().then_some(home)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_settings_replace_the_shipped_ones() {
        let shipped =
            "# a comment\nbrokerServicePort=6650\nclusterName=standalone\njournalSyncData=false";
        let config = configuration(shipped, 16650, 18080, None);
        assert!(config.contains("clusterName=standalone\n"));
        assert!(config.contains("brokerServicePort=16650\n"));
        assert!(config.contains("journalSyncData=true\n"));
        assert!(!config.contains("brokerServicePort=6650"));
        assert!(!config.contains("journalSyncData=false"));
        assert_eq!(config.matches("webServicePort=").count(), 1);
        assert!(config.contains("advertisedAddress=127.0.0.1\n"));
    }

    #[test]
    fn a_proxied_listener_advertises_the_proxy_to_its_clients_only() {
        let shipped = "advertisedAddress=\nbindAddresses=\nadvertisedListeners=";
        let proxied = ProxiedListener {
            bind_port: 16651,
            advertised_port: 16652,
        };
        let config = configuration(shipped, 16650, 18080, Some(proxied));
        assert!(config.contains(
            "advertisedListeners=internal:pulsar://127.0.0.1:16650,\
             proxied:pulsar://127.0.0.1:16652\n"
        ));
        assert!(config.contains("internalListenerName=internal\n"));
        assert!(config.contains("bindAddresses=proxied:pulsar://127.0.0.1:16651\n"));
        assert!(!config.contains("advertisedAddress=127"));
        assert_eq!(config.matches("bindAddresses=").count(), 1);
    }

    #[test]
    fn the_setup_script_fetches_the_release_this_code_runs() {
        let setup = include_str!("../../scripts/setup.sh");
        assert!(setup.contains(&format!("\npulsar_version={PULSAR_VERSION}\n")));
    }
}
