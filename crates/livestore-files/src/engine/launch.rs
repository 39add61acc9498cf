//! Starting work: asks `plan::launch` what starts now (it registers the jobs as running), writes their
//! `inProgress` state and spawns the transfer tasks: downloads, upload groups (one slot and one batched signing
//! call each, see `uploads`), lone uploads and remote deletes.

use std::sync::Arc;
use std::time::Instant;

use super::uploads::{self, GroupMember};
use super::{Completion, Engine, delete_remote, limits};
use crate::plan::{self, Job};
use crate::schema::{LocalFileState, TransferStatus};
use crate::status::{FileSyncEvent, TransferKind};
use crate::transfer::{self, TransferContext};

impl Engine {
    /// Starts queued transfers and deletes up to the concurrency limits, prioritized downloads first. Nothing
    /// starts while offline.
    pub(super) fn launch(&mut self) {
        let Some(remote) = self.ctx.remote.clone() else { return };
        if !self.state.online {
            return;
        }
        let limits = limits(&self.ctx.options);
        let plan =
            plan::launch(&mut self.state.work, &mut self.state.schedule, &limits, Instant::now());
        if plan.is_empty() {
            return;
        }
        tracing::debug!(
            target: "livestore_files::_events::launch",
            downloads = plan.downloads.len(),
            upload_groups = plan.upload_groups.len(),
            uploads_alone = plan.uploads_alone.len(),
            deletes = plan.deletes.len(),
            "launch"
        );
        for job in plan.downloads {
            let ctx = self.transfer_context(TransferKind::Download, &job);
            self.mark_in_progress(TransferKind::Download, &job);
            self.ctx.emit(FileSyncEvent::DownloadStart { file_id: job.file_id.clone() });
            let sender = self.completions.clone();
            self.tasks.spawn(async move {
                let result = transfer::download(&ctx, job.hash, &job.key).await;
                let _ = sender.send(Completion::Download { job, result });
            });
        }
        for group in plan.upload_groups {
            let members: Vec<GroupMember> = group
                .into_iter()
                .map(|job| {
                    self.mark_in_progress(TransferKind::Upload, &job);
                    self.ctx.emit(FileSyncEvent::UploadStart { file_id: job.file_id.clone() });
                    GroupMember {
                        ctx: self.transfer_context(TransferKind::Upload, &job),
                        mime_type: self.ctx.local.mime_type(&job.hash),
                        // The planner groups only files of known size.
                        size: job.size.unwrap_or_default(),
                        job,
                    }
                })
                .collect();
            let slot = uploads::UploadSlot::new(self.completions.clone());
            self.tasks.spawn(uploads::run_group(remote.clone(), members, slot));
        }
        for job in plan.uploads_alone {
            let ctx = self.transfer_context(TransferKind::Upload, &job);
            self.mark_in_progress(TransferKind::Upload, &job);
            self.ctx.emit(FileSyncEvent::UploadStart { file_id: job.file_id.clone() });
            let mime = self.ctx.local.mime_type(&job.hash);
            let slot = uploads::UploadSlot::new(self.completions.clone());
            self.tasks.spawn(async move {
                let result = transfer::upload(&ctx, job.hash, &mime).await;
                slot.report(Completion::Upload { job, result });
            });
        }
        for key in plan.deletes {
            let ctx = Arc::clone(&self.ctx);
            let remote = remote.clone();
            let sender = self.completions.clone();
            self.tasks.spawn(async move {
                let result = delete_remote(&ctx, &remote, &key).await;
                let _ = sender.send(Completion::Delete { key, result });
            });
        }
    }

    /// The context of a job registered as running (its progress counters are the ones status reports).
    fn transfer_context(&self, kind: TransferKind, job: &Job) -> TransferContext {
        let inflight = &self.state.schedule.running[&(kind, job.file_id.clone())];
        TransferContext {
            remote: self.ctx.remote.clone().expect("transfers run only with a remote"),
            local: self.ctx.local.clone(),
            store_id: self.ctx.store_id.clone(),
            multipart_threshold: self.ctx.options.multipart_threshold,
            part_size: self.ctx.options.part_size,
            loaded: Arc::clone(&inflight.loaded),
            total: Arc::clone(&inflight.total),
        }
    }

    /// Writes the `inProgress` state of a job that starts.
    fn mark_in_progress(&mut self, kind: TransferKind, job: &Job) {
        let (download, upload, local_hash) = match kind {
            TransferKind::Upload => {
                (TransferStatus::Done, TransferStatus::InProgress, job.hash.to_string())
            }
            TransferKind::Download => {
                (TransferStatus::InProgress, TransferStatus::Done, String::new())
            }
        };
        let state = LocalFileState {
            file_id: job.file_id.clone(),
            path: job.path.clone(),
            local_hash,
            download_status: download,
            upload_status: upload,
            last_sync_error: self.last_error(kind, &job.file_id),
        };
        self.queue_write(&state.to_event());
    }
}
