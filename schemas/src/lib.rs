//! Every byte that crosses a Pulsaga process boundary: the Avro schemas (`schemas/avro/`, the
//! single source of truth), the Rust wire types, the topics and the message property names.
//!
//! A message type implements [`Message`]: it knows its [`Topic`], its `message_type` property,
//! and how to encode and decode itself, including data written with an older schema version.

pub mod codec;
pub mod commands;
pub mod events;
pub mod ids;
pub mod properties;
pub mod topics;
pub mod values;

pub use codec::{Error, MAX_ALLOCATION_BYTES, MAX_MESSAGE_BYTES};
pub use topics::{Message, TOPICS, Topic, TopicKind};
