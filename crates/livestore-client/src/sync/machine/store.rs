//! [`SyncStore`]: the store operations the connection machine needs, called synchronously while it handles an
//! input.
//!
//! The real [`crate::Store`] implements it (in `sync/connection.rs`, the adapter); tests and a simulator implement
//! it in memory. Errors are [`StoreError`]s: the machine tells `Shutdown` and `BackendIdMismatch` apart from the
//! rest, so a fake store reports those variants the way the real one does.

use livestore_core::event::LocalEvent;

use crate::error::StoreError;
use crate::store::{ApplyOutcome, UpstreamEvent};

/// The store as the sync connection sees it. See the matching [`crate::Store`] methods for the contracts.
pub trait SyncStore {
    /// The store id sent in every request.
    fn store_id(&self) -> &str;

    /// The pull cursor: the upstream head's global number and the backend id the store synced with.
    fn upstream_cursor(&mut self) -> Result<(u64, Option<String>), StoreError>;

    /// Applies pulled events of one backend in one transaction (confirm, advance or rebase).
    fn apply_upstream(
        &mut self,
        events: &[UpstreamEvent],
        backend_id: &str,
    ) -> Result<ApplyOutcome, StoreError>;

    /// At most `max` synced pending events after global number `after`, in global form.
    fn push_candidates_after(
        &mut self,
        after: u64,
        max: usize,
    ) -> Result<Vec<LocalEvent>, StoreError>;

    /// Wipes the local eventlog and state (the `reset` backend-id policy).
    fn reset_local(&mut self) -> Result<(), StoreError>;

    /// Shuts the store down (the `shutdown` backend-id policy).
    fn shutdown(&mut self) -> Result<(), StoreError>;
}
