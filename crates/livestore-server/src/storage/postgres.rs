//! PostgreSQL storage: one database shared by any number of `livestore serve` nodes behind one address.
//!
//! **Serialization: a row lock per store.** Every store has a row in `livestore_stores` holding its `head`. A node's
//! writer task admits pushes inside a transaction that first takes `SELECT … FOR UPDATE` on the rows of the stores
//! it appends to (in `store_key` order, so two nodes never wait on each other in a cycle). Admission runs against
//! the locked head, the events are inserted and the head moved in the same transaction, so whichever of two
//! concurrent pushes with the same parent locks the row second sees the first one's head and gets
//! `ServerAheadError`, on whatever nodes they arrived. The primary key `(store_key, seq_num)` and the check
//! `seq_num = parent_seq_num + 1` stay as a second line of defence: a bug in admission fails a commit, it cannot
//! fork a log. A row lock rather than an advisory lock: it lives exactly as long as the transaction, needs no
//! key scheme, and the head it protects is read by the same statement that takes it.
//!
//! **Group commit.** The writer drains every queued push into one transaction (one lock statement, one insert of
//! every accepted event, one head update, one commit), so concurrent pushes to many stores share one WAL flush.
//!
//! **Notification.** The transaction ends with `pg_notify('livestore_events', '<store_key>:<head>')` per store it
//! appended to; Postgres delivers it to every listening node after the commit, in commit order. Payloads stay
//! tiny: nodes read the events themselves. Each node keeps one `LISTEN` connection (`listener`) and, per store
//! it has open, a publisher (`publisher`) that moves the store's hub from `hub.head` to the highest head it knows
//! of (local commits and notifications alike), reading what it does not hold from the table. The publisher is the
//! only caller of `StoreHub::publish` for its store, so batches reach the hub contiguous and in commit order,
//! exactly once, whichever node committed them. A local push is acknowledged after its events reached the hub.
//!
//! **Failure.** The listener checks its connection with a heartbeat. When it breaks, the node cannot know what
//! other nodes commit any more, so it stops serving: every hub is closed (live pulls' sockets close with 1013 and
//! clients reconnect, to another node behind the proxy), `is_available` turns false (sync requests and
//! `/healthz` get 503) and opening a store fails. Once the listener is back, stores are opened afresh from the
//! database. A node never serves a log it cannot vouch for.
//!
//! **Delivery of committed events.** Every node announces the commits it hears of (its writer's and every
//! notification) to the hubs' commit feed; delivery cursors and the lease that picks the one delivering node live
//! in `cursors`.

mod cursors;
mod listener;
mod publisher;
mod readers;
mod schema;
mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use livestore_proto::rpc::PushArgs;
use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::commit_feed::CommitFeed;
use crate::config::DatabaseUrl;
use crate::error::ServerError;
use crate::hub::Hubs;
use crate::metrics::Metrics;
use crate::storage::cursors::CursorStore;
use crate::storage::{AppendOutcome, EventStorage, ReadLimit, StoreLog, StoredEvent};

use self::publisher::Registry;
use self::readers::Readers;
use self::writer::{Command, Writer};

/// The channel every node listens on.
const CHANNEL: &str = "livestore_events";
/// How long the first connection may take to succeed at start (Postgres starting beside us).
const STARTUP_CONNECT_PATIENCE: Duration = Duration::from_secs(30);
/// Read-only connections per node (each pipelines concurrent queries).
const READER_CONNECTIONS: usize = 4;

/// PostgreSQL-backed [`EventStorage`]; several processes may share one database.
#[derive(Debug)]
pub struct PostgresStorage {
    config: Arc<tokio_postgres::Config>,
    commands: Mutex<Option<mpsc::UnboundedSender<Command>>>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    shared: Arc<Shared>,
    stop_listener: CancellationToken,
}

/// What the writer, the listener, the publishers and the storage handle share.
#[derive(Debug)]
struct Shared {
    readers: Readers,
    registry: Registry,
    /// Store ids this node has seen, with their row key and `backendId` (both fixed for a row's lifetime).
    directory: Mutex<HashMap<String, StoreRow>>,
    /// Store ids by row key, for announcing notified commits (which name stores by key) to the commit feed.
    names: Mutex<HashMap<i64, String>>,
    commits: Arc<CommitFeed>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Clone)]
