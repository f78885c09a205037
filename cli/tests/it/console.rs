//! The console in a real browser: `pulsaga up --demo` as a new user runs it, then
//! `tests/browser/console.mjs` (Playwright driving Debian's Chromium, both installed by
//! `scripts/setup.sh`) signs in through the printed link and as each role, finds the demo's
//! compensated order, reads its timeline and flow, retries a saga that parked while tracking's
//! database refused writes, compensates a saga that payments, frozen with SIGSTOP, leaves
//! running, and re-drives a partner's registration that campaigns dead-lettered while its
//! database refused writes. Screenshots land in `target/console-screenshots/`.

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

/// A service frozen with SIGSTOP, thawed when dropped, also when the test fails.
struct Frozen {
    service: &'static str,
    url: String,
}

impl Frozen {
    async fn new(service: &'static str, url: &str) -> Frozen {
        signal("-STOP", service, url).await;
        Frozen {
            service,
            url: url.to_owned(),
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let address = self.url.trim_start_matches("http://");
        let _ = std::process::Command::new("pkill")
            .args([
                "-CONT",
                "-f",
                &format!("serve {} --listen {address}", self.service),
            ])
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

    /// Reads as every role; with `act`, acts on its sagas and dead letter as admin instead.
    async fn run(&self, act: Option<&Act>) {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser/console.mjs");
        let mut node = Command::new("node");
        node.arg(script)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .kill_on_drop(true);
        if let Some(act) = act {
            node.env("PULSAGA_PARKED_SAGA", &act.parked)
                .env("PULSAGA_RUNNING_SAGA", &act.running)
                .env("PULSAGA_DEAD_LETTER", &act.dead_letter);
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

/// What the browser acts on: a parked saga, a saga left running, and a dead letter waiting to
/// be re-driven.
struct Act {
    parked: String,
    running: String,
    dead_letter: String,
}

/// Makes `service`'s database of the `up` in `data_dir` refuse writes (as a primary demoted to
/// a replica does) or take them again. The setting reaches new sessions, so the service's
/// connections are closed; it reconnects.
async fn read_only(data_dir: &std::path::Path, service: &'static str, read_only: bool) {
    let pool = super::embedded_postgres(data_dir).await;
    let setting = if read_only {
        format!("alter database {service} set default_transaction_read_only = on")
    } else {
        format!("alter database {service} reset default_transaction_read_only")
    };
    // The database's name is one of this test's constants.
    sqlx::query(sqlx::AssertSqlSafe(setting))
        .execute(&pool)
        .await
        .expect("alter database");
    sqlx::query(
        "select pg_terminate_backend(pid) from pg_stat_activity
          where datname = $1 and pid <> pg_backend_pid()",
    )
    .bind(service)
    .execute(&pool)
    .await
    .expect("close the service's connections");
    pool.close().await;
}

/// The saga's detail once `done` holds of its state, within `within`.
async fn saga_when(
    api: &str,
    admin: &str,
    saga: &str,
    within: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        let detail: serde_json::Value = http
            .get(format!("{api}/v1/sagas/{saga}"))
            .bearer_auth(admin)
            .send()
            .await
            .expect("saga")
            .json()
            .await
            .unwrap_or_default();
        if done(&detail["saga"]) {
            return detail;
        }
        assert!(
            Instant::now() < deadline,
            "saga {saga} as expected within {within:?}: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The ids an order's conversion was recorded under.
struct Recorded {
    tracking: String,
    saga: String,
}

/// Records a conversion of `order_id` for `amount` euro cents through the API, as admin.
async fn conversion(
    api: &str,
    admin: &str,
    (campaign_id, partner_id): (&serde_json::Value, &serde_json::Value),
    order_id: &str,
    amount: i64,
) -> Recorded {
    let recorded: serde_json::Value = reqwest::Client::new()
        .post(format!("{api}/v1/tracking-events"))
        .bearer_auth(admin)
        .json(&serde_json::json!({
            "campaign_id": campaign_id,
            "partner_id": partner_id,
            "kind": "conversion",
            "order": { "order_id": order_id, "amount": { "amount": amount, "currency": "EUR" } },
        }))
        .send()
        .await
        .expect("record a conversion")
        .json()
        .await
        .expect("json");
    let id = |name: &str| {
        recorded[name]
            .as_str()
            .unwrap_or_else(|| panic!("its {name}: {recorded}"))
            .to_owned()
    };
    Recorded {
        tracking: id("tracking_id"),
        saga: id("saga_id"),
    }
}

/// Starts a saga that will park: an order whose commission the campaign's budget cannot cover,
/// while tracking's database refuses writes. Budget refused, the saga fails the tracking event,
/// and tracking, unable to write, never answers: after four attempts (10 + 20 + 40 + 80 s) the
/// saga parks. The coordinator is held (SIGSTOP) until tracking has recorded the order, published
/// it from its outbox, and refuses writes, so that the saga's compensation is the first write
/// refused. Its id.
async fn saga_that_will_park(
    api: &str,
    admin: &str,
    printed: &HashMap<String, String>,
    campaign_id: &serde_json::Value,
    partner_id: &serde_json::Value,
    data_dir: &std::path::Path,
) -> String {
    let held = Frozen::new("sagas", &printed["sagas"]).await;
    let order = conversion(
        api,
        admin,
        (campaign_id, partner_id),
        "order-3001",
        100_000_000,
    )
    .await;
    let stream = format!("tracking-event-{}", order.tracking);
    let postgres = super::embedded_postgres(data_dir).await;
    let tracking = postgres
        .connect_options()
        .as_ref()
        .clone()
        .database("tracking");
    let tracking = sqlx::PgPool::connect_with(tracking)
        .await
        .expect("tracking's database");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (recorded, unpublished): (bool, bool) = sqlx::query_as(
            "select exists (select from events where stream_id = $1),
                    exists (select from outbox where published_at is null)",
        )
        .bind(&stream)
        .fetch_one(&tracking)
        .await
        .expect("tracking's events and outbox");
        if recorded && !unpublished {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tracking recorded and published the order within a minute"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracking.close().await;
    postgres.close().await;
    read_only(data_dir, "tracking", true).await;
    drop(held);
    order.saga
}

/// Registers a partner while campaigns' database refuses writes: campaigns tries it five times,
/// then dead-letters it, once the database takes the dead letter. The partner id and the dead
/// letter's id.
async fn dead_lettered_registration(
    api: &str,
    admin: &str,
    data_dir: &std::path::Path,
) -> (String, String) {
    let topic = "campaigns-partner-registration";
    let server_log = data_dir.join("postgres/server.log");
    let logged_before = std::fs::metadata(&server_log).map_or(0, |m| m.len() as usize);
    read_only(data_dir, "campaigns", true).await;
    let http = reqwest::Client::new();
    let accepted: serde_json::Value = http
        .post(format!("{api}/v1/partners"))
        .bearer_auth(admin)
        .json(&serde_json::json!({
            "name": "Refused Writes Ltd", "email": "ops@refused.example", "payout_account": "NL00RW",
        }))
        .send()
        .await
        .expect("register a partner")
        .json()
        .await
        .expect("json");
    let partner = accepted["partner_id"].as_str().expect("its id").to_owned();
    // Writes stay refused until campaigns has given up on the registration and tries to record
    // it as a dead letter: PostgreSQL logs that refused statement.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read(&server_log)
        .ok()
        .and_then(|log| {
            log.get(logged_before..)
                .map(String::from_utf8_lossy)
                .map(|l| l.contains("STATEMENT:  insert into dead_letters"))
        })
        .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "campaigns gave up on the registration within a minute"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    read_only(data_dir, "campaigns", false).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page: serde_json::Value = http
            .get(format!(
                "{api}/v1/dead-letters?service=campaigns&status=pending&topic={topic}"
            ))
            .bearer_auth(admin)
            .send()
            .await
            .expect("dead letters")
            .json()
            .await
            .unwrap_or_default();
        if let Some(letter) = page["dead_letters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["key"] == partner.as_str())
        {
            assert_eq!(letter["cause"], "attempts_exhausted", "{letter}");
            return (partner, letter["id"].as_str().expect("an id").to_owned());
        }
        assert!(
            Instant::now() < deadline,
            "the registration dead-lettered within a minute: {page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `pulsaga dlq` with the admin's token: its answer on stdout, or the error on stderr.
async fn dlq(api: &str, admin: &str, args: &[&str]) -> Result<String, String> {
    let run = Command::new(env!("CARGO_BIN_EXE_pulsaga"))
        .arg("dlq")
        .args(args)
        .env("PULSAGA_API", api)
        .env("PULSAGA_TOKEN", admin)
        .output()
        .await
        .expect("pulsaga dlq");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    if run.status.success() {
        Ok(text(run.stdout))
    } else {
        Err(text(run.stderr))
    }
}

/// The dead letter the browser re-drove, seen from a terminal: listed as re-driven, shown with
/// its body, and refused a second re-drive.
async fn dlq_from_a_terminal(api: &str, admin: &str) {
    let listed = dlq(
        api,
        admin,
        &[
            "list",
            "--service",
            "campaigns",
            "--status",
            "redriven",
            "--output",
            "json",
        ],
    )
    .await
    .expect("dlq list");
    let page: serde_json::Value = serde_json::from_str(&listed).expect("json");
    let letter = &page["dead_letters"][0];
    assert_eq!(letter["redriven_by"], "admin", "{page}");
    let id = letter["id"].as_str().expect("an id");
    let table = dlq(api, admin, &["list", "--status", "all"])
        .await
        .expect("dlq list");
    assert!(
        table.contains("campaigns-partner-registration-campaigns-DLQ"),
        "{table}"
    );
    let shown = dlq(api, admin, &["show", id]).await.expect("dlq show");
    assert!(shown.contains("Refused Writes Ltd"), "{shown}");
    let refused = dlq(api, admin, &["redrive", id, "--reason", "again"])
        .await
        .expect_err("a second re-drive is refused");
    assert!(
        refused.contains("409") && refused.contains("re-driven"),
        "{refused}"
    );
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
    let (campaign, partner) = (&declined["campaign_id"], &declined["partner_id"]);
    let parked = saga_that_will_park(&api, &admin, &printed, campaign, partner, &data_dir).await;

    // The reading run takes part of the two and a half minutes the saga needs to park.
    let browser = Browser::new(&api, &link, &printed);
    browser.run(None).await;
    let detail = saga_when(&api, &admin, &parked, Duration::from_secs(240), |s| {
        s["status"] == "parked"
    })
    .await;
    let last = detail["timeline"].as_array().and_then(|t| t.last());
    assert!(
        last.is_some_and(|e| e["entry"] == "parked"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("compensation trigger kept failing"))),
        "parked because tracking never answered: {detail}"
    );
    read_only(&data_dir, "tracking", false).await;

    // A saga left running: payments frozen, a new order waits for its payout.
    let frozen = Frozen::new("payments", &printed["payments"]).await;
    let running = conversion(&api, &admin, (campaign, partner), "order-2001", 5_000)
        .await
        .saga;
    saga_when(&api, &admin, &running, Duration::from_secs(60), |s| {
        s["current_step"] == "request-payment"
    })
    .await;
    let (partner, dead_letter) = dead_lettered_registration(&api, &admin, &data_dir).await;
    browser
        .run(Some(&Act {
            parked,
            running,
            dead_letter,
        }))
        .await;
    // Re-driven in the browser, the registration went through.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !get(format!("/partners/{partner}"))
        .await
        .expect("partner")
        .status()
        .is_success()
    {
        assert!(
            Instant::now() < deadline,
            "the re-driven registration applied within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    dlq_from_a_terminal(&api, &admin).await;
    let screenshots = &browser.screenshots;
    for page in [
        "sagas.png",
        "saga.png",
        "parked.png",
        "flow.png",
        "dead-letter.png",
    ] {
        assert!(screenshots.join(page).is_file(), "screenshot {page}");
    }
    // Payments thawed first: a stopped process cannot take its SIGTERM.
    drop(frozen);
    drop(up);
    std::fs::remove_dir_all(&data_dir).ok();
}
