//! Names of the Pulsar message properties that carry a message's metadata (SPEC §3); the body
//! carries only the Avro record.

/// The message's own id, a UUID; consumers deduplicate on it.
pub const MESSAGE_ID: &str = "message_id";
/// The Avro record name of the body, e.g. `BudgetReserved` (see `Message::message_type`).
pub const MESSAGE_TYPE: &str = "message_type";
/// The version of the topic's schema the body was written with, in decimal (see `Topic::version`).
pub const SCHEMA_VERSION: &str = "schema_version";
/// One id per business flow, copied from cause to effect.
pub const CORRELATION_ID: &str = "correlation_id";
/// The message id of the message that caused this one.
pub const CAUSATION_ID: &str = "causation_id";
/// The saga this message belongs to, where there is one.
pub const SAGA_ID: &str = "saga_id";
/// The tenant (advertiser or partner id) the message acts for.
pub const TENANT: &str = "tenant";
/// Who caused the message: a user's `sub`, or a service name.
pub const ACTOR: &str = "actor";
/// The W3C trace context of the flow.
pub const TRACEPARENT: &str = "traceparent";

/// Added to a dead-lettered message: why it was dead-lettered, in words.
pub const DEAD_LETTER_ERROR: &str = "error";
/// Added to a dead-lettered message: `undecodable`, `permanent` or `attempts_exhausted`.
pub const DEAD_LETTER_CAUSE: &str = "error_kind";
/// Added to a dead-lettered message: how many times processing was attempted.
pub const ATTEMPTS: &str = "attempts";
/// Added to a dead-lettered message: the topic it came from (the name Pulsar's clients use).
pub const REAL_TOPIC: &str = "REAL_TOPIC";
/// Added to a dead-lettered message: its Pulsar message id on the original topic.
pub const ORIGIN_MESSAGE_ID: &str = "ORIGIN_MESSAGE_ID";
