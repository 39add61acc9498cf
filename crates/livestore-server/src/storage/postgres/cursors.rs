//! Delivery cursors in Postgres (`livestore_delivery_cursors`) and the lease that makes one node the deliverer.
//!
//! **Leadership.** A subscriber's lease is a session-level advisory lock (`pg_try_advisory_lock`, keyed by a hash
//! of the subscriber's name) held by a connection opened for it alone. Every cursor statement of the lease runs on
//! that connection, so they can succeed only while the session, and with it the lock, lives. A heartbeat checks the
//! connection every two seconds; when it fails, or any statement finds the connection closed, the lease is lost
//! and the delivery task stops sending at once. Postgres releases the lock when the session ends (a node killed,
//! a connection cut), and a standby node, which retries `pg_try_advisory_lock` on a connection it keeps for that,
//! takes over from the committed cursors.
//!
//! An advisory lock rather than a lease row with an expiry: it needs no clock agreement between nodes, ends with
//! the session instead of after a timeout, and fences every cursor write by construction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio_postgres::{Client, Statement};
use tokio_util::sync::CancellationToken;

use super::{Shared, connect};
use crate::error::ServerError;
use crate::storage::cursors::{
    Cursor, CursorStore, CursorWrite, Lease, SCAN_PAGE_STORES, ScanPage, ScannedStore, scan_page,
};

/// How often the lease's connection is checked.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// How long a heartbeat may take before the lease counts as lost.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

/// The cursor store of a Postgres database.
#[derive(Debug)]
pub(super) struct PostgresCursors {
    config: Arc<tokio_postgres::Config>,
    shared: Arc<Shared>,
    /// Per subscriber, the connection a standby node retries the lock on (kept, so waiting costs no new sessions).
    standby: Arc<tokio::sync::Mutex<HashMap<String, Client>>>,
}

impl PostgresCursors {
    pub(super) fn new(config: Arc<tokio_postgres::Config>, shared: Arc<Shared>) -> Self {
        PostgresCursors { config, shared, standby: Arc::default() }
    }
}

impl CursorStore for PostgresCursors {
    fn acquire(
        &self,
        subscriber: &str,
    ) -> BoxFuture<'static, Result<Option<Arc<dyn Lease>>, ServerError>> {
        let (config, shared, standby) =
            (self.config.clone(), self.shared.clone(), self.standby.clone());
        let subscriber = subscriber.to_owned();
        async move {
            let mut standby = standby.lock().await;
            let client = match standby.remove(&subscriber) {
                Some(client) if !client.is_closed() => client,
                _ => {
                    let mut config = (*config).clone();
                    let name = config.get_application_name().unwrap_or("livestore").to_owned();
                    config.application_name(format!("{name}-delivery"));
                    connect(&config).await?
                }
            };
            let locked: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&lock_key(&subscriber)])
                .await?
                .get(0);
            if !locked {
                standby.insert(subscriber, client);
                return Ok(None);
            }
            let lease: Arc<dyn Lease> =
                Arc::new(PostgresLease::start(client, &subscriber, shared).await?);
            Ok(Some(lease))
        }
        .boxed()
    }
}

/// The advisory lock key of a subscriber: 64-bit FNV-1a of a prefixed name, so it is stable across builds and
/// apart from the migration lock.
fn lock_key(subscriber: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"livestore-delivery/".iter().chain(subscriber.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64
}

#[derive(Debug)]
struct PostgresLease {
    subscriber: Arc<str>,
    client: Arc<Client>,
    statements: Arc<Statements>,
    shared: Arc<Shared>,
    lost: CancellationToken,
    heartbeat: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct Statements {
    load: Statement,
    begin: Statement,
    advance: Statement,
    scan: Statement,
}

impl PostgresLease {
    async fn start(
        client: Client,
        subscriber: &str,
        shared: Arc<Shared>,
    ) -> Result<Self, ServerError> {
        let statements = Statements {
            load: client
                .prepare(
                    "SELECT c.delivered, c.pending_until FROM livestore_delivery_cursors c
                     JOIN livestore_stores s ON s.store_key = c.store_key
                     WHERE c.subscriber = $1 AND s.store_id = $2",
                )
                .await?,
            begin: client
                .prepare(
                    "INSERT INTO livestore_delivery_cursors (subscriber, store_key, delivered, pending_until)
                     SELECT $1, store_key, $3, $4 FROM livestore_stores WHERE store_id = $2
                     ON CONFLICT (subscriber, store_key) DO UPDATE
                         SET pending_until = EXCLUDED.pending_until, updated_at = now()
                         WHERE livestore_delivery_cursors.delivered = EXCLUDED.delivered",
                )
                .await?,
            advance: client
                .prepare(
                    "UPDATE livestore_delivery_cursors SET delivered = $4, pending_until = NULL, updated_at = now()
                     WHERE subscriber = $1 AND delivered = $3
                       AND store_key = (SELECT store_key FROM livestore_stores WHERE store_id = $2)",
                )
                .await?,
            scan: client
                .prepare(
                    "SELECT s.store_key, s.store_id, s.head, coalesce(c.delivered, 0), c.pending_until
                     FROM (SELECT store_key, store_id, head FROM livestore_stores
                           WHERE store_key > $2 ORDER BY store_key LIMIT $3) s
                     LEFT JOIN livestore_delivery_cursors c ON c.subscriber = $1 AND c.store_key = s.store_key
                     ORDER BY s.store_key",
                )
                .await?,
        };
        let client = Arc::new(client);
        let lost = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat(client.clone(), lost.clone()));
        Ok(PostgresLease {
            subscriber: Arc::from(subscriber),
            client,
            statements: Arc::new(statements),
            shared,
            lost,
            heartbeat,
        })
    }

    fn handles(&self) -> Handles {
        Handles {
            subscriber: self.subscriber.clone(),
            client: self.client.clone(),
            statements: self.statements.clone(),
            lost: self.lost.clone(),
        }
    }
}

/// What one statement of the lease needs, owned, so its future is `'static`.
struct Handles {
    subscriber: Arc<str>,
    client: Arc<Client>,
    statements: Arc<Statements>,
    lost: CancellationToken,
}

impl Handles {
    /// Nothing runs on a lost lease.
    fn check(&self) -> Result<(), ServerError> {
        if self.lost.is_cancelled() { Err(ServerError::StorageUnavailable) } else { Ok(()) }
    }

    /// A statement's result; a closed connection loses the lease.
    fn settle<T>(&self, result: Result<T, tokio_postgres::Error>) -> Result<T, ServerError> {
        if self.client.is_closed() {
            self.lost.cancel();
        }
        Ok(result?)
    }
}

impl Drop for PostgresLease {
    fn drop(&mut self) {
        // The heartbeat holds the client; stopping it closes the session, which releases the lock.
        self.heartbeat.abort();
        self.lost.cancel();
    }
}

async fn heartbeat(client: Arc<Client>, lost: CancellationToken) {
    let mut interval = tokio::time::interval(HEARTBEAT_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = lost.cancelled() => return,
            _ = interval.tick() => {}
        }
        let answered =
            tokio::time::timeout(HEARTBEAT_TIMEOUT, client.simple_query("SELECT 1")).await;
        if !matches!(answered, Ok(Ok(_))) {
            tracing::warn!(
                "the delivery lease's database connection failed; another node may take over"
            );
            lost.cancel();
            return;
        }
    }
}

