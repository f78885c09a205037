//! The PostgreSQL `pulsaga up` uses when it is given none: the one answering on 127.0.0.1:5432,
//! or one it initialises and starts from the system's binaries (as the `postgres` user when run
//! as root), restarted in immediate mode by chaos and stopped last.

use super::port;
use anyhow::Context;
use std::path::{Path, PathBuf};
use tokio::process::Command;

/// A PostgreSQL this command started.
pub(super) struct LocalPostgres {
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
}

impl LocalPostgres {
    pub(super) async fn restart_immediately(&self) -> anyhow::Result<()> {
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

    pub(super) async fn stop(self) {
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
pub(super) fn pg_command(bin: &Path, tool: &str, as_postgres: bool) -> Command {
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
pub(super) async fn local_postgres(
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
        init(&bin, &data, as_postgres).await?;
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

/// Creates a cluster in `data`, owned by the postgres user when run as root.
async fn init(bin: &Path, data: &Path, as_postgres: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(data)?;
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
    let status = pg_command(bin, "initdb", as_postgres)
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
    Ok(())
}

/// The newest `/usr/lib/postgresql/<version>/bin` (Debian's layout).
pub(super) fn postgres_bin() -> Option<PathBuf> {
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

pub(super) async fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .await
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}
