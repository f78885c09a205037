//! A service's stored events, in the wire form of its event topic: decoded (upcast from the
//! schema version each was written with) for its domain, and shown by its query API.

use eventstore::RecordedEvent;
use schemas::Message;
use serde::Serialize;
use serde_json::Value;

/// Decodes a stored event of topic `M`, upcast from the schema version it was written with.
pub fn decode<M: Message>(event: &RecordedEvent) -> Result<M, schemas::Error> {
    let version = u32::try_from(event.schema_version).unwrap_or(0);
    M::decode_version(&event.payload, version)
}

/// The JSON the query API shows for a stored event of topic `M` (none if this build cannot decode
/// it). The topic's union is shown as its record: the view carries the event type beside it.
pub fn json<M: Message + Serialize>(event: &RecordedEvent) -> Option<Value> {
    match serde_json::to_value(decode::<M>(event).ok()?).ok()? {
        Value::Object(map) if map.len() == 1 => map.into_iter().next().map(|(_, v)| v),
        other => Some(other),
    }
}
