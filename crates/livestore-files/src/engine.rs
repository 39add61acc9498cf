//! The transfer engine: one tokio task that derives the work queue from the store, runs transfers with bounded
//! concurrency, records outcomes, retries failures with capped, jittered exponential backoff, tracks the signer's
//! health and evicts local copies over the byte budget.
//!
//! **The queue is derived, not stored.** Each reconcile joins `files` with `localFileState` and looks only at
//! rows that are not settled: an active row with local bytes and no `remoteKey` needs an upload; an active row
//! with a `remoteKey` and no local bytes needs a download; a deleted row with state needs its local copy
//! removed (unless another active row shares the content). Remote deletes come from the client-only
//! `fileRemoteDeletes` table. So a crash, a restart or `kill -9` loses no work: whatever was queued or running is
//! found again from the same tables, and `inProgress` rows without a running transfer are simply queued again.
//!
//! Every trigger of the loop is one [`Event`]: the store changed (subscription or a local operation), a transfer
//! finished, a health check answered, a timer fired, or stop. State writes of one loop turn are committed as one
//! batch. Failures are never dropped: the row shows `error` with the reason, and the transfer is retried after
//! `min(base × 2^(n-1), max)` ±20 %; when the signer comes back online every waiting retry runs at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use livestore_client::NewEvent;
use livestore_client::schema::Query;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use crate::error::FilesError;
use crate::layout::{ContentHash, remote_key_for_path, stored_path};
use crate::local::now_ms;
use crate::schema::{
    FileRecord, FileRemoteDeleteDone, FileUpdated, LocalFileState, LocalFileStateRemove,
    REMOTE_DELETES_TABLE, RemoteDelete, TransferStatus,
};
use crate::status::{FileError, FileSyncEvent, SyncStatus, TransferKind, TransferProgress};
use crate::sync::{Inner, active_rows_with_hash, key_referenced, new_event};
use crate::transfer::{self, TransferContext, Uploaded};

/// Remote deletes running at once.
const DELETE_CONCURRENCY: usize = 2;

/// A transfer to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Job {
    pub(crate) file_id: String,
    pub(crate) hash: ContentHash,
    pub(crate) path: String,
    /// The object key (downloads).
    pub(crate) key: String,
}

/// What the last reconcile found to do.
#[derive(Debug, Default)]
pub(crate) struct WorkLists {
    uploads: VecDeque<Job>,
    downloads: VecDeque<Job>,
    deletes: Vec<String>,
    awaiting_remote: usize,
}

#[derive(Debug)]
struct Inflight {
    file_id: String,
    hash: ContentHash,
    loaded: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
}

#[derive(Debug, Clone)]
struct Failure {
    attempts: u32,
    next_at: Instant,
    error: String,
}

/// The engine's in-memory state, shared with status queries.
#[derive(Debug)]
pub(crate) struct RuntimeState {
    pub(crate) online: bool,
    offline_reason: String,
    work: WorkLists,
    inflight: HashMap<(TransferKind, String), Inflight>,
    hashes_inflight: HashSet<ContentHash>,
    deletes_inflight: HashSet<String>,
    failures: HashMap<(TransferKind, String), Failure>,
    delete_failures: HashMap<String, Failure>,
    prioritized: VecDeque<String>,
    reconciled: bool,
    running: bool,
    pending_writes: usize,
    /// Why the last reconcile failed, if it did.
    engine_error: Option<String>,
}

impl Default for RuntimeState {
    fn default() -> Self {
        RuntimeState {
            online: true,
            offline_reason: String::new(),
            work: WorkLists::default(),
            inflight: HashMap::new(),
            hashes_inflight: HashSet::new(),
            deletes_inflight: HashSet::new(),
            failures: HashMap::new(),
            delete_failures: HashMap::new(),
            prioritized: VecDeque::new(),
            reconciled: false,
            running: false,
            pending_writes: 0,
            engine_error: None,
        }
    }
}

/// A finished piece of work, reported to the loop.
#[derive(Debug)]
pub(crate) enum Completion {
    Upload { job: Job, result: Result<Uploaded, FilesError> },
    Download { job: Job, result: Result<(), FilesError> },
    Delete { key: String, result: Result<(), FilesError> },
    Health { healthy: bool },
}

/// Every trigger of the engine loop.
enum Event {
    Wake,
    Completion(Completion),
    Timer,
    Stop,
}

/// The engine loop. Ends when `stop` is set or the store shuts down.
pub(crate) async fn run(
    inner: Arc<Inner>,
    mut stop: watch::Receiver<bool>,
    completions: mpsc::UnboundedSender<Completion>,
    mut completion_receiver: mpsc::UnboundedReceiver<Completion>,
) {
    let mut engine = Engine {
        inner: Arc::clone(&inner),
        completions,
        writes: Vec::new(),
        next_health: Instant::now(),
        health_running: false,
        offline_delay: Duration::from_millis(500),
        last_reconcile: None,
        reconcile_cost: Duration::ZERO,
        next_progress: Instant::now(),
        evict_due: inner.options.local_byte_budget.is_some(),
        tasks: tokio::task::JoinSet::new(),
    };
    inner.runtime.lock().expect("runtime lock").running = true;
    loop {
        engine.turn();
        if inner.store.is_shut_down() {
            break;
        }
        let deadline = engine.next_deadline();
        let event = tokio::select! {
            _ = inner.wake.notified() => Event::Wake,
            Some(completion) = completion_receiver.recv() => Event::Completion(completion),
            _ = tokio::time::sleep_until(deadline.into()) => Event::Timer,
            _ = stop.changed() => Event::Stop,
        };
        match event {
            Event::Stop => break,
            Event::Completion(completion) => {
                engine.complete(completion);
                // Take every completion that is already here, so one turn commits them together.
                while let Ok(completion) = completion_receiver.try_recv() {
                    engine.complete(completion);
                }
            }
            Event::Wake | Event::Timer => {}
        }
    }
    // Interrupt running transfers: their rows say `inProgress` or `queued`, and the next start picks them up
    // again (partial downloads and multipart uploads resume).
    engine.tasks.abort_all();
    engine.flush();
    let mut runtime = inner.runtime.lock().expect("runtime lock");
    runtime.inflight.clear();
    runtime.hashes_inflight.clear();
    runtime.deletes_inflight.clear();
    runtime.running = false;
    runtime.reconciled = false;
}

