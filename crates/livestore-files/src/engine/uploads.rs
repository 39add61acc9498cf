//! What a finished upload means for the rows: `remoteKey` on every active row with the content, or a remote
//! delete when every such row went away meanwhile. Moving the bytes is `crate::transfer`'s job.

use super::{Engine, Job};
use crate::error::FilesError;
use crate::layout::{remote_key_for_path, stored_path};
use crate::local::now_ms;
use crate::schema::{FileUpdated, LocalFileState};
use crate::status::TransferKind;
use crate::sync::{active_rows_with_hash, key_referenced};
use crate::transfer::Uploaded;

impl Engine {
    /// Records `remoteKey` on every active row with this content that lacks it (one batch), or queues the
    /// object's deletion if every such row was deleted meanwhile.
    pub(super) fn upload_succeeded(
        &mut self,
        job: &Job,
        uploaded: &Uploaded,
    ) -> Result<(), FilesError> {
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
}
