//! Why a sync connection ended, as values: [`ConnectionEnd`], [`EndReason`], [`StallReason`], [`StopReason`].
//!
//! The connection machine ([`super::machine`]) produces them, the reconnect machine ([`super::reconnect`]) decides
//! on them, and [`super::DriverState`] reports the last one. Each reason prints the sentence a human reads in
//! logs and in `livestore files sync` errors (`Display`), and serializes as that sentence, so `DriverState`'s
//! JSON keeps its shape. Causes that are errors (a socket error, a store error) keep their source chain in an
//! [`ErrorSource`].

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use livestore_proto::client::RpcFailure;
use serde::{Serialize, Serializer};

use super::BackendIdPolicy;

/// How a connection ended, and so what the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEnd {
    /// Reconnect; [`EndReason::resets_backoff`] says whether at once or after a backoff.
    Retry(EndReason),
    /// Stop the driver for good.
    Stop(StopReason),
}

/// Why a connection ended and the driver will reconnect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndReason {
    /// The transport failed: connecting, reading or sending (reported by the adapter that owns the socket).
    #[error(transparent)]
    Transport(#[from] TransportFailure),
    /// No frame arrived for the silence timeout.
    #[error("server went silent")]
    ServerSilent,
    /// The server reported a connection-level defect; every request on the connection failed.
    #[error("server defect: {0}")]
    ServerDefect(String),
    /// The server ended the live pull (successfully, or with this failure).
    #[error("live pull ended: {}", describe_exit(.0.as_ref()))]
    LivePullEnded(Option<RpcFailure>),
    /// A push failed with something other than `ServerAheadError` or a `backendId` mismatch.
    #[error("push failed: {0:?}")]
    PushFailed(RpcFailure),
    /// The watchdog saw a push or a pull stop making progress.
    #[error(transparent)]
    Stalled(#[from] StallReason),
    /// A pull chunk for our live pull held a page that does not decode.
    #[error("malformed pull page: {0}")]
    MalformedPullPage(#[source] ErrorSource),
    /// The store refused a pulled page (out of order or not contiguous); a fresh pull from the cursor fixes it.
    #[error("pull page refused: {0}")]
    PullPageRefused(#[source] ErrorSource),
    /// The server's `backendId` changed and the `reset` policy wiped the local data.
    #[error("backend reset: local data wiped")]
    BackendReset {
        /// The id the store had synced with.
        expected: String,
        /// The server's new id.
        received: String,
    },
    /// The `reset` policy could not wipe the local data.
    #[error("reset failed: {0}")]
    ResetFailed(#[source] ErrorSource),
}

impl EndReason {
    /// Whether the driver reconnects at once with the backoff reset, rather than after the current backoff.
    ///
    /// A stall, a refused page or a backend reset come from a connection that worked: the server is up, so
    /// waiting would only delay the fresh pull that heals the stream.
    pub fn resets_backoff(&self) -> bool {
        matches!(
            self,
            EndReason::Stalled(_)
                | EndReason::MalformedPullPage(_)
                | EndReason::PullPageRefused(_)
                | EndReason::BackendReset { .. }
        )
    }
}

/// How the transport under a connection failed. The machine never sees a socket; the adapter reports these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportFailure {
    /// The WebSocket could not be opened (DNS, TCP, TLS or the HTTP upgrade).
    #[error("connect failed: {0}")]
    ConnectFailed(#[source] ErrorSource),
    /// Opening the WebSocket took longer than the connect timeout.
    #[error("connect timed out")]
    ConnectTimedOut,
    /// The server closed the connection (a close frame or end of stream).
    #[error("server closed the connection")]
    Closed,
    /// Reading from the socket failed.
    #[error("socket error: {0}")]
    Read(#[source] ErrorSource),
    /// Writing to the socket failed.
    #[error("send failed: {0}")]
    Send(#[source] ErrorSource),
}

/// What the watchdog caught: a request that should have been answered within the stall timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StallReason {
    /// A push got neither an acknowledgement nor an error.
    #[error("push got no answer")]
    PushUnanswered,
    /// The server said it was ahead, but no pulled page followed to bring us up to date.
    #[error("server ahead but no events were pulled")]
    ServerAheadWithoutPage,
    /// The server accepted a push, but the live pull never echoed those events back.
    #[error("accepted events were not echoed by the pull")]
    AcceptedNotEchoed,
}

/// Why the driver stopped for good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StopReason {
    /// The application stopped the driver.
    #[error("stop requested")]
    Requested,
    /// The store was shut down or failed (the store's error).
    #[error("store unavailable: {0}")]
    Store(#[source] ErrorSource),
    /// The server's `backendId` changed and the policy (`shutdown` or `ignore`) stops syncing.
    #[error(
        "backend id mismatch (store synced with {expected:?}, server is {received:?}); policy {policy:?}"
    )]
    BackendIdMismatch {
        /// The policy that decided.
        policy: BackendIdPolicy,
        /// The id the store had synced with.
        expected: String,
        /// The server's id.
        received: String,
    },
}

/// An error kept as the cause of a reason: cheap to clone, and compared by its message.
///
/// Reasons travel in `watch` channels and are compared there, but socket and store errors are neither `Clone`
/// nor `Eq`; sharing them keeps the source chain ([`Error::source`]) that a `String` would lose.
#[derive(Clone)]
pub struct ErrorSource(Arc<dyn Error + Send + Sync + 'static>);

impl ErrorSource {
    /// Wraps an error.
    pub fn new(error: impl Error + Send + Sync + 'static) -> Self {
        ErrorSource(Arc::new(error))
    }

    /// The wrapped error, if it is an `E`.
    pub fn downcast_ref<E: Error + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref()
    }
}

impl fmt::Debug for ErrorSource {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, formatter)
    }
}

impl fmt::Display for ErrorSource {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, formatter)
    }
}

impl Error for ErrorSource {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for ErrorSource {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl Eq for ErrorSource {}

impl Serialize for EndReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Serialize for StopReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

fn describe_exit(failure: Option<&RpcFailure>) -> String {
    match failure {
        None => "without an error".to_owned(),
        Some(failure) => format!("{failure:?}"),
    }
}