impl Lease for PostgresLease {
    fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    fn load(&self, store_id: &str) -> BoxFuture<'static, Result<Cursor, ServerError>> {
        let (handles, store_id) = (self.handles(), store_id.to_owned());
        async move {
            handles.check()?;
            let subscriber: &str = &handles.subscriber;
            let row = handles.settle(
                handles.client.query_opt(&handles.statements.load, &[&subscriber, &store_id]).await,
            )?;
            Ok(row.map_or_else(Cursor::default, |row| Cursor {
                delivered: from_sql(row.get(0)),
                pending: row.get::<_, Option<i64>>(1).map(from_sql),
            }))
        }
        .boxed()
    }

    fn begin(
        &self,
        store_id: &str,
        delivered: u64,
        pending: u64,
    ) -> BoxFuture<'static, Result<CursorWrite, ServerError>> {
        let (handles, store_id) = (self.handles(), store_id.to_owned());
        async move {
            handles.check()?;
            let subscriber: &str = &handles.subscriber;
            let parameters: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                [&subscriber, &store_id, &to_sql(delivered), &to_sql(pending)];
            let changed = handles
                .settle(handles.client.execute(&handles.statements.begin, &parameters).await)?;
            Ok(if changed == 1 { CursorWrite::Written } else { CursorWrite::Moved })
        }
        .boxed()
    }

    fn advance(
        &self,
        store_id: &str,
        delivered: u64,
        to: u64,
    ) -> BoxFuture<'static, Result<CursorWrite, ServerError>> {
        let (handles, store_id) = (self.handles(), store_id.to_owned());
        async move {
            handles.check()?;
            let subscriber: &str = &handles.subscriber;
            let parameters: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                [&subscriber, &store_id, &to_sql(delivered), &to_sql(to)];
            let changed = handles
                .settle(handles.client.execute(&handles.statements.advance, &parameters).await)?;
            Ok(if changed == 1 { CursorWrite::Written } else { CursorWrite::Moved })
        }
        .boxed()
    }

    fn scan(&self, after: i64) -> BoxFuture<'static, Result<ScanPage, ServerError>> {
        let (handles, shared) = (self.handles(), self.shared.clone());
        async move {
            handles.check()?;
            let subscriber: &str = &handles.subscriber;
            let limit = SCAN_PAGE_STORES as i64;
            let rows = handles.settle(
                handles
                    .client
                    .query(&handles.statements.scan, &[&subscriber, &after, &limit])
                    .await,
            )?;
            let rows: Vec<(i64, ScannedStore)> = rows
                .iter()
                .map(|row| {
                    let key: i64 = row.get(0);
                    let store_id: String = row.get(1);
                    // Notifications name stores by key; remembering the names lets them reach the delivery.
                    shared.remember_name(key, &store_id);
                    let cursor = Cursor {
                        delivered: from_sql(row.get(3)),
                        pending: row.get::<_, Option<i64>>(4).map(from_sql),
                    };
                    (key, ScannedStore { store_id, head: from_sql(row.get(2)), cursor })
                })
                .collect();
            Ok(scan_page(rows))
        }
        .boxed()
    }
}

fn to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_sql(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lock_keys_differ_per_subscriber_and_are_stable() {
        assert_ne!(super::lock_key("webhook"), super::lock_key("webhooks"));
        // Stable across builds: a node of another version must contend for the same lock.
        assert_eq!(super::lock_key("webhook"), super::lock_key("webhook"));
        assert_eq!(super::lock_key("webhook") as u64, 0x462c2cb83d378361);
    }
}
