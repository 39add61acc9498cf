//! Shared pieces of the benchmark drivers: a minimal sync-cf protocol client, latency statistics, and the
//! `events-out` scenario (delivery of committed events to a webhook the benchmark serves).
//!
//! The client here is deliberately independent of `livestore-proto`: it builds frames with `serde_json` the way a
//! third-party client would, so the load generator cannot share a bug with the server it measures.

pub mod connect;
pub mod events_out;
pub mod protocol;
pub mod stats;
