//! The Pulsar topics of Pulsaga: each one's name, whether it carries commands or events, and its
//! Avro schema, embedded from `schemas/avro/` and parsed once per process.
//!
//! To change a schema, edit `avro/<topic>.avsc`, copy it to `avro/history/<topic>/v<N+1>.avsc`
//! and add `N+1` to the topic's versions below; the tests then hold the new schema against every
//! earlier version, which it must be able to read.

use std::fmt;
use std::sync::LazyLock;

use apache_avro::Schema;

use crate::codec::{Codec, Error, Schemas};

/// A message type: the one record of a command topic, or the event union of an event topic.
pub trait Message: Sized {
    /// The topic the message travels on.
    const TOPIC: &'static Topic;

    /// The Avro record name of this message, e.g. `BudgetReserved` for an event variant; it goes
    /// into the `message_type` property.
    fn message_type(&self) -> &'static str;

    /// Encodes with the current schema, version `Self::TOPIC.version()`.
    fn encode(&self) -> Result<Vec<u8>, Error>;

    /// Decodes a body written with the current schema.
    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        Self::decode_version(bytes, Self::TOPIC.version())
    }

    /// Decodes a body written with schema version `writer_version` of the topic, resolving it to
    /// the current schema: this is how old messages are upcast.
    fn decode_version(bytes: &[u8], writer_version: u32) -> Result<Self, Error>;
}

/// What a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// Commands to one service, keyed by aggregate or saga id.
    Command,
    /// One service's events, keyed by aggregate id.
    Event,
}

/// One topic and its schema: the current one and every released version.
pub struct Topic {
    /// The short name; the full name is `persistent://{tenant}/{namespace}/{name}`.
    pub name: &'static str,
    pub kind: TopicKind,
    /// The current schema, `schemas/avro/{name}.avsc`, as JSON text.
    pub avsc: &'static str,
    /// Every released schema version, oldest first: `history[v - 1]` is version `v`, and the
    /// last one is the current schema.
    pub history: &'static [&'static str],
    /// The one subscription that consumes the topic: the owning service's name for a command
    /// topic, the saga coordinator's for an event topic. `pulsaga migrate` creates it, so that
    /// what is published before the consumer first subscribes is kept for it.
    pub subscription: &'static str,
    schemas: LazyLock<Schemas>,
    codec: LazyLock<Codec>,
}

impl Topic {
    /// The current schema version, which the `schema_version` property carries.
    pub fn version(&self) -> u32 {
        // A schema never has billions of versions.
        self.history.len() as u32
    }

    /// The current schema, parsed.
    pub fn schema(&self) -> &Schema {
        &self.schemas.current
    }

    pub(crate) fn codec(&self) -> &Codec {
        &self.codec
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topic")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("version", &self.version())
            .finish_non_exhaustive()
    }
}

/// Declares each topic as a static, with its schema files embedded, plus the list of them all.
macro_rules! topics {
    ($($topic:ident = $name:literal, $kind:ident, versions $($version:literal)+, consumed by $subscription:literal;)+) => {
        $(
            #[doc = concat!("`", $name, "`")]
            pub static $topic: Topic = Topic {
                name: $name,
                kind: TopicKind::$kind,
                avsc: include_str!(concat!("../avro/", $name, ".avsc")),
                history: &[$(
                    include_str!(concat!("../avro/history/", $name, "/v", $version, ".avsc")),
                )+],
                subscription: $subscription,
                schemas: LazyLock::new(|| Schemas::parse($name, $topic.avsc, $topic.history)),
                codec: LazyLock::new(|| Codec::new(&$topic.schemas)),
            };
        )+

        /// Every topic, commands first.
        pub static TOPICS: &[&Topic] = &[$(&$topic),+];
    };
}

topics! {
    CAMPAIGNS_PARTNER_REGISTRATION = "campaigns-partner-registration", Command, versions 1, consumed by "campaigns";
    CAMPAIGN_CREATION = "campaign-creation", Command, versions 1, consumed by "campaigns";
    CAMPAIGN_PARTNER_ASSOCIATION = "campaign-partner-association", Command, versions 1, consumed by "campaigns";
    CAMPAIGN_CONTENT_ASSOCIATION = "campaign-content-association", Command, versions 1, consumed by "campaigns";
    CAMPAIGN_TRACKING_EVENTS = "campaign-tracking-events", Command, versions 1 2, consumed by "tracking";
    ASSIGN_COMMISSION_TO_PARTNER = "assign-commission-to-partner", Command, versions 1, consumed by "commissions";
    PAYMENTS_REQUEST = "payments-request", Command, versions 1, consumed by "payments";
    PAYMENTS_CANCELLATION = "payments-cancellation", Command, versions 1, consumed by "payments";
    FAIL_TRACKING_EVENTS = "fail-tracking-events", Command, versions 1, consumed by "tracking";
    CAMPAIGN_BUDGET_RESERVATION = "campaign-budget-reservation", Command, versions 1, consumed by "campaigns";
    CAMPAIGN_BUDGET_RELEASE = "campaign-budget-release", Command, versions 1, consumed by "campaigns";
    COMMISSION_REVERSAL = "commission-reversal", Command, versions 1, consumed by "commissions";
    COMMISSION_REINSTATEMENT = "commission-reinstatement", Command, versions 1, consumed by "commissions";
    TRACKING_EVENT_CONFIRMATION = "tracking-event-confirmation", Command, versions 1, consumed by "tracking";
    PAYMENTS_CLAWBACK = "payments-clawback", Command, versions 1, consumed by "payments";
    PAYMENTS_CLAWBACK_CANCELLATION = "payments-clawback-cancellation", Command, versions 1, consumed by "payments";
    CAMPAIGNS_EVENTS = "campaigns-events", Event, versions 1, consumed by "sagas";
    TRACKING_EVENTS = "tracking-events", Event, versions 1 2 3, consumed by "sagas";
    COMMISSIONS_EVENTS = "commissions-events", Event, versions 1 2, consumed by "sagas";
    PAYMENTS_EVENTS = "payments-events", Event, versions 1 2 3, consumed by "sagas";
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_topic_is_listed_once_and_its_schemas_load() {
        let names: HashSet<_> = TOPICS.iter().map(|topic| topic.name).collect();
        assert_eq!(names.len(), TOPICS.len());
        for topic in TOPICS {
            // Parses every version and builds the writer and readers, which panics on a bad file.
            topic.codec();
            assert!(
                matches!(topic.schema(), Schema::Record(_)),
                "{}",
                topic.name
            );
        }
    }
}
