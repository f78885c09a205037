//! Apache Pulsar's official Python client (`pulsar-client` from PyPI, in the project's venv) as an
//! independent client: given only the `.avsc` files, it produces a command that the platform
//! processes, and reads and decodes the events the platform published.

use pulsaga_tests::platform::Platform;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

#[sqlx::test(migrations = false)]
async fn the_official_python_client_commands_and_reads_the_platform(db: sqlx::PgPool) {
    let platform = Platform::start(db).await;
    let settings = platform.client.settings().clone();
    let partner = Uuid::new_v4();
    let python = std::env::var("PULSAGA_PYTHON")
        .expect("PULSAGA_PYTHON (scripts/setup.sh makes .venv and exports it)");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = tokio::process::Command::new(python)
        .arg(root.join("python_client.py"))
        .arg(&settings.url)
        .arg(format!("{}/{}", settings.tenant, settings.namespace))
        .arg(root.join("../schemas/avro"))
        .arg(partner.to_string())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the Python client finished within two minutes")
        .expect("the Python client runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python_client.py failed ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );

    // What Python decoded from the events topic with the schema file alone.
    let events: Vec<Value> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("EVENT "))
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let registered = events.last().expect("at least one event");
    assert_eq!(registered["event"]["partner_id"], partner.to_string());
    assert_eq!(registered["event"]["name"], "Python Partner");
    assert_eq!(
        registered["properties"]["message_type"],
        "PartnerRegistered"
    );
    assert_eq!(registered["properties"]["actor"], "python-client");

    // And the platform applied the command, as its read model shows.
    let body = platform
        .wait_for(
            &format!("{}/partners/{partner}", platform.urls.campaigns),
            Duration::from_secs(30),
            |body| body["name"] == "Python Partner",
        )
        .await;
    assert_eq!(body["email"], "python@example.com");
    platform.stop().await;
}
