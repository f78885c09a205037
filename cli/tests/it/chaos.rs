//! `pulsaga chaos`, the short run of the test suite: 300 sagas (conversions, clicks and leads)
//! through kills of processes (two replicas of each), a broker restart, a PostgreSQL restart, cut
//! links to the database and to the broker, and misbehaving payouts; nothing lost, stuck, doubled or
//! unbalanced, every read model equal to its rebuild.

use std::time::Duration;
use tokio::process::Command;

#[tokio::test]
async fn sagas_survive_kills_and_restarts_with_nothing_lost_or_doubled() {
    let out = std::env::temp_dir().join(format!("pulsaga-chaos-{}.json", uuid::Uuid::new_v4()));
    let run = Command::new(env!("CARGO_BIN_EXE_pulsaga"))
        .args([
            "chaos",
            "--replicas",
            "2",
            "--sagas",
            "300",
            "--rate",
            "15",
            "--kills",
            "4",
            "--broker-restarts",
            "1",
            "--postgres-restarts",
            "1",
            "--database-cuts",
            "1",
            "--broker-cuts",
            "1",
            "--seed",
            "20261206",
            "--out",
        ])
        .arg(&out)
        .env_remove("DATABASE_URL")
        .env_remove("PULSAR_URL")
        .kill_on_drop(true)
        .output();
    let run = tokio::time::timeout(Duration::from_secs(900), run)
        .await
        .expect("the chaos run ends within 15 minutes")
        .expect("pulsaga chaos");
    let printed: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap_or_else(|_| {
        panic!(
            "a JSON summary on stdout: {}\n{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        )
    });
    assert!(run.status.success(), "{printed:#}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).expect("the summary file")).expect("json");
    assert_eq!(summary, printed);
    std::fs::remove_file(&out).ok();

    for violation in [
        "lost",
        "stuck",
        "doubled",
        "unbalanced",
        "projections_differ",
    ] {
        assert_eq!(summary[violation], serde_json::json!([]), "{summary:#}");
    }
    let sagas = &summary["sagas"];
    assert_eq!(sagas["accepted"], 300, "{summary:#}");
    assert_eq!(
        sagas["completed"].as_u64().unwrap_or_default()
            + sagas["compensated"].as_u64().unwrap_or_default(),
        300,
        "{summary:#}"
    );
    assert!(
        sagas["compensated"].as_u64() > Some(0),
        "declined payouts were compensated"
    );
    let completed = &sagas["completed_by_type"];
    assert!(
        completed["commission-assignment"].as_u64() > Some(0)
            && completed["order-to-payment"].as_u64() > Some(0),
        "clicks and leads, and conversions, went through: {summary:#}"
    );
    let storage = summary["storage_per_saga"].as_object().expect("storage");
    assert_eq!(storage.len(), 3, "{summary:#}");
    assert!(
        storage.values().all(|bytes| bytes.as_f64() > Some(0.0)),
        "{summary:#}"
    );
    let faults = summary["faults"].as_object().expect("faults");
    let struck = |kind: &str| {
        faults
            .iter()
            .filter(|(name, _)| name.starts_with(kind))
            .map(|(_, count)| count.as_u64().unwrap_or_default())
            .sum::<u64>()
    };
    assert_eq!(struck("kill -9"), 4, "{summary:#}");
    assert_eq!(struck("broker restart"), 1, "{summary:#}");
    assert_eq!(struck("postgres restart"), 1, "{summary:#}");
    assert_eq!(struck("database link cut"), 1, "{summary:#}");
    assert_eq!(struck("broker link cut"), 1, "{summary:#}");
    assert!(struck("payout") > 0, "{summary:#}");
    assert!(summary["seconds_to_quiet"].is_number(), "{summary:#}");
}
