//! `pulsaga up` from a clean state, as a new user runs it: its own PostgreSQL initialised from the
//! system's binaries and Apache Pulsar standalone, every process started; `/readyz` answers,
//! `pulsaga demo` runs its scenario through the API, `saga` and `events` show what it did, each
//! conversion's trace reaches an OTLP collector from every process it went through, and SIGTERM
//! stops everything.

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const SECRET: &str = "a development secret of at least 32 bytes";

/// A stand-in OTLP/HTTP collector: keeps the body of every `POST /v1/traces`.
async fn collector() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = bodies.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            kept.lock().expect("lock").push(body.to_vec());
            async { "" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, bodies)
}

/// For each trace id, the processes (`service.name`) that exported spans of it.
fn services_by_trace(
    bodies: &[Vec<u8>],
) -> std::collections::HashMap<Vec<u8>, std::collections::BTreeSet<String>> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use otlp_prost::Message;
    let mut traces: std::collections::HashMap<Vec<u8>, std::collections::BTreeSet<String>> =
        std::collections::HashMap::new();
    for body in bodies {
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(name) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                traces
                    .entry(span.trace_id.clone())
                    .or_default()
                    .insert(service.clone());
            }
        }
    }
    traces
}

/// The client connections to each service's database on the PostgreSQL that `up` started in
/// `data_dir`.
async fn connections_by_database(
    data_dir: &std::path::Path,
) -> std::collections::BTreeMap<String, i64> {
    let pool = super::embedded_postgres(data_dir).await;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "select datname, count(*) from pg_stat_activity
          where backend_type = 'client backend' and datname <> 'postgres'
          group by datname",
    )
    .fetch_all(&pool)
    .await
    .expect("pg_stat_activity");
    pool.close().await;
    rows.into_iter().collect()
}

/// The URLs `pulsaga up` prints: its "  <name> <url>" lines, up to the payout simulator's. What
/// it prints after them is read and dropped.
async fn printed_urls(up: &mut tokio::process::Child) -> std::collections::HashMap<String, String> {
    let mut lines = BufReader::new(up.stdout.take().expect("stdout")).lines();
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
    urls
}

/// `pulsaga demo` against `api` succeeds and shows its compensated order and its refund: the
/// refund saga's steps, the commission reversed, the payout clawed back.
async fn runs_the_demo(api: &str) {
    let demo = Command::new(env!("CARGO_BIN_EXE_pulsaga"))
        .args(["demo", "--api", api])
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
    for shown in [
        "compensated",
        "compensation_succeeded",
        "order-refund saga",
        "claw-back",
        "reversed",
        "clawed_back",
        "clawed back 500 EUR",
    ] {
        assert!(printed.contains(shown), "{shown}: {printed}");
    }
}

/// SIGTERM stops `up` and everything it started, and it exits successfully.
async fn stops_on_sigterm(up: &mut super::Up) {
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
}

/// The programs `pid`'s children run (their `/proc/<pid>/exe`).
fn children_programs(pid: u32) -> Vec<std::path::PathBuf> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's tasks");
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|children| {
            children
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|child| std::fs::read_link(format!("/proc/{child}/exe")).ok())
        .collect()
}

/// `pulsaga up --in-process`: every service, the coordinator, the payout simulator and the API
/// as tasks of the one `up` process, on the test run's PostgreSQL and a broker of its own. It is
/// ready, the demo runs through it, no pulsaga process is its child (the broker's JVM is), and
/// SIGTERM stops it.
#[tokio::test]
async fn up_in_process_runs_the_platform_as_tasks_of_one_process() {
    let data_dir =
        std::env::temp_dir().join(format!("pulsaga-up-{}", uuid::Uuid::new_v4().simple()));
    let prefix = format!(
        "in_process_{}_",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let server = std::env::var("DATABASE_URL").expect("DATABASE_URL (scripts/setup.sh exports it)");
    let up = Command::new(env!("CARGO_BIN_EXE_pulsaga"))
        .args([
            "up",
            "--in-process",
            "--any-ports",
            "--database-prefix",
            &prefix,
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .env("DATABASE_URL", &server)
        .env_remove("PULSAR_URL")
        .env("JWT_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("pulsaga up --in-process");
    let mut up = super::Up(up);
    let urls = printed_urls(&mut up.0).await;
    let ready = reqwest::get(format!("{}/readyz", urls["API"]))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), reqwest::StatusCode::OK);
    runs_the_demo(&urls["API"]).await;

    let pulsaga = std::fs::canonicalize(env!("CARGO_BIN_EXE_pulsaga")).expect("the binary");
    let children = children_programs(up.0.id().expect("pid"));
    assert!(
        !children.is_empty(),
        "the control: the broker's JVM is a child of up"
    );
    assert!(
        !children.contains(&pulsaga),
        "no pulsaga child process: {children:?}"
    );

    stops_on_sigterm(&mut up).await;
    let pool = sqlx::PgPool::connect(&server).await.expect("server");
    for service in ["campaigns", "tracking", "commissions", "payments", "sagas"] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "drop database if exists {prefix}{service} with (force)"
        )))
        .execute(&pool)
        .await
        .expect("drop");
    }
    std::fs::remove_dir_all(&data_dir).ok();
}

