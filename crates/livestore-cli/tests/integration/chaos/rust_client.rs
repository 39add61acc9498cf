//! Rust participants of the chaos run: a `livestore_client::Store` on its own data dir with the WebSocket sync
//! driver, and on some of them a `livestore_files::FileSync` whose signer and object-store traffic goes through
//! the same proxy as the sync socket (so an offline period or a cut hits both, and transfers are cut mid-body).
//!
//! A client restarts from the same data dir either gracefully (engine, driver, then store) or hard (the store shuts
//! down first, under the feet of a running driver and running transfers, as when the app is killed). Everything
//! committed before either must be there after the reopen.
//!
//! The schedule's decisions (which ops, which targets, which bytes) are made by the caller from its seeded RNG;
//! this module only carries them out and counts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use livestore_client::schema::{Query, Schema, Write};
use livestore_client::sync::{DriverOptions, SyncHandle};
use livestore_client::todo::{
    Todo, TodoClearedCompleted, TodoCompleted, TodoCreated, TodoDeleted, TodoUncompleted,
    todos_table, ui_state_document,
};
use livestore_client::{NewEvent, Storage, Store, StoreError, StoreOptions};
use livestore_files::schema::FileRecord;
use livestore_files::{FileSource, FileSync, FileSyncOptions, RemoteConfig};

/// TodoMVC plus the filesync data model: the chaos stores carry both kinds of events (the JS clients use the same
/// pair, `tests/js/chaos-schema.mjs`). The todo materializers are those of `livestore_client::todo::schema`.
pub fn chaos_schema() -> Schema {
    let builder = Schema::builder()
        .table(todos_table())
        .client_document(ui_state_document())
        .event(|event: &TodoCreated, _| {
            Ok(vec![
                Write::insert("todos")
                    .set("id", &event.id)
                    .set("text", &event.text)
                    .set("completed", false),
            ])
        })
        .event(|event: &TodoCompleted, _| {
            Ok(vec![Write::update("todos").set("completed", true).where_eq("id", &event.id)])
        })
        .event(|event: &TodoUncompleted, _| {
            Ok(vec![Write::update("todos").set("completed", false).where_eq("id", &event.id)])
        })
        .event(|event: &TodoDeleted, _| {
            Ok(vec![
                Write::update("todos").set("deletedAt", event.deleted_at).where_eq("id", &event.id),
            ])
        })
        .event(|event: &TodoClearedCompleted, _| {
            Ok(vec![
                Write::update("todos")
                    .set("deletedAt", event.deleted_at)
                    .where_eq("completed", true),
            ])
        });
    livestore_files::schema::add_to(builder).build().expect("the chaos schema is valid")
}

/// One Rust participant.
pub struct RustClient {
    pub name: &'static str,
    pub store_id: &'static str,
    pub with_files: bool,
    /// The proxy in front of the server, as `http://127.0.0.1:<port>`.
    url: String,
    root: PathBuf,
    store: Option<Store>,
    sync: Option<SyncHandle>,
    files: Option<FileSync>,
    pub graceful_restarts: u64,
    pub hard_restarts: u64,
}

fn driver_options(url: &str) -> DriverOptions {
    let mut options = DriverOptions::new(url);
    // Reconnect quickly so the run converges in seconds, not in the default 30 s backoff; pings often enough that a
    // connection the proxy left silent is noticed within the run.
    options.min_backoff = Duration::from_millis(100);
    options.max_backoff = Duration::from_secs(2);
    options.ping_interval = Duration::from_secs(2);
    options.silence_timeout = Duration::from_secs(6);
    options.stall_timeout = Duration::from_secs(5);
    options.connect_timeout = Duration::from_secs(3);
    options
}

fn files_options(root: &Path, url: &str) -> FileSyncOptions {
    let mut options = FileSyncOptions::with_remote(
        root.join("files"),
        RemoteConfig { signer_url: format!("{url}/api"), auth_token: None },
    );
    options.retry_base_delay = Duration::from_millis(100);
    options.retry_max_delay = Duration::from_secs(1);
    options.health_check_interval = Duration::from_millis(500);
    // Files from 5 MiB go in 5 MiB parts, so some transfers are multipart and resume after cuts.
    options.multipart_threshold = 5 * 1024 * 1024;
    options.part_size = 5 * 1024 * 1024;
    options
}

impl RustClient {
    pub fn new(
        name: &'static str,
        store_id: &'static str,
        with_files: bool,
        url: String,
        root: &Path,
    ) -> RustClient {
        let mut client = RustClient {
            name,
            store_id,
            with_files,
            url,
            root: root.join(name),
            store: None,
            sync: None,
            files: None,
            graceful_restarts: 0,
            hard_restarts: 0,
        };
        client.open();
        client
    }

