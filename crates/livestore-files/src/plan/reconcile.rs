//! Reconcile as a pure function: rows of `files` joined with their `localFileState`, plus what is on disk and what
//! runs, become work lists and the state writes they imply.
//!
//! Per active row (remote mode): local bytes and no `remoteKey` → an upload (one per content); local bytes and a
//! key → settled (`done`/`done`); a key and no bytes → a download (one per content); neither → another client has
//! to upload first (the row shows no state). A queued or running direction keeps `error` (with its message) and
//! `inProgress` (while the transfer really runs); anything else waiting becomes `queued`. In local-only mode a row
//! with bytes is `done`/`done` and one without shows no state. A deleted row loses its state and, unless an active
//! row or a transfer or a save still uses the content, its local copy; if this device had uploaded it, its object
//! is queued for a remote delete (unless an active row uses that object).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{Job, Schedule, WorkLists};
use crate::layout::ContentHash;
use crate::schema::{LocalFileState, TransferStatus};
use crate::status::TransferKind;

/// A `files` row with this device's state, as the engine read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub id: String,
    pub path: String,
    pub remote_key: String,
    pub content_hash: String,
    pub deleted_at: Option<i64>,
    pub state: Option<LocalFileState>,
    /// Deleted rows only: whether an active row uses this content.
    pub content_in_use: bool,
    /// Deleted rows only: whether an active row uses this row's object (by key, or by content with that key).
    pub object_in_use: bool,
}

/// What is on this device, for the rows being reconciled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalView {
    /// Sizes of the local copies present (of the rows' content).
    pub present: BTreeMap<ContentHash, u64>,
    /// Content a save holds right now.
    pub pinned: BTreeSet<ContentHash>,
}

/// One write a reconcile asks for, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateWrite {
    /// `v1.LocalFileStateUpsert`.
    Upsert(LocalFileState),
    /// `v1.LocalFileStateRemove`.
    Remove { file_id: String },
    /// `v1.FileRemoteDeleteQueued`.
    QueueRemoteDelete { key: String },
}

/// What a reconcile decided.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcilePlan {
    /// The derived work (`deletes`: the stored remote deletes plus the ones queued here).
    pub work: WorkLists,
    /// State to write, only where it differs from what the row shows.
    pub writes: Vec<StateWrite>,
    /// Local copies to remove (content of deleted rows nobody uses any more).
    pub local_deletes: Vec<ContentHash>,
    /// Deleted files whose retries and priority are to be forgotten.
    pub forget: Vec<String>,
}

/// Derives the work and the writes from `rows` (see the module docs). `stored_deletes` are the keys in
/// `fileRemoteDeletes`, oldest first (ignored in local-only mode).
pub fn reconcile(
    rows: &[FileRow],
    local: &LocalView,
    schedule: &Schedule,
    local_only: bool,
    stored_deletes: &[String],
) -> ReconcilePlan {
    let mut reconciler = Reconciler {
        local,
        schedule,
        local_only,
        plan: ReconcilePlan::default(),
        upload_hashes: BTreeSet::new(),
        download_hashes: BTreeSet::new(),
        queued_deletes: Vec::new(),
    };
    for row in rows {
        if row.deleted_at.is_some() {
            reconciler.deleted_row(row);
        } else {
            reconciler.active_row(row);
        }
    }
    let Reconciler { mut plan, queued_deletes, .. } = reconciler;
    if !local_only {
        plan.work.deletes = stored_deletes.to_vec();
        for key in queued_deletes {
            if !plan.work.deletes.contains(&key) {
                plan.work.deletes.push(key);
            }
        }
    }
    plan
}

/// One reconcile in progress: its inputs and what it decided so far.
struct Reconciler<'a> {
    local: &'a LocalView,
    schedule: &'a Schedule,
    local_only: bool,
    plan: ReconcilePlan,
    /// Content already queued in this reconcile (one transfer per content).
    upload_hashes: BTreeSet<ContentHash>,
    download_hashes: BTreeSet<ContentHash>,
    queued_deletes: Vec<String>,
}

