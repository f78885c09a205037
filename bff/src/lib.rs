//! The HTTP API of SPEC §6 (backend for frontend). Filled by the BFF issue; it holds nothing yet.
