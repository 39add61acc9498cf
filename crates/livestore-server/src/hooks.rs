//! The application's say over who syncs what: connect, push and pull decisions, asked of the app's backend.
//!
//! [`SyncHooks`] is the interface: `livestore serve` implements it over HTTP from `[hooks]` (`hooks/http`: signed
//! JSON calls with timeouts, bounded concurrency and a short cache of connect decisions), and a program that
//! embeds the server implements it in Rust ([`crate::ServerBuilder::hooks`]). The server asks
//! - [`SyncHooks::connect`] before a WebSocket upgrade and for every HTTP-transport request, after any credential the
//!   request carries was verified; the answer may refuse, or vouch for an identity (subject, claims, expiry);
//! - [`SyncHooks::push`] for every batch before it is admitted; a refused batch is not written and the client gets
//!   the reason as a retryable error (`UnknownError`);
//! - [`SyncHooks::pull`] as each pull starts.
//!
//! A hook that fails (unreachable, too slow, a garbled answer) refuses by default: 503 before a connection,
//! `UnknownError` for a push or a pull (a live WebSocket pull's connection is closed with 1013 instead, so the
//! client comes back); `hooks.fail_open` lets such requests through. Each method has a default that allows, so an
//! implementation overrides only what it decides; `wants_*` say which calls to make at all.

pub mod http;

/// The event type a [`PushRequest`] carries, re-exported so hooks need no other crate to read a batch.
pub use livestore_proto::event::{EncodedEvent, SeqNum};

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;

use serde_json::value::RawValue;

pub use crate::identity::Identity;
pub use crate::kinds::HookKind;

/// How a client reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// `transport=ws`.
    Ws,
    /// `transport=http`.
    Http,
    /// A file signer request (`/api/v1/...`) without a bearer token: the connect hook decides by its headers.
    Signer,
}

/// What the connect hook is asked.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    /// The store the client wants.
    pub store_id: String,
    /// The sync payload from the URL, as the client sent it.
    pub payload: Option<Box<RawValue>>,
    /// The request headers named in `hooks.forward_headers` (lower-case names).
    pub headers: BTreeMap<String, String>,
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
    /// WebSocket or HTTP.
    pub transport: TransportKind,
    /// The identity a verified credential established, if the request carried one.
    pub identity: Option<Identity>,
}

/// The connect hook's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectDecision {
    /// Let the client in as this identity (its expiry ends an open connection).
    Allow {
        /// Who the client is, if the hook says.
        subject: Option<String>,
        /// What the hook vouches for; passed on to the push and pull hooks.
        claims: serde_json::Map<String, serde_json::Value>,
        /// First Unix second at which the connection must stop (`None`: no expiry of its own).
        expires_at: Option<u64>,
    },
    /// Refuse, with a reason the client gets (403).
    Deny {
        /// Why, for the client and the log.
        reason: String,
    },
}

/// What the push hook is asked.
#[derive(Debug)]
pub struct PushRequest<'a> {
    /// The store.
    pub store_id: &'a str,
    /// Who pushes.
    pub identity: &'a Identity,
    /// The events (`EncodedEvent::to_json` gives each one's JSON as on the wire).
    pub batch: &'a [livestore_proto::event::EncodedEvent],
}

/// What the pull hook is asked.
#[derive(Debug)]
pub struct PullRequest<'a> {
    /// The store.
    pub store_id: &'a str,
    /// Who pulls.
    pub identity: &'a Identity,
    /// The sequence number the pull starts after (`None`: from the beginning).
    pub cursor: Option<u64>,
    /// Whether it stays open for live events.
    pub live: bool,
}

/// A push or pull hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refuse, with a reason the client gets.
    Deny {
        /// Why.
        reason: String,
    },
}

/// Why a hook gave no decision.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// It did not answer within `hooks.timeout_ms` (or a call slot did not free up in that time).
    #[error("the {hook} hook did not answer within {timeout_ms} ms")]
    Timeout {
        /// Which hook.
        hook: HookKind,
        /// The limit.
        timeout_ms: u64,
    },
    /// It could not be reached, or answered with an error status or a redirect.
    #[error("the {hook} hook failed: {reason}")]
    Failed {
        /// Which hook.
        hook: HookKind,
        /// What went wrong (a status, a connection error); never a credential.
        reason: String,
    },
    /// It answered something that is not a decision.
    #[error("the {hook} hook answered something that is not a decision: {reason}")]
    BadAnswer {
        /// Which hook.
        hook: HookKind,
        /// What is wrong with the answer.
        reason: String,
    },
}

/// The application's decisions; see the module docs. Implementations must be cheap to share and safe to call
/// concurrently.
#[async_trait::async_trait]
pub trait SyncHooks: Send + Sync + 'static {
    /// Whether [`SyncHooks::connect`] decides anything (when false the server does not call it, and a request
    /// needs a credential of its own).
    fn wants_connect(&self) -> bool {
        false
    }

    /// Whether [`SyncHooks::push`] decides anything.
    fn wants_push(&self) -> bool {
        false
    }

    /// Whether [`SyncHooks::pull`] decides anything.
    fn wants_pull(&self) -> bool {
        false
    }

    /// Decides a connection (WebSocket) or an HTTP-transport request.
    async fn connect(&self, request: ConnectRequest) -> Result<ConnectDecision, HookError> {
        let _ = request;
        Ok(ConnectDecision::Allow {
            subject: None,
            claims: serde_json::Map::new(),
            expires_at: None,
        })
    }

    /// Decides a batch before it is admitted.
    async fn push(&self, request: PushRequest<'_>) -> Result<Decision, HookError> {
        let _ = request;
        Ok(Decision::Allow)
    }

    /// Decides a pull as it starts.
    async fn pull(&self, request: PullRequest<'_>) -> Result<Decision, HookError> {
        let _ = request;
        Ok(Decision::Allow)
    }
}

/// Hooks that decide nothing: every request goes by its credential alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl SyncHooks for NoHooks {}

/// What a transport does with a push or a pull once its hook was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Go ahead (allowed, no hook, or the hook failed and `hooks.fail_open` is on).
    Proceed,
    /// The hook refused: answer with this `UnknownError` (JSON), carrying the hook's reason.
    Refused(String),
    /// The hook could not decide and `hooks.fail_open` is off: answer with this `UnknownError` (JSON); retrying
    /// later may succeed.
    Undecided(String),
}

impl Verdict {
    /// The error to answer with, unless the request may proceed.
    pub(crate) fn refusal(self) -> Option<String> {
        match self {
            Verdict::Proceed => None,
            Verdict::Refused(error) | Verdict::Undecided(error) => Some(error),
        }
    }
}

/// Runs a push or pull hook call, turning a panic in an embedder's hook into a failed call: the request is then
/// refused (or let through with `fail_open`) like any other failure, instead of leaving its client waiting.
pub(crate) async fn guarded(
    hook: HookKind,
    call: impl Future<Output = Result<Decision, HookError>>,
) -> Result<Decision, HookError> {
    use futures_util::FutureExt as _;
    std::panic::AssertUnwindSafe(call)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(HookError::Failed { hook, reason: "the hook panicked".to_owned() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_hook_is_a_failed_call() {
        let panicking = async { panic!("an embedder's bug") };
        let result = guarded(HookKind::Push, panicking).await;
        assert!(
            matches!(&result, Err(HookError::Failed { hook: HookKind::Push, reason }) if reason == "the hook panicked"),
            "{result:?}"
        );
        assert_eq!(
            guarded(HookKind::Pull, async { Ok(Decision::Allow) }).await.unwrap(),
            Decision::Allow
        );
    }
}
