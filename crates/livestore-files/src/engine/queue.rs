//! Deriving the work queue from the store (reconcile).
//!
//! The queue is never stored: a reconcile reads the rows that are not settled and turns them into upload,
//! download and delete lists plus the `localFileState` each row should show. A full reconcile reads every
//! unsettled row and replaces the lists; it runs at start and after commits the engine did not make itself
//! (pulled events, other writers). A local operation (`save_file`, `update_file`, `delete_file`, ...) names the
//! rows it changed, and only those are read again and merged into the lists, so saving a file while thousands
//! wait costs one indexed lookup, not a scan. Starting jobs is `launch`'s business, completions the parent's.

use std::collections::HashSet;

use livestore_client::SqlValue;
use livestore_client::schema::Query;
use serde::Deserialize;

use super::{Engine, Job, WorkLists, forget_file};
use crate::error::FilesError;
use crate::layout::ContentHash;
use crate::local::now_ms;
use crate::schema::{
    FileRemoteDeleteQueued, LocalFileState, LocalFileStateRemove, REMOTE_DELETES_TABLE,
    RemoteDelete, TransferStatus,
};
use crate::status::TransferKind;
use crate::sync::{active_rows_with_hash, key_referenced};

/// Ids per query of a partial reconcile (SQLite's default limit on parameters is far above).
const IDS_PER_QUERY: usize = 500;

/// Rows that are not settled. The settled case, done/done with matching paths and hashes, is excluded in SQL, so
/// the steady state costs one indexed scan.
const UNSETTLED_ROWS: &str = "SELECT f.id, f.path, f.remoteKey, f.contentHash, f.deletedAt, \
        s.fileId AS stateFileId, s.path AS statePath, s.localHash, s.downloadStatus, \
        s.uploadStatus, s.lastSyncError \
    FROM files f LEFT JOIN localFileState s ON s.fileId = f.id \
    WHERE NOT ( (f.deletedAt IS NOT NULL AND s.fileId IS NULL) \
        OR (s.fileId IS NOT NULL AND f.deletedAt IS NULL \
            AND s.uploadStatus = 'done' AND s.downloadStatus = 'done' \
            AND s.path = f.path AND (s.localHash = f.contentHash OR s.localHash = '') \
            AND (f.remoteKey != '' OR ?1)) )";

impl Engine {
    /// Derives the work lists from the store (see the module docs) and writes the statuses they imply: from every
    /// row, or (`only`) from these rows, merged into the current lists.
    pub(super) fn reconcile(&mut self, only: Option<&HashSet<String>>) -> Result<(), FilesError> {
        let local_only = self.inner.remote.is_none();
        let local_only_param = SqlValue::Integer(i64::from(local_only));
        let rows: Vec<UnsettledRow> = match only {
            None => self.inner.store.query(&Query::sql(
                format!("{UNSETTLED_ROWS} ORDER BY f.createdAt, f.id"),
                [local_only_param],
            ))?,
            Some(ids) => {
                let ids: Vec<&String> = ids.iter().collect();
                let mut rows = Vec::new();
                for chunk in ids.chunks(IDS_PER_QUERY) {
                    let placeholders: Vec<String> =
                        (0..chunk.len()).map(|index| format!("?{}", index + 2)).collect();
                    let mut params = vec![local_only_param.clone()];
                    params.extend(chunk.iter().map(|id| SqlValue::Text((*id).clone())));
                    rows.extend(self.inner.store.query::<UnsettledRow>(&Query::sql(
                        format!(
                            "{UNSETTLED_ROWS} AND f.id IN ({}) ORDER BY f.createdAt, f.id",
                            placeholders.join(", ")
                        ),
                        params,
                    ))?);
                }
                rows
            }
        };
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
        let mut queued_deletes = Vec::new();
        for row in rows {
            let state = row.state();
            if row.deleted_at.is_some() {
                // Deleted elsewhere, and this device held the file settled: queue the remote delete too (it checks
                // references again when it runs, and deleting a missing object succeeds). The deleting device
                // queues one only if it knew the row's `remoteKey`; when its delete raced the upload's
                // `v1.FileUpdated`, it did not, and without this the object would be left behind for good.
                if let Some(state) = &state
                    && state.upload_status == TransferStatus::Done.as_str()
                    && !row.remote_key.is_empty()
                    && self.inner.remote.is_some()
                    && !key_referenced(&self.inner.store, &row.remote_key, None)?
                {
                    self.queue_write(&FileRemoteDeleteQueued {
                        key: row.remote_key.clone(),
                        queued_at: now_ms(),
                    });
                    // The write is committed with the next flush; the work list needs it now.
                    queued_deletes.push(row.remote_key.clone());
                }
                // Remove the local copy unless an active row shares it or a transfer still reads it, then forget
                // the state.
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
                work.awaiting_remote.insert(row.id.clone());
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
            for key in queued_deletes {
                if !work.deletes.contains(&key) {
                    work.deletes.push(key);
                }
            }
        }
        let mut runtime = self.inner.runtime.lock().expect("runtime lock");
        let runtime = &mut *runtime;
        // A download asked for by `prioritize_download` stays queued while its bytes are not here, even when its
        // row looks settled (an evicted file is done/done without a local hash).
        let derived: HashSet<String> =
            work.downloads.iter().map(|job| job.file_id.clone()).collect();
        let prioritized = &runtime.prioritized;
        let asked_for = |job: &Job| {
            prioritized.contains(&job.file_id)
                && !derived.contains(&job.file_id)
                && !self.inner.local.contains(&job.hash)
        };
        if let Some(ids) = only {
            // Merge: the named rows' old entries go, their new ones join at the back.
            let current = &mut runtime.work;
            current.uploads.retain(|job| !ids.contains(&job.file_id));
            current.downloads.retain(|job| !ids.contains(&job.file_id) || asked_for(job));
            current.awaiting_remote.retain(|id| !ids.contains(id));
            current.uploads.extend(work.uploads);
            current.downloads.extend(work.downloads);
            current.awaiting_remote.extend(work.awaiting_remote);
            current.deletes = work.deletes;
        } else {
            let kept: Vec<Job> =
                runtime.work.downloads.drain(..).filter(|job| asked_for(job)).collect();
            runtime.work = work;
            runtime.work.downloads.extend(kept);
            runtime.reconciled = true;
        }
        let live: HashSet<&str> =
            runtime.work.downloads.iter().map(|job| job.file_id.as_str()).collect();
        runtime.prioritized.retain(|id| live.contains(id.as_str()));
        Ok(())
    }

    fn write_if_changed(&mut self, current: Option<&LocalFileState>, desired: &LocalFileState) {
        if current != Some(desired) {
            self.queue_write(&desired.to_event());
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
