//! Status for callers: the aggregated [`SyncStatus`], running transfers with progress, and whether the engine is
//! idle. Read-only: nothing here changes state.

use std::sync::atomic::Ordering;

use livestore_client::schema::Query;

use super::RuntimeState;
use crate::error::FilesError;
use crate::layout::ContentHash;
use crate::schema::{LocalFileState, REMOTE_DELETES_TABLE, RemoteDelete, TransferStatus};
use crate::status::{FileError, SyncStatus, TransferKind, TransferProgress};
use crate::sync::Inner;

pub(super) fn transfers(runtime: &RuntimeState) -> Vec<TransferProgress> {
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

/// Whether nothing is left to do.
pub(crate) fn is_idle(inner: &Inner) -> bool {
    if inner.dirty.load(Ordering::SeqCst)
        || !inner.changed_files.lock().expect("changed files lock").is_empty()
    {
        return false;
    }
    let runtime = inner.runtime.lock().expect("runtime lock");
    runtime.reconciled
        && !runtime.reconciling
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
    status.awaiting_remote_count = runtime.work.awaiting_remote.len();
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
