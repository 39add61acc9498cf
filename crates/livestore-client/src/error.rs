//! The crate's error type: one enum for everything the store and the sync driver report to callers.

use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process (or another `Store` in this one) has the data directory open.
    #[error("store directory {path} is locked by another process")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A database file exists but belongs to another application or another format version.
    #[error("{path} is not a livestore-client database ({reason}); refusing to touch it")]
    ForeignDatabase {
        /// The offending file.
        path: PathBuf,
        /// What did not match.
        reason: String,
    },
    /// A database file is damaged (not SQLite, or failing its integrity check).
    #[error("database {path} is corrupt: {source}")]
    CorruptDatabase {
        /// The offending file.
        path: PathBuf,
        /// What SQLite reported.
        #[source]
        source: rusqlite::Error,
    },
    /// A filesystem operation on the data directory failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An SQLite call failed.
    #[error("SQLite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The schema definition is inconsistent (duplicate names, reserved table names).
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    /// `commit` named an event the schema does not define.
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
    /// An event's args do not match its payload type; nothing was written.
    #[error("invalid args for event {event:?}: {source}")]
    InvalidArgs {
        /// The event name.
        event: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// A materializer failed; the whole commit was rolled back.
    #[error("materializer for {event:?} failed: {reason}")]
    Materializer {
        /// The event name.
        event: String,
        /// The materializer's reason, or the SQL error.
        reason: String,
    },
    /// A query's rows could not be decoded into the requested type.
    #[error("query result does not match the requested type: {0}")]
    Decode(#[source] serde_json::Error),
    /// `Op::parse` was given an operator it does not know; no filter was built, so nothing ran.
    #[error("unknown SQL operator {0:?}")]
    UnknownOperator(String),
    /// A client document name is not in the schema.
    #[error("unknown client document {0:?}")]
    UnknownDocument(String),
    /// The sync core refused input (out-of-order or non-contiguous upstream events).
    #[error("sync protocol violation: {0}")]
    Sync(#[from] livestore_core::CoreError),
    /// The server's `backendId` differs from the one this store synced with before.
    #[error("backend id mismatch: store synced with {expected:?}, server is {received:?}")]
    BackendIdMismatch {
        /// The id this store knows.
        expected: String,
        /// The id the server reported.
        received: String,
    },
    /// The event log contains something the store cannot interpret.
    #[error("invalid eventlog row: {0}")]
    InvalidEventlog(String),
    /// The store was shut down.
    #[error("store is shut down")]
    Shutdown,
}
