//! The workspace-wide tests: tidy checks on the code base itself, and (as the crates land) the
//! end-to-end scenarios across processes.

mod tidy;
