//! Holds no code: the scenarios and the tidy checks are the integration tests in `tests/it`.
