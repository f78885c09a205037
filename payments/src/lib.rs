//! The `payments` bounded context (SPEC §1 and §4): payouts of commissions through an external
//! provider, each attempted at most once. Today it holds the pure domain; handlers, the provider
//! client, projections and the query API follow.

pub mod domain;