#[tokio::test]
async fn up_from_a_clean_state_is_ready_and_runs_the_demo() {
    // Under the system's temporary folder: PostgreSQL runs as the postgres user, who may not
    // reach into the checkout.
    let data_dir =
        std::env::temp_dir().join(format!("pulsaga-up-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let (otlp, exported) = collector().await;
    let up = Command::new(env!("CARGO_BIN_EXE_pulsaga"))
        .args(["up", "--any-ports", "--embedded-postgres", "--data-dir"])
        .arg(&data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("PULSAR_URL")
        .env("JWT_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .stdout(Stdio::piped())
        .spawn()
        .expect("pulsaga up");
    let mut up = super::Up(up);
    let urls = printed_urls(&mut up.0).await;
    let api = urls["API"].clone();

    let ready = reqwest::get(format!("{api}/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), reqwest::StatusCode::OK);
    let docs = reqwest::get(format!("{api}/docs/")).await.expect("docs");
    assert_eq!(
        docs.status(),
        reqwest::StatusCode::OK,
        "Swagger UI from the binary"
    );

    runs_the_demo(&api).await;

    // The operator's view from a terminal.
    let service_token = urls["token"]
        .strip_prefix("SERVICE_TOKEN=")
        .expect("the service token");
    let pulsaga = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pulsaga"))
            .args(args)
            .env("SAGAS_URL", &urls["sagas"])
            .env("TRACKING_URL", &urls["tracking"])
            .env("SERVICE_TOKEN", service_token)
            .output()
    };
    // The services' query APIs answer no one without the token, and nothing to a wrong one.
    let http = reqwest::Client::new();
    for (what, token) in [("no token", None), ("a wrong token", Some("x".repeat(64)))] {
        let mut request = http.get(format!("{}/sagas", urls["sagas"]));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        assert_eq!(
            response.status(),
            reqwest::StatusCode::UNAUTHORIZED,
            "{what}"
        );
    }
    let refused = Command::new(env!("CARGO_BIN_EXE_pulsaga"))
        .args(["saga", "list"])
        .env("SAGAS_URL", &urls["sagas"])
        .env_remove("SERVICE_TOKEN")
        .output()
        .await
        .expect("saga list");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("SERVICE_TOKEN is required"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
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
    assert_eq!(recorded, 6, "two clicks, three conversions and a refund");
    for (version, sagas) in [("1", 5), ("2", 0)] {
        let listed = pulsaga(&[
            "saga",
            "list",
            "--status",
            "completed",
            "--definition-version",
            version,
            "--output",
            "json",
        ])
        .await
        .expect("saga list");
        let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
        assert_eq!(
            listed["sagas"].as_array().map(Vec::len),
            Some(sagas),
            "version {version}: {listed}"
        );
    }

    // A process that dies is started again, and `/readyz` says how often.
    let tracking = urls["tracking"].trim_start_matches("http://");
    let killed = Command::new("pkill")
        .args([
            "-KILL",
            "-f",
            &format!("serve tracking --listen {tracking}"),
        ])
        .status()
        .await
        .expect("pkill");
    assert!(killed.success(), "the tracking process was found");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ready = reqwest::get(format!("{api}/readyz")).await.expect("readyz");
        let ok = ready.status().is_success();
        let body: serde_json::Value = ready.json().await.unwrap_or_default();
        if ok && body["restarts"]["tracking"] == 1 {
            assert_eq!(body["restarts"]["campaigns"], 0, "{body}");
            // How far each service's projections are behind its log.
            let lags = body["projections"]["commissions"]
                .as_object()
                .expect("the commissions projections' lag");
            assert!(
                !lags.is_empty() && lags.values().all(|lag| lag["events"].is_i64()),
                "{body}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tracking was not started again: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The platform works on with the new tracking process (whose spans the trace check below
    // then finds: the killed one's were lost with it).
    let again = Command::new(env!("CARGO_BIN_EXE_pulsaga"))
        .args(["demo", "--api", &api])
        .env("JWT_SECRET", SECRET)
        .output()
        .await
        .expect("pulsaga demo");
    assert!(
        again.status.success(),
        "the demo after a restart failed: {}",
        String::from_utf8_lossy(&again.stderr)
    );

    // Each process holds at most its pool (`DATABASE_CONNECTIONS`, 6 by default, its listener
    // among them) and its relay's connection: a platform stays within 35 of PostgreSQL's default
    // 100, so two platforms, or two replicas of every process, fit.
    let metrics = reqwest::get(format!("{}/metrics", urls["campaigns"]))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains("pulsaga_projection_lag_events{projection="),
        "{metrics}"
    );
    let held = connections_by_database(&data_dir).await;
    assert_eq!(held.len(), 5, "one database per service: {held:?}");
    assert!(held.values().all(|&n| n <= 7), "{held:?}");

    stops_on_sigterm(&mut up).await;

    // Each process flushed its spans on the way out: a conversion's trace runs from the API
    // through every service and the coordinator.
    let traces = services_by_trace(&exported.lock().expect("lock"));
    let everywhere: std::collections::BTreeSet<String> = [
        "bff",
        "campaigns",
        "commissions",
        "payments",
        "sagas",
        "tracking",
    ]
    .map(str::to_owned)
    .into();
    assert!(
        traces
            .values()
            .any(|services| everywhere.is_subset(services)),
        "no trace went through every process: {:?}",
        traces.values().collect::<Vec<_>>()
    );
    std::fs::remove_dir_all(&data_dir).ok();
}