impl Reconciler<'_> {
    fn active_row(&mut self, row: &FileRow) {
        let Ok(hash) = row.content_hash.parse::<ContentHash>() else {
            let desired = LocalFileState {
                file_id: row.id.clone(),
                path: row.path.clone(),
                local_hash: String::new(),
                download_status: TransferStatus::Error,
                upload_status: TransferStatus::Done,
                last_sync_error: format!(
                    "contentHash {:?} is not a SHA-256 hex digest",
                    row.content_hash
                ),
            };
            write_if_changed(&mut self.plan.writes, row.state.as_ref(), desired);
            return;
        };
        let size = self.local.present.get(&hash).copied();
        let job = |key: &str| Job {
            file_id: row.id.clone(),
            hash,
            path: row.path.clone(),
            key: key.to_owned(),
            size,
        };
        let state = row.state.as_ref();
        let (local_hash, download, upload) = if self.local_only {
            if size.is_none() {
                remove_state(&mut self.plan.writes, row);
                return;
            }
            (hash.to_string(), TransferStatus::Done, TransferStatus::Done)
        } else if size.is_some() && row.remote_key.is_empty() {
            if self.upload_hashes.insert(hash) {
                self.plan.work.uploads.push_back(job(""));
            }
            let upload = self.keep(row, state.map(LocalFileState::upload), TransferKind::Upload);
            (hash.to_string(), TransferStatus::Done, upload)
        } else if size.is_some() {
            (hash.to_string(), TransferStatus::Done, TransferStatus::Done)
        } else if !row.remote_key.is_empty() {
            if self.download_hashes.insert(hash) {
                self.plan.work.downloads.push_back(job(&row.remote_key));
            }
            let download =
                self.keep(row, state.map(LocalFileState::download), TransferKind::Download);
            (String::new(), download, TransferStatus::Done)
        } else {
            // Another client has the bytes and has not uploaded them yet: nothing to do here.
            self.plan.work.awaiting_remote.insert(row.id.clone());
            remove_state(&mut self.plan.writes, row);
            return;
        };
        let failed = download == TransferStatus::Error || upload == TransferStatus::Error;
        let last_sync_error = match state {
            Some(state) if failed => state.last_sync_error.clone(),
            _ => String::new(),
        };
        let desired = LocalFileState {
            file_id: row.id.clone(),
            path: row.path.clone(),
            local_hash,
            download_status: download,
            upload_status: upload,
            last_sync_error,
        };
        write_if_changed(&mut self.plan.writes, state, desired);
    }

    /// The status of a direction with work: `error` stays (with its message), `inProgress` stays while its
    /// transfer really runs, anything else waits as `queued`.
    fn keep(
        &self,
        row: &FileRow,
        current: Option<&TransferStatus>,
        kind: TransferKind,
    ) -> TransferStatus {
        match current {
            Some(TransferStatus::Error) => TransferStatus::Error,
            Some(TransferStatus::InProgress)
                if self.schedule.running.contains_key(&(kind, row.id.clone())) =>
            {
                TransferStatus::InProgress
            }
            _ => TransferStatus::Queued,
        }
    }

    fn deleted_row(&mut self, row: &FileRow) {
        // Deleted elsewhere, and this device held the file settled: queue the remote delete too (it checks
        // references again when it runs, and deleting a missing object succeeds). The deleting device queues one
        // only if it knew the row's `remoteKey`; when its delete raced the upload's `v1.FileUpdated`, it did not,
        // and without this the object would be left behind for good.
        if let Some(state) = &row.state
            && state.upload_status == TransferStatus::Done
            && !row.remote_key.is_empty()
            && !self.local_only
            && !row.object_in_use
        {
            self.plan.writes.push(StateWrite::QueueRemoteDelete { key: row.remote_key.clone() });
            self.queued_deletes.push(row.remote_key.clone());
        }
        // Remove the local copy unless an active row shares it, a transfer still reads it or a save holds it.
        if let Ok(hash) = row.content_hash.parse::<ContentHash>()
            && !self.schedule.hashes_moving.contains(&hash)
            && !row.content_in_use
            && !self.local.pinned.contains(&hash)
            && !self.plan.local_deletes.contains(&hash)
        {
            self.plan.local_deletes.push(hash);
        }
        self.plan.writes.push(StateWrite::Remove { file_id: row.id.clone() });
        self.plan.forget.push(row.id.clone());
    }
}

fn remove_state(writes: &mut Vec<StateWrite>, row: &FileRow) {
    if row.state.is_some() {
        writes.push(StateWrite::Remove { file_id: row.id.clone() });
    }
}

fn write_if_changed(
    writes: &mut Vec<StateWrite>,
    current: Option<&LocalFileState>,
    desired: LocalFileState,
) {
    if current != Some(&desired) {
        writes.push(StateWrite::Upsert(desired));
    }
}

/// Folds a reconcile's work into the current lists: a full reconcile (`only` = `None`) replaces them; a partial one
/// replaces the entries of the rows it read (`only`) and appends their new ones. Either way a download the
/// application asked for (in `prioritized`) stays queued while its bytes are not here (`here`: prioritized
/// content already local), even when its row looks settled (an evicted file is `done`/`done` without bytes), and
/// priorities of downloads no longer queued are dropped.
pub fn merge_work(
    current: &mut WorkLists,
    derived: WorkLists,
    only: Option<&BTreeSet<String>>,
    prioritized: &mut VecDeque<String>,
    here: &BTreeSet<ContentHash>,
) {
    let derived_downloads: BTreeSet<String> =
        derived.downloads.iter().map(|job| job.file_id.clone()).collect();
    let asked_for = |job: &Job| {
        prioritized.contains(&job.file_id)
            && !derived_downloads.contains(&job.file_id)
            && !here.contains(&job.hash)
    };
    match only {
        Some(ids) => {
            current.uploads.retain(|job| !ids.contains(&job.file_id));
            current.downloads.retain(|job| !ids.contains(&job.file_id) || asked_for(job));
            current.awaiting_remote.retain(|id| !ids.contains(id));
            current.uploads.extend(derived.uploads);
            current.downloads.extend(derived.downloads);
            current.awaiting_remote.extend(derived.awaiting_remote);
            current.deletes = derived.deletes;
        }
        None => {
            let kept: Vec<Job> = current.downloads.drain(..).filter(|job| asked_for(job)).collect();
            *current = derived;
            current.downloads.extend(kept);
        }
    }
    let live: BTreeSet<&str> = current.downloads.iter().map(|job| job.file_id.as_str()).collect();
    prioritized.retain(|id| live.contains(id.as_str()));
}

#[cfg(test)]
mod tests;