struct StoreRow {
    key: i64,
    backend_id: Arc<str>,
}

impl Shared {
    fn cached_row(&self, store_id: &str) -> Option<StoreRow> {
        self.directory.lock().expect("store directory lock poisoned").get(store_id).cloned()
    }

    fn remember_row(&self, store_id: &str, row: StoreRow) {
        self.remember_name(row.key, store_id);
        self.directory
            .lock()
            .expect("store directory lock poisoned")
            .insert(store_id.to_owned(), row);
    }

    fn remember_name(&self, key: i64, store_id: &str) {
        let mut names = self.names.lock().expect("store names lock poisoned");
        names.entry(key).or_insert_with(|| store_id.to_owned());
    }

    /// Announces a commit heard by key; a store this node cannot name asks the delivery to scan instead.
    fn announce(&self, store_key: i64, head: u64) {
        let name = self.names.lock().expect("store names lock poisoned").get(&store_key).cloned();
        match name {
            Some(store_id) => self.commits.committed(&store_id, head),
            None => self.commits.missed(),
        }
    }
}

impl PostgresStorage {
    /// Connects, runs the migrations, starts listening for other nodes' commits and the writer.
    pub(crate) async fn open(
        url: &DatabaseUrl,
        hubs: Arc<Hubs>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServerError> {
        let config = Arc::new(connection_config(url)?);
        let database = url.redacted();
        let mut client = connect_at_startup(&config, &database).await?;
        schema::migrate(&mut client, &database).await?;
        let synchronous_commit: String =
            client.query_one("SHOW synchronous_commit", &[]).await?.get(0);
        if synchronous_commit == "off" {
            tracing::warn!(
                database,
                "synchronous_commit is off: acknowledged pushes can be lost if Postgres crashes; set it to on"
            );
        }
        drop(client);
        tracing::info!(target: "livestore_server::_events::database_ready", database, "Postgres storage ready");

        let shared = Arc::new(Shared {
            readers: Readers::new(config.clone(), READER_CONNECTIONS),
            commits: hubs.commits().clone(),
            registry: Registry::new(hubs, metrics.clone()),
            directory: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            metrics,
        });
        let stop_listener = CancellationToken::new();
        let (ready, is_ready) = oneshot::channel();
        tokio::spawn(listener::run(config.clone(), shared.clone(), stop_listener.clone(), ready));
        if !matches!(tokio::time::timeout(STARTUP_CONNECT_PATIENCE, is_ready).await, Ok(Ok(()))) {
            stop_listener.cancel();
            return Err(ServerError::StorageUnavailable);
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        let writer = tokio::spawn(Writer::new(config.clone(), shared.clone()).run(receiver));
        Ok(PostgresStorage {
            config,
            commands: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
            shared,
            stop_listener,
        })
    }

    fn submit(&self, command: Command) -> Result<(), ServerError> {
        let commands = self.commands.lock().expect("writer channel lock poisoned");
        commands
            .as_ref()
            .ok_or(ServerError::StorageClosed)?
            .send(command)
            .map_err(|_| ServerError::StorageClosed)
    }

    /// The delivery cursors in this database, with the lease that picks the delivering node.
    pub(crate) fn cursors(&self) -> Arc<dyn CursorStore> {
        Arc::new(cursors::PostgresCursors::new(self.config.clone(), self.shared.clone()))
    }
}

impl EventStorage for PostgresStorage {
    fn open_store(&self, store_id: &str) -> BoxFuture<'static, Result<StoreLog, ServerError>> {
        let shared = self.shared.clone();
        let store_id = store_id.to_owned();
        async move { open_store(&shared, &store_id).await }.boxed()
    }

    fn append(
        &self,
        store_id: &str,
        push: PushArgs,
    ) -> BoxFuture<'static, Result<AppendOutcome, ServerError>> {
        let (reply, receiver) = oneshot::channel();
        let submitted = self.submit(Command { store_id: store_id.to_owned(), push, reply });
        async move {
            submitted?;
            receiver.await.map_err(|_| ServerError::StorageClosed)?
        }
        .boxed()
    }

