//! The default storage: one SQLite database (WAL, `synchronous=FULL`) in the data directory.
//!
//! One writer thread owns the only writing connection. It drains every queued command into one transaction (group
//! commit), so concurrent pushes to many stores, and pipelined pushes to one store, share one fsync. Admission
//! runs inside that thread against heads it tracks itself, which serializes pushes per store without locks. After
//! the commit it publishes accepted batches to their hubs in order, then replies. Readers use a small pool of
//! read-only connections on blocking threads; WAL lets them run beside the writer.
//!
//! The head of a store is `max(seq_num)` of its events and the `backendId` sits in the same file, so losing the
//! file loses both together: a fresh file means a fresh `backendId`, which is exactly the protocol's reset signal.
//!
//! Delivery cursors (`delivery_cursors`, schema version 2) live in the same file and are written by the same
//! writer thread, so a cursor write shares the group commit of the pushes queued with it (`cursors`).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::thread::JoinHandle;
use std::time::SystemTime;

mod cursors;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use livestore_proto::admission::admit;
use livestore_proto::rpc::PushArgs;
use rand::Rng;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::error::ServerError;
use crate::hub::Hubs;
use crate::metrics::Metrics;
use crate::storage::cursors::{CursorStore, CursorWrite};
use crate::storage::{
    AppendOutcome, EventStorage, NO_UPPER_BOUND, ReadLimit, StoreLog, StoredEvent,
};

use self::cursors::{CursorCommand, SqliteCursors};

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "sync.sqlite3";
/// Marks our databases (`PRAGMA application_id`, ASCII "LSSY").
const APPLICATION_ID: i32 = 0x4C53_5359;
/// The newest schema version this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i32 = 2;
/// Upper bound of commands folded into one transaction; bounds reply latency under heavy load.
const MAX_COMMANDS_PER_COMMIT: usize = 2048;

const MIGRATION_V1: &str = "
CREATE TABLE stores (
    store_key INTEGER PRIMARY KEY,
    store_id TEXT NOT NULL UNIQUE,
    backend_id TEXT NOT NULL,
    created_at TEXT NOT NULL
) STRICT;
CREATE TABLE events (
    store_key INTEGER NOT NULL REFERENCES stores(store_key),
    seq_num INTEGER NOT NULL,
    parent_seq_num INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    encoded TEXT NOT NULL,
    PRIMARY KEY (store_key, seq_num)
) STRICT, WITHOUT ROWID;
";

/// Version 2: how far each subscriber of committed events got in each store (see `storage::cursors`).
const MIGRATION_V2: &str = "
CREATE TABLE delivery_cursors (
    subscriber TEXT NOT NULL,
    store_key INTEGER NOT NULL REFERENCES stores(store_key),
    -- Every event up to here was acknowledged by the subscriber.
    delivered INTEGER NOT NULL CHECK (delivered >= 0),
    -- The end of the batch being sent; resent exactly until acknowledged.
    pending_until INTEGER CHECK (pending_until IS NULL OR pending_until > delivered),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (subscriber, store_key)
) STRICT, WITHOUT ROWID;
";

enum WriterCommand {
    Open {
        store_id: String,
        reply: oneshot::Sender<Result<StoreLog, ServerError>>,
    },
    Append {
        store_id: String,
        push: PushArgs,
        reply: oneshot::Sender<Result<AppendOutcome, ServerError>>,
    },
    Cursor {
        command: CursorCommand,
        reply: oneshot::Sender<Result<CursorWrite, ServerError>>,
    },
}

/// SQLite-backed [`EventStorage`].
#[derive(Debug)]
pub struct SqliteStorage {
    commands: Arc<WriterChannel>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<ReaderPool>,
    _lock_file: File,
}

/// The way to the writer thread, shared by the storage and its cursors; `None` once shut down.
#[derive(Debug)]
struct WriterChannel(Mutex<Option<std_mpsc::Sender<WriterCommand>>>);

impl WriterChannel {
    fn submit(&self, command: WriterCommand) -> Result<(), ServerError> {
        let commands = self.0.lock().expect("writer channel lock poisoned");
        commands
            .as_ref()
            .ok_or(ServerError::StorageClosed)?
            .send(command)
            .map_err(|_| ServerError::StorageClosed)
    }
}

