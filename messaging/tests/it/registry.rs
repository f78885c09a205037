//! The broker's schema registry on Apache Pulsar: provisioning registers every committed version
//! of every topic's Avro schema (and its dead-letter topic's), oldest first and idempotently; the
//! namespace's BACKWARD_TRANSITIVE rule refuses a producer whose schema could not read earlier
//! data. A replica still on `tracking-events` v1 and one on v2 share the topic through a rolling
//! upgrade: each produces with its own version and reads the other's data.

use apache_avro::Schema as AvroSchema;
use apache_avro::writer::datum::GenericDatumWriter;
use futures_util::StreamExt;
use messaging::PulsarSettings;
use messaging::admin::Admin;
use messaging::admin::dead_letter_topic;
use pulsar::consumer::{ConsumerOptions, InitialPosition};
use pulsar::message::proto::{Schema, schema::Type as SchemaType};
use pulsar::producer::{Message, ProducerOptions};
use pulsar::{Consumer, Pulsar, SubType, TokioExecutor};
use schemas::Message as _;
use schemas::codec::decode_value;
use schemas::events::{TrackingEvent, TrackingEventConfirmed};
use schemas::topics::TRACKING_EVENTS;
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("JSON")
}

#[tokio::test]
async fn provisioning_registers_every_version_of_every_topics_avro_schema_once() {
    let settings = messaging::testing::settings().await;
    let admin = Admin::new(&settings.admin_url);
    for topic in schemas::TOPICS {
        for name in [
            topic.name.to_owned(),
            dead_letter_topic(topic.name, topic.subscription),
        ] {
            let versions = admin
                .schema_versions(&settings, &name)
                .await
                .expect("admin API");
            let registered: Vec<Value> = versions
                .iter()
                .inspect(|version| assert_eq!(version.kind, "AVRO", "{name}"))
                .map(|version| json(&version.definition))
                .collect();
            let committed: Vec<Value> = topic.history.iter().map(|text| json(text)).collect();
            assert_eq!(
                registered, committed,
                "{name}: the registry holds the history"
            );
            let latest = admin
                .schema(&settings, &name)
                .await
                .expect("admin API")
                .unwrap_or_else(|| panic!("{name} has no schema"));
            assert_eq!(json(&latest.definition), json(topic.avsc), "{name}");
        }
    }
    assert!(
        TRACKING_EVENTS.history.len() > 1,
        "a topic with several versions"
    );
    messaging::testing::provision(&settings).await;
    assert_versions_unchanged(&settings, "provisioning again adds no version").await;
}

/// Asserts that the registry holds exactly the committed versions of tracking-events.
async fn assert_versions_unchanged(settings: &PulsarSettings, why: &str) {
    let versions = Admin::new(&settings.admin_url)
        .schema_versions(settings, TRACKING_EVENTS.name)
        .await
        .expect("admin API");
    assert_eq!(versions.len(), TRACKING_EVENTS.history.len(), "{why}");
}

fn avro(definition: &str) -> Schema {
    Schema {
        name: TRACKING_EVENTS.name.into(),
        schema_data: definition.as_bytes().to_vec(),
        r#type: SchemaType::Avro as i32,
        properties: Vec::new(),
    }
}

/// What a replica on v1 writes for `event`: its v2 encoding resolved to v1 and written with v1.
fn written_with_v1(event: &TrackingEvent, v1: &AvroSchema) -> Vec<u8> {
    let v2_bytes = schemas::Message::encode(event).expect("encode v2");
    let value = decode_value(&v2_bytes, TRACKING_EVENTS.schema(), Some(v1)).expect("v2 as v1");
    GenericDatumWriter::builder(v1)
        .build()
        .expect("a v1 writer")
        .write_value_to_vec(value)
        .expect("a v1 datum")
}

/// The registry's version of a received message (Pulsar's is 0-based, 8 bytes big-endian), as the
/// project's 1-based one.
fn registry_version(metadata_version: Option<&Vec<u8>>) -> u32 {
    let bytes: [u8; 8] = metadata_version
        .expect("the broker tags a message with its schema version")
        .as_slice()
        .try_into()
        .expect("a long schema version");
    u32::try_from(i64::from_be_bytes(bytes)).expect("a small version") + 1
}

