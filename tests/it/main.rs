//! The workspace-wide tests: tidy checks on the code base itself, and end-to-end scenarios across
//! every service and the saga coordinator.

mod api;
mod python_client;
mod sagas_end_to_end;
mod tidy;
