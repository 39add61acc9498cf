//! The store: open, commit, query, subscribe, client documents, sync status and shutdown.
//!
//! A [`Store`] is a cheap `Clone` handle. All database work happens under one mutex around a single SQLite
//! connection (eventlog as `main`, state as `state`, see [`crate::db`]), which serializes writers the way
//! LiveStore's leader thread does; operations are short (microseconds to a few milliseconds), so a mutex is
//! simpler than an actor thread and cheaper per commit. Subscription callbacks run after the mutex is released.
//!
//! Upstream application (pull, rebase, backend reset) lives in [`upstream`]; rebuilding state from the eventlog
//! lives in [`rebuild`].

mod batch;
mod rebuild;
mod upstream;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use livestore_core::event::LocalEvent;
use livestore_core::seq_num::EventSeqNum;
use livestore_core::sync_state::SyncState;
use rusqlite::Connection;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::db::changes::ChangedTables;
use crate::db::open::{Durability, Storage};
use crate::db::query::{Row, query_rows, rows_to_typed, scalar_u64, tables_read};
use crate::db::undo::{self, UndoLog};
use crate::db::writer::Writer;
use crate::db::{eventlog, state};
use crate::error::StoreError;
use crate::schema::{DocumentDefaultId, DocumentSetArgs, Event, Query, Schema};
use crate::store::batch::in_transaction;
use crate::store::rebuild::StateLocation;
use crate::subscription::{
    RowsCallback, SubscriptionEntry, SubscriptionHandle, SubscriptionStream, Unsubscribe,
};

pub use upstream::{ApplyOutcome, UpstreamEvent};

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The store id (`^[a-zA-Z0-9_-]+$`), shared by every client of the same data.
    pub store_id: String,
    /// Where the databases live.
    pub storage: Storage,
    /// This client's id; `None` uses an id generated once and persisted in the eventlog database.
    pub client_id: Option<String>,
    /// This session's id (LiveStore's Node adapter uses `static`).
    pub session_id: String,
    /// What a returned commit guarantees on disk (ignored for in-memory databases).
    pub durability: Durability,
}

impl StoreOptions {
    /// Options for a store with the given id and storage, a persisted client id and session `static`.
    pub fn new(store_id: impl Into<String>, storage: Storage) -> Self {
        StoreOptions {
            store_id: store_id.into(),
            storage,
            client_id: None,
            session_id: "static".to_owned(),
            durability: Durability::default(),
        }
    }
}

/// An event ready to commit: a name and encoded args.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The event name.
    pub name: String,
    /// The encoded args as JSON text.
    pub args_json: String,
}

impl NewEvent {
    /// Encodes a typed event.
    pub fn new<E: Event>(event: &E) -> Result<Self, StoreError> {
        let args_json = serde_json::to_string(event)
            .map_err(|source| StoreError::InvalidArgs { event: E::NAME.to_owned(), source })?;
        Ok(NewEvent { name: E::NAME.to_owned(), args_json })
    }

    /// An event from a name and already-encoded JSON args (validated against the schema at commit).
    pub fn from_json(name: impl Into<String>, args: &serde_json::Value) -> Self {
        NewEvent { name: name.into(), args_json: args.to_string() }
    }
}

/// Where the store stands relative to the sync backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// The last local event, e.g. `e4r1`.
    pub local_head: String,
    /// The last event the backend confirmed, e.g. `e3`.
    pub upstream_head: String,
    /// Events not yet confirmed (synced and client-only).
    pub pending_count: usize,
    /// Synced events not yet confirmed; these are what a push sends.
    pub pending_synced_count: usize,
    /// Whether the sync driver currently has a live connection.
    pub connected: bool,
    /// The backend identity this store synced with, if any.
    pub backend_id: Option<String>,
}

