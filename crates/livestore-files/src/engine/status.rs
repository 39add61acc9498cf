//! What callers see: the [`Snapshot`] the actor publishes after every turn (so status queries never wait for the
//! engine), the aggregated [`SyncStatus`] built from it and the tables, and running transfers with progress.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use livestore_client::schema::Query;

use super::Engine;
use crate::context::Context;
use crate::error::FilesError;
use crate::layout::ContentHash;
use crate::plan::{Failure, Inflight, TransferId};
use crate::schema::{LocalFileState, REMOTE_DELETES_TABLE, RemoteDelete, TransferStatus};
use crate::status::{FileError, SyncStatus, TransferKind, TransferProgress};

/// The engine's state as status queries need it, published on a `watch` channel.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// Whether the signer answered its last health check.
    pub(crate) online: bool,
    /// Running transfers; the counters are live.
    pub(crate) transfers: BTreeMap<TransferId, Inflight>,
    /// Failures in a row of each failed transfer.
    pub(crate) attempts: BTreeMap<TransferId, u32>,
    pub(crate) delete_failures: BTreeMap<String, Failure>,
    pub(crate) awaiting_remote_count: usize,
    /// Why the last reconcile failed, if it did.
    pub(crate) engine_error: Option<String>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            online: true,
            transfers: BTreeMap::new(),
            attempts: BTreeMap::new(),
            delete_failures: BTreeMap::new(),
            awaiting_remote_count: 0,
            engine_error: None,
        }
    }
}

/// While transfers run, the published list of them is refreshed at most this often (the progress counters in it
/// are live anyway). Copying it after every completion cost several percent of small-file throughput; the table
/// statuses that `sync_status` counts are themselves committed within the engine's flush delay.
const TRANSFERS_REFRESH: std::time::Duration = std::time::Duration::from_millis(50);

impl Engine {
    /// Publishes what status queries see, when it changed. The list of running transfers is exact whenever it
    /// becomes empty or non-empty, and otherwise refreshed every [`TRANSFERS_REFRESH`].
    pub(super) fn publish(&mut self) {
        let schedule = &self.state.schedule;
        let now = std::time::Instant::now();
        let transfers_due = now >= self.transfers_published_at + TRANSFERS_REFRESH;
        let mut transfers_published = false;
        self.snapshot.send_if_modified(|snapshot| {
            let mut changed = false;
            let transfers_changed = snapshot.transfers.is_empty() != schedule.running.is_empty()
                || (transfers_due && !snapshot.transfers.keys().eq(schedule.running.keys()));
            if transfers_changed {
                snapshot.transfers = schedule.running.clone();
                transfers_published = true;
                changed = true;
            }
            if snapshot.online != self.state.online {
                snapshot.online = self.state.online;
                changed = true;
            }
            if snapshot.awaiting_remote_count != self.state.work.awaiting_remote.len() {
                snapshot.awaiting_remote_count = self.state.work.awaiting_remote.len();
                changed = true;
            }
            if snapshot.engine_error != self.state.engine_error {
                snapshot.engine_error = self.state.engine_error.clone();
                changed = true;
            }
            let attempts = schedule.failures.iter().map(|(id, failure)| (id, &failure.attempts));
            if !snapshot.attempts.iter().eq(attempts) {
                snapshot.attempts = schedule
                    .failures
                    .iter()
                    .map(|(id, failure)| (id.clone(), failure.attempts))
                    .collect();
                changed = true;
            }
            if snapshot.delete_failures != schedule.delete_failures {
                snapshot.delete_failures = schedule.delete_failures.clone();
                changed = true;
            }
            changed
        });
        if transfers_published {
            self.transfers_published_at = now;
        }
    }
}

/// Running transfers with their progress, by kind and file id.
pub(super) fn transfers(running: &BTreeMap<TransferId, Inflight>) -> Vec<TransferProgress> {
    running
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
        .collect()
}

/// The aggregated status, from the tables and the engine's last snapshot.
pub(crate) fn status(ctx: &Context, snapshot: &Snapshot) -> Result<SyncStatus, FilesError> {
    let states: Vec<LocalFileState> = ctx.store.query(&Query::sql(
        "SELECT s.* FROM localFileState s JOIN files f ON f.id = s.fileId WHERE f.deletedAt IS NULL",
        [],
    ))?;
    let deletes: Vec<RemoteDelete> = ctx.store.query(&Query::select(REMOTE_DELETES_TABLE))?;
    let local_only = ctx.remote.is_none();
    let mut status =
        SyncStatus { local_only, pending_remote_deletes: deletes.len(), ..SyncStatus::default() };
    status.online = local_only || snapshot.online;
    status.transfers = transfers(&snapshot.transfers);
    status.bytes_in_flight = status.transfers.iter().map(|transfer| transfer.loaded).sum();
    status.awaiting_remote_count = snapshot.awaiting_remote_count;
    let mut errors: Vec<FileError> = Vec::new();
    for state in &states {
        let upload = state.upload();
        let download = state.download();
        if *upload == TransferStatus::InProgress {
            status.uploading_count += 1;
        } else if upload.is_pending_work() {
            status.queued_upload_count += 1;
        }
        if *download == TransferStatus::InProgress {
            status.downloading_count += 1;
        } else if download.is_pending_work() {
            status.queued_download_count += 1;
        }
        if upload.is_pending_work()
            && let Ok(hash) = state.local_hash.parse::<ContentHash>()
        {
            status.upload_bytes_pending += ctx.local.size(&hash).unwrap_or(0);
        }
        if (*upload == TransferStatus::Error || *download == TransferStatus::Error)
            && !state.last_sync_error.is_empty()
        {
            let kind = if *upload == TransferStatus::Error {
                TransferKind::Upload
            } else {
                TransferKind::Download
            };
            let attempts =
                snapshot.attempts.get(&(kind, state.file_id.clone())).copied().unwrap_or(1);
            errors.push(FileError {
                file_id: state.file_id.clone(),
                error: state.last_sync_error.clone(),
                attempts,
            });
        }
    }
    if let Some(error) = &snapshot.engine_error {
        errors.push(FileError {
            file_id: String::new(),
            error: format!("reconcile: {error}"),
            attempts: 1,
        });
    }
    for (key, failure) in &snapshot.delete_failures {
        errors.push(FileError {
            file_id: key.clone(),
            error: failure.error.clone(),
            attempts: failure.attempts,
        });
    }
    status.error_count = errors.len();
    status.errors = errors;
    status.is_syncing = status.uploading_count + status.downloading_count > 0;
    status.has_pending = status.uploading_count
        + status.downloading_count
        + status.queued_upload_count
        + status.queued_download_count
        + status.pending_remote_deletes
        > 0;
    status.local_bytes = ctx.local.inventory().iter().map(|(_, size, _)| size).sum();
    Ok(status)
}