struct Engine {
    inner: Arc<Inner>,
    completions: mpsc::UnboundedSender<Completion>,
    writes: Vec<NewEvent>,
    next_health: Instant,
    health_running: bool,
    offline_delay: Duration,
    last_reconcile: Option<Instant>,
    reconcile_cost: Duration,
    next_progress: Instant,
    evict_due: bool,
    tasks: tokio::task::JoinSet<()>,
}

impl Engine {
    /// One turn: reconcile if needed, start what may start, commit state, evict, report progress.
    fn turn(&mut self) {
        while self.tasks.try_join_next().is_some() {}
        // State written by completions must be in the store before a reconcile reads it back.
        self.flush();
        let now = Instant::now();
        if self.inner.dirty.load(Ordering::SeqCst) && self.reconcile_allowed(now) {
            self.inner.dirty.store(false, Ordering::SeqCst);
            let started = Instant::now();
            let result = self.reconcile();
            self.inner.runtime.lock().expect("runtime lock").engine_error =
                result.as_ref().err().map(ToString::to_string);
            if let Err(error) = result {
                tracing::warn!(target: "livestore_files::_events::reconcile", %error, "reconcile failed");
                self.emit(FileSyncEvent::SyncError {
                    error: error.to_string(),
                    context: "reconcile".to_owned(),
                });
                self.inner.dirty.store(true, Ordering::SeqCst);
            }
            self.reconcile_cost = started.elapsed();
            self.last_reconcile = Some(Instant::now());
        }
        if self.inner.remote.is_some() {
            self.maybe_check_health(now);
            self.launch();
        }
        self.flush();
        if self.evict_due {
            self.evict_due = false;
            if let Err(error) = self.evict() {
                self.emit(FileSyncEvent::SyncError {
                    error: error.to_string(),
                    context: "evict".to_owned(),
                });
            }
            self.flush();
        }
        if now >= self.next_progress {
            self.report_progress();
            self.next_progress = now + Duration::from_millis(250);
        }
    }

    /// Reconciles at most about every five times its own cost (and at least 20 ms apart), so a large table that
    /// changes constantly does not keep the loop busy.
    fn reconcile_allowed(&self, now: Instant) -> bool {
        self.last_reconcile.is_none_or(|last| now >= last + self.reconcile_gap())
    }

    /// The pause between reconciles: five times the last one's cost, at least 20 ms, and at least 200 ms while
    /// transfers run. Launching does not need a reconcile (started jobs leave the queue, failed ones return to
    /// it), so while many small transfers complete, re-deriving the queue after each batch would only burn CPU.
    fn reconcile_gap(&self) -> Duration {
        let busy = !self.inner.runtime.lock().expect("runtime lock").inflight.is_empty();
        let floor = if busy { Duration::from_millis(200) } else { Duration::from_millis(20) };
        (self.reconcile_cost * 5).max(floor)
    }

    fn next_deadline(&self) -> Instant {
        let now = Instant::now();
        let mut deadline = now + Duration::from_secs(1);
        if self.inner.remote.is_some() && !self.health_running {
            deadline = deadline.min(self.next_health);
        }
        if self.inner.dirty.load(Ordering::SeqCst)
            && let Some(last) = self.last_reconcile
        {
            deadline = deadline.min(last + self.reconcile_gap());
        }
        let runtime = self.inner.runtime.lock().expect("runtime lock");
        if !runtime.inflight.is_empty() {
            deadline = deadline.min(self.next_progress);
        }
        for failure in runtime.failures.values().chain(runtime.delete_failures.values()) {
            deadline = deadline.min(failure.next_at);
        }
        deadline.max(now + Duration::from_millis(1))
    }

    fn emit(&self, event: FileSyncEvent) {
        let _ = self.inner.events.send(event);
    }

    fn queue_write<E: livestore_client::schema::Event>(&mut self, event: &E) {
        match new_event(event) {
            Ok(event) => self.writes.push(event),
            Err(error) => {
                tracing::error!(target: "livestore_files::_events::state", %error, "cannot encode a state event")
            }
        }
        self.inner.runtime.lock().expect("runtime lock").pending_writes = self.writes.len();
    }

    fn flush(&mut self) {
        if self.writes.is_empty() {
            return;
        }
        let writes = std::mem::take(&mut self.writes);
        if let Err(error) = self.inner.store.commit_batch(writes) {
            tracing::warn!(target: "livestore_files::_events::state", %error, "could not commit transfer state");
            self.emit(FileSyncEvent::SyncError {
                error: error.to_string(),
                context: "state".to_owned(),
            });
            self.inner.dirty.store(true, Ordering::SeqCst);
        }
        self.inner.runtime.lock().expect("runtime lock").pending_writes = 0;
    }