/// A handle to an open store.
#[derive(Clone)]
pub struct Store {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Store {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Store")
            .field("store_id", &self.shared.store_id)
            .field("client_id", &self.shared.client_id)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    pub(crate) store_id: String,
    pub(crate) client_id: Arc<str>,
    pub(crate) session_id: Arc<str>,
    pub(crate) schema: Arc<Schema>,
    core: Mutex<Core>,
    pub(crate) connected: AtomicBool,
    /// Wakes the sync driver after a local commit.
    pub(crate) local_commits: tokio::sync::Notify,
    /// Bumped whenever upstream events are applied; the driver's watchdog reads it.
    pub(crate) upstream_progress: AtomicU64,
    pub(crate) shut_down: AtomicBool,
}

pub(crate) struct Core {
    pub(crate) conn: Option<Connection>,
    pub(crate) sync_state: SyncState,
    pub(crate) backend_id: Option<String>,
    pub(crate) changed_tables: Arc<ChangedTables>,
    pub(crate) undo: Arc<UndoLog>,
    pub(crate) state_location: StateLocation,
    subscriptions: BTreeMap<u64, SubscriptionEntry>,
    next_subscription_id: u64,
    _lock: Option<File>,
}

type Notification = (RowsCallback, Vec<Row>);

impl Store {
    /// Opens (or creates) a store: locks the directory, checks the files, replays or rebuilds state as needed.
    pub fn open(options: StoreOptions, schema: Schema) -> Result<Store, StoreError> {
        livestore_proto::url::validate_store_id(&options.store_id)
            .map_err(|error| StoreError::InvalidSchema(error.to_string()))?;
        let schema = Arc::new(schema);
        let opened = crate::db::open::open(
            &options.storage,
            &options.store_id,
            schema.state_hash(),
            options.durability,
        )?;
        let conn = opened.conn;
        // REPLACE conflict resolution deletes rows; with recursive triggers on, those deletes are recorded too.
        conn.execute_batch("PRAGMA recursive_triggers = ON")?;
        // Every commit runs a handful of fixed statements plus each materializer's SQL; the default cache of 16
        // statements would thrash and re-prepare on every commit.
        conn.set_prepared_statement_cache_capacity(256);
        state::create_user_tables(&conn, &schema)?;
        let undo_log = Arc::new(UndoLog::new(&schema));
        undo::install(&conn, &schema, &undo_log)?;
        // Before any replay: the hook records undo for inserts of pending events.
        let changed_tables = Arc::new(ChangedTables::new(&schema));
        install_update_hook(&conn, &changed_tables, &undo_log);
        let state_location =
            StateLocation { path: opened.state_path.clone(), durability: options.durability };

        let client_id = match options.client_id {
            Some(client_id) => client_id,
            None => match eventlog::meta_get(&conn, "clientId")? {
                Some(client_id) => client_id,
                None => {
                    let client_id = random_id(12);
                    eventlog::meta_set(&conn, "clientId", &client_id)?;
                    client_id
                }
            },
        };

        let (upstream_global, backend_id) = eventlog::sync_status(&conn)?;
        let upstream_head = EventSeqNum::from_global(upstream_global);
        let last = eventlog::last_seq_num(&conn)?;
        let local_head = last.map_or(upstream_head, |last| last.max_position(upstream_head));
        rebuild::bring_state_up_to_date(
            &conn,
            &schema,
            &undo_log,
            &state_location,
            opened.state_is_new,
            upstream_head,
            last,
        )?;
        if opened.state_is_new
            && let Some(store_dir) = &opened.store_dir
        {
            rebuild::remove_stale_state_files(store_dir, opened.state_path.as_deref());
        }

        let pending = eventlog::load_after(&conn, upstream_head)?;
        let sync_state = SyncState::from_parts(pending, upstream_head, local_head)
            .map_err(|error| StoreError::InvalidEventlog(error.to_string()))?;
        // Nobody subscribed yet; what the replay wrote is not news.
        changed_tables.take();

        let core = Core {
            conn: Some(conn),
            sync_state,
            backend_id,
            changed_tables,
            undo: undo_log,
            state_location,
            subscriptions: BTreeMap::new(),
            next_subscription_id: 1,
            _lock: opened.lock,
        };
        Ok(Store {
            shared: Arc::new(Shared {
                store_id: options.store_id,
                client_id: Arc::from(client_id),
                session_id: Arc::from(options.session_id),
                schema,
                core: Mutex::new(core),
                connected: AtomicBool::new(false),
                local_commits: tokio::sync::Notify::new(),
                upstream_progress: AtomicU64::new(0),
                shut_down: AtomicBool::new(false),
            }),
        })
    }

    /// The store id.
    pub fn store_id(&self) -> &str {
        &self.shared.store_id
    }

    /// This client's id.
    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    /// This session's id.
    pub fn session_id(&self) -> &str {
        &self.shared.session_id
    }

    /// The schema the store was opened with.
    pub fn schema(&self) -> &Schema {
        &self.shared.schema
    }

