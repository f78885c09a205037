//! Ids derived from other ids, which every process must compute alike: a tracking event's saga.

use uuid::Uuid;

/// Namespace of saga ids derived from tracking ids.
const SAGA_NAMESPACE: Uuid = Uuid::from_u128(0x5a6a_0000_0000_4000_8000_7061_6c73_6167);

/// The id of the saga a recorded tracking event starts (one saga per tracking event).
pub fn saga_id_for(tracking_id: Uuid) -> Uuid {
    Uuid::new_v5(&SAGA_NAMESPACE, tracking_id.as_bytes())
}
