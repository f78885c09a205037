//! `pulsaga up` from a clean state, as a new user runs it: its own PostgreSQL initialised from the
//! system's binaries and pulsar-lite, every process started; `/readyz` answers, `pulsaga demo`
//! runs its scenario through the API, and SIGTERM stops everything.

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const SECRET: &str = "a development secret of at least 32 bytes";

#[tokio::test]
async fn up_from_a_clean_state_is_ready_and_runs_the_demo() {
    // Under the system's temporary folder: PostgreSQL runs as the postgres user, who may not
    // reach into the checkout.
    let data_dir =
        std::env::temp_dir().join(format!("pulsaga-up-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let mut up = Command::new(env!("CARGO_BIN_EXE_pulsaga"))
        .args(["up", "--any-ports", "--embedded-postgres", "--data-dir"])
        .arg(&data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("PULSAR_URL")
        .env("JWT_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("pulsaga up");
    let mut lines = BufReader::new(up.stdout.take().expect("stdout")).lines();
    let api = tokio::time::timeout(Duration::from_secs(240), async {
        while let Some(line) = lines.next_line().await.expect("read") {
            if let Some(rest) = line.trim().strip_prefix("API")
                && let Some(url) = rest.split_whitespace().next()
            {
                return url.trim_end_matches("/v1").to_owned();
            }
        }
        panic!("pulsaga up ended without printing the API's URL");
    })
    .await
    .expect("up printed its URLs within four minutes");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let ready = reqwest::get(format!("{api}/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), reqwest::StatusCode::OK);
    let docs = reqwest::get(format!("{api}/docs/")).await.expect("docs");
    assert_eq!(
        docs.status(),
        reqwest::StatusCode::OK,
        "Swagger UI from the binary"
    );

    let demo = Command::new(env!("CARGO_BIN_EXE_pulsaga"))
        .args(["demo", "--api", &api])
        .env("JWT_SECRET", SECRET)
        .output()
        .await
        .expect("pulsaga demo");
    let printed = String::from_utf8_lossy(&demo.stdout);
    assert!(
        demo.status.success(),
        "demo failed: {printed}\n{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    assert!(printed.contains("compensated"), "{printed}");
    assert!(printed.contains("compensation_succeeded"), "{printed}");

    let pid = up.id().expect("pid").to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(status.success());
    let exited = tokio::time::timeout(Duration::from_secs(90), up.wait())
        .await
        .expect("up stopped within 90 s of SIGTERM")
        .expect("wait");
    assert!(exited.success(), "up exited with {exited}");
    std::fs::remove_dir_all(&data_dir).ok();
}
