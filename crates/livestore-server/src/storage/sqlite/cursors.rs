//! Delivery cursors in the SQLite database (`delivery_cursors`).
//!
//! Writes go through the writer thread like pushes, and are answered only after the group's commit; reads and
//! scans use the read-only pool. One process owns the database (the data directory is locked), so the lease is
//! always granted and never lost.

use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{ReaderPool, WriterChannel, WriterCommand};
use crate::error::ServerError;
use crate::storage::cursors::{
    Cursor, CursorStore, CursorWrite, Lease, SCAN_PAGE_STORES, ScanPage, ScannedStore, scan_page,
};

/// A cursor write for the writer thread.
#[derive(Debug)]
pub(super) struct CursorCommand {
    subscriber: Arc<str>,
    store_id: String,
    delivered: u64,
    change: CursorChange,
}

#[derive(Debug, Clone, Copy)]
enum CursorChange {
    /// Set `pending_until`.
    Begin { pending: u64 },
    /// Move `delivered` and clear `pending_until`.
    Advance { to: u64 },
}

/// Applies a cursor write inside the writer's transaction.
pub(super) fn write(
    transaction: &rusqlite::Transaction<'_>,
    command: &CursorCommand,
    updated_at: &str,
) -> Result<CursorWrite, ServerError> {
    let changed = match command.change {
        CursorChange::Begin { pending } => transaction
            .prepare_cached(
                "INSERT INTO delivery_cursors (subscriber, store_key, delivered, pending_until, updated_at)
                 SELECT ?1, store_key, ?3, ?4, ?5 FROM stores WHERE store_id = ?2
                 ON CONFLICT (subscriber, store_key) DO UPDATE
                     SET pending_until = excluded.pending_until, updated_at = excluded.updated_at
                     WHERE delivered = excluded.delivered",
            )?
            .execute(params![
                &*command.subscriber,
                command.store_id,
                to_sql(command.delivered),
                to_sql(pending),
                updated_at
            ])?,
        CursorChange::Advance { to } => transaction
            .prepare_cached(
                "UPDATE delivery_cursors SET delivered = ?4, pending_until = NULL, updated_at = ?5
                 WHERE subscriber = ?1 AND delivered = ?3
                   AND store_key = (SELECT store_key FROM stores WHERE store_id = ?2)",
            )?
            .execute(params![
                &*command.subscriber,
                command.store_id,
                to_sql(command.delivered),
                to_sql(to),
                updated_at
            ])?,
    };
    Ok(if changed == 1 { CursorWrite::Written } else { CursorWrite::Moved })
}

/// The cursor store of one SQLite database.
#[derive(Debug)]
pub(super) struct SqliteCursors {
    commands: Arc<WriterChannel>,
    readers: Arc<ReaderPool>,
}

impl SqliteCursors {
    pub(super) fn new(commands: Arc<WriterChannel>, readers: Arc<ReaderPool>) -> Self {
        SqliteCursors { commands, readers }
    }
}

impl CursorStore for SqliteCursors {
    fn acquire(
        &self,
        subscriber: &str,
    ) -> BoxFuture<'static, Result<Option<Arc<dyn Lease>>, ServerError>> {
        let lease: Arc<dyn Lease> = Arc::new(SqliteLease {
            subscriber: Arc::from(subscriber),
            commands: self.commands.clone(),
            readers: self.readers.clone(),
            lost: CancellationToken::new(),
        });
        async move { Ok(Some(lease)) }.boxed()
    }
}

#[derive(Debug)]
struct SqliteLease {
    subscriber: Arc<str>,
    commands: Arc<WriterChannel>,
    readers: Arc<ReaderPool>,
    /// Never cancelled: nobody else can write this database.
    lost: CancellationToken,
}

impl SqliteLease {
    fn submit(
        &self,
        store_id: &str,
        delivered: u64,
        change: CursorChange,
    ) -> BoxFuture<'static, Result<CursorWrite, ServerError>> {
        let (reply, receiver) = oneshot::channel();
        let command = CursorCommand {
            subscriber: self.subscriber.clone(),
            store_id: store_id.to_owned(),
            delivered,
            change,
        };
        let submitted = self.commands.submit(WriterCommand::Cursor { command, reply });
        async move {
            submitted?;
            receiver.await.map_err(|_| ServerError::StorageClosed)?
        }
        .boxed()
    }

    fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, ServerError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, ServerError>> {
        let readers = self.readers.clone();
        async move {
            tokio::task::spawn_blocking(move || readers.with_reader(read))
                .await
                .map_err(|_| ServerError::StorageClosed)?
        }
        .boxed()
    }
}