    /// Commits one typed event; returns its sequence number.
    pub fn commit<E: Event>(&self, event: &E) -> Result<EventSeqNum, StoreError> {
        let mut seq_nums = self.commit_batch(vec![NewEvent::new(event)?])?;
        seq_nums.pop().ok_or(StoreError::Shutdown)
    }

    /// Commits events atomically: validates all, numbers them, appends and materializes in one transaction, then
    /// notifies subscribers once. On any error nothing is written.
    pub fn commit_batch(&self, events: Vec<NewEvent>) -> Result<Vec<EventSeqNum>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let schema = &self.shared.schema;
        // Check names before touching the database. Args are decoded by the materializer inside the transaction
        // (a failure rolls it back, so nothing is written either way); only events without one are decoded here.
        let mut definitions = Vec::with_capacity(events.len());
        for event in &events {
            let definition = schema
                .definition(&event.name)
                .ok_or_else(|| StoreError::UnknownEvent(event.name.clone()))?;
            if definition.materializer.is_none() {
                (definition.validate)(&event.args_json).map_err(|source| {
                    StoreError::InvalidArgs { event: event.name.clone(), source }
                })?;
            }
            definitions.push(definition);
        }
        let (notifications, seq_nums) = {
            let mut core = self.shared.lock_core()?;
            let mut head = core.sync_state.local_head();
            let mut local_events = Vec::with_capacity(events.len());
            for (event, definition) in events.into_iter().zip(&definitions) {
                let client_only = definition.meta.client_only;
                let (seq_num, parent) = head.next_pair(client_only);
                head = seq_num;
                local_events.push(LocalEvent {
                    seq_num,
                    parent_seq_num: parent,
                    name: Arc::clone(&definition.name),
                    args_json: Arc::from(event.args_json),
                    client_id: Arc::clone(&self.shared.client_id),
                    session_id: Arc::clone(&self.shared.session_id),
                    client_only,
                });
            }
            let conn = core.conn()?;
            let undo_log = &core.undo;
            let result = in_transaction(conn, undo_log, |conn| {
                let mut writer = Writer::new(conn, schema);
                // The eventlog is not a state table, so appending first records nothing in the undo log.
                writer.append_all(
                    &local_events,
                    |index| definitions[index].schema_hash,
                    eventlog::NO_SYNC_METADATA,
                )?;
                for event in &local_events {
                    undo_log.start(event.seq_num);
                    writer.materialize(event)?;
                }
                undo_log.stop();
                drop(writer);
                if let Some(last) = local_events.last() {
                    state::set_head(conn, last.seq_num)?;
                }
                Ok(())
            });
            if let Err(error) = result {
                core.take_changed_tables();
                return Err(error);
            }
            let seq_nums = local_events.iter().map(|event| event.seq_num).collect();
            // Numbered from the local head under the lock, so the push cannot be rejected.
            core.sync_state.push_local(local_events).map_err(|rejected| {
                StoreError::InvalidEventlog(format!(
                    "local push rejected, expected {}",
                    rejected.expected_minimum
                ))
            })?;
            (core.collect_notifications(), seq_nums)
        };
        deliver(notifications);
        self.shared.local_commits.notify_one();
        Ok(seq_nums)
    }

    /// Runs a query and returns rows as JSON objects.
    pub fn query_rows(&self, query: &Query) -> Result<Vec<Row>, StoreError> {
        let core = self.shared.lock_core()?;
        query_rows(core.conn()?, query)
    }

    /// Runs a query and decodes each row into `T`.
    pub fn query<T: DeserializeOwned>(&self, query: &Query) -> Result<Vec<T>, StoreError> {
        rows_to_typed(self.query_rows(query)?)
    }

    /// Runs a query with `LIMIT 1` and decodes its row into `T`, or `None` when there is none.
    pub fn query_first<T: DeserializeOwned>(&self, query: &Query) -> Result<Option<T>, StoreError> {
        Ok(self.query(&query.clone().first())?.pop())
    }

    /// How many rows a query returns (`SELECT COUNT(*)`, paging included).
    pub fn query_count(&self, query: &Query) -> Result<u64, StoreError> {
        let rows = self.query_rows(&query.clone().count())?;
        scalar_u64(&rows, "count")
    }

    /// Whether a query returns any row (`SELECT EXISTS`).
    pub fn query_exists(&self, query: &Query) -> Result<bool, StoreError> {
        let rows = self.query_rows(&query.clone().exists())?;
        Ok(scalar_u64(&rows, "exists")? != 0)
    }

