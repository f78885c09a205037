//! One process's Prometheus metrics: a registry its parts register into (consumers, the API,
//! the coordinator), served as OpenMetrics text at `GET /metrics` beside its query API.

use axum::http::header;
use axum::routing::get;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex, PoisonError};

/// The process's registry, shared; every metric is named `pulsaga_*`.
#[derive(Clone)]
pub struct Metrics(Arc<Mutex<Registry>>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics(Arc::new(Mutex::new(Registry::with_prefix("pulsaga"))))
    }
}

impl Metrics {
    /// Lets `register` add metrics to the registry.
    pub fn register(&self, register: impl FnOnce(&mut Registry)) {
        register(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The metrics as OpenMetrics text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let registry = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            tracing::warn!(%error, "encoding the metrics failed");
        }
        text
    }

    /// `GET /metrics`.
    pub fn route<S: Clone + Send + Sync + 'static>(&self) -> axum::Router<S> {
        let metrics = self.clone();
        axum::Router::new().route(
            "/metrics",
            get(move || {
                let text = metrics.render();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
    }
}
