//! For the deterministic simulator (`crates/livestore-sim`) only; not a stable API.
//!
//! The pure planners of the transfer engine (`crate::plan`) and their data types, the engine's own row query
//! ([`read_unsettled`]) and the store helpers it uses to check references, re-exported unchanged so the simulator
//! drives the very code the engine runs. The simulator replaces only the I/O: the object store, the local
//! content store, the clock and the random draws.

pub use crate::context::{active_rows_with_hash, hash_referenced, key_referenced, row};
pub use crate::engine::read_unsettled;
pub use crate::plan::{
    Failure, FileRow, Inflight, Job, LaunchPlan, Limits, LocalView, ReconcilePlan, Schedule,
    StateWrite, TransferId, WorkLists, backoff, launch, merge_work, reconcile,
};
