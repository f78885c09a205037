//! The `commissions` bounded context (SPEC §1 and §4): commissions and partner balances. Today it
//! holds the pure domain; handlers, projections and the query API follow.

pub mod domain;
