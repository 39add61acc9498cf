//! [`FileSync`]: the public handle. Save, read, update and delete files; resolve URLs; report status and events;
//! start and stop the transfer engine.
//!
//! File operations are synchronous (local disk plus one store commit) and callable from any thread; transfers
//! run in the engine (`crate::engine`) on the caller's tokio runtime after [`FileSync::start`]. Every operation
//! commits its events in one batch, after the bytes are durable under their content name, so a crash between
//! the two leaves at most an unreferenced local file, never a row without bytes.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use livestore_client::NewEvent;
use livestore_client::Store;
use livestore_client::schema::Query;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::context::{
    COMMITTING_FOR_FILE_SYNC, Context, PinGuard, Pins, commit_for_file_sync, hash_referenced,
    key_referenced, new_event, parse_hash, pin,
};
use crate::engine::{self, Command, EngineState, Snapshot};
use crate::error::FilesError;
use crate::layout::{ContentHash, stored_path};
use crate::local::{LocalFiles, Staged, mime_from_name, now_ms};
pub use crate::options::FileSyncOptions;
use crate::plan::Job;
use crate::remote::SignerClient;
use crate::schema::{
    FILES_TABLE, FileCreated, FileDeleted, FileRecord, FileRemoteDeleteQueued, FileUpdated,
    LOCAL_STATE_TABLE, LocalFileState, LocalFileStateRemove, LocalFileStateUpsert, TransferStatus,
};
use crate::status::{FileEntry, FileSyncEvent, SyncStatus};

/// Where the bytes of a save come from.
pub enum FileSource<'a> {
    /// A file on disk; must not change while it is read.
    Path(&'a Path),
    /// Bytes in memory.
    Bytes(&'a [u8]),
    /// Any reader.
    Reader(&'a mut (dyn Read + Send)),
}

impl std::fmt::Debug for FileSource<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileSource::Path(path) => formatter.debug_tuple("Path").field(path).finish(),
            FileSource::Bytes(bytes) => formatter.debug_tuple("Bytes").field(&bytes.len()).finish(),
            FileSource::Reader(_) => formatter.write_str("Reader"),
        }
    }
}

/// Optional details of a save.
#[derive(Debug, Clone, Default)]
pub struct SaveOptions {
    /// MIME type for the sidecar (default: from the path's extension, else `application/octet-stream`).
    pub mime_type: Option<String>,
    /// `metadataJson` of the row.
    pub metadata_json: Option<String>,
}

/// What a save or update produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedFile {
    /// The file id.
    pub file_id: String,
    /// The stored path.
    pub path: String,
    /// The content hash.
    pub content_hash: String,
    /// Bytes.
    pub size: u64,
}

/// A URL for a file's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileUrl {
    /// The bytes are on this device.
    Local {
        /// Absolute path of the local copy.
        path: PathBuf,
        /// `file://` URL, or the `files serve` URL when configured.
        url: String,
    },
    /// A presigned URL of the remote object.
    Remote {
        /// The URL.
        url: String,
        /// Epoch ms when it stops working, if known.
        expires_at_ms: Option<i64>,
    },
}

impl FileUrl {
    /// The URL text.
    pub fn url(&self) -> &str {
        match self {
            FileUrl::Local { url, .. } | FileUrl::Remote { url, .. } => url,
        }
    }
}

/// A file sync instance for one store. Cheap to clone.
#[derive(Clone)]
pub struct FileSync {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for FileSync {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FileSync")
            .field("store_id", &self.inner.ctx.store_id)
            .field("local_only", &self.inner.ctx.remote.is_none())
            .finish_non_exhaustive()
    }
}

/// The handle's side: the shared context, the engine's last snapshot, and the engine's lifecycle.
pub(crate) struct Inner {
    pub(crate) ctx: Arc<Context>,
    /// What the engine published last (online, running transfers, failures); readable without asking it.
    snapshot: Arc<watch::Sender<Snapshot>>,
    /// The engine's lifecycle. Locked only to start, stop, or take a clone of the command sender: the engine's
    /// state itself is never behind it (the actor owns it while running and hands it back when it stops).
    lifecycle: Mutex<Lifecycle>,
    disposed: AtomicBool,
}

