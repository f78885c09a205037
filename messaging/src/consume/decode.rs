//! A received message decoded once, as its topic's type, with its properties; or why it cannot
//! be (`Undecodable`).

use super::*;

/// Why a received message cannot be handled as its topic's type: it is dead-lettered at once.
/// A message holding U+0000 is refused too: every service stores its text in PostgreSQL, which
/// cannot hold that character, so the message would fail the same way on every attempt.
#[derive(Debug, thiserror::Error)]
pub enum Undecodable {
    #[error("property {0} holds U+0000 (NUL), which PostgreSQL text cannot store")]
    NulProperty(String),
    #[error(transparent)]
    Properties(#[from] crate::PropertyError),
    /// The payload, with the cause's chain.
    #[error("{0}")]
    Payload(String),
    #[error("a text field holds U+0000 (NUL), which PostgreSQL text cannot store")]
    NulText,
}

fn holds_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(fields) => fields.values().any(holds_nul),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

pub(super) fn decode<T: Message + Serialize>(
    key: &str,
    received: &Received<Vec<u8>>,
) -> Decoded<T> {
    let map: HashMap<String, String> = received
        .metadata()
        .properties
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    if let Some(name) = map
        .iter()
        .find_map(|(name, value)| value.contains('\0').then_some(name))
    {
        return Err(Undecodable::NulProperty(name.clone()));
    }
    let properties = Properties::parse(&map, T::TOPIC.version())?;
    let message = T::decode_version(&received.payload.data, properties.schema_version)
        .map_err(|e| Undecodable::Payload(crate::error_chain(&e)))?;
    let fields = serde_json::to_value(&message).map_err(|e| Undecodable::Payload(e.to_string()))?;
    if holds_nul(&fields) {
        return Err(Undecodable::NulText);
    }
    Ok(Incoming {
        message,
        key: key.to_owned(),
        properties,
    })
}
