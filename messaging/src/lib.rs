//! Pulsar messaging for every Pulsaga process: producers, the consumer runner, dead letters and
//! the outbox relay. This is the only crate that imports `pulsar`; it is filled by the messaging
//! issue and holds nothing yet.