    /// Subscribes a callback to a query's rows: called now with the current rows, then after every commit batch
    /// that changes them. Dropping the handle unsubscribes.
    pub fn subscribe(
        &self,
        query: Query,
        callback: impl Fn(&[Row]) + Send + Sync + 'static,
    ) -> Result<SubscriptionHandle, StoreError> {
        let callback: RowsCallback = Arc::new(callback);
        let (id, rows) = {
            let mut core = self.shared.lock_core()?;
            let conn = core.conn()?;
            let tables = tables_read(conn, &query)?;
            let rows = query_rows(conn, &query)?;
            let id = core.next_subscription_id;
            core.next_subscription_id += 1;
            core.subscriptions.insert(
                id,
                SubscriptionEntry {
                    query,
                    tables,
                    last_rows: rows.clone(),
                    callback: Arc::clone(&callback),
                },
            );
            (id, rows)
        };
        callback(&rows);
        let store = Arc::downgrade(&self.shared);
        Ok(SubscriptionHandle { store: store as std::sync::Weak<dyn Unsubscribe>, id })
    }

    /// Subscribes with rows decoded into `T`.
    pub fn subscribe_typed<T: DeserializeOwned + 'static>(
        &self,
        query: Query,
        callback: impl Fn(Result<Vec<T>, StoreError>) + Send + Sync + 'static,
    ) -> Result<SubscriptionHandle, StoreError> {
        self.subscribe(query, move |rows| callback(rows_to_typed(rows.to_vec())))
    }

    /// Subscribes as an async stream of decoded results.
    pub fn subscribe_stream<T: DeserializeOwned + Send + 'static>(
        &self,
        query: Query,
    ) -> Result<SubscriptionStream<T>, StoreError> {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let handle = self.subscribe(query, move |rows| {
            let _ = sender.send(rows_to_typed(rows.to_vec()));
        })?;
        Ok(SubscriptionStream { receiver, _handle: handle })
    }

    /// Sets (merges into) a client document via its derived `<name>Set` event; `id` defaults per the document.
    pub fn set_document(
        &self,
        name: &str,
        id: Option<&str>,
        value: serde_json::Value,
    ) -> Result<EventSeqNum, StoreError> {
        let document = self
            .shared
            .schema
            .document(name)
            .ok_or_else(|| StoreError::UnknownDocument(name.to_owned()))?;
        let id = self.document_id(&document.default_id, id);
        let args = DocumentSetArgs { id, value };
        let args_json = serde_json::to_string(&args).map_err(|source| StoreError::InvalidArgs {
            event: document.set_event_name(),
            source,
        })?;
        let mut seq_nums =
            self.commit_batch(vec![NewEvent { name: document.set_event_name(), args_json }])?;
        seq_nums.pop().ok_or(StoreError::Shutdown)
    }

    /// A client document's value, or its default when it was never set.
    pub fn get_document(
        &self,
        name: &str,
        id: Option<&str>,
    ) -> Result<serde_json::Value, StoreError> {
        let document = self
            .shared
            .schema
            .document(name)
            .ok_or_else(|| StoreError::UnknownDocument(name.to_owned()))?;
        let id = self.document_id(&document.default_id, id);
        let rows = self.query_rows(&Query::select(name).columns(["value"]).where_eq("id", id))?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|mut row| row.remove("value"))
            .unwrap_or_else(|| document.default_value.clone()))
    }

    fn document_id(&self, default_id: &DocumentDefaultId, id: Option<&str>) -> String {
        match (id, default_id) {
            (Some(id), _) => id.to_owned(),
            (None, DocumentDefaultId::Session) => self.shared.session_id.to_string(),
            (None, DocumentDefaultId::Fixed(id)) => id.clone(),
        }
    }

    /// Heads, pending counts and connection state.
    pub fn sync_status(&self) -> Result<SyncStatus, StoreError> {
        let core = self.shared.lock_core()?;
        Ok(SyncStatus {
            local_head: core.sync_state.local_head().to_string(),
            upstream_head: core.sync_state.upstream_head().to_string(),
            pending_count: core.sync_state.pending().len(),
            pending_synced_count: core.sync_state.pending_synced().count(),
            connected: self.shared.connected.load(Ordering::Relaxed),
            backend_id: core.backend_id.clone(),
        })
    }

    /// Every event in the eventlog, in order (for inspection and tests).
    pub fn events(&self) -> Result<Vec<LocalEvent>, StoreError> {
        let core = self.shared.lock_core()?;
        eventlog::load_after(core.conn()?, EventSeqNum::ROOT)
    }

    /// Drops and re-materializes all state from the eventlog.
    pub fn rebuild(&self) -> Result<(), StoreError> {
        let notifications = {
            let mut core = self.shared.lock_core()?;
            let upstream_head = core.sync_state.upstream_head();
            rebuild::rebuild(
                core.conn()?,
                &self.shared.schema,
                &core.undo,
                &core.state_location,
                upstream_head,
            )?;
            core.mark_all_tables_changed();
            core.collect_notifications()
        };
        deliver(notifications);
        Ok(())
    }

    /// Closes the databases and releases the directory lock. Later calls fail with [`StoreError::Shutdown`].
    pub fn shutdown(&self) -> Result<(), StoreError> {
        self.shared.shut_down.store(true, Ordering::SeqCst);
        self.shared.local_commits.notify_waiters();
        let mut core = self.shared.core.lock().map_err(|_| StoreError::Shutdown)?;
        core.subscriptions.clear();
        if let Some(conn) = core.conn.take() {
            conn.close().map_err(|(_, error)| StoreError::Sqlite(error))?;
        }
        core._lock = None;
        Ok(())
    }

    /// Whether [`Store::shutdown`] was called (by the application or a backend-id policy).
    pub fn is_shut_down(&self) -> bool {
        self.shared.shut_down.load(Ordering::SeqCst)
    }
}

