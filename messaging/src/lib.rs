//! Pulsar messaging for every Pulsaga process: the client and its producers, the consumer runner
//! with inbox, retries and dead letters, the outbox relay, provisioning through the admin API,
//! and Apache Pulsar standalone as a child process for development and tests. This is the only
//! crate that imports `pulsar`.

pub mod admin;
pub mod admission;
pub mod broker;
mod client;
pub mod consume;
pub mod effects;
pub mod host;
pub mod metrics;
mod properties;
pub mod relay;
pub mod service_token;
pub mod stored;
#[cfg(feature = "test-support")]
pub mod testing;
mod trace;

pub use client::{Client, PulsarSettings};
pub use eventstore::http;
pub use properties::{Properties, PropertyError};
pub use service_token::{QueryApi, ServiceToken};
pub use trace::{continue_trace, current_traceparent};

/// Why a messaging operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pulsar")]
    Pulsar(#[from] pulsar::Error),
    #[error("database")]
    Database(#[from] sqlx::Error),
    #[error("event store")]
    EventStore(#[from] eventstore::Error),
    /// The broker did not take a message, or did not confirm it, within `SEND_DEADLINE`.
    #[error("no receipt from the broker in time")]
    Timeout,
}

impl From<pulsar::error::ProducerError> for Error {
    fn from(error: pulsar::error::ProducerError) -> Self {
        Error::Pulsar(error.into())
    }
}

pub(crate) use eventstore::error_chain;
