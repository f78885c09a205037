//! The platform's services, listed once: `pulsaga serve` (and so `pulsaga up`, `pulsaga chaos`
//! and the bench, which start `serve` processes) and the tests' in-process platform run the
//! services this table gives, each with `messaging::host::{migrate, run}`.

use bff::services::Service;
use messaging::host;
use std::time::Duration;

/// What the services' own work needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The payout provider the payments service calls.
    pub payout_provider_url: String,
    /// How long after a saga ended the coordinator archives it.
    pub archive_after: Duration,
}

impl Default for Settings {
    /// The payout simulator on its default port; archiving at its default age.
    fn default() -> Self {
        Settings {
            payout_provider_url: "http://127.0.0.1:7199".into(),
            archive_after: sagas::archive::DEFAULT_AGE,
        }
    }
}

/// The service `kind`, as its process runs it.
pub fn service(kind: Service, settings: &Settings) -> host::Service {
    match kind {
        Service::Campaigns => campaigns::service(),
        Service::Tracking => tracking::service(),
        Service::Commissions => commissions::service(),
        Service::Payments => {
            payments::service(payments::PayoutSettings::new(&settings.payout_provider_url))
        }
        Service::Sagas => sagas::service(settings.archive_after),
    }
}