impl Shared {
    pub(crate) fn lock_core(&self) -> Result<MutexGuard<'_, Core>, StoreError> {
        // A panic while holding the lock can only come from a bug in a callback-free section; the connection is
        // still consistent (SQLite rolled back the open transaction), so keep serving.
        let core = self.core.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if core.conn.is_none() {
            return Err(StoreError::Shutdown);
        }
        Ok(core)
    }
}

impl Unsubscribe for Shared {
    fn unsubscribe(&self, id: u64) {
        let mut core = self.core.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        core.subscriptions.remove(&id);
    }
}

impl Core {
    pub(crate) fn conn(&self) -> Result<&Connection, StoreError> {
        self.conn.as_ref().ok_or(StoreError::Shutdown)
    }

    pub(crate) fn take_changed_tables(&self) -> BTreeSet<String> {
        self.changed_tables.take()
    }

    pub(crate) fn mark_all_tables_changed(&self) {
        self.changed_tables.mark_all();
    }

    /// Re-runs subscriptions affected by the tables written since the last call; returns those whose rows changed.
    pub(crate) fn collect_notifications(&mut self) -> Vec<Notification> {
        let changed = self.take_changed_tables();
        if changed.is_empty() || self.subscriptions.is_empty() {
            return Vec::new();
        }
        let Some(conn) = self.conn.as_ref() else { return Vec::new() };
        let mut notifications = Vec::new();
        for entry in self.subscriptions.values_mut() {
            if entry.tables.is_disjoint(&changed) {
                continue;
            }
            match query_rows(conn, &entry.query) {
                Ok(rows) if rows != entry.last_rows => {
                    entry.last_rows = rows.clone();
                    notifications.push((Arc::clone(&entry.callback), rows));
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(target: "livestore_client::_events::subscription", %error, "subscription query failed")
                }
            }
        }
        notifications
    }
}

pub(crate) fn deliver(notifications: Vec<Notification>) {
    for (callback, rows) in notifications {
        callback(&rows);
    }
}

pub(crate) fn schema_hash_of(schema: &Schema, name: &str) -> i64 {
    schema
        .definition(name)
        .map_or(eventlog::UNKNOWN_SCHEMA_HASH, |definition| definition.schema_hash)
}

/// Tracks which state tables a transaction wrote (for subscriptions) and feeds inserts to the undo log.
fn install_update_hook(conn: &Connection, changed: &Arc<ChangedTables>, undo_log: &Arc<UndoLog>) {
    let changed = Arc::clone(changed);
    let undo_log = Arc::clone(undo_log);
    conn.update_hook(Some(move |action, database: &str, table: &str, rowid| {
        if database != "state" || table.starts_with("__") {
            return;
        }
        let index = changed.index_of(table);
        changed.mark(index, table);
        if action == rusqlite::hooks::Action::SQLITE_INSERT
            && let Some(index) = index
        {
            undo_log.on_insert(index, rowid);
        }
    }));
}

/// A random id of URL-safe characters (client ids, todo ids).
pub fn random_id(length: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-";
    let mut rng = rand::rng();
    (0..length).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}