impl SqliteStorage {
    /// Opens (or creates) the database in `data_dir`, taking an exclusive lock on the directory.
    pub(crate) fn open(
        data_dir: &Path,
        hubs: Arc<Hubs>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServerError> {
        let data_dir_error = |source| ServerError::DataDir { path: data_dir.to_owned(), source };
        private_dir(data_dir).map_err(data_dir_error)?;
        let lock_file = File::create(data_dir.join("livestore.lock"))
            .map_err(|source| ServerError::DataDir { path: data_dir.to_owned(), source })?;
        lock_file.try_lock().map_err(|_| ServerError::DataDirLocked(data_dir.to_owned()))?;

        let path = data_dir.join(DATABASE_FILE);
        private_database_files(&path).map_err(data_dir_error)?;
        let connection = open_writer(&path)?;
        let (sender, receiver) = std_mpsc::channel();
        let writer = Writer { connection, hubs, metrics, stores: HashMap::new() };
        let handle = std::thread::Builder::new()
            .name("livestore-sqlite-writer".into())
            .spawn(move || writer.run(&receiver))
            .map_err(|source| ServerError::DataDir { path: data_dir.to_owned(), source })?;
        Ok(SqliteStorage {
            commands: Arc::new(WriterChannel(Mutex::new(Some(sender)))),
            writer: Mutex::new(Some(handle)),
            readers: Arc::new(ReaderPool { path, idle: Mutex::new(Vec::new()) }),
            _lock_file: lock_file,
        })
    }

    fn submit(&self, command: WriterCommand) -> Result<(), ServerError> {
        self.commands.submit(command)
    }

    /// The delivery cursors in this database.
    pub(crate) fn cursors(&self) -> Arc<dyn CursorStore> {
        Arc::new(SqliteCursors::new(self.commands.clone(), self.readers.clone()))
    }
}

impl EventStorage for SqliteStorage {
    fn open_store(&self, store_id: &str) -> BoxFuture<'static, Result<StoreLog, ServerError>> {
        let (reply, receiver) = oneshot::channel();
        let submitted = self.submit(WriterCommand::Open { store_id: store_id.to_owned(), reply });
        async move {
            submitted?;
            receiver.await.map_err(|_| ServerError::StorageClosed)?
        }
        .boxed()
    }

    fn append(
        &self,
        store_id: &str,
        push: PushArgs,
    ) -> BoxFuture<'static, Result<AppendOutcome, ServerError>> {
        let (reply, receiver) = oneshot::channel();
        let submitted =
            self.submit(WriterCommand::Append { store_id: store_id.to_owned(), push, reply });
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
        let readers = self.readers.clone();
        let store_id = store_id.to_owned();
        async move {
            tokio::task::spawn_blocking(move || readers.read_events(&store_id, after, up_to, limit))
                .await
                .map_err(|_| ServerError::StorageClosed)?
        }
        .boxed()
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        // Dropping the sender ends the writer loop after it has drained and committed what is queued.
        self.commands.0.lock().expect("writer channel lock poisoned").take();
        let handle = self.writer.lock().expect("writer handle lock poisoned").take();
        async move {
            if let Some(handle) = handle {
                let _ = tokio::task::spawn_blocking(move || handle.join()).await;
            }
        }
        .boxed()
    }
}

/// Creates `dir` if needed and makes it private to the server's user (0700): it holds every store's events.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Makes the database and its WAL files readable by the server's user only (0600). A missing database is created
/// empty with that mode first (SQLite takes an empty file as a new database), because SQLite creates files 0644 and
/// gives the `-wal` and `-shm` files the mode of the database file.
fn private_database_files(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
    }
    Ok(())
}

