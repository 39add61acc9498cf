//! Durable delivery cursors: how far each subscriber of committed events (the `[hooks] events_url` webhook, an
//! embedder's `EventSink`) has been acknowledged in each store's log, and which node may deliver.
//!
//! A cursor row holds `delivered` (every event up to it was acknowledged) and `pending_until` (the end of the batch
//! being delivered). The pending end is written, and committed, before a batch is sent, so every retry, a restart
//! after a crash, and a successor node all resend exactly the same events, under the same idempotency key.
//! `delivered` moves only after the subscriber acknowledged, in a committed transaction. Both writes are
//! compare-and-set on `delivered`: a writer that finds another value learns that someone else moved the cursor and
//! reloads it instead of overwriting it.
//!
//! Only the holder of a subscriber's [`Lease`] reads and writes its cursors. SQLite serves one process, which
//! always holds it; on Postgres the lease is a session-level advisory lock on a connection of its own, through
//! which every cursor statement goes, so a node that lost its lock (its connection died) cannot move a cursor.
//! The events themselves are read through [`crate::storage::EventStorage::read_events`].

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::error::ServerError;

/// Stores examined per scan query: bounds the time of one query and the rows it returns.
pub(crate) const SCAN_PAGE_STORES: usize = 1_000;

/// Where one subscriber stands in one store's log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// Every event up to this sequence number was acknowledged (0: none yet).
    pub(crate) delivered: u64,
    /// The batch being delivered ends here; it is resent exactly until acknowledged.
    pub(crate) pending: Option<u64>,
}

/// A store examined by a scan: its head and the subscriber's cursor in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScannedStore {
    /// The store's id.
    pub(crate) store_id: String,
    /// Its committed head.
    pub(crate) head: u64,
    /// The subscriber's cursor (zero when it has none yet).
    pub(crate) cursor: Cursor,
}

impl ScannedStore {
    /// Whether the subscriber has events to receive from it.
    pub(crate) fn is_behind(&self) -> bool {
        self.head > self.cursor.delivered
    }
}

/// One page of a scan over every store, in storage order.
#[derive(Debug, Default)]
pub(crate) struct ScanPage {
    /// The stores examined (at most [`SCAN_PAGE_STORES`]), caught up or not.
    pub(crate) stores: Vec<ScannedStore>,
    /// Where the next page starts, when this one was full.
    pub(crate) next_after: Option<i64>,
}

/// What a compare-and-set cursor write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CursorWrite {
    /// The row had the expected `delivered`; the write is committed.
    Written,
    /// The row had another `delivered` (or the store is gone): nothing was written.
    Moved,
}

/// Cursor storage of one backend.
pub(crate) trait CursorStore: Send + Sync + 'static {
    /// Tries to become the one deliverer of `subscriber`'s events; `None` while another node is.
    fn acquire(
        &self,
        subscriber: &str,
    ) -> BoxFuture<'static, Result<Option<Arc<dyn Lease>>, ServerError>>;
}

/// The right to deliver one subscriber's events, and its cursors.
pub(crate) trait Lease: Send + Sync + 'static {
    /// Cancelled when the lease is lost (its connection failed); nothing may be sent after that.
    fn lost(&self) -> CancellationToken;

    /// The subscriber's cursor in `store_id` (zero when none was written).
    fn load(&self, store_id: &str) -> BoxFuture<'static, Result<Cursor, ServerError>>;

    /// Records that `(delivered, pending]` is being sent, if the cursor is still at `delivered`.
    fn begin(
        &self,
        store_id: &str,
        delivered: u64,
        pending: u64,
    ) -> BoxFuture<'static, Result<CursorWrite, ServerError>>;

    /// Moves the cursor from `delivered` to `to` (clearing the pending end) once acknowledged.
    fn advance(
        &self,
        store_id: &str,
        delivered: u64,
        to: u64,
    ) -> BoxFuture<'static, Result<CursorWrite, ServerError>>;

    /// Examines the stores after `after` (a storage-order key; 0 starts at the beginning).
    fn scan(&self, after: i64) -> BoxFuture<'static, Result<ScanPage, ServerError>>;
}

/// Turns the rows of one scan query into a page: the next page starts after the last store when this one is full.
pub(crate) fn scan_page(rows: Vec<(i64, ScannedStore)>) -> ScanPage {
    let next_after = (rows.len() >= SCAN_PAGE_STORES).then(|| rows.last().map(|(key, _)| *key));
    ScanPage {
        stores: rows.into_iter().map(|(_, store)| store).collect(),
        next_after: next_after.flatten(),
    }
}
