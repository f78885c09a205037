//! Runs pulsar-lite, the Pulsar-protocol broker for development and tests, behind the
//! compatibility proxy. Production points `PULSAR_URL` at Apache Pulsar instead.

use crate::proxy::Proxy;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The environment variable that names the pulsar-lite binary (`scripts/setup.sh` sets it).
pub const BINARY_ENV: &str = "PULSAR_LITE_BIN";
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the local broker could not run.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(
        "pulsar-lite not found: set {BINARY_ENV}, put pulsar-lite on PATH, or install it into \
         .venv (bash scripts/setup.sh does)"
    )]
    NotFound,
    #[error("cannot start pulsar-lite ({path})")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pulsar-lite exited before it was ready; see {log}")]
    Exited { log: PathBuf },
    #[error("pulsar-lite did not accept connections within {READY_TIMEOUT:?}; see {log}")]
    NotReady { log: PathBuf },
    #[error("local broker I/O")]
    Io(#[from] std::io::Error),
}

/// Where pulsar-lite is and where it keeps its data.
#[derive(Debug, Clone)]
pub struct PulsarLiteSettings {
    /// The binary; `None` looks in `PULSAR_LITE_BIN`, on `PATH`, then in `.venv`.
    pub binary: Option<PathBuf>,
    /// Its storage, configuration and log.
    pub data_dir: PathBuf,
}

/// A pulsar-lite process listening on loopback. Killed when dropped.
#[derive(Debug)]
pub struct PulsarLite {
    binary: PathBuf,
    data_dir: PathBuf,
    address: SocketAddr,
    child: Child,
}

impl PulsarLite {
    /// Starts pulsar-lite on a free loopback port and waits until it accepts connections.
    pub async fn start(settings: &PulsarLiteSettings) -> Result<Self, BrokerError> {
        let binary = match &settings.binary {
            Some(path) => path.clone(),
            None => find_binary().ok_or(BrokerError::NotFound)?,
        };
        std::fs::create_dir_all(&settings.data_dir)?;
        // Metrics off: by default it serves them on 0.0.0.0:8080.
        std::fs::write(
            settings.data_dir.join("pulsar-lite.toml"),
            "[metrics]\nenabled = false\n",
        )?;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let child = spawn(&binary, &settings.data_dir, address)?;
        let mut broker = PulsarLite {
            binary,
            data_dir: settings.data_dir.clone(),
            address,
            child,
        };
        broker.wait_until_ready().await?;
        Ok(broker)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Kills the broker at once (SIGKILL), as a crash would.
    pub async fn kill(&mut self) -> Result<(), BrokerError> {
        self.child.kill().await?;
        Ok(())
    }

    /// Starts the broker again on the same port and data, and waits until it is ready.
    pub async fn restart(&mut self) -> Result<(), BrokerError> {
        self.child = spawn(&self.binary, &self.data_dir, self.address)?;
        self.wait_until_ready().await
    }

    async fn wait_until_ready(&mut self) -> Result<(), BrokerError> {
        let log = self.data_dir.join("pulsar-lite.log");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.child.try_wait()?.is_some() {
                return Err(BrokerError::Exited { log });
            }
            if tokio::net::TcpStream::connect(self.address).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BrokerError::NotReady { log });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn spawn(binary: &Path, data_dir: &Path, address: SocketAddr) -> Result<Child, BrokerError> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join("pulsar-lite.log"))?;
    Command::new(binary)
        .arg("--config")
        .arg(data_dir.join("pulsar-lite.toml"))
        .arg("--addr")
        .arg(address.to_string())
        .arg("--db-path")
        .arg(data_dir.join("data"))
        .arg("--log-level")
        .arg("warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| BrokerError::Spawn {
            path: binary.to_path_buf(),
            source,
        })
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn find_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(BINARY_ENV) {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("pulsar-lite"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let lib = Path::new(".venv/lib");
        std::fs::read_dir(lib).ok()?.flatten().find_map(|python| {
            let candidate = python
                .path()
                .join("site-packages/pulsar_lite/bin/pulsar-lite");
            candidate.is_file().then_some(candidate)
        })
    })
}

/// pulsar-lite with the compatibility proxy in front: what `pulsaga up` and the tests use.
#[derive(Debug)]
pub struct LocalBroker {
    pub broker: PulsarLite,
    pub proxy: Proxy,
}

impl LocalBroker {
    /// pulsar-lite with the proxy on a free loopback port.
    pub async fn start(settings: &PulsarLiteSettings) -> Result<Self, BrokerError> {
        Self::start_at(settings, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// pulsar-lite with the proxy listening on `proxy` (what clients' `PULSAR_URL` names).
    pub async fn start_at(
        settings: &PulsarLiteSettings,
        proxy: SocketAddr,
    ) -> Result<Self, BrokerError> {
        let broker = PulsarLite::start(settings).await?;
        let proxy = Proxy::start(proxy, broker.address()).await?;
        Ok(LocalBroker { broker, proxy })
    }

    /// The URL clients use: the proxy's.
    pub fn url(&self) -> String {
        self.proxy.url()
    }
}
