//! The crate's error types: [`FilesError`] for every public operation and [`RemoteError`] for the signer and
//! object-store calls the transfer engine makes.
//!
//! Causes are kept as sources, never flattened; `Display` of every variant names what failed and where, so the
//! CLI can print the chain and a status row can store `to_string()` as `lastSyncError`.

use std::path::PathBuf;

/// Why a file operation failed. Nothing is committed to the store when an operation returns an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilesError {
    /// The source of `save_file`/`update_file` could not be opened or read.
    #[error("cannot read {path}: {source}")]
    SourceUnreadable {
        /// The source path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The source path is a directory (or another non-regular file).
    #[error("{path} is not a regular file")]
    SourceNotAFile {
        /// The source path.
        path: PathBuf,
    },
    /// The source file changed (size or modification time) while it was being saved; nothing was saved.
    #[error("{path} changed while it was being saved; nothing was saved, try again")]
    SourceChanged {
        /// The source path.
        path: PathBuf,
    },
    /// Writing to or reading from the local file store failed (full disk, permissions, ...).
    #[error("local file store I/O failed on {path}: {source}")]
    LocalIo {
        /// The file involved.
        path: PathBuf,
        /// The underlying error (`StorageFull` for a full disk).
        #[source]
        source: std::io::Error,
    },
    /// The local copy does not match its content hash; it was moved to quarantine and will be downloaded again.
    #[error(
        "local copy of {hash} is corrupt (content hash {actual}); quarantined at {quarantined}"
    )]
    CorruptLocalFile {
        /// The expected hash.
        hash: String,
        /// The hash of the bytes found.
        actual: String,
        /// Where the bad bytes were moved.
        quarantined: PathBuf,
    },
    /// No active file has this id.
    #[error("no file with id {0:?}")]
    NotFound(String),
    /// The bytes are neither here nor uploaded anywhere (yet).
    #[error("file {id:?} is not available: {reason}")]
    NotAvailable {
        /// The file id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A row holds data this client cannot use (for example a content hash that is not SHA-256 hex).
    #[error("file {id:?} has an invalid row: {reason}")]
    InvalidRow {
        /// The file id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A remote call failed.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The operation needs the remote store, but this instance runs in local-only mode.
    #[error("remote storage is disabled: this file sync runs in local-only mode")]
    LocalOnly,
    /// The LiveStore store refused the commit or query.
    #[error("store error: {0}")]
    Store(#[from] livestore_client::StoreError),
    /// The instance was disposed.
    #[error("file sync was disposed")]
    Disposed,
}

/// Why a call to the signer or the object store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The server could not be reached or the connection broke.
    #[error("{operation}: network error: {source}")]
    Network {
        /// What was being done.
        operation: &'static str,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The signer refused the credentials (HTTP 401 or 403).
    #[error("{operation}: not authorized (HTTP {status}): {message}")]
    Unauthorized {
        /// What was being done.
        operation: &'static str,
        /// 401 or 403.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// A presigned URL expired before or during the transfer.
    #[error("{operation}: the presigned URL expired")]
    UrlExpired {
        /// What was being done.
        operation: &'static str,
    },
    /// The object does not exist.
    #[error("{operation}: object {key} not found")]
    ObjectNotFound {
        /// What was being done.
        operation: &'static str,
        /// The key.
        key: String,
    },
    /// Any other non-success status.
    #[error("{operation}: HTTP {status}: {message}")]
    Status {
        /// What was being done.
        operation: &'static str,
        /// The status.
        status: u16,
        /// The body (truncated) or the S3 error code.
        message: String,
    },
    /// The server answered 2xx with something that is not what the contract says.
    #[error("{operation}: invalid response: {reason}")]
    InvalidResponse {
        /// What was being done.
        operation: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// Downloaded bytes do not hash to the expected content hash; they were quarantined.
    #[error("downloaded bytes of {key} hash to {actual}, expected {expected}; quarantined")]
    HashMismatch {
        /// The key.
        key: String,
        /// The expected hash.
        expected: String,
        /// The hash of what arrived.
        actual: String,
    },
    /// One call served several files (batched signing) and failed; the first file reports the original error with
    /// its cause, every other file this copy of its text.
    #[error("{message}")]
    Shared {
        /// The original error's text.
        message: String,
        /// Whether the original was a network failure (see [`RemoteError::is_network`]).
        network: bool,
    },
    /// Local I/O failed while streaming (reading the upload source or writing the download).
    #[error("{operation}: local I/O on {path}: {source}")]
    LocalIo {
        /// What was being done.
        operation: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl RemoteError {
    /// Whether the failure says something about reachability (so the engine re-checks the signer's health).
    pub fn is_network(&self) -> bool {
        matches!(self, RemoteError::Network { .. } | RemoteError::Shared { network: true, .. })
            || matches!(self, RemoteError::Status { status, .. } if *status >= 500)
    }

    /// The same failure for another file of a batch: an exact copy where the variant can be copied, else
    /// [`RemoteError::Shared`] with the text (a transport error cannot be cloned).
    pub(crate) fn for_another_file(&self) -> RemoteError {
        match self {
            RemoteError::Unauthorized { operation, status, message } => {
                RemoteError::Unauthorized { operation, status: *status, message: message.clone() }
            }
            RemoteError::UrlExpired { operation } => RemoteError::UrlExpired { operation },
            RemoteError::Status { operation, status, message } => {
                RemoteError::Status { operation, status: *status, message: message.clone() }
            }
            RemoteError::InvalidResponse { operation, reason } => {
                RemoteError::InvalidResponse { operation, reason: reason.clone() }
            }
            other => {
                RemoteError::Shared { message: other.to_string(), network: other.is_network() }
            }
        }
    }
}
