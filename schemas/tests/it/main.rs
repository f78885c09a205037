//! The schemas crate's integration tests: round trips, hostile input, schema evolution, and
//! interop with Python's fastavro from the `.avsc` files alone.

mod evolution;
mod hostile;
mod interop;
mod roundtrip;
mod samples;
