//! The console in a real browser: `pulsaga up --demo` as a new user runs it, then
//! `tests/browser/console.mjs` (Playwright driving Debian's Chromium, both installed by
//! `scripts/setup.sh`) signs in through the printed link and as each role, finds the demo's
//! compensated order, reads its timeline and flow, and compensates a saga that payments, frozen
//! with SIGSTOP, leaves running. Screenshots land in `target/console-screenshots/`.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const SECRET: &str = "a development secret of at least 32 bytes";

/// Sends `signal` to the process whose command line is `serve <service> --listen <address>`.
async fn signal(signal: &str, service: &str, url: &str) {
    let address = url.trim_start_matches("http://");
    let pattern = format!("serve {service} --listen {address}");
    let pids = Command::new("pgrep")
        .args(["-f", &pattern])
        .output()
        .await
        .expect("pgrep");
    let pids = String::from_utf8_lossy(&pids.stdout);
    let pid = pids
        .split_whitespace()
        .next()
        .expect("the service's process");
    let sent = Command::new("kill")
        .args([signal, pid])
        .status()
        .await
        .expect("kill");
    assert!(sent.success(), "kill {signal} {pid}");
}

/// Payments frozen with SIGSTOP, thawed when dropped, also when the test fails.
struct Frozen(String);

impl Drop for Frozen {
    fn drop(&mut self) {
        let address = self.0.trim_start_matches("http://");
        let _ = std::process::Command::new("pkill")
            .args(["-CONT", "-f", &format!("serve payments --listen {address}")])
            .status();
    }
}

/// `node tests/browser/console.mjs` against the platform, with what `up` printed.
struct Browser {
    env: Vec<(&'static str, String)>,
    screenshots: std::path::PathBuf,
}

impl Browser {
    fn new(api: &str, link: &str, printed: &HashMap<String, String>) -> Browser {
        let screenshots =
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../console-screenshots");
        let chromium = std::env::var("PULSAGA_CHROMIUM")
            .expect("PULSAGA_CHROMIUM (bash scripts/setup.sh installs Chromium and exports it)");
        let env = vec![
            ("PULSAGA_CONSOLE", api.to_owned()),
            ("PULSAGA_SIGN_IN_LINK", link.to_owned()),
            ("PULSAGA_TOKEN_ADMIN", printed["admin"].clone()),
            ("PULSAGA_TOKEN_AUDITOR", printed["auditor"].clone()),
            ("PULSAGA_TOKEN_ADVERTISER", printed["advertiser"].clone()),
            ("PULSAGA_ORDER", "order-1003".to_owned()),
            ("PULSAGA_CHROMIUM", chromium),
            ("PULSAGA_SCREENSHOTS", screenshots.display().to_string()),
        ];
        Browser { env, screenshots }
    }

    /// Reads as every role; with `running`, acts on that saga as admin instead.
    async fn run(&self, running: Option<&str>) {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser/console.mjs");
        let mut node = Command::new("node");
        node.arg(script)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .kill_on_drop(true);
        if let Some(saga) = running {
            node.env("PULSAGA_RUNNING_SAGA", saga);
        }
        let run = tokio::time::timeout(Duration::from_secs(300), node.output())
            .await
            .expect("the browser tests end within five minutes")
            .expect("node tests/browser/console.mjs (bash scripts/setup.sh installs its packages)");
        assert!(
            run.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
    }
}

#[tokio::test]
async fn the_console_serves_every_role_in_a_real_browser() {
    let data_dir =
        std::env::temp_dir().join(format!("pulsaga-console-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let mut up = Command::new(env!("CARGO_BIN_EXE_pulsaga"))
        .args([
            "up",
            "--any-ports",
            "--embedded-postgres",
            "--demo",
            "--data-dir",
        ])
        .arg(&data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("PULSAR_URL")
        .env("JWT_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("pulsaga up");
    let mut lines = BufReader::new(up.stdout.take().expect("stdout")).lines();
    let up = super::Up(up);
    // What it prints: "  <name> <url or token>" lines, the console's sign-in link, and once the
    // demo has run, how to stop it.
    let (printed, link) = tokio::time::timeout(Duration::from_secs(420), async {
        let (mut printed, mut link) = (HashMap::new(), None);
        while let Some(line) = lines.next_line().await.expect("read") {
            if let Some(url) = line.strip_prefix("Console (signed in as admin): ") {
                link = Some(url.to_owned());
            }
            if line.starts_with("Ctrl-C stops everything") {
                return (printed, link.expect("the sign-in link"));
            }
            let mut words = line.split_whitespace();
            if let (Some(name), Some(value)) = (words.next(), words.next()) {
                printed.insert(name.to_owned(), value.to_owned());
            }
        }
        panic!("pulsaga up ended before the demo was done");
    })
    .await
    .expect("up and its demo within seven minutes");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let api = printed["API"].trim_end_matches("/v1").to_owned();
    let admin = printed["admin"].clone();

    let browser = Browser::new(&api, &link, &printed);
    browser.run(None).await;

    // A saga left running: payments frozen, a new order waits for its payout.
    let http = reqwest::Client::new();
    let get = |path: String| {
        http.get(format!("{api}/v1{path}"))
            .bearer_auth(&admin)
            .send()
    };
    let declined: serde_json::Value = get("/sagas?key=order-1003".into())
        .await
        .expect("sagas")
        .json()
        .await
        .expect("json");
    let declined = &declined["sagas"][0];
    signal("-STOP", "payments", &printed["payments"]).await;
    let frozen = Frozen(printed["payments"].clone());
    let recorded: serde_json::Value = http
        .post(format!("{api}/v1/tracking-events"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({
            "campaign_id": declined["campaign_id"],
            "partner_id": declined["partner_id"],
            "kind": "conversion",
            "order": { "order_id": "order-2001", "amount": { "amount": 5_000, "currency": "EUR" } },
        }))
        .send()
        .await
        .expect("record a conversion")
        .json()
        .await
        .expect("json");
    let running = recorded["saga_id"].as_str().expect("its saga").to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let saga: serde_json::Value = get(format!("/sagas/{running}"))
            .await
            .expect("saga")
            .json()
            .await
            .unwrap_or_default();
        if saga["saga"]["current_step"] == "request-payment" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the saga did not reach its payment within a minute: {saga}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    browser.run(Some(&running)).await;
    let screenshots = &browser.screenshots;
    for page in ["sagas.png", "saga.png", "flow.png"] {
        assert!(screenshots.join(page).is_file(), "screenshot {page}");
    }
    // Payments thawed first: a stopped process cannot take its SIGTERM.
    drop(frozen);
    drop(up);
    std::fs::remove_dir_all(&data_dir).ok();
}
