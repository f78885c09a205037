//! Support for the workspace's end-to-end tests and benchmarks: the whole platform in one process
//! (`platform`). The scenarios themselves and the tidy checks are the integration tests in
//! `tests/it`; the measurements are in `tests/benches`.

pub mod platform;