    /// Derives the work lists from the store (see the module docs) and writes the statuses they imply.
    fn reconcile(&mut self) -> Result<(), FilesError> {
        let local_only = self.inner.remote.is_none();
        let rows: Vec<UnsettledRow> = self.inner.store.query(&Query::sql(
            "SELECT f.id, f.path, f.remoteKey, f.contentHash, f.deletedAt, \
                    s.fileId AS stateFileId, s.path AS statePath, s.localHash, s.downloadStatus, \
                    s.uploadStatus, s.lastSyncError \
             FROM files f LEFT JOIN localFileState s ON s.fileId = f.id \
             WHERE NOT ( (f.deletedAt IS NOT NULL AND s.fileId IS NULL) \
                 OR (s.fileId IS NOT NULL AND f.deletedAt IS NULL \
                     AND s.uploadStatus = 'done' AND s.downloadStatus = 'done' \
                     AND s.path = f.path AND (s.localHash = f.contentHash OR s.localHash = '') \
                     AND (f.remoteKey != '' OR ?1)) ) \
             ORDER BY f.createdAt, f.id",
            [livestore_client::SqlValue::Integer(i64::from(local_only))],
        ))?;
        let mut work = WorkLists::default();
        let mut upload_hashes = HashSet::new();
        let mut download_hashes = HashSet::new();
        let (inflight_ids, hashes_inflight): (
            HashSet<(TransferKind, String)>,
            HashSet<ContentHash>,
        ) = {
            let runtime = self.inner.runtime.lock().expect("runtime lock");
            (runtime.inflight.keys().cloned().collect(), runtime.hashes_inflight.clone())
        };
        for row in rows {
            let state = row.state();
            if row.deleted_at.is_some() {
                // Deleted (here or elsewhere): remove the local copy unless an active row shares it or a transfer
                // still reads it, then forget the state.
                if let Ok(hash) = row.content_hash.parse::<ContentHash>()
                    && !hashes_inflight.contains(&hash)
                    && active_rows_with_hash(&self.inner.store, &row.content_hash)?.is_empty()
                    && !self.inner.pinned.lock().expect("pin lock").contains_key(&hash)
                {
                    self.inner.local.remove(&hash)?;
                }
                self.queue_write(&LocalFileStateRemove { file_id: row.id.clone() });
                forget_file(&self.inner, &row.id);
                continue;
            }
            let Ok(hash) = row.content_hash.parse::<ContentHash>() else {
                let desired = LocalFileState {
                    file_id: row.id.clone(),
                    path: row.path.clone(),
                    local_hash: String::new(),
                    download_status: TransferStatus::Error.as_str().to_owned(),
                    upload_status: TransferStatus::Done.as_str().to_owned(),
                    last_sync_error: format!(
                        "contentHash {:?} is not a SHA-256 hex digest",
                        row.content_hash
                    ),
                };
                self.write_if_changed(state.as_ref(), &desired);
                continue;
            };
            let present = self.inner.local.contains(&hash);
            let keep = |current: Option<TransferStatus>, kind: TransferKind| -> TransferStatus {
                match current {
                    Some(TransferStatus::Error) => TransferStatus::Error,
                    Some(TransferStatus::InProgress)
                        if inflight_ids.contains(&(kind, row.id.clone())) =>
                    {
                        TransferStatus::InProgress
                    }
                    _ => TransferStatus::Queued,
                }
            };
            let done = TransferStatus::Done;
            let (local_hash, download, upload) = if local_only {
                if !present {
                    if state.is_some() {
                        self.queue_write(&LocalFileStateRemove { file_id: row.id.clone() });
                    }
                    continue;
                }
                (hash.to_string(), done, done)
            } else if present && row.remote_key.is_empty() {
                if upload_hashes.insert(hash) {
                    work.uploads.push_back(Job {
                        file_id: row.id.clone(),
                        hash,
                        path: row.path.clone(),
                        key: String::new(),
                    });
                }
                (
                    hash.to_string(),
                    done,
                    keep(state.as_ref().map(LocalFileState::upload), TransferKind::Upload),
                )
            } else if present {
                (hash.to_string(), done, done)
            } else if !row.remote_key.is_empty() {
                if download_hashes.insert(hash) {
                    work.downloads.push_back(Job {
                        file_id: row.id.clone(),
                        hash,
                        path: row.path.clone(),
                        key: row.remote_key.clone(),
                    });
                }
                (
                    String::new(),
                    keep(state.as_ref().map(LocalFileState::download), TransferKind::Download),
                    done,
                )
            } else {
                // Another client has the bytes and has not uploaded them yet: nothing to do here.
                work.awaiting_remote += 1;
                if state.is_some() {
                    self.queue_write(&LocalFileStateRemove { file_id: row.id.clone() });
                }
                continue;
            };
            let last_sync_error = match (download, upload) {
                (TransferStatus::Error, _) | (_, TransferStatus::Error) => {
                    state.as_ref().map(|state| state.last_sync_error.clone()).unwrap_or_default()
                }
                _ => String::new(),
            };
            let desired = LocalFileState {
                file_id: row.id.clone(),
                path: row.path.clone(),
                local_hash,
                download_status: download.as_str().to_owned(),
                upload_status: upload.as_str().to_owned(),
                last_sync_error,
            };
            self.write_if_changed(state.as_ref(), &desired);
        }
        if !local_only {
            let deletes: Vec<RemoteDelete> = self
                .inner
                .store
                .query(&Query::select(REMOTE_DELETES_TABLE).order_by("queuedAt"))?;
            work.deletes = deletes.into_iter().map(|delete| delete.key).collect();
        }
        let mut runtime = self.inner.runtime.lock().expect("runtime lock");
        let live: HashSet<&str> = work.downloads.iter().map(|job| job.file_id.as_str()).collect();
        runtime.prioritized.retain(|id| live.contains(id.as_str()));
        runtime.work = work;
        runtime.reconciled = true;
        Ok(())
    }

