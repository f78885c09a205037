//! Schema evolution: the committed history of every topic is complete, the current schema is its
//! latest version, and the current schema reads data written with every version. A fixture that
//! breaks compatibility shows the check can fail.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use apache_avro::Schema;
use apache_avro::schema::{Name, NamesRef, ResolvedSchema};
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use schemas::TOPICS;
use schemas::codec::decode_value;
use schemas::topics::CAMPAIGN_CREATION;
use uuid::Uuid;

use crate::samples;

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn file_names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let entry = entry.expect("a directory entry");
            entry.file_name().to_string_lossy().into_owned()
        })
        .collect()
}

#[test]
fn the_history_on_disk_is_the_embedded_one_and_ends_with_the_current_schema() {
    let avro = crate_dir().join("avro");
    let topic_files: BTreeSet<String> = TOPICS.iter().map(|t| format!("{}.avsc", t.name)).collect();
    let mut on_disk = file_names(&avro);
    assert!(on_disk.remove("history"));
    assert_eq!(on_disk, topic_files, "every .avsc file is a topic's");
    let topic_dirs: BTreeSet<String> = TOPICS.iter().map(|t| t.name.to_owned()).collect();
    assert_eq!(file_names(&avro.join("history")), topic_dirs);

    for topic in TOPICS {
        let history = avro.join("history").join(topic.name);
        let versions: BTreeSet<String> = (1..=topic.version())
            .map(|v| format!("v{v}.avsc"))
            .collect();
        assert_eq!(
            file_names(&history),
            versions,
            "{}: every file under history/ is registered in topics.rs",
            topic.name
        );
        for (version, embedded) in (1..).zip(topic.history) {
            assert_eq!(read(&history.join(format!("v{version}.avsc"))), *embedded);
        }
        let current = read(&avro.join(format!("{}.avsc", topic.name)));
        assert_eq!(current, topic.avsc);
        assert_eq!(
            topic.history.last(),
            Some(&topic.avsc),
            "{}: the current schema changed; record it as a new version under history/",
            topic.name
        );
    }
}

/// Whether `reader` can read everything written with `writer`, statically and on sample data.
fn check_backward(writer: &Schema, reader: &Schema) -> Result<(), String> {
    check_statically(writer, reader)?;
    check_on_data(writer, reader)
}

fn check_statically(writer: &Schema, reader: &Schema) -> Result<(), String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => Ok(()),
        Ok(Compatibility::Partial) => Err("only some data can be read".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Decodes sample data written with `writer` as `reader`, through the crate's generic decode path.
fn check_on_data(writer: &Schema, reader: &Schema) -> Result<(), String> {
    for bytes in sample_data(writer) {
        decode_value(&bytes, writer, Some(reader)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Sample data written with a schema: as many data as its widest union or enum has branches or
/// symbols, the `i`-th taking branch and symbol `i` (modulo their number) everywhere.
fn sample_data(schema: &Schema) -> Vec<Vec<u8>> {
    let resolved = ResolvedSchema::try_from(schema).expect("a parsed schema resolves");
    let writer = GenericDatumWriter::builder(schema)
        .build()
        .expect("a parsed schema resolves");
    let mut sampler = Sampler {
        names: resolved.get_names(),
        choice: 0,
        widest: 1,
    };
    let mut data = Vec::new();
    while sampler.choice < sampler.widest {
        let datum = sampler.value(schema);
        data.push(
            writer
                .write_value_to_vec(datum)
                .expect("sample data is valid"),
        );
        sampler.choice += 1;
    }
    data
}

struct Sampler<'a> {
    names: &'a NamesRef<'a>,
    choice: usize,
    widest: usize,
}

impl<'a> Sampler<'a> {
    fn pick(&mut self, choices: usize) -> usize {
        self.widest = self.widest.max(choices);
        self.choice % choices
    }

    fn value(&mut self, schema: &Schema) -> Value {
        match schema {
            Schema::Null => Value::Null,
            Schema::Boolean => Value::Boolean(true),
            Schema::Int => Value::Int(7),
            Schema::Long => Value::Long(7),
            Schema::Double => Value::Double(0.5),
            Schema::String => Value::String("sample".into()),
            Schema::Uuid(_) => Value::Uuid(Uuid::from_u128(7)),
            Schema::TimestampMicros => Value::TimestampMicros(1_772_357_400_123_456),
            Schema::Array(array) => Value::Array(vec![self.value(&array.items)]),
            Schema::Map(map) => Value::Map([("key".into(), self.value(&map.types))].into()),
            Schema::Record(record) => Value::Record(
                record
                    .fields
                    .iter()
                    .map(|field| (field.name.clone(), self.value(&field.schema)))
                    .collect(),
            ),
            Schema::Enum(schema) => {
                let i = self.pick(schema.symbols.len());
                Value::Enum(i as u32, schema.symbols[i].clone())
            }
            Schema::Union(union) => {
                let i = self.pick(union.variants().len());
                Value::Union(i as u32, Box::new(self.value(&union.variants()[i])))
            }
            Schema::Ref { name } => self.value(self.named(name)),
            other => panic!("the sample data generator cannot make a {other:?} yet: teach it"),
        }
    }

    fn named(&self, name: &Name) -> &'a Schema {
        let names: &'a NamesRef<'a> = self.names;
        names
            .get(name)
            .copied()
            .unwrap_or_else(|| panic!("unknown type {name:?}"))
    }
}

#[test]
fn every_topic_reads_every_version_of_its_history() {
    let samples = samples::all();
    for topic in TOPICS {
        let decode = samples
            .iter()
            .find(|sample| sample.topic.name == topic.name)
            .expect("every topic is sampled")
            .decode;
        for (version, text) in (1..).zip(topic.history) {
            let writer = Schema::parse_str(text).expect("a committed schema parses");
            check_backward(&writer, topic.schema())
                .unwrap_or_else(|e| panic!("{} cannot read its v{version}: {e}", topic.name));
            // The message type reads it too: resolution, then serde, as consumers decode.
            for bytes in sample_data(&writer) {
                decode(&bytes, version)
                    .unwrap_or_else(|e| panic!("{} v{version} as a message: {e}", topic.name));
            }
        }
    }
}

#[test]
fn a_reader_adding_a_field_without_default_fails_the_check() {
    let fixture = crate_dir().join("tests/fixtures/campaign-creation-incompatible.avsc");
    let incompatible = Schema::parse_str(&read(&fixture)).expect("the fixture parses");
    let v1 = Schema::parse_str(CAMPAIGN_CREATION.history[0]).expect("v1 parses");

    assert!(check_statically(&v1, &incompatible).is_err());
    assert!(check_on_data(&v1, &incompatible).is_err());
    assert!(check_backward(&v1, &incompatible).is_err());
    // Control: the other way round is compatible (a reader skips a field it does not know), so
    // the new field alone is what fails.
    assert_eq!(check_backward(&incompatible, &v1), Ok(()));
}
