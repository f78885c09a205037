//! Hostile input is rejected with an error, quickly and without large allocations: data that
//! declares millions of items, oversize bodies, trailing and truncated bytes, unknown versions.

use std::time::{Duration, Instant};

use apache_avro::Schema;
use apache_avro::error::Details;
use apache_avro::types::Value;
use schemas::codec::decode_value;
use schemas::commands::AssociateContent;
use schemas::values::ContentKind;
use schemas::{Error, MAX_ALLOCATION_BYTES, MAX_MESSAGE_BYTES, Message};
use uuid::Uuid;

use crate::samples;

/// The Avro zigzag varint of `n`.
fn long(n: i64) -> Vec<u8> {
    let mut zigzag = ((n << 1) ^ (n >> 63)) as u64;
    let mut bytes = Vec::new();
    while zigzag > 0x7f {
        bytes.push((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
    bytes.push(zigzag as u8);
    bytes
}

/// The Avro string "x".
const AVRO_X: &[u8] = &[2, b'x'];

/// An item count whose `Value`s take far more than the crate's cap but less than apache-avro's
/// default one, which would let a few bytes allocate hundreds of MiB.
fn huge_count() -> i64 {
    let count = 8_000_000;
    let bytes = count * size_of::<Value>();
    assert!(bytes > 10 * MAX_ALLOCATION_BYTES);
    assert!(bytes < apache_avro::util::DEFAULT_MAX_ALLOCATION_BYTES);
    count as i64
}

/// An array datum of one block declaring `count` items, then `item` once, then the end marker.
fn array_datum(count: i64, item: &[u8]) -> Vec<u8> {
    let mut bytes = long(count);
    bytes.extend_from_slice(item);
    bytes.extend(long(0));
    bytes
}

/// Asserts the decode failed on apache-avro's allocation cap, and did so quickly.
fn assert_allocation_refused<T>(result: Result<T, Error>, started: Instant) {
    match result {
        Err(Error::Decode(e)) => assert!(
            matches!(e.details(), Details::MemoryAllocation { .. }),
            "refused for another reason: {e}"
        ),
        Err(e) => panic!("refused for another reason: {e}"),
        // Not the value: it may hold millions of items.
        Ok(_) => panic!("decoded instead of refused"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        apache_avro::util::max_allocation_bytes(0),
        MAX_ALLOCATION_BYTES,
        "the crate's cap is the one in force"
    );
}

#[test]
fn an_array_declaring_millions_of_nulls_is_refused() {
    let schema = Schema::parse_str(r#"{"type": "array", "items": "null"}"#).expect("parses");
    // Nulls take no bytes, so only the cap stands between this datum and a huge allocation.
    let datum = array_datum(huge_count(), &[]);
    assert!(datum.len() < 40);
    let started = Instant::now();
    assert_allocation_refused(decode_value(&datum, &schema, None), started);

    // Control: the same datum declaring a few items decodes, so the count is what was refused.
    let decoded = decode_value(&array_datum(3, &[]), &schema, None).expect("decodes");
    assert_eq!(decoded, Value::Array(vec![Value::Null; 3]));
}

#[test]
fn content_declaring_millions_of_tags_is_refused() {
    let content = AssociateContent {
        campaign_id: Uuid::from_u128(1),
        content_id: Uuid::from_u128(2),
        kind: ContentKind::Link,
        url: "u".into(),
        title: "t".into(),
        tags: Vec::new(),
    };
    let encoded = content.encode().expect("encodes");
    // `tags` is the last field: an empty array is the single end marker byte.
    let (head, empty_tags) = encoded.split_at(encoded.len() - 1);
    assert_eq!(empty_tags, [0]);
    let with_tags = |count| [head, &array_datum(count, AVRO_X)].concat();

    // A message of the current version decodes straight into its type, which allocates as items
    // arrive rather than as declared: the datum runs out of bytes long before memory runs out.
    let started = Instant::now();
    let refused = AssociateContent::decode(&with_tags(huge_count()));
    assert!(matches!(refused, Err(Error::Truncated)), "{refused:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );

    let decoded = AssociateContent::decode(&with_tags(1)).expect("one tag decodes");
    assert_eq!(decoded.tags, ["x"]);
}

#[test]
fn an_oversize_body_is_refused_before_decoding() {
    let title = "t".repeat(MAX_MESSAGE_BYTES);
    let content = |title: String| AssociateContent {
        campaign_id: Uuid::from_u128(1),
        content_id: Uuid::from_u128(2),
        kind: ContentKind::Text,
        url: String::new(),
        title,
        tags: Vec::new(),
    };
    assert!(matches!(
        content(title.clone()).encode(),
        Err(Error::TooLarge {
            max: MAX_MESSAGE_BYTES,
            ..
        })
    ));
    assert!(matches!(
        AssociateContent::decode(&vec![0; MAX_MESSAGE_BYTES + 1]),
        Err(Error::TooLarge { size, .. }) if size == MAX_MESSAGE_BYTES + 1
    ));
    assert!(matches!(
        decode_value(&vec![0; MAX_MESSAGE_BYTES + 1], &Schema::Null, None),
        Err(Error::TooLarge { .. })
    ));

    // Control: a message just under the limit goes through both ways.
    let fits = content(title[..MAX_MESSAGE_BYTES - 200].to_owned());
    let bytes = fits.encode().expect("fits");
    assert_eq!(AssociateContent::decode(&bytes).expect("decodes"), fits);
}

#[test]
fn trailing_bytes_are_refused() {
    for sample in samples::all() {
        let mut bytes = sample.bytes.clone();
        bytes.push(0);
        let result = (sample.decode)(&bytes, sample.topic.version());
        assert!(
            matches!(result, Err(Error::TrailingBytes { count: 1 })),
            "{}: {result:?}",
            sample.message_type
        );
    }
}

#[test]
fn every_truncation_is_refused() {
    for sample in samples::all() {
        for len in 0..sample.bytes.len() {
            let result = (sample.decode)(&sample.bytes[..len], sample.topic.version());
            assert!(
                matches!(result, Err(Error::Decode(_) | Error::Truncated)),
                "{} cut at {len}: {result:?}",
                sample.message_type
            );
        }
    }
}

#[test]
fn an_unknown_schema_version_is_refused() {
    for sample in samples::all() {
        let current = sample.topic.version();
        for version in [0, current + 1, u32::MAX] {
            let result = (sample.decode)(&sample.bytes, version);
            assert!(
                matches!(result, Err(Error::UnknownSchemaVersion { version: v, .. }) if v == version),
                "{} version {version}: {result:?}",
                sample.message_type
            );
        }
    }
}
