//! The crate's error type: everything that can be wrong with bytes a peer sent us.
//!
//! Errors are data here: the server turns each one into a close code or a per-request failure. Nothing in this
//! crate panics on input.

/// Why a frame, an RPC payload or a URL parameter was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The frame is not valid JSON or not a JSON object of the RPC envelope shape.
    #[error("malformed frame: {0}")]
    MalformedFrame(#[source] serde_json::Error),
    /// The envelope's `_tag` names no client message of the protocol.
    #[error("unknown message _tag {0:?}")]
    UnknownMessageTag(String),
    /// A `Request`, `Ack` or `Interrupt` lacks the field that names its request.
    #[error("{message} without {field}")]
    MissingField {
        /// The message kind (`Request`, `Ack`, ...).
        message: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// The request's `tag` names no RPC this server implements.
    #[error("unknown RPC tag {0:?}")]
    UnknownRpcTag(String),
    /// The RPC payload does not match the schema of its tag; the path says where.
    #[error("invalid {tag} payload at {path}: {source}")]
    InvalidPayload {
        /// The RPC tag whose schema failed.
        tag: &'static str,
        /// JSON path of the offending value, e.g. `batch[0].seqNum`.
        path: String,
        /// The underlying decode error.
        #[source]
        source: serde_json::Error,
    },
    /// A `storeId` does not match `^[a-zA-Z0-9_-]+$` or is too long.
    #[error("invalid storeId {0:?}: must match ^[a-zA-Z0-9_-]+$ and be at most {max} bytes", max = crate::MAX_STORE_ID_BYTES)]
    InvalidStoreId(String),
    /// The `payload` query parameter is not double-encoded JSON.
    #[error("invalid payload parameter: {0}")]
    InvalidUrlPayload(String),
    /// The `transport` query parameter is neither `ws` nor `http`.
    #[error("unsupported transport {0:?}: expected \"ws\" or \"http\"")]
    UnsupportedTransport(String),
    /// A pushed batch breaks the chain rules (see [`crate::admission::validate_batch`]).
    #[error("invalid push batch: {0}")]
    InvalidBatch(String),
    /// The JSON nests objects and arrays deeper than the limit (see [`crate::json`]).
    #[error("JSON nests deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
}

/// The first 64 characters of peer-supplied text quoted in an error, so an error (and the frame that carries it
/// back) stays small whatever the peer sent.
pub(crate) fn excerpt(text: &str) -> String {
    text.chars().take(64).collect()
}
