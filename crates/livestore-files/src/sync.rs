//! [`FileSync`]: the public handle. Save, read, update and delete files; resolve URLs; report status and events;
//! start and stop the transfer engine.
//!
//! File operations are synchronous (local disk plus one store commit) and callable from any thread; transfers
//! run in the engine (`crate::engine`) on the caller's tokio runtime after [`FileSync::start`]. Every operation
//! commits its events in one batch, after the bytes are durable under their content name, so a crash between
//! the two leaves at most an unreferenced local file, never a row without bytes.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use livestore_client::schema::{Event, Query};
use livestore_client::{NewEvent, Store};
use tokio::sync::{Notify, broadcast, mpsc, watch};

use crate::engine::{self, Completion, RuntimeState};
use crate::error::FilesError;
use crate::layout::{ContentHash, remote_key_for_path, stored_path};
use crate::local::{LocalFiles, Staged, mime_from_name, now_ms};
use crate::remote::{RemoteConfig, SignerClient};
use crate::schema::{
    FILES_TABLE, FileCreated, FileDeleted, FileRecord, FileRemoteDeleteQueued, FileUpdated,
    LOCAL_STATE_TABLE, LocalFileState, LocalFileStateRemove, LocalFileStateUpsert, TransferStatus,
};
use crate::status::{FileEntry, FileSyncEvent, SyncStatus};

/// How a [`FileSync`] behaves.
#[derive(Debug, Clone)]
pub struct FileSyncOptions {
    /// Data root: local files live in `<root>/livestore-filesync-files/<store>/`.
    pub root: PathBuf,
    /// The signer; `None` is local-only mode (no remote calls at all).
    pub remote: Option<RemoteConfig>,
    /// Uploads running at once (default 4).
    pub max_concurrent_uploads: usize,
    /// Downloads running at once (default 4).
    pub max_concurrent_downloads: usize,
    /// First retry delay after a failure (default 1 s); doubles per failure, jittered ±20 %.
    pub retry_base_delay: Duration,
    /// Longest retry delay (default 60 s). Failures are retried forever at this pace.
    pub retry_max_delay: Duration,
    /// Health check interval while online (default 10 s); offline checks start at 500 ms and back off to it.
    pub health_check_interval: Duration,
    /// Keep at most this many bytes of content locally, evicting least recently used files that are safely
    /// uploaded (default: no limit).
    pub local_byte_budget: Option<u64>,
    /// Files at least this large upload in parts and resume after a crash (default 4 GiB; smaller files go in
    /// one checksum-bound PUT, which is faster, and restart from the beginning after a crash).
    pub multipart_threshold: u64,
    /// Part size for multipart uploads (default 64 MiB; raised to the store's minimum).
    pub part_size: u64,
    /// Base URL of a running `livestore files serve`; `resolve_file_url` then returns
    /// `<base>/<path>` instead of `file://` URLs for local files.
    pub local_url_base: Option<String>,
}

impl FileSyncOptions {
    /// Local-only mode rooted at `root`.
    pub fn local_only(root: impl Into<PathBuf>) -> Self {
        FileSyncOptions {
            root: root.into(),
            remote: None,
            max_concurrent_uploads: 4,
            max_concurrent_downloads: 4,
            retry_base_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(60),
            health_check_interval: Duration::from_secs(10),
            local_byte_budget: None,
            multipart_threshold: 4 * 1024 * 1024 * 1024,
            part_size: 64 * 1024 * 1024,
            local_url_base: None,
        }
    }

