//! A message's metadata as it travels in Pulsar message properties (SPEC §3), typed.

use schemas::properties as names;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// The metadata of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Properties {
    pub message_id: Uuid,
    pub message_type: String,
    pub schema_version: u32,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    pub saga_id: Option<Uuid>,
    pub tenant: Option<String>,
    pub actor: Option<String>,
    pub traceparent: Option<String>,
}

/// A property that is missing or malformed.
#[derive(Debug, thiserror::Error)]
pub enum PropertyError {
    #[error("property {0} is missing")]
    Missing(&'static str),
    #[error("property {name} is not valid: {value:?}")]
    Invalid { name: &'static str, value: String },
}

impl Properties {
    /// Reads the properties of a received message. A message without a valid `message_id` cannot
    /// be deduplicated and is refused; a missing `schema_version` means the current one.
    pub fn parse(
        map: &HashMap<String, String>,
        current_version: u32,
    ) -> Result<Self, PropertyError> {
        let uuid = |name: &'static str| -> Result<Option<Uuid>, PropertyError> {
            map.get(name)
                .map(|value| {
                    value.parse().map_err(|_| PropertyError::Invalid {
                        name,
                        value: value.clone(),
                    })
                })
                .transpose()
        };
        let schema_version = match map.get(names::SCHEMA_VERSION) {
            Some(value) => value.parse().map_err(|_| PropertyError::Invalid {
                name: names::SCHEMA_VERSION,
                value: value.clone(),
            })?,
            None => current_version,
        };
        Ok(Properties {
            message_id: uuid(names::MESSAGE_ID)?
                .ok_or(PropertyError::Missing(names::MESSAGE_ID))?,
            message_type: map.get(names::MESSAGE_TYPE).cloned().unwrap_or_default(),
            schema_version,
            correlation_id: uuid(names::CORRELATION_ID)?,
            causation_id: uuid(names::CAUSATION_ID)?,
            saga_id: uuid(names::SAGA_ID)?,
            tenant: map.get(names::TENANT).cloned(),
            actor: map.get(names::ACTOR).cloned(),
            traceparent: map.get(names::TRACEPARENT).cloned(),
        })
    }

    /// The properties as Pulsar carries them; absent values are left out.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::from([
            (names::MESSAGE_ID.to_owned(), self.message_id.to_string()),
            (names::MESSAGE_TYPE.to_owned(), self.message_type.clone()),
            (
                names::SCHEMA_VERSION.to_owned(),
                self.schema_version.to_string(),
            ),
        ]);
        let optional = [
            (
                names::CORRELATION_ID,
                self.correlation_id.map(|id| id.to_string()),
            ),
            (
                names::CAUSATION_ID,
                self.causation_id.map(|id| id.to_string()),
            ),
            (names::SAGA_ID, self.saga_id.map(|id| id.to_string())),
            (names::TENANT, self.tenant.clone()),
            (names::ACTOR, self.actor.clone()),
            (names::TRACEPARENT, self.traceparent.clone()),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                map.insert(name.to_owned(), value);
            }
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_round_trip_through_a_map() {
        let properties = Properties {
            message_id: Uuid::new_v4(),
            message_type: "RegisterPartner".into(),
            schema_version: 1,
            correlation_id: Some(Uuid::new_v4()),
            causation_id: None,
            saga_id: Some(Uuid::new_v4()),
            tenant: Some("advertiser-1".into()),
            actor: None,
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        };
        let map: HashMap<String, String> = properties.to_map().into_iter().collect();
        assert_eq!(Properties::parse(&map, 1).expect("parse"), properties);
    }

    #[test]
    fn a_message_without_a_valid_id_is_refused() {
        let mut map = HashMap::new();
        assert!(matches!(
            Properties::parse(&map, 1),
            Err(PropertyError::Missing("message_id"))
        ));
        map.insert("message_id".to_owned(), "not-a-uuid".to_owned());
        assert!(matches!(
            Properties::parse(&map, 1),
            Err(PropertyError::Invalid {
                name: "message_id",
                ..
            })
        ));
        map.insert("message_id".to_owned(), Uuid::new_v4().to_string());
        map.insert("schema_version".to_owned(), "two".to_owned());
        assert!(matches!(
            Properties::parse(&map, 1),
            Err(PropertyError::Invalid {
                name: "schema_version",
                ..
            })
        ));
    }
}
