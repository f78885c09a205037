//! The saga coordinator (SPEC §5): saga definitions as pure step functions and the runtime with
//! its durable log and timers. Filled by the sagas issue; it holds nothing yet.
