//! `pulsaga bench` runs every part and writes its three files (in `--smoke`, a run of seconds:
//! the figures themselves are quoted from full runs, not from the test suite).

use std::time::Duration;
use tokio::process::Command;

#[tokio::test]
async fn the_bench_measures_every_figure_and_writes_its_files() {
    let out = std::env::temp_dir().join(format!("pulsaga-bench-{}", uuid::Uuid::new_v4().simple()));
    let run = Command::new(env!("CARGO_BIN_EXE_pulsaga"))
        .args(["bench", "--smoke", "--out"])
        .arg(&out)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let run = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the smoke run ends within five minutes")
        .expect("pulsaga bench");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("bench.json")).expect("bench.json"))
            .expect("json");
    let names: Vec<&str> = report["figures"]
        .as_array()
        .expect("figures")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    for part in [
        "Avro round trip",
        "JSON round trip",
        "append, 8 client(s), batch of 10",
        "projection rebuild",
        "durable commit",
        "saga p50",
        "sustained sagas/s",
        "POST /v1/tracking-events accepted",
        "storage a saga adds, as the run left it",
        "storage a saga adds, pruned and archived: hot tables",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(part)),
            "{part} in {names:?}"
        );
    }
    let stored = |name: &str| {
        report["figures"]
            .as_array()
            .and_then(|figures| figures.iter().find(|f| f["name"].as_str() == Some(name)))
            .and_then(|f| f["value"].as_f64())
            .unwrap_or_else(|| panic!("{name}"))
    };
    let hot = stored("storage a saga adds, pruned and archived: hot tables");
    assert!(
        hot < stored("storage a saga adds, pruned and archived: archive included"),
        "archiving moves a saga out of the hot tables"
    );
    let curve = report["saga_latency_by_load"].as_array().expect("curve");
    assert!(
        curve.iter().all(|p| p["completed"] == p["sent"]),
        "{curve:?}"
    );
    let table = std::fs::read_to_string(out.join("bench.md")).expect("bench.md");
    assert!(table.starts_with("| figure | value | limit | ratio | goal |"));
    let chart = std::fs::read_to_string(out.join("saga-latency.svg")).expect("svg");
    assert!(chart.starts_with("<svg") && chart.contains("<polyline"));
    std::fs::remove_dir_all(&out).ok();
}
