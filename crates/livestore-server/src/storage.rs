//! Persistence of store logs behind a trait, so the SQLite default (`sqlite`, one process) and PostgreSQL
//! (`postgres`, any number of nodes on one database) are interchangeable.
//!
//! A backend owns three duties: it admits pushes (backendId and head checks, atomically with the append), it makes
//! them durable before acknowledging, and it publishes every accepted batch to the store's hub in commit order.
//! Transports never write to the database directly. Each backend also announces every durable head to the hubs'
//! commit feed and keeps the delivery cursors of committed events (`cursors`).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use livestore_proto::admission::Admission;
use livestore_proto::rpc::PushArgs;

use crate::config::ServerConfig;
use crate::error::ServerError;
use crate::hub::Hubs;
use crate::metrics::Metrics;
pub use crate::stored::{NO_UPPER_BOUND, ReadLimit, StoreLog, StoredEvent};

pub(crate) mod cursors;
pub mod postgres;
pub mod sqlite;

/// What happened to a push: appended and durable, or the log unchanged for the reason admission gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The batch is durable; the head is now `head`.
    Appended {
        /// The new head.
        head: u64,
    },
    /// Nothing was appended: [`Admission::Empty`], [`Admission::ServerAhead`] or
    /// [`Admission::BackendIdMismatch`] (never [`Admission::Accept`]; see [`AppendOutcome::from_admission`]).
    Unchanged(Admission),
}

impl AppendOutcome {
    /// The outcome of a push that admission did not accept; `None` for [`Admission::Accept`], which the backend
    /// answers with [`AppendOutcome::Appended`] once the batch is durable.
    pub fn from_admission(admission: Admission) -> Option<Self> {
        match admission {
            Admission::Accept => None,
            refused => Some(AppendOutcome::Unchanged(refused)),
        }
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
