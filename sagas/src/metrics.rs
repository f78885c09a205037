//! The coordinator's metrics: sagas started and finished by type and outcome, and how long they
//! took from the trigger to the end. Process-wide (the coordinator has one registry), registered
//! with the process's others by `run`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::LazyLock;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SagaLabels {
    pub saga_type: String,
    /// running, completed, compensated or parked.
    pub status: String,
}

#[derive(Debug)]
pub struct SagaMetrics {
    /// Sagas that reached a status, by type and status.
    pub transitions: Family<SagaLabels, Counter>,
    /// Seconds from the saga's start to completed, compensated or parked.
    pub duration: Family<SagaLabels, Histogram>,
}

pub static SAGAS: LazyLock<SagaMetrics> = LazyLock::new(|| SagaMetrics {
    transitions: Family::default(),
    duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.01, 2.0, 16))),
});

impl SagaMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "saga_transitions",
            "Sagas that reached a status",
            self.transitions.clone(),
        );
        registry.register(
            "saga_duration_seconds",
            "From a saga's start to completed, compensated or parked",
            self.duration.clone(),
        );
    }
}
