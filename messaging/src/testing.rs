//! For tests (feature `testing`): clients of the one Apache Pulsar broker a test run shares
//! (`PULSAR_URL` and `PULSAR_ADMIN_URL`, which `scripts/test.sh` starts and sets), each test on a
//! namespace of its own, provisioned as `pulsaga migrate` provisions a namespace.

use crate::admin::Admin;
use crate::{Client, PulsarSettings};
use std::sync::Arc;

/// The shared broker, on a fresh namespace, provisioned.
pub async fn settings() -> PulsarSettings {
    let url = std::env::var("PULSAR_URL").unwrap_or_else(|_| "pulsar://127.0.0.1:6650".into());
    let admin_url =
        std::env::var("PULSAR_ADMIN_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let settings = PulsarSettings {
        namespace: format!("test-{}", uuid::Uuid::new_v4().simple()),
        ..PulsarSettings::new(url, admin_url)
    };
    provision(&settings).await;
    settings
}

/// Provisions `settings`'s namespace, or panics saying how to start a broker.
pub async fn provision(settings: &PulsarSettings) {
    if let Err(error) = Admin::new(&settings.admin_url).provision(settings).await {
        panic!(
            "provisioning {}/{} failed ({}); the tests need Apache Pulsar: `bash scripts/test.sh` \
             starts one, or run `pulsaga serve broker` and set PULSAR_URL and PULSAR_ADMIN_URL",
            settings.tenant,
            settings.namespace,
            crate::error_chain(&error)
        );
    }
}

/// A client of the shared broker on a fresh, provisioned namespace.
pub async fn client() -> Arc<Client> {
    Arc::new(
        Client::connect(settings().await)
            .await
            .expect("connecting to the test broker"),
    )
}

/// The environment variables that point a `pulsaga` process at `settings`.
pub fn env(settings: &PulsarSettings) -> [(&'static str, String); 4] {
    [
        ("PULSAR_URL", settings.url.clone()),
        ("PULSAR_ADMIN_URL", settings.admin_url.clone()),
        ("PULSAR_TENANT", settings.tenant.clone()),
        ("PULSAR_NAMESPACE", settings.namespace.clone()),
    ]
}
