//! Every message type and every event variant survives encode then decode, each is sampled, and
//! the bytes are plain Avro binary of one datum.

use apache_avro::Schema;
use schemas::commands::ConfirmTrackingEvent;
use schemas::events::{TrackingEvent, TrackingEventConfirmed};
use schemas::{Message, TOPICS, Topic, TopicKind};
use uuid::Uuid;

use crate::samples;

#[test]
fn every_sample_round_trips() {
    for sample in samples::all() {
        let decoded = (sample.decode)(&sample.bytes, sample.topic.version())
            .unwrap_or_else(|e| panic!("{}: {e}", sample.message_type));
        assert_eq!(decoded, sample.json, "{}", sample.message_type);
    }
}

/// The record names a topic's schema declares: the record itself on a command topic, the
/// branches of the `event` union on an event topic.
fn record_names(topic: &Topic) -> Vec<&str> {
    let Schema::Record(record) = topic.schema() else {
        panic!("{} is not a record", topic.name);
    };
    let branches = match (topic.kind, &record.fields[..]) {
        (TopicKind::Command, _) => return vec![record.name.name()],
        (TopicKind::Event, [field]) if field.name == "event" => &field.schema,
        (TopicKind::Event, _) => panic!("{} has not just the field `event`", topic.name),
    };
    let Schema::Union(union) = branches else {
        panic!("{}'s `event` is not a union", topic.name);
    };
    union
        .variants()
        .iter()
        .map(|branch| match branch {
            Schema::Record(record) => record.name.name(),
            other => panic!("{} has a non-record event {other:?}", topic.name),
        })
        .collect()
}

#[test]
fn samples_cover_every_record_of_every_topic() {
    let samples = samples::all();
    for topic in TOPICS {
        let mut sampled: Vec<&str> = samples
            .iter()
            .filter(|sample| sample.topic.name == topic.name)
            .map(|sample| sample.message_type)
            .collect();
        sampled.dedup();
        assert_eq!(sampled, record_names(topic), "{}", topic.name);
    }
}

/// A string of the Avro binary encoding: its zigzag length, then its UTF-8 bytes.
fn avro_string(s: &str) -> Vec<u8> {
    assert!(s.len() < 64, "a one-byte length");
    let mut bytes = vec![(s.len() * 2) as u8];
    bytes.extend_from_slice(s.as_bytes());
    bytes
}

#[test]
fn bodies_are_plain_avro_binary_of_one_datum() {
    let tracking_id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    let campaign_id = Uuid::from_u128(42);
    let command = ConfirmTrackingEvent { tracking_id };
    assert_eq!(
        command.encode().expect("encodes"),
        avro_string(&tracking_id.to_string())
    );

    let event = TrackingEvent::Confirmed(TrackingEventConfirmed {
        tracking_id,
        campaign_id,
        partner_id: None,
    });
    // The union branch index 1, zigzag-encoded, then the record's fields: an absent partner is
    // branch 0 (null) of its union.
    let mut expected = vec![2];
    expected.extend(avro_string(&tracking_id.to_string()));
    expected.extend(avro_string(&campaign_id.to_string()));
    expected.push(0);
    assert_eq!(event.encode().expect("encodes"), expected);
    assert_eq!(event.message_type(), "TrackingEventConfirmed");
}
