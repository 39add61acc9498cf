//! What a finished download means for the rows, and the out-of-queue download that `get_file` uses. Moving and
//! verifying the bytes is `crate::transfer`'s job.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{Command, Engine};
use crate::context::{Context, active_rows_with_hash};
use crate::error::FilesError;
use crate::layout::ContentHash;
use crate::plan::Job;
use crate::schema::{FileRecord, LocalFileState, TransferStatus};
use crate::transfer::{self, TransferContext};

impl Engine {
    pub(super) fn download_succeeded(&mut self, job: &Job) -> Result<(), FilesError> {
        for row in active_rows_with_hash(&self.ctx.store, &job.hash.to_string())? {
            if row.remote_key.is_empty() {
                // Another client's row with the same content, not uploaded yet: now that the bytes are here, it
                // needs an upload, which a reconcile of that row finds.
                self.changed.insert(row.id);
                continue;
            }
            self.queue_write(
                &LocalFileState {
                    file_id: row.id.clone(),
                    path: row.path.clone(),
                    local_hash: job.hash.to_string(),
                    download_status: TransferStatus::Done,
                    upload_status: TransferStatus::Done,
                    last_sync_error: String::new(),
                }
                .to_event(),
            );
        }
        Ok(())
    }
}

/// Downloads one file right away, outside the queue (for `get_file`), sharing the per-content exclusivity with
/// the engine (when it runs, `engine` reaches it): if the engine is already moving the same content, waits for it
/// instead.
pub(crate) async fn download_now(
    ctx: &Arc<Context>,
    engine: Option<mpsc::UnboundedSender<Command>>,
    row: &FileRecord,
    hash: ContentHash,
) -> Result<(), FilesError> {
    let Some(remote) = ctx.remote.clone() else { return Err(FilesError::LocalOnly) };
    let mut claimed = false;
    while let Some(engine) = &engine {
        let (reply, answer) = oneshot::channel();
        if engine.send(Command::ClaimContent { hash, reply }).is_err() {
            break;
        }
        match answer.await {
            Ok(true) => {
                claimed = true;
                break;
            }
            Ok(false) => {}
            // The engine stopped: nothing else moves the content.
            Err(_) => break,
        }
        if ctx.local.contains(&hash) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let transfer_ctx = TransferContext {
        remote,
        local: ctx.local.clone(),
        store_id: ctx.store_id.clone(),
        multipart_threshold: ctx.options.multipart_threshold,
        part_size: ctx.options.part_size,
        loaded: Arc::new(AtomicU64::new(0)),
        total: Arc::new(AtomicU64::new(0)),
    };
    let result = transfer::download(&transfer_ctx, hash, &row.remote_key).await;
    if let Some(engine) = engine {
        // Also when not claimed: the engine should look at the rows with this content again.
        let _ = engine.send(if claimed {
            Command::ReleaseContent { hash }
        } else {
            Command::StoreChanged
        });
    }
    result
}
