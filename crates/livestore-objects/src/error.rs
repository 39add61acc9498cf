//! The crate's error type for everything that can fail outside a request:
//! reading the configuration, preparing the data directory, building the HTTP
//! client for an external S3 endpoint.
//!
//! Request-level failures are not here: the signer answers them as
//! `{"error": ...}` JSON (`signer::ApiError`) and the embedded store as S3 XML
//! errors (`store::S3Error`), because each speaks its own wire format.

use std::path::PathBuf;

/// Why [`FileServices::start`](crate::FileServices::start) or a configuration
/// step failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is missing or out of range; the message names the
    /// field (or environment variable) and the accepted values.
    #[error("invalid files configuration: {0}")]
    Config(String),
    /// The embedded store's data directory (or a file in it) could not be
    /// created, opened or written.
    #[error("object store data directory {path}: {source}")]
    DataDir {
        /// The path that failed.
        path: PathBuf,
        /// The underlying IO failure.
        #[source]
        source: std::io::Error,
    },
    /// An endpoint or public URL in the configuration is not a valid URL.
    #[error("invalid URL in files configuration ({field}): {source}")]
    Url {
        /// The configuration field holding the URL.
        field: &'static str,
        /// The parse failure.
        #[source]
        source: url::ParseError,
    },
    /// The HTTP client used to reach an external S3 endpoint could not be built.
    #[error("cannot build the HTTP client for the external S3 endpoint: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// Whether a request-body failure was the embedding server's read timeout: an `io::Error` of kind `TimedOut`
/// somewhere in its source chain (the sync server's body guard fails late bodies that way). Such requests are
/// answered 408 (signer) or `RequestTimeout` (object store) rather than as malformed.
pub(crate) fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = error.source();
    }
    false
}
