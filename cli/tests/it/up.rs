//! `pulsaga up` from a clean state, as a new user runs it: its own PostgreSQL initialised from the
//! system's binaries and pulsar-lite, every process started; `/readyz` answers, `pulsaga demo`
//! runs its scenario through the API, `saga` and `events` show what it did, and SIGTERM stops
//! everything.

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const SECRET: &str = "a development secret of at least 32 bytes";

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
        .spawn()
        .expect("pulsaga up");
    let mut lines = BufReader::new(up.stdout.take().expect("stdout")).lines();
    let mut up = Up(up);
    // The URLs it prints: "  <name> <url>" lines, up to the payout simulator's.
    let urls = tokio::time::timeout(Duration::from_secs(240), async {
        let mut urls = std::collections::HashMap::new();
        while let Some(line) = lines.next_line().await.expect("read") {
            let mut words = line.split_whitespace();
            if let (Some(name), Some(url)) = (words.next(), words.next()) {
                urls.insert(name.to_owned(), url.trim_end_matches("/v1").to_owned());
                if name == "payout-sim" {
                    return urls;
                }
            }
        }
        panic!("pulsaga up ended without printing its URLs");
    })
    .await
    .expect("up printed its URLs within four minutes");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let api = urls["API"].clone();

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

    // The operator's view from a terminal.
    let pulsaga = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pulsaga"))
            .args(args)
            .env("SAGAS_URL", &urls["sagas"])
            .env("TRACKING_URL", &urls["tracking"])
            .output()
    };
    let listed = pulsaga(&[
        "saga",
        "list",
        "--status",
        "compensated",
        "--output",
        "json",
    ])
    .await
    .expect("saga list");
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    let compensated = listed["sagas"].as_array().expect("sagas");
    assert_eq!(compensated.len(), 1, "the demo's declined order: {listed}");
    let id = compensated[0]["saga_id"].as_str().expect("id");
    let shown = pulsaga(&["saga", "show", id]).await.expect("saga show");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("compensation_succeeded"), "{shown}");
    let events = pulsaga(&["events", "tracking", "--output", "json"])
        .await
        .expect("events");
    let recorded = String::from_utf8_lossy(&events.stdout)
        .lines()
        .filter(|line| line.contains("TrackingEventRecorded"))
        .count();
    assert_eq!(recorded, 5, "two clicks and three conversions");
    let listed = pulsaga(&["saga", "list", "--status", "completed", "--output", "json"])
        .await
        .expect("saga list");
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(
        listed["sagas"].as_array().map(Vec::len),
        Some(4),
        "{listed}"
    );

    let pid = up.0.id().expect("pid").to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(status.success());
    let exited = tokio::time::timeout(Duration::from_secs(90), up.0.wait())
        .await
        .expect("up stopped within 90 s of SIGTERM")
        .expect("wait");
    assert!(exited.success(), "up exited with {exited}");
    std::fs::remove_dir_all(&data_dir).ok();
}
