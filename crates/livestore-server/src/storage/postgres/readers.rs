//! A few shared connections for everything but appends: backlog reads, publishers' catch-up reads, heads and
//! store rows. Each connection pipelines the queries of concurrent callers, so a handful is enough; a closed one is
//! replaced on next use, which is how reads recover after the database comes back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_postgres::{Client, Statement};

use super::{StoreRow, connect, new_backend_id, now_rfc3339};
use crate::error::ServerError;
use crate::storage::{NO_UPPER_BOUND, ReadLimit, StoredEvent};

/// A round-robin set of read connections.
pub(super) struct Readers {
    config: Arc<tokio_postgres::Config>,
    slots: Vec<tokio::sync::Mutex<Option<Arc<ReadConnection>>>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Readers({} connections)", self.slots.len())
    }
}

struct ReadConnection {
    client: Client,
    read_events: Statement,
    head: Statement,
    find_store: Statement,
    create_store: Statement,
}

impl Readers {
    pub(super) fn new(config: Arc<tokio_postgres::Config>, connections: usize) -> Self {
        Readers {
            config,
            slots: (0..connections).map(|_| tokio::sync::Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// Events of a store with `after < seqNum <= up_to`, ascending, within `limit` (the byte bound is applied by
    /// the database, so rows past it are never sent).
    pub(super) async fn read_events(
        &self,
        store_key: i64,
        after: u64,
        up_to: u64,
        limit: ReadLimit,
    ) -> Result<Vec<StoredEvent>, ServerError> {
        let connection = self.connection().await?;
        let bytes = i64::try_from(limit.bytes).unwrap_or(i64::MAX);
        let rows = connection
            .client
            .query(
                &connection.read_events,
                &[
                    &store_key,
                    &(after as i64),
                    &(up_to.min(NO_UPPER_BOUND) as i64),
                    &(limit.events as i64),
                    &bytes,
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| StoredEvent {
                seq_num: row.get::<_, i64>(0) as u64,
                created_at: row.get(1),
                encoded_json: row.get(2),
            })
            .collect())
    }

    /// The committed head of a store.
    pub(super) async fn head(&self, store_key: i64) -> Result<u64, ServerError> {
        let connection = self.connection().await?;
        let row = connection.client.query_one(&connection.head, &[&store_key]).await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// The row of a store, if it exists.
    pub(super) async fn find_store(&self, store_id: &str) -> Result<Option<StoreRow>, ServerError> {
        let connection = self.connection().await?;
        let row = connection.client.query_opt(&connection.find_store, &[&store_id]).await?;
        Ok(row
            .map(|row| StoreRow { key: row.get(0), backend_id: Arc::from(row.get::<_, &str>(1)) }))
    }

    /// The row of a store, created (with a fresh `backendId`) on first use by any node.
    pub(super) async fn ensure_store(&self, store_id: &str) -> Result<StoreRow, ServerError> {
        let connection = self.connection().await?;
        let created = connection
            .client
            .query_opt(&connection.create_store, &[&store_id, &new_backend_id(), &now_rfc3339()])
            .await?;
        if let Some(row) = created {
            tracing::info!(target: "livestore_server::_events::store_created", store_id, "created store log");
            return Ok(StoreRow { key: row.get(0), backend_id: Arc::from(row.get::<_, &str>(1)) });
        }
        // Another node created it first; its row is committed (the insert waited for it), a new statement sees it.
        self.find_store(store_id).await?.ok_or(ServerError::StorageUnavailable)
    }

    async fn connection(&self) -> Result<Arc<ReadConnection>, ServerError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[index].lock().await;
        if let Some(connection) = slot.as_ref()
            && !connection.client.is_closed()
        {
            return Ok(connection.clone());
        }
        *slot = None;
        let client = connect(&self.config).await?;
        let connection = Arc::new(ReadConnection {
            read_events: client
                .prepare(
                    "SELECT seq_num, created_at, encoded FROM (
                         SELECT seq_num, created_at, encoded,
                                sum(octet_length(encoded)) OVER (ORDER BY seq_num) - octet_length(encoded)
                                    AS bytes_before
                         FROM livestore_events
                         WHERE store_key = $1 AND seq_num > $2 AND seq_num <= $3
                         ORDER BY seq_num LIMIT $4
                     ) page
                     WHERE bytes_before < $5
                     ORDER BY seq_num",
                )
                .await?,
            head: client.prepare("SELECT head FROM livestore_stores WHERE store_key = $1").await?,
            find_store: client
                .prepare("SELECT store_key, backend_id FROM livestore_stores WHERE store_id = $1")
                .await?,
            create_store: client
                .prepare(
                    "INSERT INTO livestore_stores (store_id, backend_id, created_at) VALUES ($1, $2, $3)
                     ON CONFLICT (store_id) DO NOTHING RETURNING store_key, backend_id",
                )
                .await?,
            client,
        });
        *slot = Some(connection.clone());
        Ok(connection)
    }
}
