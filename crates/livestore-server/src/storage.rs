//! Persistence of store logs behind a trait, so the SQLite default (`sqlite`, one process) and PostgreSQL
//! (`postgres`, any number of nodes on one database) are interchangeable.
//!
//! A backend owns three duties: it admits pushes (backendId and head checks, atomically with the append), it makes
//! them durable before acknowledging, and it publishes every accepted batch to the store's hub in commit order.
//! Transports never write to the database directly. Each backend also announces every durable head to the hubs'
//! commit feed and keeps the delivery cursors of committed events (`cursors`).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use livestore_proto::rpc::PushArgs;

use crate::config::ServerConfig;
use crate::error::ServerError;
use crate::hub::Hubs;
use crate::metrics::Metrics;

pub(crate) mod cursors;
pub mod postgres;
pub mod sqlite;

/// The highest sequence number a read may name as its upper bound (storage keeps them in signed 64-bit columns).
pub(crate) const NO_UPPER_BOUND: u64 = i64::MAX as u64;

/// A store's identity as the log sees it.
#[derive(Debug, Clone)]
pub struct StoreLog {
    /// Random id of this log's lifetime; a new one means the log was reset or lost.
    pub backend_id: Arc<str>,
    /// The last committed global sequence number (0 when empty).
    pub head: u64,
}

/// What happened to a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The batch is durable; the head is now `head`.
    Appended {
        /// The new head.
        head: u64,
    },
    /// The batch was empty.
    Empty,
    /// The batch's first parent is not the head.
    ServerAhead {
        /// The head at admission.
        head: u64,
        /// The batch's first parent.
        provided_parent: u64,
    },
    /// The push names another backendId.
    BackendIdMismatch {
        /// This log's id.
        expected: String,
        /// The client's.
        received: String,
    },
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

/// A log store. Implementations must be cheap to share (`Arc`) and safe to call from any task.
pub trait EventStorage: Send + Sync + 'static {
    /// Opens a store's log, creating it (with a fresh `backendId`) on first use, and makes sure its hub exists.
    fn open_store(&self, store_id: &str) -> BoxFuture<'static, Result<StoreLog, ServerError>>;

    /// Submits a validated push. Submission happens before this returns, so the order of calls is the order of
    /// admission; callers may pipeline several pushes and await the replies later.
    fn append(
        &self,
        store_id: &str,
        push: PushArgs,
    ) -> BoxFuture<'static, Result<AppendOutcome, ServerError>>;

    /// Reads the events with `after < seqNum <= up_to`, ascending, within `limit`.
    fn read_events(
        &self,
        store_id: &str,
        after: u64,
        up_to: u64,
        limit: ReadLimit,
    ) -> BoxFuture<'static, Result<Vec<StoredEvent>, ServerError>>;

    /// Finishes queued writes and releases the database.
    fn shutdown(&self) -> BoxFuture<'static, ()>;

    /// Whether the log can be served right now. A backend whose database went away answers false until it is back;
    /// meanwhile the server refuses sync requests (503) and has already closed the live subscriptions.
    fn is_available(&self) -> bool {
        true
    }
}

/// Opens the backend `config` selects (Postgres with `database_url`, SQLite in `data_dir` otherwise), with hubs and
/// metrics of its own. For tests and tools that use the storage without a server.
pub async fn open(config: &ServerConfig) -> Result<Arc<dyn EventStorage>, ServerError> {
    Ok(open_with(config, Arc::new(Hubs::standalone()), Arc::new(Metrics::new())).await?.log)
}

/// An opened backend: its logs and its delivery cursors.
pub(crate) struct Opened {
    pub(crate) log: Arc<dyn EventStorage>,
    pub(crate) cursors: Arc<dyn cursors::CursorStore>,
}

pub(crate) async fn open_with(
    config: &ServerConfig,
    hubs: Arc<Hubs>,
    metrics: Arc<Metrics>,
) -> Result<Opened, ServerError> {
    Ok(match &config.database_url {
        Some(url) => {
            let storage = postgres::PostgresStorage::open(url, hubs, metrics).await?;
            Opened { cursors: storage.cursors(), log: Arc::new(storage) }
        }
        None => {
            let storage = sqlite::SqliteStorage::open(&config.data_dir, hubs, metrics)?;
            Opened { cursors: storage.cursors(), log: Arc::new(storage) }
        }
    })
}