fn open_writer(path: &Path) -> Result<Connection, ServerError> {
    let foreign = |reason: String| ServerError::ForeignDatabase { path: path.to_owned(), reason };
    let connection = Connection::open(path)?;
    let application_id: i32 =
        connection
            .query_row("PRAGMA application_id", [], |row| row.get(0))
            .map_err(|error| foreign(format!("not a readable SQLite database ({error})")))?;
    let version: i32 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let table_count: i64 =
        connection.query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))?;
    if table_count > 0 && application_id != APPLICATION_ID {
        return Err(foreign("it holds tables but was not created by livestore serve".into()));
    }
    if version > SCHEMA_VERSION {
        return Err(foreign(format!(
            "schema version {version} is newer than this build understands ({SCHEMA_VERSION}); upgrade livestore"
        )));
    }
    connection.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit returns only after the WAL is fsynced, so an acknowledged push survives power loss.
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "foreign_keys", true)?;
    if version < 1 {
        let transaction = connection.unchecked_transaction()?;
        transaction.execute_batch(MIGRATION_V1)?;
        transaction.pragma_update(None, "application_id", APPLICATION_ID)?;
        transaction.pragma_update(None, "user_version", 1)?;
        transaction.commit()?;
    }
    if version < 2 {
        let transaction = connection.unchecked_transaction()?;
        transaction.execute_batch(MIGRATION_V2)?;
        transaction.pragma_update(None, "user_version", 2)?;
        transaction.commit()?;
    }
    let integrity: String = connection.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
    if integrity != "ok" {
        return Err(foreign(format!("integrity check failed: {integrity}")));
    }
    Ok(connection)
}

struct StoreState {
    store_key: i64,
    backend_id: Arc<str>,
    head: u64,
}

struct Writer {
    connection: Connection,
    hubs: Arc<Hubs>,
    metrics: Arc<Metrics>,
    /// Committed state of every store this writer has touched; the single source of truth for admission.
    stores: HashMap<String, StoreState>,
}

/// What one command did inside the transaction, applied to hubs and replied after the commit.
enum Effect {
    Opened {
        store_id: String,
        reply: oneshot::Sender<Result<StoreLog, ServerError>>,
    },
    Appended {
        store_id: String,
        events: Vec<StoredEvent>,
        reply: oneshot::Sender<Result<AppendOutcome, ServerError>>,
    },
    Refused {
        outcome: AppendOutcome,
        reply: oneshot::Sender<Result<AppendOutcome, ServerError>>,
    },
    Failed {
        error: ServerError,
        reply: Reply,
    },
    /// A cursor write; answered only after the commit, since a cursor may move only once durable.
    Cursor {
        written: CursorWrite,
        reply: oneshot::Sender<Result<CursorWrite, ServerError>>,
    },
}

enum Reply {
    Open(oneshot::Sender<Result<StoreLog, ServerError>>),
    Append(oneshot::Sender<Result<AppendOutcome, ServerError>>),
    Cursor(oneshot::Sender<Result<CursorWrite, ServerError>>),
}

