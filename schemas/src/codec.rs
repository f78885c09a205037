//! How a message becomes bytes and back: plain Avro binary of one datum (no container header,
//! no magic byte, exactly what Pulsar's clients write for an AVRO schema), with the limits that
//! keep hostile input from crashing a process.

use std::io::{self, Read};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest message body encoded or decoded; a larger one is [`Error::TooLarge`].
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// The most apache-avro may allocate for one string or collection while decoding, however large a
/// length a datum declares. It is set for the whole process by the first decode.
pub const MAX_ALLOCATION_BYTES: usize = 8 * 1024 * 1024;

/// Why a message could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is larger than [`MAX_MESSAGE_BYTES`].
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    /// The value does not fit the schema; a bug in the sender, never the data's fault.
    #[error("cannot encode message: {0}")]
    Encode(#[source] apache_avro::Error),
    /// The bytes are not a datum of the writer schema, or cannot be resolved to the current one.
    #[error("cannot decode message: {0}")]
    Decode(#[source] apache_avro::Error),
    /// The bytes end inside the datum.
    #[error("the message ends before its last field")]
    Truncated,
    /// The bytes go on after the datum.
    #[error("{count} bytes left over after the message")]
    TrailingBytes { count: usize },
    /// The writer used a schema version this build does not know: a newer one, or none at all.
    #[error("topic {topic} has no schema version {version}; the current one is {current}")]
    UnknownSchemaVersion {
        topic: &'static str,
        version: u32,
        current: u32,
    },
}

/// A topic's parsed schemas.
pub(crate) struct Schemas {
    pub(crate) current: Schema,
    /// Every released version but the last, which is `current`.
    older: Vec<Schema>,
}

impl Schemas {
    /// Parses a topic's embedded schema files; a test parses every one of them, so a failure here
    /// is a bug in this crate, never bad input.
    pub(crate) fn parse(topic: &str, current: &str, history: &[&str]) -> Self {
        let parse = |text: &str| {
            Schema::parse_str(text).unwrap_or_else(|e| panic!("schema of {topic} is invalid: {e}"))
        };
        Self {
            current: parse(current),
            older: history[..history.len().saturating_sub(1)]
                .iter()
                .map(|text| parse(text))
                .collect(),
        }
    }
}

/// A topic's writer and its readers, built once from its schemas.
pub(crate) struct Codec {
    writer: GenericDatumWriter<'static>,
    /// `readers[v - 1]` reads data written with version `v` as the current schema.
    readers: Vec<GenericDatumReader<'static>>,
}

impl Codec {
    pub(crate) fn new(schemas: &'static Schemas) -> Self {
        const BUILT: &str = "a parsed schema resolves";
        let current = &schemas.current;
        let older = schemas.older.iter().map(|writer| {
            GenericDatumReader::builder(writer)
                .reader_schema(current)
                .human_readable(true)
                .build()
                .expect(BUILT)
        });
        Self {
            // Human-readable, so that a `Uuid` serializes as the string its logical type wants.
            writer: GenericDatumWriter::builder(current)
                .human_readable(true)
                .build()
                .expect(BUILT),
            readers: older
                .chain([GenericDatumReader::builder(current)
                    .human_readable(true)
                    .build()
                    .expect(BUILT)])
                .collect(),
        }
    }
}

impl Codec {
    pub(crate) fn encode(&self, message: &impl Serialize) -> Result<Vec<u8>, Error> {
        // Room for a typical message, so that the encoder does not grow the buffer field by field.
        let mut bytes = Vec::with_capacity(256);
        self.writer
            .write_ser(&mut bytes, message)
            .map_err(Error::Encode)?;
        // Refuse to send what no consumer would accept.
        check_size(&bytes)?;
        Ok(bytes)
    }

    /// Decodes a body of `topic` written with its schema version `writer_version`.
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        topic: &'static str,
        bytes: &[u8],
        writer_version: u32,
    ) -> Result<T, Error> {
        let current = u32::try_from(self.readers.len()).unwrap_or(u32::MAX);
        let reader = usize::try_from(writer_version)
            .ok()
            .and_then(|version| self.readers.get(version.checked_sub(1)?))
            .ok_or(Error::UnknownSchemaVersion {
                topic,
                version: writer_version,
                current,
            })?;
        if writer_version == current {
            // Written with the reader's own schema: serde straight from the bytes, no `Value`
            // between.
            read(bytes, |body| reader.read_deser(body))
        } else {
            // Resolved to the current schema as a generic value, then written and read again with
            // the current schema: serde alone cannot map a value onto a type whose record holds a
            // union (every event topic's does), the schema-aware reader can.
            let value = read(bytes, |body| reader.read_value(body))?;
            let mut again = Vec::with_capacity(bytes.len() + 16);
            self.writer
                .write_value(&mut again, value)
                .map_err(Error::Decode)?;
            let reader = self.readers.last().expect("the current reader");
            read(&again, |body| reader.read_deser(body))
        }
    }
}

/// Decodes one datum written with `writer` into a generic Avro value, resolved to `reader` when
/// given. Every decode in this crate goes through the same limits; this is the path for tools
/// that hold a schema rather than a message type.
pub fn decode_value(
    bytes: &[u8],
    writer: &Schema,
    reader: Option<&Schema>,
) -> Result<Value, Error> {
    let reader = GenericDatumReader::builder(writer)
        .maybe_reader_schema(reader)
        .build()
        .map_err(Error::Decode)?;
    read(bytes, |body| reader.read_value(body))
}

/// Runs one decode of `bytes` under the crate's limits, refusing a datum that ends early or goes
/// on after its end.
fn read<T>(
    bytes: &[u8],
    decode: impl FnOnce(&mut Body<'_>) -> apache_avro::AvroResult<T>,
) -> Result<T, Error> {
    check_size(bytes)?;
    // apache-avro takes the first value it is given for the whole process, so every decode
    // offers it; its default (512 MiB) lets a 30-byte datum demand hundreds of MiB.
    apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
    let mut body = Body {
        rest: bytes,
        overran: false,
    };
    let value = decode(&mut body).map_err(|e| {
        if body.overran {
            Error::Truncated
        } else {
            Error::Decode(e)
        }
    })?;
    if body.overran {
        Err(Error::Truncated)
    } else if !body.rest.is_empty() {
        Err(Error::TrailingBytes {
            count: body.rest.len(),
        })
    } else {
        Ok(value)
    }
}

/// One message's bytes, noting whether the decoder asked for more: apache-avro reads a union
/// index missing at the very end as branch 0 rather than failing, so a truncated message could
/// otherwise decode.
struct Body<'a> {
    rest: &'a [u8],
    overran: bool,
}

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.overran |= self.rest.is_empty() && !buf.is_empty();
        self.rest.read(buf)
    }
}

fn check_size(bytes: &[u8]) -> Result<(), Error> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(Error::TooLarge {
            size: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    Ok(())
}
