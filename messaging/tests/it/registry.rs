//! The broker's schema registry on Apache Pulsar: provisioning registers every topic's Avro schema
//! (and its dead-letter topic's), idempotently; the namespace's BACKWARD_TRANSITIVE rule refuses a
//! producer whose schema could not read earlier data, and takes one that could as a new version,
//! which a consumer of the earlier version still reads.

use apache_avro::Schema as AvroSchema;
use apache_avro::types::Value as AvroValue;
use apache_avro::writer::datum::GenericDatumWriter;
use futures_util::StreamExt;
use messaging::admin::Admin;
use messaging::consume::dead_letter_topic;
use pulsar::consumer::{ConsumerOptions, InitialPosition};
use pulsar::message::proto::{Schema, schema::Type as SchemaType};
use pulsar::producer::{Message, ProducerOptions};
use pulsar::{Consumer, Pulsar, SubType, TokioExecutor};
use serde_json::Value;
use std::time::Duration;

#[tokio::test]
async fn provisioning_registers_every_topics_avro_schema_once() {
    let settings = messaging::testing::settings().await;
    let admin = Admin::new(&settings.admin_url);
    let json = |text: &str| serde_json::from_str::<Value>(text).expect("JSON");
    for topic in schemas::TOPICS {
        for name in [
            topic.name.to_owned(),
            dead_letter_topic(topic.name, topic.subscription),
        ] {
            let registered = admin
                .schema(&settings, &name)
                .await
                .expect("admin API")
                .unwrap_or_else(|| panic!("{name} has no schema"));
            assert_eq!(registered.kind, "AVRO", "{name}");
            assert_eq!(json(&registered.definition), json(topic.avsc), "{name}");
        }
    }
    messaging::testing::provision(&settings).await;
    let versions = admin
        .schema_versions(&settings, "tracking-events")
        .await
        .expect("admin API");
    assert_eq!(versions.len(), 1, "provisioning again adds no version");
}

/// `tracking-events` with one more field in its top-level record.
fn evolved(field: Value) -> String {
    let mut schema: Value =
        serde_json::from_str(schemas::topics::TRACKING_EVENTS.avsc).expect("JSON");
    schema["fields"].as_array_mut().expect("fields").push(field);
    schema.to_string()
}

fn avro(definition: &str) -> Schema {
    Schema {
        name: "tracking-events".into(),
        schema_data: definition.as_bytes().to_vec(),
        r#type: SchemaType::Avro as i32,
        properties: Vec::new(),
    }
}

#[tokio::test]
async fn the_registry_refuses_an_incompatible_schema_and_versions_a_compatible_one() {
    let settings = messaging::testing::settings().await;
    let topic = settings.topic("tracking-events");
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

    // A required field without a default: the new schema cannot read what was written before.
    let breaking = evolved(serde_json::json!({"name": "channel", "type": "string"}));
    let refused = producer(breaking).await;
    assert!(refused.is_err(), "the broker took an incompatible schema");

    // The same field optional with a default reads every earlier datum: a new version.
    let compatible_text = evolved(serde_json::json!({
        "name": "channel", "type": ["null", "string"], "default": null
    }));
    let mut v2 = producer(compatible_text.clone())
        .await
        .expect("the broker takes a compatible schema");
    let admin = Admin::new(&settings.admin_url);
    let versions = admin
        .schema_versions(&settings, "tracking-events")
        .await
        .expect("admin API");
    assert_eq!(versions.len(), 2, "the evolved schema is version 2");

    // A datum written with version 2 …
    let v2_schema = AvroSchema::parse_str(&compatible_text).expect("v2 parses");
    let recorded =
        schemas::events::TrackingEvent::Confirmed(schemas::events::TrackingEventConfirmed {
            tracking_id: uuid::Uuid::new_v4(),
            campaign_id: uuid::Uuid::new_v4(),
        });
    let v1_bytes = schemas::Message::encode(&recorded).expect("encode v1");
    let v1_schema = schemas::topics::TRACKING_EVENTS.schema();
    let v1_value = schemas::codec::decode_value(&v1_bytes, v1_schema, None).expect("v1 datum");
    let AvroValue::Record(mut fields) = v1_value else {
        panic!("a record");
    };
    fields.push((
        "channel".into(),
        AvroValue::Union(1, Box::new(AvroValue::String("newsletter".into()))),
    ));
    let mut v2_bytes = Vec::new();
    GenericDatumWriter::builder(&v2_schema)
        .build()
        .expect("a v2 writer")
        .write_value(&mut v2_bytes, AvroValue::Record(fields))
        .expect("encode v2");

    // … reaches a consumer that declares version 1, which the broker lets subscribe, and which
    // reads it by Avro's schema resolution as the event it was.
    let mut v1_consumer: Consumer<Vec<u8>, TokioExecutor> = pulsar
        .consumer()
        .with_topic(topic.clone())
        .with_subscription("v1-reader")
        .with_subscription_type(SubType::Exclusive)
        .with_options(ConsumerOptions {
            initial_position: InitialPosition::Earliest,
            schema: Some(avro(schemas::topics::TRACKING_EVENTS.avsc)),
            ..ConsumerOptions::default()
        })
        .build()
        .await
        .expect("a v1 consumer subscribes");
    v2.send_non_blocking(Message {
        payload: v2_bytes,
        partition_key: Some("key".into()),
        ..Message::default()
    })
    .await
    .expect("send")
    .await
    .expect("receipt");
    let received = tokio::time::timeout(Duration::from_secs(30), v1_consumer.next())
        .await
        .expect("a message within 30 s")
        .expect("stream open")
        .expect("message");
    let read = schemas::codec::decode_value(&received.payload.data, &v2_schema, Some(v1_schema))
        .expect("v2 data read as v1");
    let mut as_v1 = Vec::new();
    GenericDatumWriter::builder(v1_schema)
        .build()
        .expect("a v1 writer")
        .write_value(&mut as_v1, read)
        .expect("a v1 datum");
    assert_eq!(
        <schemas::events::TrackingEvent as schemas::Message>::decode(&as_v1).expect("an event"),
        recorded
    );
}
