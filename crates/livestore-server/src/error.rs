//! The crate's error type: why the server could not start, or why storage failed.
//!
//! Per-request protocol failures are not errors here: they are frames sent back to the client (see `ws` and
//! `http_transport`).

use std::path::PathBuf;

/// Everything that can make the server fail to start or storage fail to work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML of the expected shape.
    #[error("invalid config file {path}: {message}")]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// Line, column and what is wrong; never the offending text, which may be a secret.
        message: String,
    },
    /// The configuration is well-formed but unusable.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the data directory.
    #[error(
        "data directory {0} is in use by another livestore process (lock file {0}/livestore.lock); stop it or pick another --data-dir"
    )]
    DataDirLocked(PathBuf),
    /// Creating or opening files in the data directory failed.
    #[error("cannot use data directory {path}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database file exists but is not ours, is corrupt, or was written by a newer version.
    #[error("database {path} cannot be used: {reason}")]
    ForeignDatabase {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// SQLite failed.
    #[error("SQLite error")]
    Sqlite(#[from] rusqlite::Error),
    /// The Postgres database holds tables that are not ours, or a schema newer than this build understands.
    #[error("database {database} cannot be used: {reason}")]
    IncompatibleDatabase {
        /// Where the database is (`user@host:port/dbname`, never the password).
        database: String,
        /// What is wrong with it.
        reason: String,
    },
    /// PostgreSQL failed (a statement, or the connection). Shared, because one failed group commit answers every
    /// push in the group.
    #[error("PostgreSQL error")]
    Postgres(#[source] std::sync::Arc<tokio_postgres::Error>),
    /// The database is unreachable; the node refuses sync traffic until it is back.
    #[error("the database is unavailable; this node serves again once it is back")]
    StorageUnavailable,
    /// The storage writer thread is gone (the server is shutting down or the writer failed).
    #[error("storage writer is not running")]
    StorageClosed,
    /// A store's stored events do not continue a delivery cursor (the log was restored under its cursors, or the
    /// cursor was edited). Delivery of that store retries and never skips; an operator has to look.
    #[error(
        "the log of store {store_id} does not continue after seqNum {after} as its delivery cursor expects"
    )]
    LogDiscontinuity {
        /// The store.
        store_id: String,
        /// Where the cursor stands.
        after: u64,
    },
    /// The file services (signer, object store) could not start.
    #[error("file services")]
    Files(#[source] Box<livestore_objects::Error>),
    /// Serving failed.
    #[error("server failed")]
    Serve(#[source] std::io::Error),
}

impl From<tokio_postgres::Error> for ServerError {
    fn from(error: tokio_postgres::Error) -> Self {
        ServerError::Postgres(std::sync::Arc::new(error))
    }
}