    /// Syncing through the signer at `remote`.
    pub fn with_remote(root: impl Into<PathBuf>, remote: RemoteConfig) -> Self {
        FileSyncOptions { remote: Some(remote), ..FileSyncOptions::local_only(root) }
    }
}

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
            .field("store_id", &self.inner.store_id)
            .field("local_only", &self.inner.remote.is_none())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) store_id: String,
    pub(crate) local: LocalFiles,
    pub(crate) options: FileSyncOptions,
    pub(crate) remote: Option<SignerClient>,
    pub(crate) events: broadcast::Sender<FileSyncEvent>,
    /// Wakes the engine: the files table changed, a save happened, a download was prioritized.
    pub(crate) wake: Notify,
    /// Set when the engine must re-derive everything (at start, after commits it did not make: pulled events,
    /// other writers).
    pub(crate) dirty: AtomicBool,
    /// Rows a local operation changed: the engine re-reads only these (see `engine::queue`).
    pub(crate) changed_files: Mutex<HashSet<String>>,
    pub(crate) runtime: Mutex<RuntimeState>,
    /// Content being saved right now: eviction must not remove it before its row is committed.
    pub(crate) pinned: Mutex<HashMap<ContentHash, usize>>,
    engine: Mutex<Option<EngineHandle>>,
    disposed: AtomicBool,
    subscription: Mutex<Option<livestore_client::subscription::SubscriptionHandle>>,
}