    fn write_if_changed(&mut self, current: Option<&LocalFileState>, desired: &LocalFileState) {
        if current != Some(desired) {
            self.queue_write(&desired.to_event());
        }
    }

    fn maybe_check_health(&mut self, now: Instant) {
        if self.health_running || now < self.next_health {
            return;
        }
        let Some(remote) = self.inner.remote.clone() else { return };
        self.health_running = true;
        let sender = self.completions.clone();
        self.tasks.spawn(async move {
            let healthy = remote.health().await;
            let _ = sender.send(Completion::Health { healthy });
        });
    }

    /// Starts queued transfers and deletes up to the concurrency limits, prioritized downloads first.
    fn launch(&mut self) {
        let now = Instant::now();
        let Some(remote) = self.inner.remote.clone() else { return };
        let mut starts: Vec<(TransferKind, Job)> = Vec::new();
        let mut delete_starts: Vec<String> = Vec::new();
        {
            let mut runtime = self.inner.runtime.lock().expect("runtime lock");
            if !runtime.online {
                return;
            }
            let runtime = &mut *runtime;
            let RuntimeState { work, inflight, hashes_inflight, failures, prioritized, .. } =
                runtime;
            let count = |kind: TransferKind| {
                inflight.keys().filter(|(inflight_kind, _)| *inflight_kind == kind).count()
            };
            let mut running = count(TransferKind::Download);
            let mut running_uploads = count(TransferKind::Upload);
            let mut try_start = |kind: TransferKind, job: &Job, running: &mut usize| -> bool {
                let id = (kind, job.file_id.clone());
                if inflight.contains_key(&id)
                    || hashes_inflight.contains(&job.hash)
                    || failures.get(&id).is_some_and(|failure| failure.next_at > now)
                {
                    return false;
                }
                let loaded = Arc::new(AtomicU64::new(0));
                let total = Arc::new(AtomicU64::new(0));
                inflight.insert(
                    id,
                    Inflight { file_id: job.file_id.clone(), hash: job.hash, loaded, total },
                );
                hashes_inflight.insert(job.hash);
                *running += 1;
                true
            };
            let download_limit = self.inner.options.max_concurrent_downloads;
            // Prioritized downloads first (few: the ones an app asked a URL for).
            for id in prioritized.iter() {
                if running >= download_limit {
                    break;
                }
                if let Some(position) = work.downloads.iter().position(|job| &job.file_id == id)
                    && try_start(TransferKind::Download, &work.downloads[position], &mut running)
                {
                    let job = work.downloads.remove(position).expect("the position was just found");
                    starts.push((TransferKind::Download, job));
                }
            }
            // Then the queues front to back. A job that cannot start now (same content moving, backoff, already
            // running) goes to the back; each job is looked at once per turn, so the cost is bounded by what
            // starts plus what waits.
            for (kind, queue, limit, running) in [
                (TransferKind::Download, &mut work.downloads, download_limit, &mut running),
                (
                    TransferKind::Upload,
                    &mut work.uploads,
                    self.inner.options.max_concurrent_uploads,
                    &mut running_uploads,
                ),
            ] {
                let mut looked_at = 0;
                let waiting = queue.len();
                while *running < limit && looked_at < waiting {
                    looked_at += 1;
                    let Some(job) = queue.pop_front() else { break };
                    if try_start(kind, &job, running) {
                        starts.push((kind, job));
                    } else {
                        queue.push_back(job);
                    }
                }
            }
            for key in runtime.work.deletes.clone() {
                if runtime.deletes_inflight.len() >= DELETE_CONCURRENCY {
                    break;
                }
                if runtime.deletes_inflight.contains(&key)
                    || runtime
                        .delete_failures
                        .get(&key)
                        .is_some_and(|failure| failure.next_at > now)
                {
                    continue;
                }
                runtime.deletes_inflight.insert(key.clone());
                delete_starts.push(key);
            }
        }
        tracing::debug!(target: "livestore_files::_events::launch", starts = starts.len(), deletes = delete_starts.len(), "launch");
        for (kind, job) in starts {
            let (loaded, total) = {
                let runtime = self.inner.runtime.lock().expect("runtime lock");
                let inflight = &runtime.inflight[&(kind, job.file_id.clone())];
                (Arc::clone(&inflight.loaded), Arc::clone(&inflight.total))
            };
            let ctx = TransferContext {
                remote: remote.clone(),
                local: self.inner.local.clone(),
                store_id: self.inner.store_id.clone(),
                multipart_threshold: self.inner.options.multipart_threshold,
                part_size: self.inner.options.part_size,
                loaded,
                total,
            };
            let sender = self.completions.clone();
            let state = LocalFileState {
                file_id: job.file_id.clone(),
                path: job.path.clone(),
                local_hash: if kind == TransferKind::Upload {
                    job.hash.to_string()
                } else {
                    String::new()
                },
                download_status: if kind == TransferKind::Download { "inProgress" } else { "done" }
                    .to_owned(),
                upload_status: if kind == TransferKind::Upload { "inProgress" } else { "done" }
                    .to_owned(),
                last_sync_error: self.last_error(kind, &job.file_id),
            };
            self.queue_write(&state.to_event());
            match kind {
                TransferKind::Upload => {
                    self.emit(FileSyncEvent::UploadStart { file_id: job.file_id.clone() });
                    let mime = self.inner.local.mime_type(&job.hash);
                    self.tasks.spawn(async move {
                        let result = transfer::upload(&ctx, job.hash, &mime).await;
                        let _ = sender.send(Completion::Upload { job, result });
                    });
                }
                TransferKind::Download => {
                    self.emit(FileSyncEvent::DownloadStart { file_id: job.file_id.clone() });
                    self.tasks.spawn(async move {
                        let result = transfer::download(&ctx, job.hash, &job.key).await;
                        let _ = sender.send(Completion::Download { job, result });
                    });
                }
            }
        }
        for key in delete_starts {
            let inner = Arc::clone(&self.inner);
            let remote = remote.clone();
            let sender = self.completions.clone();
            self.tasks.spawn(async move {
                let result = delete_remote(&inner, &remote, &key).await;
                let _ = sender.send(Completion::Delete { key, result });
            });
        }
    }