impl Lease for SqliteLease {
    fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    fn load(&self, store_id: &str) -> BoxFuture<'static, Result<Cursor, ServerError>> {
        let (subscriber, store_id) = (self.subscriber.clone(), store_id.to_owned());
        self.read(move |connection| load(connection, &subscriber, &store_id))
    }

    fn begin(
        &self,
        store_id: &str,
        delivered: u64,
        pending: u64,
    ) -> BoxFuture<'static, Result<CursorWrite, ServerError>> {
        self.submit(store_id, delivered, CursorChange::Begin { pending })
    }

    fn advance(
        &self,
        store_id: &str,
        delivered: u64,
        to: u64,
    ) -> BoxFuture<'static, Result<CursorWrite, ServerError>> {
        self.submit(store_id, delivered, CursorChange::Advance { to })
    }

    fn scan(&self, after: i64) -> BoxFuture<'static, Result<ScanPage, ServerError>> {
        let subscriber = self.subscriber.clone();
        self.read(move |connection| scan(connection, &subscriber, after))
    }
}

fn load(connection: &Connection, subscriber: &str, store_id: &str) -> Result<Cursor, ServerError> {
    let row: Option<(i64, Option<i64>)> = connection
        .prepare_cached(
            "SELECT c.delivered, c.pending_until FROM delivery_cursors c
             JOIN stores s ON s.store_key = c.store_key
             WHERE c.subscriber = ?1 AND s.store_id = ?2",
        )?
        .query_row(params![subscriber, store_id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    Ok(row.map_or_else(Cursor::default, |(delivered, pending)| Cursor {
        delivered: from_sql(delivered),
        pending: pending.map(from_sql),
    }))
}

/// Each store's head is the last key of its events (an index seek); the page is cut before the join, so one query
/// examines at most [`SCAN_PAGE_STORES`] stores however many there are.
fn scan(connection: &Connection, subscriber: &str, after: i64) -> Result<ScanPage, ServerError> {
    let mut statement = connection.prepare_cached(
        "SELECT s.store_key, s.store_id,
                coalesce((SELECT max(e.seq_num) FROM events e WHERE e.store_key = s.store_key), 0),
                coalesce(c.delivered, 0), c.pending_until
         FROM (SELECT store_key, store_id FROM stores WHERE store_key > ?2 ORDER BY store_key LIMIT ?3) s
         LEFT JOIN delivery_cursors c ON c.subscriber = ?1 AND c.store_key = s.store_key
         ORDER BY s.store_key",
    )?;
    let rows = statement.query_map(params![subscriber, after, SCAN_PAGE_STORES as i64], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            ScannedStore {
                store_id: row.get(1)?,
                head: from_sql(row.get(2)?),
                cursor: Cursor {
                    delivered: from_sql(row.get(3)?),
                    pending: row.get::<_, Option<i64>>(4)?.map(from_sql),
                },
            },
        ))
    })?;
    Ok(scan_page(rows.collect::<Result<Vec<_>, _>>()?))
}

/// Sequence numbers are stored as SQLite integers; ours never exceed `i64::MAX`.
fn to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_sql(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use rusqlite::Connection;

    use super::super::{APPLICATION_ID, DATABASE_FILE, MIGRATION_V1, SqliteStorage};
    use crate::error::ServerError;
    use crate::hub::Hubs;
    use crate::metrics::Metrics;
    use crate::storage::EventStorage;

    fn open(dir: &Path) -> Result<SqliteStorage, ServerError> {
        SqliteStorage::open(dir, Arc::new(Hubs::standalone()), Arc::new(Metrics::new()))
    }

    fn user_version(path: &Path) -> i32 {
        let connection = Connection::open(path).unwrap();
        connection.query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap()
    }

    #[tokio::test]
    async fn a_version_1_database_gains_the_cursor_table_and_keeps_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE_FILE);
        {
            let connection = Connection::open(&path).unwrap();
            connection.execute_batch(MIGRATION_V1).unwrap();
            connection.pragma_update(None, "application_id", APPLICATION_ID).unwrap();
            connection.pragma_update(None, "user_version", 1).unwrap();
            connection
                .execute_batch(
                    "INSERT INTO stores VALUES (1, 'old', 'backend-of-old', 't');
                     INSERT INTO events VALUES (1, 1, 0, 't', '{\"seqNum\":1}');",
                )
                .unwrap();
        }
        let storage = open(dir.path()).unwrap();
        let log = storage.open_store("old").await.unwrap();
        assert_eq!((&*log.backend_id, log.head), ("backend-of-old", 1));
        storage.shutdown().await;
        assert_eq!(user_version(&path), 2);
        let connection = Connection::open(&path).unwrap();
        let cursors: i64 = connection
            .query_row("SELECT count(*) FROM delivery_cursors", [], |row| row.get(0))
            .unwrap();
        assert_eq!(cursors, 0, "no cursor yet: every subscriber starts at the beginning");
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE_FILE);
        open(dir.path()).unwrap().shutdown().await;
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 3).unwrap();
        let error = open(dir.path()).expect_err("refused");
        assert!(matches!(error, ServerError::ForeignDatabase { .. }), "{error:?}");
        assert!(error.to_string().contains("newer than this build"), "{error}");
        assert_eq!(user_version(&path), 3, "left as it was");
    }
}
