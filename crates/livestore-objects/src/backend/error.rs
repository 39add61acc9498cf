//! Why a backend operation failed, as data. The backend picks no HTTP status: the signer maps each case to its
//! answer in one place (`impl From<BackendError> for ApiError` in `signer`).

use std::fmt;

use crate::store::S3Error;

/// A server-side operation the signer asks of the object store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    /// Deleting an object.
    Delete,
    /// Reading an object's size and checksums.
    ExistenceCheck,
    /// Starting a multipart upload.
    MultipartCreate,
    /// Assembling a multipart upload.
    MultipartComplete,
    /// Abandoning a multipart upload.
    MultipartAbort,
    /// Listing a multipart upload's parts.
    ListParts,
}

impl fmt::Display for Operation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Operation::Delete => "delete",
            Operation::ExistenceCheck => "existence check",
            Operation::MultipartCreate => "multipart create",
            Operation::MultipartComplete => "multipart complete",
            Operation::MultipartAbort => "multipart abort",
            Operation::ListParts => "list parts",
        })
    }
}

/// Why a backend call failed. Details that could help an attacker (paths, upstream bodies) are logged where the
/// failure happens, never carried here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BackendError {
    /// No `Host` header and no `files.public_url`: embedded-store URLs have nowhere to point.
    NoPublicOrigin,
    /// The signing request's `Host` is not a valid host name.
    InvalidHost,
    /// The clock is outside what a signature can carry.
    ClockOutOfRange,
    /// A server-side URL was asked of the embedded store, which is called directly.
    NotExternal,
    /// The store could not carry out the operation (the embedded store failed, or an external delete did).
    OperationFailed(Operation),
    /// The embedded store refused a multipart call with this S3 error.
    Store(S3Error),
    /// The external store could not be reached.
    Unreachable(Operation),
    /// The external store has no such upload or object.
    NotFound(Operation),
    /// The external store refused the call as invalid (a 4xx other than 404).
    Refused {
        /// The call.
        operation: Operation,
        /// Its status.
        status: reqwest::StatusCode,
    },
    /// The external store failed the call (a 5xx or another unexpected status).
    UpstreamFailed {
        /// The call.
        operation: Operation,
        /// Its status.
        status: reqwest::StatusCode,
    },
    /// The external store started a multipart upload without naming it.
    NoUploadId,
    /// The external store answered a multipart complete with an S3 error code in a 200 (assembly failed late).
    CompleteFailed {
        /// The S3 error code.
        code: String,
    },
}
