//! The `campaigns` bounded context (SPEC §1 and §4): partners, campaigns, content and budget
//! reservations. Today it holds the pure domain; handlers, projections and the query API follow.

pub mod domain;