    /// Opens the store from the data dir, starts the driver and the file engine.
    fn open(&mut self) {
        let mut options = StoreOptions::new(self.store_id, Storage::Dir(self.root.join("db")));
        options.client_id = Some(self.name.to_owned());
        let store = Store::open(options, chaos_schema())
            .unwrap_or_else(|error| panic!("{} reopens its store: {error}", self.name));
        self.sync = Some(livestore_client::sync::start(store.clone(), driver_options(&self.url)));
        if self.with_files {
            let files = FileSync::new(store.clone(), files_options(&self.root, &self.url))
                .unwrap_or_else(|error| panic!("{} opens its file sync: {error}", self.name));
            files.start().expect("the file engine starts");
            self.files = Some(files);
        }
        self.store = Some(store);
    }

    /// Closes everything; `hard` shuts the store down first, while the driver and transfers still run.
    async fn close(&mut self, hard: bool) {
        let store = self.store.take().expect("the client is open");
        if hard {
            store.shutdown().expect("the store shuts down");
        }
        if let Some(files) = self.files.take() {
            files.dispose().await;
        }
        if let Some(sync) = self.sync.take() {
            sync.stop().await;
        }
        if !hard {
            store.shutdown().expect("the store shuts down");
        }
    }

    /// Closes and reopens from the same data dir after `pause`.
    pub async fn restart(&mut self, hard: bool, pause: Duration) {
        self.close(hard).await;
        if hard {
            self.hard_restarts += 1;
        } else {
            self.graceful_restarts += 1;
        }
        tokio::time::sleep(pause).await;
        self.open();
    }

    /// Closes for good at the end of the run.
    pub async fn finish(mut self) {
        self.close(false).await;
    }

    pub fn store(&self) -> &Store {
        self.store.as_ref().expect("the client is open")
    }

    pub fn files(&self) -> Option<&FileSync> {
        self.files.as_ref()
    }

    /// Commits a batch; returns the event names committed (for the per-client counts).
    pub fn commit(&self, events: Vec<NewEvent>) -> Vec<String> {
        let names = events.iter().map(|event| event.name.clone()).collect();
        let store = self.store();
        tokio::task::block_in_place(|| store.commit_batch(events))
            .unwrap_or_else(|error| panic!("{} commits: {error}", self.name));
        names
    }

    /// Saves bytes as a new file; returns its id.
    pub fn save(&self, bytes: &[u8]) -> String {
        let files = self.files().expect("a file client");
        let saved = tokio::task::block_in_place(|| files.save_file(FileSource::Bytes(bytes)))
            .unwrap_or_else(|error| panic!("{} saves a file: {error}", self.name));
        saved.file_id
    }

    /// Deletes a file; `false` when this client has not seen the row (yet) or it is already deleted.
    pub fn delete(&self, file_id: &str) -> bool {
        let files = self.files().expect("a file client");
        tokio::task::block_in_place(|| files.delete_file(file_id))
            .unwrap_or_else(|error| panic!("{} deletes a file: {error}", self.name))
    }

    /// The global head this client has confirmed, and whether nothing of its own is left to push.
    pub fn sync_position(&self) -> Result<(u64, bool), StoreError> {
        let (head, _) = self.store().upstream_cursor()?;
        Ok((head, self.store().sync_status()?.pending_synced_count == 0))
    }

    /// Whether the file engine has nothing left to do and every active row's bytes are here; if not, what is left.
    pub fn files_settled(&self) -> Result<(), String> {
        let Some(files) = self.files() else { return Ok(()) };
        let status = files.sync_status().map_err(|error| error.to_string())?;
        let entries = files.list_files().map_err(|error| error.to_string())?;
        let missing: Vec<String> = entries
            .iter()
            .filter(|entry| entry.local_size.is_none())
            .map(|entry| format!("{} {:?}", entry.record.id, entry.local_state))
            .collect();
        if status.has_pending
            || status.awaiting_remote_count > 0
            || !status.errors.is_empty()
            || !missing.is_empty()
        {
            return Err(format!("files not settled: {status:?}; missing locally: {missing:?}"));
        }
        Ok(())
    }

    pub fn todos(&self) -> Vec<Todo> {
        self.store().query(&Query::select("todos").order_by("id")).expect("todos query")
    }

    pub fn file_rows(&self) -> Vec<FileRecord> {
        self.store().query(&Query::select("files").order_by("id")).expect("files query")
    }
}