    fn last_error(&self, kind: TransferKind, file_id: &str) -> String {
        let runtime = self.inner.runtime.lock().expect("runtime lock");
        runtime
            .failures
            .get(&(kind, file_id.to_owned()))
            .map(|failure| failure.error.clone())
            .unwrap_or_default()
    }

    fn complete(&mut self, completion: Completion) {
        match completion {
            Completion::Health { healthy } => self.health_answered(healthy),
            Completion::Upload { job, result } => {
                self.finish_inflight(TransferKind::Upload, &job);
                match result {
                    Ok(uploaded) => {
                        if let Err(error) = self.upload_succeeded(&job, &uploaded) {
                            self.transfer_failed(TransferKind::Upload, &job, &error);
                        } else {
                            self.emit(FileSyncEvent::UploadComplete {
                                file_id: job.file_id.clone(),
                                skipped: uploaded.skipped,
                            });
                        }
                    }
                    Err(error) => self.transfer_failed(TransferKind::Upload, &job, &error),
                }
            }
            Completion::Download { job, result } => {
                self.finish_inflight(TransferKind::Download, &job);
                match result {
                    Ok(()) => {
                        self.inner
                            .runtime
                            .lock()
                            .expect("runtime lock")
                            .failures
                            .remove(&(TransferKind::Download, job.file_id.clone()));
                        if let Err(error) = self.download_succeeded(&job) {
                            self.transfer_failed(TransferKind::Download, &job, &error);
                        } else {
                            self.emit(FileSyncEvent::DownloadComplete {
                                file_id: job.file_id.clone(),
                            });
                        }
                        self.evict_due = self.inner.options.local_byte_budget.is_some();
                    }
                    Err(error) => self.transfer_failed(TransferKind::Download, &job, &error),
                }
            }
            Completion::Delete { key, result } => {
                let mut runtime = self.inner.runtime.lock().expect("runtime lock");
                runtime.deletes_inflight.remove(&key);
                match result {
                    Ok(()) => {
                        runtime.delete_failures.remove(&key);
                        runtime.work.deletes.retain(|queued| queued != &key);
                        drop(runtime);
                        self.queue_write(&FileRemoteDeleteDone { key: key.clone() });
                        self.emit(FileSyncEvent::RemoteDeleteComplete { key });
                    }
                    Err(error) => {
                        let attempts =
                            runtime.delete_failures.get(&key).map_or(0, |failure| failure.attempts)
                                + 1;
                        let delay = backoff(&self.inner.options, attempts);
                        runtime.delete_failures.insert(
                            key.clone(),
                            Failure {
                                attempts,
                                next_at: Instant::now() + delay,
                                error: error.to_string(),
                            },
                        );
                        drop(runtime);
                        self.check_connectivity(&error);
                        self.emit(FileSyncEvent::RemoteDeleteError {
                            key,
                            error: error.to_string(),
                        });
                    }
                }
            }
        }
        self.inner.dirty.store(true, Ordering::SeqCst);
    }

    fn finish_inflight(&mut self, kind: TransferKind, job: &Job) {
        let mut runtime = self.inner.runtime.lock().expect("runtime lock");
        runtime.inflight.remove(&(kind, job.file_id.clone()));
        runtime.hashes_inflight.remove(&job.hash);
    }

    /// Records `remoteKey` on every active row with this content that lacks it (one batch), or queues the
    /// object's deletion if every such row was deleted meanwhile.
    fn upload_succeeded(&mut self, job: &Job, uploaded: &Uploaded) -> Result<(), FilesError> {
        self.inner
            .runtime
            .lock()
            .expect("runtime lock")
            .failures
            .remove(&(TransferKind::Upload, job.file_id.clone()));
        let hash = job.hash.to_string();
        let rows = active_rows_with_hash(&self.inner.store, &hash)?;
        let now = now_ms();
        let mut used = false;
        for row in rows {
            if remote_key_for_path(&row.path) != uploaded.key
                && row.path != stored_path(&self.inner.store_id, &job.hash)
            {
                continue;
            }
            used = true;
            if row.remote_key == uploaded.key {
                continue;
            }
            self.queue_write(&FileUpdated {
                id: row.id.clone(),
                path: row.path.clone(),
                remote_key: uploaded.key.clone(),
                content_hash: hash.clone(),
                updated_at: now,
                metadata_json: Some(row.metadata_json.clone()),
            });
            self.queue_write(
                &LocalFileState {
                    file_id: row.id.clone(),
                    path: row.path.clone(),
                    local_hash: hash.clone(),
                    download_status: "done".to_owned(),
                    upload_status: "done".to_owned(),
                    last_sync_error: String::new(),
                }
                .to_event(),
            );
        }
        if !used && !key_referenced(&self.inner.store, &uploaded.key, None)? {
            // Deleted while it was uploading: do not leave an orphan object behind.
            self.queue_write(&crate::schema::FileRemoteDeleteQueued {
                key: uploaded.key.clone(),
                queued_at: now,
            });
        }
        Ok(())
    }

