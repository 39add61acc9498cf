//! Deriving the work queue from the store (reconcile) and starting what may start (launch).
//!
//! The queue is never stored: a reconcile reads the rows that are not settled and turns them into upload,
//! download and delete lists plus the `localFileState` each row should show; launch starts jobs from those lists
//! up to the concurrency limits. Completions and failures are the parent module's business.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use livestore_client::schema::Query;
use serde::Deserialize;

use super::{
    Completion, DELETE_CONCURRENCY, Engine, Inflight, Job, RuntimeState, WorkLists, delete_remote,
    forget_file,
};
use crate::error::FilesError;
use crate::layout::ContentHash;
use crate::schema::{
    LocalFileState, LocalFileStateRemove, REMOTE_DELETES_TABLE, RemoteDelete, TransferStatus,
};
use crate::status::{FileSyncEvent, TransferKind};
use crate::sync::active_rows_with_hash;
use crate::transfer::{self, TransferContext};

impl Engine {
    /// Derives the work lists from the store (see the module docs) and writes the statuses they imply.
    pub(super) fn reconcile(&mut self) -> Result<(), FilesError> {
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

    /// Starts queued transfers and deletes up to the concurrency limits, prioritized downloads first.
    pub(super) fn launch(&mut self) {
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