#[tokio::test]
async fn replicas_on_an_old_and_the_current_schema_share_its_topic_and_a_breaking_one_is_refused() {
    let settings = messaging::testing::settings().await;
    let topic = settings.topic(TRACKING_EVENTS.name);
    let pulsar: Pulsar<TokioExecutor> = Pulsar::builder(settings.url.clone(), TokioExecutor)
        .build()
        .await
        .expect("client");
    let producer = |schema: String| {
        pulsar
            .producer()
            .with_topic(topic.clone())
            .with_options(ProducerOptions {
                schema: Some(avro(&schema)),
                ..ProducerOptions::default()
            })
            .build()
    };
    let consumer = |name: &str, schema: &str| {
        pulsar
            .consumer()
            .with_topic(topic.clone())
            .with_subscription(name)
            .with_subscription_type(SubType::Exclusive)
            .with_options(ConsumerOptions {
                initial_position: InitialPosition::Earliest,
                schema: Some(avro(schema)),
                ..ConsumerOptions::default()
            })
            .build()
    };

    // A required field without a default: the schema cannot read what was written before.
    let mut breaking = json(TRACKING_EVENTS.avsc);
    breaking["fields"]
        .as_array_mut()
        .expect("fields")
        .push(serde_json::json!({"name": "channel", "type": "string"}));
    assert!(
        producer(breaking.to_string()).await.is_err(),
        "the broker took an incompatible schema"
    );

    let v1_text = TRACKING_EVENTS.history[0];
    let v1 = AvroSchema::parse_str(v1_text).expect("v1 parses");
    let mut old_producer = producer(v1_text.to_owned())
        .await
        .expect("a replica on v1 may produce");
    let mut new_producer = producer(TRACKING_EVENTS.avsc.to_owned())
        .await
        .expect("a replica on v2 may produce");
    let mut old_consumer: Consumer<Vec<u8>, TokioExecutor> = consumer("v1-reader", v1_text)
        .await
        .expect("a replica on v1 may consume");
    let mut new_consumer: Consumer<Vec<u8>, TokioExecutor> =
        consumer("v2-reader", TRACKING_EVENTS.avsc)
            .await
            .expect("a replica on v2 may consume");
    assert_versions_unchanged(&settings, "no producer or consumer added a version").await;

    let confirmed = |partner_id| {
        TrackingEvent::Confirmed(TrackingEventConfirmed {
            tracking_id: Uuid::new_v4(),
            campaign_id: Uuid::new_v4(),
            partner_id,
        })
    };
    let from_old = confirmed(Some(Uuid::new_v4()));
    let from_new = confirmed(Some(Uuid::new_v4()));
    for (producer, payload) in [
        (&mut old_producer, written_with_v1(&from_old, &v1)),
        (
            &mut new_producer,
            schemas::Message::encode(&from_new).expect("encode"),
        ),
    ] {
        producer
            .send_non_blocking(Message {
                payload,
                partition_key: Some("key".into()),
                ..Message::default()
            })
            .await
            .expect("send")
            .await
            .expect("receipt");
    }

    let receive = async |consumer: &mut Consumer<Vec<u8>, TokioExecutor>| {
        let mut received = Vec::new();
        for _ in 0..2 {
            let message = tokio::time::timeout(Duration::from_secs(30), consumer.next())
                .await
                .expect("a message within 30 s")
                .expect("stream open")
                .expect("message");
            let version = registry_version(message.metadata().schema_version.as_ref());
            received.push((version, message.payload.data.clone()));
        }
        received
    };
    let [(old_version, old_bytes), (new_version, new_bytes)] =
        <[_; 2]>::try_from(receive(&mut new_consumer).await).expect("two messages");
    assert_eq!(
        (old_version, new_version),
        (1, TRACKING_EVENTS.version()),
        "each tagged with its writer's version"
    );

    // v2 code reads v1 data by the upcast path: the partner v1 did not carry is absent.
    let TrackingEvent::Confirmed(expected_old) = &from_old else {
        unreachable!()
    };
    assert_eq!(
        TrackingEvent::decode_version(&old_bytes, old_version).expect("v1 data read by v2 code"),
        TrackingEvent::Confirmed(TrackingEventConfirmed {
            partner_id: None,
            ..expected_old.clone()
        })
    );
    assert_eq!(
        TrackingEvent::decode_version(&new_bytes, new_version).expect("v2 data"),
        from_new
    );

    // A replica on v1 reads v2 data by resolving it to the schema it knows.
    let seen_by_old = receive(&mut old_consumer).await;
    let as_v1 = |(version, bytes): &(u32, Vec<u8>)| {
        let writer = AvroSchema::parse_str(TRACKING_EVENTS.history[*version as usize - 1])
            .expect("a committed schema parses");
        decode_value(bytes, &writer, Some(&v1)).expect("read as v1")
    };
    assert_eq!(
        seen_by_old.iter().map(as_v1).collect::<Vec<_>>(),
        [&from_old, &from_new]
            .map(|event| decode_value(&written_with_v1(event, &v1), &v1, None).expect("v1"))
            .to_vec()
    );
}