    fn download_succeeded(&mut self, job: &Job) -> Result<(), FilesError> {
        for row in active_rows_with_hash(&self.inner.store, &job.hash.to_string())? {
            if row.remote_key.is_empty() {
                continue;
            }
            self.queue_write(
                &LocalFileState {
                    file_id: row.id.clone(),
                    path: row.path.clone(),
                    local_hash: job.hash.to_string(),
                    download_status: "done".to_owned(),
                    upload_status: "done".to_owned(),
                    last_sync_error: String::new(),
                }
                .to_event(),
            );
        }
        Ok(())
    }

    fn transfer_failed(&mut self, kind: TransferKind, job: &Job, error: &FilesError) {
        let message = error.to_string();
        let attempts = {
            let mut runtime = self.inner.runtime.lock().expect("runtime lock");
            // Back in the queue: it is retried after its backoff (or picked up again by the next reconcile).
            match kind {
                TransferKind::Upload => runtime.work.uploads.push_back(job.clone()),
                TransferKind::Download => runtime.work.downloads.push_back(job.clone()),
            }
            let id = (kind, job.file_id.clone());
            let attempts = runtime.failures.get(&id).map_or(0, |failure| failure.attempts) + 1;
            let delay = backoff(&self.inner.options, attempts);
            runtime.failures.insert(
                id,
                Failure { attempts, next_at: Instant::now() + delay, error: message.clone() },
            );
            attempts
        };
        tracing::info!(target: "livestore_files::_events::transfer", ?kind, file_id = %job.file_id, attempts, error = %message, "transfer failed; will retry");
        let (download, upload, local_hash) = match kind {
            TransferKind::Upload => ("done", "error", job.hash.to_string()),
            TransferKind::Download => ("error", "done", String::new()),
        };
        // Only rows that still exist get a state; a deleted row's state is removed by the next reconcile.
        if matches!(crate::sync::row(&self.inner.store, &job.file_id), Ok(Some(row)) if row.is_active())
        {
            self.queue_write(
                &LocalFileState {
                    file_id: job.file_id.clone(),
                    path: job.path.clone(),
                    local_hash,
                    download_status: download.to_owned(),
                    upload_status: upload.to_owned(),
                    last_sync_error: message.clone(),
                }
                .to_event(),
            );
        }
        self.emit(match kind {
            TransferKind::Upload => {
                FileSyncEvent::UploadError { file_id: job.file_id.clone(), error: message }
            }
            TransferKind::Download => {
                FileSyncEvent::DownloadError { file_id: job.file_id.clone(), error: message }
            }
        });
        self.check_connectivity(error);
    }

    /// A network-looking failure triggers an immediate health check (which may flip the engine offline).
    fn check_connectivity(&mut self, error: &FilesError) {
        if matches!(error, FilesError::Remote(remote) if remote.is_network()) {
            self.next_health = Instant::now();
        }
    }

    fn health_answered(&mut self, healthy: bool) {
        self.health_running = false;
        let interval = self.inner.options.health_check_interval;
        let was_online = {
            let mut guard = self.inner.runtime.lock().expect("runtime lock");
            let runtime = &mut *guard;
            let was_online = runtime.online;
            runtime.online = healthy;
            if healthy {
                runtime.offline_reason.clear();
                if !was_online {
                    // Back online: every waiting retry runs now.
                    let now = Instant::now();
                    for failure in
                        runtime.failures.values_mut().chain(runtime.delete_failures.values_mut())
                    {
                        failure.next_at = now;
                    }
                }
            } else {
                runtime.offline_reason = "the signer's health check failed".to_owned();
            }
            was_online
        };
        if healthy {
            self.offline_delay = Duration::from_millis(500);
            self.next_health = Instant::now() + interval;
            if !was_online {
                tracing::info!(target: "livestore_files::_events::online", "signer reachable again; resuming transfers");
                self.emit(FileSyncEvent::Online);
            }
        } else {
            self.next_health = Instant::now() + self.offline_delay;
            self.offline_delay = (self.offline_delay * 2).min(interval);
            if was_online {
                tracing::info!(target: "livestore_files::_events::online", "signer unreachable; pausing transfers");
                self.emit(FileSyncEvent::Offline {
                    reason: "the signer's health check failed".to_owned(),
                });
            }
        }
    }

    fn report_progress(&self) {
        if self.inner.events.receiver_count() == 0 {
            return;
        }
        let progress: Vec<TransferProgress> =
            transfers(&self.inner.runtime.lock().expect("runtime lock"));
        for progress in progress {
            self.emit(match progress.kind {
                TransferKind::Upload => FileSyncEvent::UploadProgress { progress },
                TransferKind::Download => FileSyncEvent::DownloadProgress { progress },
            });
        }
    }

