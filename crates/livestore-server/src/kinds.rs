//! Small enums that several modules share and `/metrics` labels: why a connection was refused, which hook ran,
//! why a delivery of committed events failed.
//! A leaf module, so `metrics` can name them without depending on `auth` or `hooks`, which both record metrics.

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    /// 401: missing or invalid credentials.
    Unauthorized,
    /// 403: a valid credential that may not use this store, or the connect hook said no.
    Forbidden,
    /// 503: the connect hook could not decide (unreachable, too slow, a garbled answer); the client retries.
    Unavailable,
}

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookKind {
    /// `connect_url`.
    Connect,
    /// `push_url`.
    Push,
    /// `pull_url`.
    Pull,
    /// `events_url`.
    Events,
}

impl std::fmt::Display for HookKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            HookKind::Connect => "connect",
            HookKind::Push => "push",
            HookKind::Pull => "pull",
            HookKind::Events => "events",
        })
    }
}

/// Kinds of failed attempts, as counted in `livestore_events_out_failures_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum FailureKind {
    Timeout,
    Unreachable,
    Transport,
    Redirect,
    Status,
    Refused,
    Closed,
    /// Reading the events or writing the cursor failed.
    Storage,
    /// The cursor row held another value than this node expected.
    Moved,
}
