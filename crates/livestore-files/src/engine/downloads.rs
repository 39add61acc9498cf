//! What a finished download means for the rows, and the out-of-queue download that `get_file` uses. Moving and
//! verifying the bytes is `crate::transfer`'s job.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Engine, Job};
use crate::error::FilesError;
use crate::layout::ContentHash;
use crate::schema::{FileRecord, LocalFileState};
use crate::sync::{Inner, active_rows_with_hash};
use crate::transfer::{self, TransferContext};

impl Engine {
    pub(super) fn download_succeeded(&mut self, job: &Job) -> Result<(), FilesError> {
        for row in active_rows_with_hash(&self.inner.store, &job.hash.to_string())? {
            if row.remote_key.is_empty() {
                // Another client's row with the same content, not uploaded yet: now that the bytes are here, it
                // needs an upload, which a reconcile of that row finds.
                self.inner.changed_files.lock().expect("changed files lock").insert(row.id);
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
