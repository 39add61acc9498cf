//! The two SQLite databases behind a store and the SQL that touches them.
//!
//! One connection opens the eventlog database as `main` and attaches the state database as `state`, so a commit is
//! a single `BEGIN … COMMIT` that appends to the log and materializes. SQLite in WAL mode commits the two files one
//! after the other (eventlog first), not atomically; the state records the last event it materialized
//! (`__livestore_state_head`) and the store replays the missing tail on open, so a crash between the two leaves a
//! recoverable, never a wrong, state.
//!
//! - [`changes`]: which state tables a transaction wrote (for subscriptions);
//! - [`open`]: file layout, locking, format checks (foreign or corrupt files are errors, never reset);
//! - [`eventlog`]: the `eventlog` and `__livestore_sync_status` tables;
//! - [`state`]: state tables, the state head, and materialization;
//! - [`undo`]: the undo log used to roll back pending events on rebase;
//! - [`writer`]: appending events and running materializers, with statements kept for a batch;
//! - [`query`]: running queries into rows or serde types, and finding the tables a query reads.

pub(crate) mod changes;
pub(crate) mod eventlog;
pub(crate) mod open;
pub(crate) mod query;
pub(crate) mod state;
pub(crate) mod undo;
pub(crate) mod writer;
