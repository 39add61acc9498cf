//! Performing a reconcile: read the rows that are not settled (all of them, or only the ones a local operation
//! named), look up what the planner needs from the disk and the store, call `plan::reconcile`, then carry the plan
//! out (remove local copies, queue the state writes, forget deleted files, merge the work lists).
//!
//! A local operation (`save_file`, `update_file`, `delete_file`, ...) names the rows it changed, and only those
//! are read again, so saving a file while thousands wait costs one indexed lookup, not a scan.

use std::collections::BTreeSet;

use livestore_client::schema::Query;
use livestore_client::{SqlValue, Store};
use serde::Deserialize;

use super::Engine;
use crate::context::{active_rows_with_hash, key_referenced};
use crate::error::FilesError;
use crate::layout::ContentHash;
use crate::local::now_ms;
use crate::plan::{self, FileRow, LocalView, StateWrite};
use crate::schema::{
    FileRemoteDeleteQueued, LocalFileState, LocalFileStateRemove, REMOTE_DELETES_TABLE,
    RemoteDelete, TransferStatus,
};

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
    /// Derives the work lists from the store and writes the statuses they imply: from every row, or (`only`) from
    /// these rows, merged into the current lists.
    pub(super) fn reconcile(&mut self, only: Option<&BTreeSet<String>>) -> Result<(), FilesError> {
        let local_only = self.ctx.remote.is_none();
        let rows = read_unsettled(&self.ctx.store, only, local_only)?;
        let local = self.local_view(&rows);
        let stored_deletes: Vec<String> = if local_only {
            Vec::new()
        } else {
            let deletes: Vec<RemoteDelete> =
                self.ctx.store.query(&Query::select(REMOTE_DELETES_TABLE).order_by("queuedAt"))?;
            deletes.into_iter().map(|delete| delete.key).collect()
        };
        let plan =
            plan::reconcile(&rows, &local, &self.state.schedule, local_only, &stored_deletes);
        for hash in &plan.local_deletes {
            // Checked again: a save may have pinned the content since the view was taken.
            if !self.ctx.pins.contains(hash) {
                self.ctx.local.remove(hash)?;
            }
        }
        for write in &plan.writes {
            match write {
                StateWrite::Upsert(state) => self.queue_write(&state.to_event()),
                StateWrite::Remove { file_id } => {
                    self.queue_write(&LocalFileStateRemove { file_id: file_id.clone() })
                }
                StateWrite::QueueRemoteDelete { key } => self
                    .queue_write(&FileRemoteDeleteQueued { key: key.clone(), queued_at: now_ms() }),
            }
        }
        for file_id in &plan.forget {
            self.state.schedule.forget_file(file_id);
        }
        // Prioritized downloads whose bytes arrived meanwhile (through `get_file`, say) leave the queue.
        let schedule = &mut self.state.schedule;
        let here: BTreeSet<ContentHash> = self
            .state
            .work
            .downloads
            .iter()
            .filter(|job| schedule.prioritized.contains(&job.file_id))
            .map(|job| job.hash)
            .filter(|hash| self.ctx.local.contains(hash))
            .collect();
        plan::merge_work(&mut self.state.work, plan.work, only, &mut schedule.prioritized, &here);
        if only.is_none() {
            self.reconciled = true;
        }
        Ok(())
    }

    /// Sizes of the local copies of the active rows' content, and which deleted rows' content a save holds.
    fn local_view(&self, rows: &[FileRow]) -> LocalView {
        let mut view = LocalView::default();
        for row in rows {
            let Ok(hash) = row.content_hash.parse::<ContentHash>() else { continue };
            if row.deleted_at.is_some() {
                if self.ctx.pins.contains(&hash) {
                    view.pinned.insert(hash);
                }
            } else if !view.present.contains_key(&hash)
                && let Some(size) = self.ctx.local.size(&hash)
            {
                view.present.insert(hash, size);
            }
        }
        view
    }
}

/// The unsettled rows (every one, or only these ids), oldest first, with the reference checks deleted rows need:
/// what [`plan::reconcile`] takes. The engine and the deterministic simulator (through `crate::sim`) both read rows
/// with this.
pub fn read_unsettled(
    store: &Store,
    only: Option<&BTreeSet<String>>,
    local_only: bool,
) -> Result<Vec<FileRow>, FilesError> {
    let local_only_param = SqlValue::Integer(i64::from(local_only));
    let rows: Vec<UnsettledRow> = match only {
        None => store.query(&Query::sql(
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
                rows.extend(store.query::<UnsettledRow>(&Query::sql(
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
    rows.into_iter().map(|row| file_row(store, row, local_only)).collect()
}

fn file_row(store: &Store, row: UnsettledRow, local_only: bool) -> Result<FileRow, FilesError> {
    let state = row.state();
    let mut file_row = FileRow {
        id: row.id,
        path: row.path,
        remote_key: row.remote_key,
        content_hash: row.content_hash,
        deleted_at: row.deleted_at,
        state,
        content_in_use: false,
        object_in_use: false,
    };
    if file_row.deleted_at.is_none() {
        return Ok(file_row);
    }
    // Only the questions the planner will ask (each is a query).
    let uploaded_here =
        file_row.state.as_ref().is_some_and(|state| state.upload_status == TransferStatus::Done);
    if uploaded_here && !file_row.remote_key.is_empty() && !local_only {
        file_row.object_in_use = key_referenced(store, &file_row.remote_key, None)?;
    }
    if file_row.content_hash.parse::<ContentHash>().is_ok() {
        file_row.content_in_use = !active_rows_with_hash(store, &file_row.content_hash)?.is_empty();
    }
    Ok(file_row)
}

/// The columns of one unsettled row (see [`UNSETTLED_ROWS`]).
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
    download_status: Option<TransferStatus>,
    upload_status: Option<TransferStatus>,
    last_sync_error: Option<String>,
}

impl UnsettledRow {
    fn state(&self) -> Option<LocalFileState> {
        Some(LocalFileState {
            file_id: self.state_file_id.clone()?,
            path: self.state_path.clone().unwrap_or_default(),
            local_hash: self.local_hash.clone().unwrap_or_default(),
            download_status: self.download_status.clone().unwrap_or(TransferStatus::Pending),
            upload_status: self.upload_status.clone().unwrap_or(TransferStatus::Pending),
            last_sync_error: self.last_sync_error.clone().unwrap_or_default(),
        })
    }
}
