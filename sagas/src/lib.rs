//! The saga coordinator (SPEC §5): saga definitions as pure step functions, and (to come) the
//! runtime with its durable log, timers and query API.

pub mod definition;
