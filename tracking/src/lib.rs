//! The `tracking` bounded context (SPEC §1 and §4): tracking events (clicks, leads, conversions)
//! and the fraud rule on order ids. Today it holds the pure domain; handlers, projections and the
//! query API follow.

pub mod domain;
