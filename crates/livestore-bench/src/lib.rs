//! Shared pieces of the benchmark drivers: a minimal sync-cf protocol client and latency statistics.
//!
//! The client here is deliberately independent of `livestore-proto`: it builds frames with `serde_json` the way a
//! third-party client would, so the load generator cannot share a bug with the server it measures.

pub mod connect;
pub mod protocol;
pub mod stats;