    fn read_events(
        &self,
        store_id: &str,
        after: u64,
        up_to: u64,
        limit: ReadLimit,
    ) -> BoxFuture<'static, Result<Vec<StoredEvent>, ServerError>> {
        let shared = self.shared.clone();
        let store_id = store_id.to_owned();
        async move {
            let key = match shared.cached_row(&store_id) {
                Some(row) => row.key,
                None => match shared.readers.find_store(&store_id).await? {
                    Some(row) => {
                        shared.remember_row(&store_id, row.clone());
                        row.key
                    }
                    None => return Ok(Vec::new()),
                },
            };
            shared.readers.read_events(key, after, up_to, limit).await
        }
        .boxed()
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        // Dropping the sender ends the writer once it has committed what is queued.
        self.commands.lock().expect("writer channel lock poisoned").take();
        let writer = self.writer.lock().expect("writer handle lock poisoned").take();
        let stop_listener = self.stop_listener.clone();
        async move {
            if let Some(writer) = writer {
                let _ = writer.await;
            }
            stop_listener.cancel();
        }
        .boxed()
    }

    fn is_available(&self) -> bool {
        self.shared.registry.is_available()
    }
}

/// Opens a store for pulls on this node: its row (created on first use), then its hub at the database's head.
///
/// The publisher is registered before the head is read, so a commit notified in between is not lost: it either
/// is below the head read, or raises the publisher's target and gets published once the hub is attached.
async fn open_store(shared: &Arc<Shared>, store_id: &str) -> Result<StoreLog, ServerError> {
    if !shared.registry.is_available() {
        return Err(ServerError::StorageUnavailable);
    }
    let row = match shared.cached_row(store_id) {
        Some(row) => row,
        None => {
            let row = shared.readers.ensure_store(store_id).await?;
            shared.remember_row(store_id, row.clone());
            row
        }
    };
    let publisher = shared.registry.register(row.key, store_id)?;
    if let Some(log) = publisher.log() {
        return Ok(log);
    }
    let head = shared.readers.head(row.key).await?;
    publisher.attach(shared, &row.backend_id, head)
}

/// The connection settings of every connection a node opens.
fn connection_config(url: &DatabaseUrl) -> Result<tokio_postgres::Config, ServerError> {
    let mut config = url.to_postgres_config()?;
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        return Err(ServerError::InvalidConfig(
            "database_url asks for sslmode=require, but this build connects to Postgres without TLS; use a \
             private network or a local TLS tunnel (see docs/deploy.md)"
                .into(),
        ));
    }
    if config.get_application_name().is_none() {
        config.application_name("livestore");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    // Keepalives find a peer that vanished without closing the connection (a partition, a dead host).
    config.keepalives(true).keepalives_idle(Duration::from_secs(10));
    Ok(config)
}

/// Opens one connection and drives it on its own task; the client reports `is_closed` once the connection ends.
async fn connect(
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "Postgres connection ended");
        }
    });
    Ok(client)
}

async fn connect_at_startup(
    config: &tokio_postgres::Config,
    database: &str,
) -> Result<tokio_postgres::Client, ServerError> {
    let deadline = tokio::time::Instant::now() + STARTUP_CONNECT_PATIENCE;
    let mut delay = Duration::from_millis(200);
    loop {
        match connect(config).await {
            Ok(client) => return Ok(client),
            Err(error)
                if is_transient(&error) && tokio::time::Instant::now() + delay < deadline =>
            {
                tracing::warn!(database, %error, "cannot reach Postgres yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Whether a failed connection attempt may succeed later: the server is unreachable or still starting, as opposed
/// to refusing our credentials or database name.
fn is_transient(error: &tokio_postgres::Error) -> bool {
    match error.code() {
        None => true,
        Some(code) => code.code().starts_with("57P") || code.code().starts_with("08"),
    }
}

/// A 21-character random id, like the nanoid the reference server uses.
fn new_backend_id() -> String {
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(21).map(char::from).collect()
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
