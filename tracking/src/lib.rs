//! The `tracking` bounded context (SPEC §1 and §4): its aggregates, command handlers, projections and
//! query API. Filled by the services issue; it holds nothing yet.
