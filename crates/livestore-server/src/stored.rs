//! What a log holds and how it is read: a store's identity (`StoreLog`), stored events, and read limits. A leaf
//! module shared by the storage backends, which produce them, and the hubs and deliveries, which consume them.

use std::sync::Arc;

/// The highest sequence number a read may name as its upper bound (storage keeps them in signed 64-bit columns).
pub const NO_UPPER_BOUND: u64 = i64::MAX as u64;

/// A store's identity as the log sees it.
#[derive(Debug, Clone)]
pub struct StoreLog {
    /// Random id of this log's lifetime; a new one means the log was reset or lost.
    pub backend_id: Arc<str>,
    /// The last committed global sequence number (0 when empty).
    pub head: u64,
}

/// One stored event as read back for a pull.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Its global sequence number.
    pub seq_num: u64,
    /// The event's compact JSON as first accepted.
    pub encoded_json: String,
    /// When it was accepted (ISO-8601).
    pub created_at: String,
}

/// How much one read may return: at most `events` events, and no event after the one that reaches `bytes` of
/// encoded JSON (that one is included, so a read always makes progress). The byte bound keeps a backlog read of
/// large events from holding tens of megabytes for a client that may never read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimit {
    /// Most events returned.
    pub events: usize,
    /// Encoded bytes after which no further event is returned.
    pub bytes: usize,
}

impl ReadLimit {
    /// At most `events` events, whatever their size.
    pub fn events(events: usize) -> Self {
        ReadLimit { events, bytes: usize::MAX }
    }
}