    /// Removes least recently used local copies until the budget holds. Only content that every active row has
    /// uploaded (non-empty `remoteKey`), or that no active row uses, is evicted; pinned or moving content never.
    fn evict(&mut self) -> Result<(), FilesError> {
        let Some(budget) = self.inner.options.local_byte_budget else { return Ok(()) };
        let mut inventory = self.inner.local.inventory();
        let mut used: u64 = inventory.iter().map(|(_, size, _)| size).sum();
        if used <= budget {
            return Ok(());
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct HashUse {
            content_hash: String,
            not_uploaded: i64,
        }
        let uses: Vec<HashUse> = self.inner.store.query(&Query::sql(
            "SELECT contentHash, sum(remoteKey = '') AS notUploaded FROM files WHERE deletedAt IS NULL GROUP BY contentHash",
            [],
        ))?;
        let uses: HashMap<String, i64> =
            uses.into_iter().map(|usage| (usage.content_hash, usage.not_uploaded)).collect();
        inventory.sort_by_key(|(_, _, modified)| *modified);
        let hashes_inflight =
            self.inner.runtime.lock().expect("runtime lock").hashes_inflight.clone();
        for (hash, size, modified) in inventory {
            if used <= budget {
                break;
            }
            let hex = hash.to_string();
            let safe = match uses.get(&hex) {
                Some(not_uploaded) => *not_uploaded == 0,
                // Unreferenced content: only when it is not brand new (a save may be about to commit its row).
                None => modified.elapsed().unwrap_or_default() > Duration::from_secs(60),
            };
            if !safe
                || hashes_inflight.contains(&hash)
                || self.inner.pinned.lock().expect("pin lock").contains_key(&hash)
            {
                continue;
            }
            self.inner.local.remove(&hash)?;
            used = used.saturating_sub(size);
            for row in active_rows_with_hash(&self.inner.store, &hex)? {
                self.queue_write(
                    &LocalFileState {
                        file_id: row.id.clone(),
                        path: row.path.clone(),
                        local_hash: String::new(),
                        download_status: "done".to_owned(),
                        upload_status: "done".to_owned(),
                        last_sync_error: String::new(),
                    }
                    .to_event(),
                );
            }
            tracing::info!(target: "livestore_files::_events::evict", hash = %hex, bytes = size, "evicted a local copy");
            self.emit(FileSyncEvent::Evicted { content_hash: hex, bytes: size });
        }
        Ok(())
    }
}

/// The columns of one unsettled row (see [`Engine::reconcile`]).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UnsettledRow {
    id: String,
    path: String,
    remote_key: String,
    content_hash: String,
    deleted_at: Option<i64>,
    state_file_id: Option<String>,
    state_path: Option<String>,
    local_hash: Option<String>,
    download_status: Option<String>,
    upload_status: Option<String>,
    last_sync_error: Option<String>,
}

impl UnsettledRow {
    fn state(&self) -> Option<LocalFileState> {
        Some(LocalFileState {
            file_id: self.state_file_id.clone()?,
            path: self.state_path.clone().unwrap_or_default(),
            local_hash: self.local_hash.clone().unwrap_or_default(),
            download_status: self.download_status.clone().unwrap_or_default(),
            upload_status: self.upload_status.clone().unwrap_or_default(),
            last_sync_error: self.last_sync_error.clone().unwrap_or_default(),
        })
    }
}

/// Deletes a remote object unless an active row uses it again (identical content saved meanwhile).
async fn delete_remote(
    inner: &Inner,
    remote: &crate::remote::SignerClient,
    key: &str,
) -> Result<(), FilesError> {
    if key_referenced(&inner.store, key, None)? {
        return Ok(());
    }
    remote.delete(key).await?;
    Ok(())
}

/// Capped exponential backoff with ±20 % jitter.
fn backoff(options: &crate::sync::FileSyncOptions, attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(20);
    let delay =
        options.retry_base_delay.saturating_mul(1u32 << exponent).min(options.retry_max_delay);
    delay.mul_f64(rand::random_range(0.8..1.2))
}

fn transfers(runtime: &RuntimeState) -> Vec<TransferProgress> {
    let mut transfers: Vec<TransferProgress> = runtime
        .inflight
        .iter()
        .map(|((kind, _), inflight)| {
            let total = inflight.total.load(Ordering::Relaxed);
            let loaded = inflight.loaded.load(Ordering::Relaxed);
            TransferProgress {
                kind: *kind,
                file_id: inflight.file_id.clone(),
                content_hash: inflight.hash.to_string(),
                loaded: if total > 0 { loaded.min(total) } else { loaded },
                total,
            }
        })
        .collect();
    transfers.sort_by(|left, right| (left.kind, &left.file_id).cmp(&(right.kind, &right.file_id)));
    transfers
}

/// Forgets in-memory scheduling state of a file (after a delete).
pub(crate) fn forget_file(inner: &Inner, file_id: &str) {
    let mut runtime = inner.runtime.lock().expect("runtime lock");
    runtime.prioritized.retain(|id| id != file_id);
    runtime.failures.remove(&(TransferKind::Upload, file_id.to_owned()));
    runtime.failures.remove(&(TransferKind::Download, file_id.to_owned()));
}

/// Puts a download at the front of the queue.
pub(crate) fn prioritize(inner: &Inner, file_id: &str) {
    let mut runtime = inner.runtime.lock().expect("runtime lock");
    runtime.prioritized.retain(|id| id != file_id);
    runtime.prioritized.push_front(file_id.to_owned());
    runtime.failures.remove(&(TransferKind::Download, file_id.to_owned()));
}