struct EngineHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
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
        Ok(FileSync {
            inner: Arc::new(Inner {
                store,
                store_id,
                local,
                options,
                remote,
                events,
                wake: Notify::new(),
                dirty: AtomicBool::new(true),
                changed_files: Mutex::new(HashSet::new()),
                runtime: Mutex::new(RuntimeState::default()),
                pinned: Mutex::new(HashMap::new()),
                engine: Mutex::new(None),
                disposed: AtomicBool::new(false),
                subscription: Mutex::new(None),
            }),
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The local content store.
    pub fn local_files(&self) -> &LocalFiles {
        &self.inner.local
    }

    /// Whether this instance makes no remote calls.
    pub fn is_local_only(&self) -> bool {
        self.inner.remote.is_none()
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
        self.inner.local.publish_staged(staged, &mime)?;
        let file_id = uuid_v4();
        let path = stored_path(&self.inner.store_id, &hash);
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
        commit_for_file_sync(&self.inner.store, events)?;
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
        self.inner.local.publish_staged(staged, &mime)?;
        let path = stored_path(&self.inner.store_id, &hash);
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
        commit_for_file_sync(&self.inner.store, events)?;
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
        commit_for_file_sync(&self.inner.store, events)?;
        self.remove_local_if_unreferenced(&row.content_hash)?;
        engine::forget_file(&self.inner, &row.id);
        self.poke(&row.id);
        Ok(true)
    }

    /// Opens the local copy for reading; the reader fails at its end if the bytes do not match `contentHash`.
    /// Fails with [`FilesError::NotAvailable`] when the bytes are not on this device (see [`FileSync::get_file`]).
    pub fn read_file(&self, file_id: &str) -> Result<crate::local::VerifiedReader, FilesError> {
        let row = self.active_row(file_id)?;
        let hash = parse_hash(&row)?;
        if !self.inner.local.contains(&hash) {
            return Err(FilesError::NotAvailable {
                id: row.id,
                reason: "the bytes are not on this device yet".to_owned(),
            });
        }
        self.inner.local.touch(&hash);
        self.inner.local.open_verified(&hash)
    }

    /// Writes a file's bytes to `destination` (temp file, verified, renamed): from the local copy, or downloaded
    /// (and kept locally) when it is not here. A corrupt local copy is quarantined and downloaded again.
    pub async fn get_file(&self, file_id: &str, destination: &Path) -> Result<u64, FilesError> {
        let row = self.active_row(file_id)?;
        let hash = parse_hash(&row)?;
        if self.inner.local.contains(&hash) {
            self.inner.local.touch(&hash);
            match self.inner.local.copy_verified_to(&hash, destination) {
                Err(FilesError::CorruptLocalFile { .. }) if !row.remote_key.is_empty() => {
                    self.mark_local_missing(&row);
                }
                result => return result,
            }
        }
        if self.inner.remote.is_none() {
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
        engine::download_now(&self.inner, &row, hash).await?;
        self.inner.local.copy_verified_to(&hash, destination)
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
        let Some(remote) = &self.inner.remote else { return Ok(None) };
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
        if self.inner.remote.is_none() || row.remote_key.is_empty() {
            return Ok(());
        }
        let hash = parse_hash(&row)?;
        if self.inner.local.contains(&hash) {
            return Ok(());
        }
        let state = self.local_state(&row.id)?;
        // An evicted file is `done`/`done` without bytes; asking for it queues the download again.
        if state.as_ref().is_none_or(|state| state.download() == TransferStatus::Done) {
            let upsert = LocalFileStateUpsert {
                file_id: row.id.clone(),
                path: row.path.clone(),
                local_hash: String::new(),
                download_status: TransferStatus::Queued.as_str().to_owned(),
                upload_status: TransferStatus::Done.as_str().to_owned(),
                last_sync_error: String::new(),
            };
            self.inner.store.commit(&upsert)?;
        }
        engine::prioritize(
            &self.inner,
            engine::Job {
                file_id: row.id.clone(),
                hash,
                path: row.path.clone(),
                key: row.remote_key.clone(),
            },
        );
        // Queued directly: a reconcile of the row is not needed (and would not see an evicted file as work).
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Active files (oldest first) with this device's transfer state.
    pub fn list_files(&self) -> Result<Vec<FileEntry>, FilesError> {
        let records: Vec<FileRecord> = self.inner.store.query(
            &Query::select(FILES_TABLE)
                .where_eq("deletedAt", None::<i64>)
                .order_by("createdAt")
                .order_by("id"),
        )?;
        let states: Vec<LocalFileState> =
            self.inner.store.query(&Query::select(LOCAL_STATE_TABLE))?;
        let mut states: HashMap<String, LocalFileState> =
            states.into_iter().map(|state| (state.file_id.clone(), state)).collect();
        Ok(records
            .into_iter()
            .map(|record| {
                let local_size = record
                    .content_hash
                    .parse::<ContentHash>()
                    .ok()
                    .and_then(|hash| self.inner.local.size(&hash));
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
        engine::status(&self.inner)
    }

    /// Subscribes to progress and lifecycle events.
    pub fn events(&self) -> broadcast::Receiver<FileSyncEvent> {
        self.inner.events.subscribe()
    }

    /// Whether the signer answered its last health check (always true in local-only mode).
    pub fn is_online(&self) -> bool {
        self.inner.remote.is_none() || self.inner.runtime.lock().expect("runtime lock").online
    }

    /// Retries every failed transfer now instead of waiting for its backoff.
    pub fn retry_errors(&self) {
        engine::retry_now(&self.inner);
        // Failed jobs stay in the work lists; the engine only has to look again.
        self.inner.wake.notify_one();
    }

    /// Starts the transfer engine on the current tokio runtime. Idempotent.
    pub fn start(&self) -> Result<(), FilesError> {
        self.check_alive()?;
        let mut engine_slot = self.inner.engine.lock().expect("engine lock");
        if engine_slot.is_some() {
            return Ok(());
        }
        let weak = Arc::downgrade(&self.inner);
        // The signal for "someone else changed `files`" (pulled events, other writers): `total_changes()` grows with
        // every row this connection writes, so the result differs after every commit, and reading `id` makes the
        // store re-run the query only after commits that touch `files`. It costs one row per commit, where an
        // aggregate over the table cost a scan of every row on every commit. Commits the file sync makes itself
        // are skipped here: they name the rows they changed (see `commit_for_file_sync`).
        let subscription = self.inner.store.subscribe(
            Query::sql("SELECT total_changes() AS writes, id FROM files LIMIT 1", []),
            move |_rows| {
                if COMMITTING_FOR_FILE_SYNC.get() {
                    return;
                }
                if let Some(inner) = weak.upgrade() {
                    inner.dirty.store(true, Ordering::SeqCst);
                    inner.wake.notify_one();
                }
            },
        )?;
        *self.inner.subscription.lock().expect("subscription lock") = Some(subscription);
        let (stop, stop_receiver) = watch::channel(false);
        let (completions, completion_receiver) = mpsc::unbounded_channel::<Completion>();
        self.inner.dirty.store(true, Ordering::SeqCst);
        let task = tokio::spawn(engine::run(
            Arc::clone(&self.inner),
            stop_receiver,
            completions,
            completion_receiver,
        ));
        *engine_slot = Some(EngineHandle { stop, task });
        Ok(())
    }

    /// Stops the engine: running transfers are interrupted (they resume from the store's state on the next
    /// start), queued work stays queued.
    pub async fn stop(&self) {
        let handle = self.inner.engine.lock().expect("engine lock").take();
        if let Some(handle) = handle {
            let _ = handle.stop.send(true);
            let _ = handle.task.await;
        }
        self.inner.subscription.lock().expect("subscription lock").take();
    }

    /// Stops and refuses further operations. Idempotent. The store stays open (it belongs to the caller).
    pub async fn dispose(&self) {
        self.inner.disposed.store(true, Ordering::SeqCst);
        self.stop().await;
    }

    /// Waits until nothing is left to do (no queued or running transfers, no remote deletes, no errors), or
    /// `timeout` passes. Returns whether it became idle.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if engine::is_idle(&self.inner) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
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
        self.inner.changed_files.lock().expect("changed files lock").insert(file_id.to_owned());
        self.inner.wake.notify_one();
    }

    fn stage(
        &self,
        source: FileSource<'_>,
        mime_type: Option<&str>,
    ) -> Result<(Staged, String), FilesError> {
        match source {
            FileSource::Bytes(bytes) => {
                let staged = self.inner.local.stage(&mut &bytes[..])?;
                Ok((staged, mime_type.unwrap_or("application/octet-stream").to_owned()))
            }
            FileSource::Reader(reader) => {
                let staged = self.inner.local.stage(reader)?;
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
                let staged = self.inner.local.stage(&mut file).map_err(|error| match error {
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
        let upload =
            if self.inner.remote.is_some() { TransferStatus::Queued } else { TransferStatus::Done };
        LocalFileState {
            file_id: file_id.to_owned(),
            path: path.to_owned(),
            local_hash: hash.to_string(),
            download_status: TransferStatus::Done.as_str().to_owned(),
            upload_status: upload.as_str().to_owned(),
            last_sync_error: String::new(),
        }
    }

    fn local_url(&self, row: &FileRecord, hash: &ContentHash) -> Option<FileUrl> {
        if !self.inner.local.contains(hash) {
            return None;
        }
        self.inner.local.touch(hash);
        let path = self.inner.local.content_path(hash);
        let path = std::path::absolute(&path).unwrap_or(path);
        let url = match &self.inner.options.local_url_base {
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
            download_status: TransferStatus::Queued.as_str().to_owned(),
            upload_status: TransferStatus::Done.as_str().to_owned(),
            last_sync_error: "local copy was corrupt and has been quarantined".to_owned(),
        };
        if let Err(error) = self.inner.store.commit(&upsert) {
            tracing::warn!(target: "livestore_files::_events::state", %error, "could not record a quarantined file");
        }
        self.poke(&row.id);
    }

    fn pin(&self, hash: ContentHash) -> PinGuard {
        *self.inner.pinned.lock().expect("pin lock").entry(hash).or_default() += 1;
        PinGuard { inner: Arc::clone(&self.inner), hash }
    }

    pub(crate) fn row(&self, file_id: &str) -> Result<Option<FileRecord>, FilesError> {
        row(&self.inner.store, file_id)
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
            .store
            .query(&Query::select(LOCAL_STATE_TABLE).where_eq("fileId", file_id))?;
        Ok(states.into_iter().next())
    }

    /// The remote delete to queue when `row` stops using its object, unless another active row uses it.
    fn remote_delete_if_unreferenced(
        &self,
        row: &FileRecord,
    ) -> Result<Option<NewEvent>, FilesError> {
        if self.inner.remote.is_none() || row.remote_key.is_empty() {
            return Ok(None);
        }
        if key_referenced(&self.inner.store, &row.remote_key, Some(&row.id))? {
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
        if hash_referenced(&self.inner.store, content_hash)? || self.is_pinned(&hash) {
            return Ok(());
        }
        self.inner.local.remove(&hash)
    }

    fn is_pinned(&self, hash: &ContentHash) -> bool {
        self.inner.pinned.lock().expect("pin lock").contains_key(hash)
    }
}

struct PinGuard {
    inner: Arc<Inner>,
    hash: ContentHash,
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut pinned = self.inner.pinned.lock().expect("pin lock");
        if let Some(count) = pinned.get_mut(&self.hash) {
            *count -= 1;
            if *count == 0 {
                pinned.remove(&self.hash);
            }
        }
    }
}

thread_local! {
    /// Set while this thread commits on behalf of the file sync. The store delivers subscription callbacks on the
    /// committing thread, so the engine's change subscription can tell these commits (whose rows the committer
    /// names itself) from everyone else's.
    static COMMITTING_FOR_FILE_SYNC: Cell<bool> = const { Cell::new(false) };
}

/// Commits events of the file sync itself (its own saves, updates, deletes and transfer state). Whoever calls this
/// tells the engine which rows changed; the change subscription ignores these commits.
pub(crate) fn commit_for_file_sync(
    store: &Store,
    events: Vec<NewEvent>,
) -> Result<(), livestore_client::StoreError> {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            COMMITTING_FOR_FILE_SYNC.set(false);
        }
    }
    COMMITTING_FOR_FILE_SYNC.set(true);
    let _reset = Reset;
    store.commit_batch(events).map(drop)
}

pub(crate) fn row(store: &Store, file_id: &str) -> Result<Option<FileRecord>, FilesError> {
    let rows: Vec<FileRecord> = store.query(&Query::select(FILES_TABLE).where_eq("id", file_id))?;
    Ok(rows.into_iter().next())
}

/// Active rows with this content hash.
pub(crate) fn active_rows_with_hash(
    store: &Store,
    content_hash: &str,
) -> Result<Vec<FileRecord>, FilesError> {
    Ok(store.query(
        &Query::select(FILES_TABLE)
            .where_eq("contentHash", content_hash)
            .where_eq("deletedAt", None::<i64>),
    )?)
}

/// Whether an active row uses this content hash.
pub(crate) fn hash_referenced(store: &Store, content_hash: &str) -> Result<bool, FilesError> {
    Ok(!active_rows_with_hash(store, content_hash)?.is_empty())
}

/// Whether an active row (other than `except`) uses this object: by `remoteKey`, or by content whose key it is.
pub(crate) fn key_referenced(
    store: &Store,
    key: &str,
    except: Option<&str>,
) -> Result<bool, FilesError> {
    let by_key: Vec<FileRecord> = store.query(
        &Query::select(FILES_TABLE).where_eq("remoteKey", key).where_eq("deletedAt", None::<i64>),
    )?;
    if by_key.iter().any(|row| Some(row.id.as_str()) != except) {
        return Ok(true);
    }
    let Some(hash) = crate::layout::hash_from_path(key) else { return Ok(false) };
    Ok(active_rows_with_hash(store, &hash.to_string())?
        .iter()
        .any(|row| Some(row.id.as_str()) != except && remote_key_for_path(&row.path) == key))
}

pub(crate) fn parse_hash(row: &FileRecord) -> Result<ContentHash, FilesError> {
    row.content_hash.parse().map_err(|_| FilesError::InvalidRow {
        id: row.id.clone(),
        reason: format!("contentHash {:?} is not a SHA-256 hex digest", row.content_hash),
    })
}

pub(crate) fn new_event<E: Event>(event: &E) -> Result<NewEvent, FilesError> {
    Ok(NewEvent::new(event)?)
}

/// A random UUID v4, like `crypto.randomUUID()`.
pub(crate) fn uuid_v4() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}