/// Whether the engine runs.
enum Lifecycle {
    /// Not running; the state the last run left (failures, online, priorities) waits for the next start.
    Stopped(Box<EngineState>),
    /// Being stopped by `stop` (the state comes back when the task ends).
    Stopping,
    Running {
        commands: mpsc::UnboundedSender<Command>,
        task: tokio::task::JoinHandle<EngineState>,
        /// The change subscription: dropped when the engine stops.
        _subscription: livestore_client::subscription::SubscriptionHandle,
    },
}

impl FileSync {
    /// Creates an instance over an open store whose schema includes [`crate::schema::add_to`].
    pub fn new(store: Store, options: FileSyncOptions) -> Result<FileSync, FilesError> {
        for required in [FILES_TABLE, LOCAL_STATE_TABLE] {
            if !store.schema().tables().iter().any(|table| table.name() == required) {
                return Err(FilesError::Store(livestore_client::StoreError::InvalidSchema(
                    format!(
                        "file sync needs the filesync schema (table {required:?} is missing); use livestore_files::schema::add_to"
                    ),
                )));
            }
        }
        let store_id = store.store_id().to_owned();
        let local = LocalFiles::open(&options.root, &store_id)?;
        let remote = options.remote.as_ref().map(SignerClient::new);
        let (events, _) = broadcast::channel(1024);
        let ctx =
            Context { store, store_id, local, options, remote, events, pins: Pins::default() };
        Ok(FileSync {
            inner: Arc::new(Inner {
                ctx: Arc::new(ctx),
                snapshot: Arc::new(watch::Sender::new(Snapshot::default())),
                lifecycle: Mutex::new(Lifecycle::Stopped(Box::default())),
                disposed: AtomicBool::new(false),
            }),
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.ctx.store
    }

    /// The local content store.
    pub fn local_files(&self) -> &LocalFiles {
        &self.inner.ctx.local
    }

    /// Whether this instance makes no remote calls.
    pub fn is_local_only(&self) -> bool {
        self.inner.ctx.remote.is_none()
    }

    /// Saves a file: streams it into the local store (hashing, fsync, rename), then commits `v1.FileCreated` and
    /// the local state in one batch. Returns once the bytes are durable and resolvable locally.
    pub fn save_file(&self, source: FileSource<'_>) -> Result<SavedFile, FilesError> {
        self.save_file_with(source, SaveOptions::default())
    }

    /// [`FileSync::save_file`] with a MIME type and metadata.
    pub fn save_file_with(
        &self,
        source: FileSource<'_>,
        options: SaveOptions,
    ) -> Result<SavedFile, FilesError> {
        self.check_alive()?;
        let (staged, mime) = self.stage(source, options.mime_type.as_deref())?;
        let hash = staged.ingested.hash;
        let size = staged.ingested.size;
        let _pin = self.pin(hash);
        self.inner.ctx.local.publish_staged(staged, &mime)?;
        let file_id = uuid_v4();
        let path = stored_path(&self.inner.ctx.store_id, &hash);
        let now = now_ms();
        let events = vec![
            new_event(&FileCreated {
                id: file_id.clone(),
                path: path.clone(),
                content_hash: hash.to_string(),
                created_at: now,
                updated_at: now,
                metadata_json: options.metadata_json,
            })?,
            new_event(&self.local_state_for_new_bytes(&file_id, &path, &hash).to_event())?,
        ];
        commit_for_file_sync(&self.inner.ctx.store, events)?;
        self.poke(&file_id);
        Ok(SavedFile { file_id, path, content_hash: hash.to_string(), size })
    }

    /// Replaces a file's content. Same bytes: nothing happens. Otherwise the new bytes are stored, `v1.FileUpdated`
    /// commits with an empty `remoteKey`, and the old local copy and remote object are removed unless another
    /// active file still uses them (the remote delete is queued and retried until it succeeds).
    pub fn update_file(
        &self,
        file_id: &str,
        source: FileSource<'_>,
    ) -> Result<SavedFile, FilesError> {
        self.update_file_with(file_id, source, SaveOptions::default())
    }

    /// [`FileSync::update_file`] with a MIME type and metadata (`metadataJson` becomes `null` when absent).
    pub fn update_file_with(
        &self,
        file_id: &str,
        source: FileSource<'_>,
        options: SaveOptions,
    ) -> Result<SavedFile, FilesError> {
        self.check_alive()?;
        let row = self.active_row(file_id)?;
        let (staged, mime) = self.stage(source, options.mime_type.as_deref())?;
        let hash = staged.ingested.hash;
        let size = staged.ingested.size;
        if hash.to_string() == row.content_hash {
            drop(staged);
            return Ok(SavedFile {
                file_id: row.id,
                path: row.path,
                content_hash: row.content_hash,
                size,
            });
        }
        let _pin = self.pin(hash);
        self.inner.ctx.local.publish_staged(staged, &mime)?;
        let path = stored_path(&self.inner.ctx.store_id, &hash);
        let mut events = vec![
            new_event(&FileUpdated {
                id: row.id.clone(),
                path: path.clone(),
                remote_key: String::new(),
                content_hash: hash.to_string(),
                updated_at: now_ms(),
                metadata_json: Some(options.metadata_json),
            })?,
            new_event(&self.local_state_for_new_bytes(&row.id, &path, &hash).to_event())?,
        ];
        events.extend(self.remote_delete_if_unreferenced(&row)?);
        commit_for_file_sync(&self.inner.ctx.store, events)?;
        self.remove_local_if_unreferenced(&row.content_hash)?;
        self.poke(&row.id);
        Ok(SavedFile { file_id: row.id, path, content_hash: hash.to_string(), size })
    }

    /// Soft-deletes a file (`v1.FileDeleted`). The local copy and the remote object are removed unless another
    /// active file shares the content; a remote delete that fails is retried later. Returns `false` for an
    /// unknown or already deleted id.
    pub fn delete_file(&self, file_id: &str) -> Result<bool, FilesError> {
        self.check_alive()?;
        let Some(row) = self.row(file_id)? else { return Ok(false) };
        if !row.is_active() {
            return Ok(false);
        }
        let mut events = vec![
            new_event(&FileDeleted { id: row.id.clone(), deleted_at: now_ms() })?,
            new_event(&LocalFileStateRemove { file_id: row.id.clone() })?,
        ];
        events.extend(self.remote_delete_if_unreferenced(&row)?);
        commit_for_file_sync(&self.inner.ctx.store, events)?;
        self.remove_local_if_unreferenced(&row.content_hash)?;
        self.send(Command::Forget { file_id: row.id.clone() });
        self.poke(&row.id);
        Ok(true)
    }

    /// Opens the local copy for reading; the reader fails at its end if the bytes do not match `contentHash`.
    /// Fails with [`FilesError::NotAvailable`] when the bytes are not on this device (see [`FileSync::get_file`]).
    pub fn read_file(&self, file_id: &str) -> Result<crate::local::VerifiedReader, FilesError> {
        let row = self.active_row(file_id)?;
        let hash = parse_hash(&row)?;
        if !self.inner.ctx.local.contains(&hash) {
            return Err(FilesError::NotAvailable {
                id: row.id,
                reason: "the bytes are not on this device yet".to_owned(),
            });
        }
        self.inner.ctx.local.touch(&hash);
        self.inner.ctx.local.open_verified(&hash)
    }

    /// Writes a file's bytes to `destination` (temp file, verified, renamed): from the local copy, or downloaded
    /// (and kept locally) when it is not here. A corrupt local copy is quarantined and downloaded again.
    pub async fn get_file(&self, file_id: &str, destination: &Path) -> Result<u64, FilesError> {
        let row = self.active_row(file_id)?;
        let hash = parse_hash(&row)?;
        if self.inner.ctx.local.contains(&hash) {
            self.inner.ctx.local.touch(&hash);
            match self.inner.ctx.local.copy_verified_to(&hash, destination) {
                Err(FilesError::CorruptLocalFile { .. }) if !row.remote_key.is_empty() => {
                    self.mark_local_missing(&row);
                }
                result => return result,
            }
        }
        if self.inner.ctx.remote.is_none() {
            return Err(FilesError::NotAvailable {
                id: row.id,
                reason: "not on this device, and remote storage is disabled (local-only mode)"
                    .to_owned(),
            });
        }
        if row.remote_key.is_empty() {
            return Err(FilesError::NotAvailable {
                id: row.id,
                reason: "not on this device and not uploaded yet".to_owned(),
            });
        }
        engine::download_now(&self.inner.ctx, self.engine(), &row, hash).await?;
        self.inner.ctx.local.copy_verified_to(&hash, destination)
    }

    /// A local URL when the bytes are here (`file://`, or the `files serve` URL), `None` otherwise.
    pub fn get_file_url(&self, file_id: &str) -> Result<Option<FileUrl>, FilesError> {
        let row = self.active_row(file_id)?;
        let hash = parse_hash(&row)?;
        Ok(self.local_url(&row, &hash))
    }

    /// The best URL for a file: local when the bytes are here, else a presigned remote URL (and the download
    /// moves to the front of the queue). `None` when the bytes are nowhere yet.
    pub async fn resolve_file_url(&self, file_id: &str) -> Result<Option<FileUrl>, FilesError> {
        let row = self.active_row(file_id)?;
        let hash = parse_hash(&row)?;
        if let Some(url) = self.local_url(&row, &hash) {
            return Ok(Some(url));
        }
        let Some(remote) = &self.inner.ctx.remote else { return Ok(None) };
        if row.remote_key.is_empty() {
            return Ok(None);
        }
        self.prioritize_download(&row.id)?;
        let signed = remote.sign_download(&row.remote_key).await?;
        let expires_at_ms = signed.expires_at_ms();
        Ok(Some(FileUrl::Remote { url: signed.url, expires_at_ms }))
    }

    /// Moves a file's download to the front of the queue (also brings back an evicted file).
    pub fn prioritize_download(&self, file_id: &str) -> Result<(), FilesError> {
        let row = self.active_row(file_id)?;
        if self.inner.ctx.remote.is_none() || row.remote_key.is_empty() {
            return Ok(());
        }
        let hash = parse_hash(&row)?;
        if self.inner.ctx.local.contains(&hash) {
            return Ok(());
        }
        let state = self.local_state(&row.id)?;
        // An evicted file is `done`/`done` without bytes; asking for it queues the download again.
        if state.as_ref().is_none_or(|state| *state.download() == TransferStatus::Done) {
            let upsert = LocalFileStateUpsert {
                file_id: row.id.clone(),
                path: row.path.clone(),
                local_hash: String::new(),
                download_status: TransferStatus::Queued,
                upload_status: TransferStatus::Done,
                last_sync_error: String::new(),
            };
            self.inner.ctx.store.commit(&upsert)?;
        }
        // Queued directly: a reconcile of the row is not needed (and would not see an evicted file as work).
        self.send(Command::Prioritize {
            job: Job {
                file_id: row.id.clone(),
                hash,
                path: row.path.clone(),
                key: row.remote_key.clone(),
                size: None,
            },
        });
        Ok(())
    }

    /// Active files (oldest first) with this device's transfer state.
    pub fn list_files(&self) -> Result<Vec<FileEntry>, FilesError> {
        let records: Vec<FileRecord> = self.inner.ctx.store.query(
            &Query::select(FILES_TABLE)
                .where_eq("deletedAt", None::<i64>)
                .order_by("createdAt")
                .order_by("id"),
        )?;
        let states: Vec<LocalFileState> =
            self.inner.ctx.store.query(&Query::select(LOCAL_STATE_TABLE))?;
        let mut states: BTreeMap<String, LocalFileState> =
            states.into_iter().map(|state| (state.file_id.clone(), state)).collect();
        Ok(records
            .into_iter()
            .map(|record| {
                let local_size = record
                    .content_hash
                    .parse::<ContentHash>()
                    .ok()
                    .and_then(|hash| self.inner.ctx.local.size(&hash));
                let local_state = states.remove(&record.id);
                FileEntry { record, local_size, local_state }
            })
            .collect())
    }

    /// One active file's row.
    pub fn file(&self, file_id: &str) -> Result<FileRecord, FilesError> {
        self.active_row(file_id)
    }

    /// Counts, bytes, errors and running transfers.
    pub fn sync_status(&self) -> Result<SyncStatus, FilesError> {
        let snapshot = self.inner.snapshot.borrow().clone();
        engine::status(&self.inner.ctx, &snapshot)
    }

    /// Subscribes to progress and lifecycle events.
    pub fn events(&self) -> broadcast::Receiver<FileSyncEvent> {
        self.inner.ctx.events.subscribe()
    }

    /// Whether the signer answered its last health check (always true in local-only mode).
    pub fn is_online(&self) -> bool {
        self.inner.ctx.remote.is_none() || self.inner.snapshot.borrow().online
    }

    /// Retries every failed transfer now instead of waiting for its backoff.
    pub fn retry_errors(&self) {
        let mut lifecycle = self.inner.lifecycle.lock().expect("lifecycle lock");
        match &mut *lifecycle {
            Lifecycle::Running { commands, .. } => {
                let _ = commands.send(Command::RetryNow);
            }
            // Kept for the next start.
            Lifecycle::Stopped(state) => state.retry_all(std::time::Instant::now()),
            Lifecycle::Stopping => {}
        }
    }

    /// Starts the transfer engine on the current tokio runtime. Idempotent.
    pub fn start(&self) -> Result<(), FilesError> {
        self.check_alive()?;
        let mut lifecycle = self.inner.lifecycle.lock().expect("lifecycle lock");
        let state = match std::mem::replace(&mut *lifecycle, Lifecycle::Stopping) {
            running @ Lifecycle::Running { .. } => {
                *lifecycle = running;
                return Ok(());
            }
            Lifecycle::Stopped(state) => *state,
            // A stop in progress keeps the state it gets back; this run starts fresh.
            Lifecycle::Stopping => EngineState::default(),
        };
        let (commands, receiver) = mpsc::unbounded_channel();
        let on_change = commands.clone();
        // The signal for "someone else changed `files`" (pulled events, other writers): `total_changes()` grows with
        // every row this connection writes, so the result differs after every commit, and reading `id` makes the
        // store re-run the query only after commits that touch `files`. It costs one row per commit, where an
        // aggregate over the table cost a scan of every row on every commit. Commits the file sync makes itself
        // are skipped here: they name the rows they changed (see `commit_for_file_sync`).
        let subscription = self.inner.ctx.store.subscribe(
            Query::sql("SELECT total_changes() AS writes, id FROM files LIMIT 1", []),
            move |_rows| {
                if !COMMITTING_FOR_FILE_SYNC.get() {
                    let _ = on_change.send(Command::StoreChanged);
                }
            },
        );
        let subscription = match subscription {
            Ok(subscription) => subscription,
            Err(error) => {
                *lifecycle = Lifecycle::Stopped(Box::new(state));
                return Err(error.into());
            }
        };
        let task = tokio::spawn(engine::run(
            Arc::clone(&self.inner.ctx),
            receiver,
            state,
            Arc::clone(&self.inner.snapshot),
        ));
        *lifecycle = Lifecycle::Running { commands, task, _subscription: subscription };
        Ok(())
    }

    /// Stops the engine: running transfers are interrupted (they resume from the store's state on the next
    /// start), queued work stays queued.
    pub async fn stop(&self) {
        let running = {
            let mut lifecycle = self.inner.lifecycle.lock().expect("lifecycle lock");
            match std::mem::replace(&mut *lifecycle, Lifecycle::Stopping) {
                Lifecycle::Running { commands, task, _subscription } => {
                    Some((commands, task, _subscription))
                }
                other => {
                    *lifecycle = other;
                    None
                }
            }
        };
        let Some((commands, task, subscription)) = running else { return };
        let _ = commands.send(Command::Stop);
        // A task that panicked or was cancelled left nothing to keep.
        let state = task.await.unwrap_or_default();
        drop(subscription);
        let mut lifecycle = self.inner.lifecycle.lock().expect("lifecycle lock");
        if matches!(*lifecycle, Lifecycle::Stopping) {
            *lifecycle = Lifecycle::Stopped(Box::new(state));
        }
    }

    /// Stops and refuses further operations. Idempotent. The store stays open (it belongs to the caller).
    pub async fn dispose(&self) {
        self.inner.disposed.store(true, Ordering::SeqCst);
        self.stop().await;
    }

    /// Waits until nothing is left to do (no queued or running transfers, no remote deletes, no errors), or
    /// `timeout` passes. Returns whether it became idle. The engine answers (it must be running): a command sent
    /// before this call is handled before the question, so a save that returned is never missed.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (reply, answer) = oneshot::channel();
            if self.send(Command::IsIdle { reply })
                && let Ok(Ok(true)) = tokio::time::timeout_at(deadline, answer).await
            {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends a command to the engine if it runs (a stopped engine re-derives everything when it starts, so
    /// nothing is lost by dropping it). Returns whether it was sent.
    fn send(&self, command: Command) -> bool {
        self.engine().is_some_and(|commands| commands.send(command).is_ok())
    }

    /// The engine's command sender, if it runs.
    fn engine(&self) -> Option<mpsc::UnboundedSender<Command>> {
        match &*self.inner.lifecycle.lock().expect("lifecycle lock") {
            Lifecycle::Running { commands, .. } => Some(commands.clone()),
            Lifecycle::Stopped(_) | Lifecycle::Stopping => None,
        }
    }

    fn check_alive(&self) -> Result<(), FilesError> {
        if self.inner.disposed.load(Ordering::SeqCst) {
            return Err(FilesError::Disposed);
        }
        Ok(())
    }

    /// Tells the engine that this row changed (it re-reads only the rows it is told about).
    pub(crate) fn poke(&self, file_id: &str) {
        self.send(Command::RowsChanged { file_ids: vec![file_id.to_owned()] });
    }

    fn stage(
        &self,
        source: FileSource<'_>,
        mime_type: Option<&str>,
    ) -> Result<(Staged, String), FilesError> {
        match source {
            FileSource::Bytes(bytes) => {
                let staged = self.inner.ctx.local.stage(&mut &bytes[..])?;
                Ok((staged, mime_type.unwrap_or("application/octet-stream").to_owned()))
            }
            FileSource::Reader(reader) => {
                let staged = self.inner.ctx.local.stage(reader)?;
                Ok((staged, mime_type.unwrap_or("application/octet-stream").to_owned()))
            }
            FileSource::Path(path) => {
                let unreadable =
                    |source| FilesError::SourceUnreadable { path: path.to_path_buf(), source };
                let mut file = std::fs::File::open(path).map_err(unreadable)?;
                let before = file.metadata().map_err(unreadable)?;
                if !before.is_file() {
                    return Err(FilesError::SourceNotAFile { path: path.to_path_buf() });
                }
                let staged =
                    self.inner.ctx.local.stage(&mut file).map_err(|error| match error {
                        FilesError::SourceUnreadable { source, .. } => {
                            FilesError::SourceUnreadable { path: path.to_path_buf(), source }
                        }
                        other => other,
                    })?;
                let after = file.metadata().map_err(unreadable)?;
                let on_disk = std::fs::metadata(path).ok();
                let unchanged = staged.ingested.size == before.len()
                    && after.len() == before.len()
                    && after.modified().ok() == before.modified().ok()
                    && on_disk.is_some_and(|meta| {
                        meta.len() == before.len() && meta.modified().ok() == before.modified().ok()
                    });
                if !unchanged {
                    return Err(FilesError::SourceChanged { path: path.to_path_buf() });
                }
                let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
                let mime =
                    mime_type.map(str::to_owned).unwrap_or_else(|| mime_from_name(name).to_owned());
                Ok((staged, mime))
            }
        }
    }

    fn local_state_for_new_bytes(
        &self,
        file_id: &str,
        path: &str,
        hash: &ContentHash,
    ) -> LocalFileState {
        let upload = if self.inner.ctx.remote.is_some() {
            TransferStatus::Queued
        } else {
            TransferStatus::Done
        };
        LocalFileState {
            file_id: file_id.to_owned(),
            path: path.to_owned(),
            local_hash: hash.to_string(),
            download_status: TransferStatus::Done,
            upload_status: upload,
            last_sync_error: String::new(),
        }
    }

    fn local_url(&self, row: &FileRecord, hash: &ContentHash) -> Option<FileUrl> {
        if !self.inner.ctx.local.contains(hash) {
            return None;
        }
        self.inner.ctx.local.touch(hash);
        let path = self.inner.ctx.local.content_path(hash);
        let path = std::path::absolute(&path).unwrap_or(path);
        let url = match &self.inner.ctx.options.local_url_base {
            Some(base) => format!("{}/{}", base.trim_end_matches('/'), row.path),
            None => format!("file://{}", path.display()),
        };
        Some(FileUrl::Local { path, url })
    }

    fn mark_local_missing(&self, row: &FileRecord) {
        let upsert = LocalFileStateUpsert {
            file_id: row.id.clone(),
            path: row.path.clone(),
            local_hash: String::new(),
            download_status: TransferStatus::Queued,
            upload_status: TransferStatus::Done,
            last_sync_error: "local copy was corrupt and has been quarantined".to_owned(),
        };
        if let Err(error) = self.inner.ctx.store.commit(&upsert) {
            tracing::warn!(target: "livestore_files::_events::state", %error, "could not record a quarantined file");
        }
        self.poke(&row.id);
    }

    fn pin(&self, hash: ContentHash) -> PinGuard {
        pin(&self.inner.ctx, hash)
    }

    pub(crate) fn row(&self, file_id: &str) -> Result<Option<FileRecord>, FilesError> {
        crate::context::row(&self.inner.ctx.store, file_id)
    }

    fn active_row(&self, file_id: &str) -> Result<FileRecord, FilesError> {
        match self.row(file_id)? {
            Some(row) if row.is_active() => Ok(row),
            _ => Err(FilesError::NotFound(file_id.to_owned())),
        }
    }

    fn local_state(&self, file_id: &str) -> Result<Option<LocalFileState>, FilesError> {
        let states: Vec<LocalFileState> = self
            .inner
            .ctx
            .store
            .query(&Query::select(LOCAL_STATE_TABLE).where_eq("fileId", file_id))?;
        Ok(states.into_iter().next())
    }

    /// The remote delete to queue when `row` stops using its object, unless another active row uses it.
    fn remote_delete_if_unreferenced(
        &self,
        row: &FileRecord,
    ) -> Result<Option<NewEvent>, FilesError> {
        if self.inner.ctx.remote.is_none() || row.remote_key.is_empty() {
            return Ok(None);
        }
        if key_referenced(&self.inner.ctx.store, &row.remote_key, Some(&row.id))? {
            return Ok(None);
        }
        Ok(Some(new_event(&FileRemoteDeleteQueued {
            key: row.remote_key.clone(),
            queued_at: now_ms(),
        })?))
    }

    /// Removes the local copy of `content_hash` unless an active row still uses it.
    fn remove_local_if_unreferenced(&self, content_hash: &str) -> Result<(), FilesError> {
        let Ok(hash) = content_hash.parse::<ContentHash>() else { return Ok(()) };
        if hash_referenced(&self.inner.ctx.store, content_hash)? || self.is_pinned(&hash) {
            return Ok(());
        }
        self.inner.ctx.local.remove(&hash)
    }

    fn is_pinned(&self, hash: &ContentHash) -> bool {
        self.inner.ctx.pins.contains(hash)
    }
}

/// A random UUID v4, like `crypto.randomUUID()`.
pub(crate) fn uuid_v4() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}