/// Makes every failed transfer eligible now.
pub(crate) fn retry_now(inner: &Inner) {
    let mut runtime = inner.runtime.lock().expect("runtime lock");
    let now = Instant::now();
    let runtime = &mut *runtime;
    for failure in runtime.failures.values_mut().chain(runtime.delete_failures.values_mut()) {
        failure.next_at = now;
    }
}

/// Downloads one file right away, outside the queue (for `get_file`), sharing the per-content exclusivity with
/// the engine: if the engine is already downloading the same content, waits for it instead.
pub(crate) async fn download_now(
    inner: &Arc<Inner>,
    row: &FileRecord,
    hash: ContentHash,
) -> Result<(), FilesError> {
    let Some(remote) = inner.remote.clone() else { return Err(FilesError::LocalOnly) };
    loop {
        {
            let mut runtime = inner.runtime.lock().expect("runtime lock");
            if !runtime.hashes_inflight.contains(&hash) {
                runtime.hashes_inflight.insert(hash);
                break;
            }
        }
        if inner.local.contains(&hash) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ctx = TransferContext {
        remote,
        local: inner.local.clone(),
        store_id: inner.store_id.clone(),
        multipart_threshold: inner.options.multipart_threshold,
        part_size: inner.options.part_size,
        loaded: Arc::new(AtomicU64::new(0)),
        total: Arc::new(AtomicU64::new(0)),
    };
    let result = transfer::download(&ctx, hash, &row.remote_key).await;
    inner.runtime.lock().expect("runtime lock").hashes_inflight.remove(&hash);
    inner.dirty.store(true, Ordering::SeqCst);
    inner.wake.notify_one();
    result
}

/// Whether nothing is left to do.
pub(crate) fn is_idle(inner: &Inner) -> bool {
    if inner.dirty.load(Ordering::SeqCst) {
        return false;
    }
    let runtime = inner.runtime.lock().expect("runtime lock");
    runtime.reconciled
        && runtime.engine_error.is_none()
        && runtime.pending_writes == 0
        && runtime.inflight.is_empty()
        && runtime.deletes_inflight.is_empty()
        && runtime.work.uploads.is_empty()
        && runtime.work.downloads.is_empty()
        && runtime.work.deletes.is_empty()
}

/// The aggregated status.
pub(crate) fn status(inner: &Inner) -> Result<SyncStatus, FilesError> {
    let states: Vec<LocalFileState> = inner.store.query(&Query::sql(
        "SELECT s.* FROM localFileState s JOIN files f ON f.id = s.fileId WHERE f.deletedAt IS NULL",
        [],
    ))?;
    let deletes: Vec<RemoteDelete> = inner.store.query(&Query::select(REMOTE_DELETES_TABLE))?;
    let local_only = inner.remote.is_none();
    let mut status =
        SyncStatus { local_only, pending_remote_deletes: deletes.len(), ..SyncStatus::default() };
    let runtime = inner.runtime.lock().expect("runtime lock");
    status.online = local_only || runtime.online;
    status.transfers = transfers(&runtime);
    status.bytes_in_flight = status.transfers.iter().map(|transfer| transfer.loaded).sum();
    status.awaiting_remote_count = runtime.work.awaiting_remote;
    let mut errors: Vec<FileError> = Vec::new();
    for state in &states {
        let upload = state.upload();
        let download = state.download();
        match upload {
            TransferStatus::InProgress => status.uploading_count += 1,
            TransferStatus::Queued | TransferStatus::Pending | TransferStatus::Error => {
                status.queued_upload_count += 1
            }
            TransferStatus::Done => {}
        }
        match download {
            TransferStatus::InProgress => status.downloading_count += 1,
            TransferStatus::Queued | TransferStatus::Pending | TransferStatus::Error => {
                status.queued_download_count += 1
            }
            TransferStatus::Done => {}
        }
        if upload.is_pending_work()
            && let Ok(hash) = state.local_hash.parse::<ContentHash>()
        {
            status.upload_bytes_pending += inner.local.size(&hash).unwrap_or(0);
        }
        if (upload == TransferStatus::Error || download == TransferStatus::Error)
            && !state.last_sync_error.is_empty()
        {
            let kind = if upload == TransferStatus::Error {
                TransferKind::Upload
            } else {
                TransferKind::Download
            };
            let attempts = runtime
                .failures
                .get(&(kind, state.file_id.clone()))
                .map_or(1, |failure| failure.attempts);
            errors.push(FileError {
                file_id: state.file_id.clone(),
                error: state.last_sync_error.clone(),
                attempts,
            });
        }
    }
    if let Some(error) = &runtime.engine_error {
        errors.push(FileError {
            file_id: String::new(),
            error: format!("reconcile: {error}"),
            attempts: 1,
        });
    }
    for (key, failure) in &runtime.delete_failures {
        errors.push(FileError {
            file_id: key.clone(),
            error: failure.error.clone(),
            attempts: failure.attempts,
        });
    }
    drop(runtime);
    status.error_count = errors.len();
    status.errors = errors;
    status.is_syncing = status.uploading_count + status.downloading_count > 0;
    status.has_pending = status.uploading_count
        + status.downloading_count
        + status.queued_upload_count
        + status.queued_download_count
        + status.pending_remote_deletes
        > 0;
    status.local_bytes = inner.local.inventory().iter().map(|(_, size, _)| size).sum();
    Ok(status)
}
