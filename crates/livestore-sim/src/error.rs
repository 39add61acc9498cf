//! The crate's error type: [`SimError`], and the [`Violation`] of an invariant that stops a seed.
//!
//! A violation is the simulator's *finding*, not a failure of the simulator; it still travels as an error so a
//! run stops at the first one. [`Invariant`] names which check fired, so the shrinker can keep a reduction only
//! while the *same* invariant still fails.

use std::fmt;
use std::time::Duration;

use livestore_client::StoreError;

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// An invariant failed: the finding.
    #[error(transparent)]
    Violation(#[from] Violation),
    /// The per-seed directory could not be created.
    #[error("cannot create the seed's directory: {0}")]
    TempDir(#[source] std::io::Error),
}

/// The checks of `check`; see there for what each one means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invariant {
    /// The server log is contiguous: event `n` has sequence number `n` and parent `n - 1`.
    ServerLogChained,
    /// No event (by operation tag) appears twice in the server log.
    ExactlyOnce,
    /// An event the client saw acknowledged is in the server log.
    AckedIsDurable,
    /// A client's upstream head is not ahead of its local head.
    UpstreamNotAheadOfLocal,
    /// A client's events up to its upstream head equal the server log's prefix.
    SyncedPrefix,
    /// A client adopts a new `backendId` only when the server lost its log, and only the server's current one.
    BackendIdStable,
    /// A store call failed, or the sync driver stopped (with the `reset` policy it never should).
    ClientHealthy,
    /// Quiescence was reached within the virtual-time limit after the faults stopped.
    Liveness,
    /// At quiescence every client's eventlog equals the server log.
    Converged,
    /// At quiescence nothing is pending and every upstream head is the server's head.
    NothingPending,
    /// At quiescence every event committed since the client's last backend reset is in the server log.
    NoLostCommit,
    /// At quiescence each client's `todos` and `files` equal a rebuild from its eventlog, and every client's are
    /// equal.
    StateMatchesRebuild,
    /// Files, every step: no client holds local bytes under a hash they do not match, and the blob store never
    /// stores or hands an accepting reader bytes that do not match their key.
    FilesIntact,
    /// Files, at quiescence: every active row on every client is reachable (local bytes there, or its object in
    /// the blob store), and a row's `remoteKey` names a stored object.
    FilesReachable,
    /// Files, at quiescence: every object in the blob store is used by an active row (no orphans).
    FilesNoOrphans,
}

/// An invariant that failed, when, and what was seen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Violation {
    /// Which check.
    pub invariant: Invariant,
    /// The virtual time it failed at.
    pub at: Duration,
    /// What was seen (the evidence, for humans).
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{:?} violated at {:.6}s: {}",
            self.invariant,
            self.at.as_secs_f64(),
            self.detail
        )
    }
}

impl Violation {
    /// A violation of `invariant` at `at`.
    pub fn new(invariant: Invariant, at: Duration, detail: impl Into<String>) -> Self {
        Violation { invariant, at, detail: detail.into() }
    }

    /// A file sync error (a store query through `livestore-files`) of client `client`, as
    /// [`Invariant::ClientHealthy`].
    pub fn files(
        client: usize,
        at: Duration,
        doing: &str,
        error: &livestore_files::FilesError,
    ) -> Self {
        Violation::new(Invariant::ClientHealthy, at, format!("client {client}: {doing}: {error}"))
    }

    /// A store error of client `client`, as a [`Invariant::ClientHealthy`] violation.
    pub fn store(client: usize, at: Duration, doing: &str, error: &StoreError) -> Self {
        Violation::new(Invariant::ClientHealthy, at, format!("client {client}: {doing}: {error}"))
    }
}