impl Reply {
    fn send_error(self, error: ServerError) {
        match self {
            Reply::Open(reply) => {
                let _ = reply.send(Err(error));
            }
            Reply::Append(reply) => {
                let _ = reply.send(Err(error));
            }
            Reply::Cursor(reply) => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

impl Writer {
    fn run(mut self, commands: &std_mpsc::Receiver<WriterCommand>) {
        while let Ok(first) = commands.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_COMMANDS_PER_COMMIT {
                match commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
    }

    fn commit_batch(&mut self, commands: Vec<WriterCommand>) {
        // Heads move inside the transaction; remember the committed ones to restore them if the commit fails.
        let heads_before: HashMap<String, u64> =
            self.stores.iter().map(|(store_id, state)| (store_id.clone(), state.head)).collect();
        let created_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let (effects, commit_result) = {
            let transaction = match self.connection.transaction() {
                Ok(transaction) => transaction,
                Err(error) => {
                    tracing::error!(%error, "cannot begin a transaction");
                    fail_all(commands, &error);
                    return;
                }
            };
            let mut effects = Vec::with_capacity(commands.len());
            for command in commands {
                effects.push(apply_command(&transaction, &mut self.stores, command, &created_at));
            }
            (effects, transaction.commit())
        };
        if let Err(error) = commit_result {
            tracing::error!(%error, "commit failed; pushes in this group are refused and clients will retry");
            // Stores created in the failed transaction do not exist; forget them and restore the others' heads.
            self.stores.retain(|store_id, _| heads_before.contains_key(store_id));
            for (store_id, head) in heads_before {
                if let Some(state) = self.stores.get_mut(&store_id) {
                    state.head = head;
                }
            }
            for effect in effects {
                let reply = match effect {
                    Effect::Opened { reply, .. } => Reply::Open(reply),
                    Effect::Appended { reply, .. } | Effect::Refused { reply, .. } => {
                        Reply::Append(reply)
                    }
                    Effect::Failed { reply, .. } => reply,
                    Effect::Cursor { reply, .. } => Reply::Cursor(reply),
                };
                send_error(reply, &error);
            }
            return;
        }
        for effect in effects {
            self.finish(effect);
        }
    }

    fn finish(&self, effect: Effect) {
        match effect {
            Effect::Opened { store_id, reply } => {
                let state = self.stores.get(&store_id).expect("an opened store is tracked");
                let hub = self.hubs.ensure(&store_id, &state.backend_id, state.head);
                self.metrics.stores_open.set(self.hubs.store_count() as i64);
                let _ = reply
                    .send(Ok(StoreLog { backend_id: hub.backend_id().clone(), head: hub.head() }));
            }
            Effect::Appended { store_id, events, reply } => {
                let state = self.stores.get(&store_id).expect("an appended store is tracked");
                let hub = self.hubs.ensure(&store_id, &state.backend_id, 0);
                self.metrics.stores_open.set(self.hubs.store_count() as i64);
                let last_seq_num = events.last().expect("appended batches are non-empty").seq_num;
                self.metrics.events_appended.inc_by(events.len() as u64);
                // Pages are built only if someone listens, decided under the hub lock (see `publish_with`).
                hub.publish_events(&events);
                self.hubs.commits().committed(&store_id, last_seq_num);
                let _ = reply.send(Ok(AppendOutcome::Appended { head: last_seq_num }));
            }
            Effect::Refused { outcome, reply } => {
                let _ = reply.send(Ok(outcome));
            }
            Effect::Failed { error, reply } => reply.send_error(error),
            Effect::Cursor { written, reply } => {
                let _ = reply.send(Ok(written));
            }
        }
    }
}

fn apply_command(
    transaction: &rusqlite::Transaction<'_>,
    stores: &mut HashMap<String, StoreState>,
    command: WriterCommand,
    created_at: &str,
) -> Effect {
    match command {
        WriterCommand::Open { store_id, reply } => {
            match load_or_create_store(transaction, stores, &store_id) {
                Ok(()) => Effect::Opened { store_id, reply },
                Err(error) => Effect::Failed { error, reply: Reply::Open(reply) },
            }
        }
        WriterCommand::Append { store_id, push, reply } => {
            if let Err(error) = load_or_create_store(transaction, stores, &store_id) {
                return Effect::Failed { error, reply: Reply::Append(reply) };
            }
            let state = stores.get_mut(&store_id).expect("loaded above");
            let admission = admit(state.head, &state.backend_id, &push);
            if let Some(outcome) = AppendOutcome::from_admission(admission) {
                return Effect::Refused { outcome, reply };
            }
            match insert_events(transaction, state, &push, created_at) {
                Ok(events) => Effect::Appended { store_id, events, reply },
                Err(error) => Effect::Failed { error, reply: Reply::Append(reply) },
            }
        }
        WriterCommand::Cursor { command, reply } => {
            match cursors::write(transaction, &command, created_at) {
                Ok(written) => Effect::Cursor { written, reply },
                Err(error) => Effect::Failed { error, reply: Reply::Cursor(reply) },
            }
        }
    }
}

fn insert_events(
    transaction: &rusqlite::Transaction<'_>,
    state: &mut StoreState,
    push: &PushArgs,
    created_at: &str,
) -> Result<Vec<StoredEvent>, ServerError> {
    // A savepoint keeps a failing insert from leaving half a batch in the group's transaction.
    transaction.execute_batch("SAVEPOINT push")?;
    let mut statement = transaction.prepare_cached(
        "INSERT INTO events (store_key, seq_num, parent_seq_num, created_at, encoded) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut events = Vec::with_capacity(push.batch.len());
    for event in &push.batch {
        let encoded_json = event.to_json();
        let inserted = statement.execute(params![
            state.store_key,
            event.seq_num.0 as i64,
            event.parent_seq_num.0 as i64,
            created_at,
            encoded_json
        ]);
        if let Err(error) = inserted {
            transaction.execute_batch("ROLLBACK TO push; RELEASE push")?;
            return Err(error.into());
        }
        events.push(StoredEvent {
            seq_num: event.seq_num.0,
            encoded_json,
            created_at: created_at.to_owned(),
        });
    }
    transaction.execute_batch("RELEASE push")?;
    state.head = events.last().map_or(state.head, |event| event.seq_num);
    Ok(events)
}

fn load_or_create_store(
    transaction: &rusqlite::Transaction<'_>,
    stores: &mut HashMap<String, StoreState>,
    store_id: &str,
) -> Result<(), ServerError> {
    if stores.contains_key(store_id) {
        return Ok(());
    }
    let existing: Option<(i64, String)> = transaction
        .query_row(
            "SELECT store_key, backend_id FROM stores WHERE store_id = ?1",
            [store_id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let (store_key, backend_id) = match existing {
        Some(found) => found,
        None => {
            let backend_id = new_backend_id();
            let created_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
            transaction.execute(
                "INSERT INTO stores (store_id, backend_id, created_at) VALUES (?1, ?2, ?3)",
                params![store_id, backend_id, created_at],
            )?;
            tracing::info!(target: "livestore_server::_events::store_created", store_id, "created store log");
            (transaction.last_insert_rowid(), backend_id)
        }
    };
    let head: i64 = transaction.query_row(
        "SELECT coalesce(max(seq_num), 0) FROM events WHERE store_key = ?1",
        [store_key],
        |row| row.get(0),
    )?;
    stores.insert(
        store_id.to_owned(),
        StoreState { store_key, backend_id: Arc::from(backend_id.as_str()), head: head as u64 },
    );
    Ok(())
}

/// A 21-character random id, like the nanoid the reference server uses.
fn new_backend_id() -> String {
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(21).map(char::from).collect()
}

fn fail_all(commands: Vec<WriterCommand>, error: &rusqlite::Error) {
    for command in commands {
        let reply = match command {
            WriterCommand::Open { reply, .. } => Reply::Open(reply),
            WriterCommand::Append { reply, .. } => Reply::Append(reply),
            WriterCommand::Cursor { reply, .. } => Reply::Cursor(reply),
        };
        send_error(reply, error);
    }
}

fn send_error(reply: Reply, error: &rusqlite::Error) {
    // rusqlite errors are not Clone; each waiter gets its own copy of the message and code.
    let copy = || {
        ServerError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(match error {
                rusqlite::Error::SqliteFailure(inner, _) => inner.extended_code,
                _ => rusqlite::ffi::SQLITE_ERROR,
            }),
            Some(error.to_string()),
        ))
    };
    reply.send_error(copy());
}

#[derive(Debug)]
struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    /// Runs `read` on an idle read-only connection (opening one if none is idle), then returns it to the pool.
    fn with_reader<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, ServerError>,
    ) -> Result<T, ServerError> {
        let connection = match self.idle.lock().expect("reader pool lock poisoned").pop() {
            Some(connection) => connection,
            None => Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?,
        };
        let result = read(&connection);
        self.idle.lock().expect("reader pool lock poisoned").push(connection);
        result
    }

    fn read_events(
        &self,
        store_id: &str,
        after: u64,
        up_to: u64,
        limit: ReadLimit,
    ) -> Result<Vec<StoredEvent>, ServerError> {
        self.with_reader(|connection| {
            let mut statement = connection.prepare_cached(
                "SELECT e.seq_num, e.created_at, e.encoded FROM events e
                 WHERE e.store_key = (SELECT store_key FROM stores WHERE store_id = ?1)
                   AND e.seq_num > ?2 AND e.seq_num <= ?3
                 ORDER BY e.seq_num LIMIT ?4",
            )?;
            let rows = statement.query_map(
                params![
                    store_id,
                    after as i64,
                    up_to.min(NO_UPPER_BOUND) as i64,
                    limit.events as i64
                ],
                |row| {
                    Ok(StoredEvent {
                        seq_num: row.get::<_, i64>(0)? as u64,
                        created_at: row.get(1)?,
                        encoded_json: row.get(2)?,
                    })
                },
            )?;
            // Rows are read one at a time: stopping at the byte limit leaves the rest unread.
            let mut events = Vec::new();
            let mut bytes = 0usize;
            for row in rows {
                let event = row?;
                bytes = bytes.saturating_add(event.encoded_json.len());
                events.push(event);
                if bytes >= limit.bytes {
                    break;
                }
            }
            Ok(events)
        })
    }
}
