//! Upload groups and what a finished upload means for the rows.
//!
//! A group is one upload slot's work: one `sign/uploads` call for all its files (existence check plus a
//! checksum-bound URL each), then their bodies one after another, each file reported to the engine as soon as it
//! is done, so progress and failures stay per file. A signer without the batch extension (404/405) is remembered
//! and every file then takes the general path of `crate::transfer::upload` (existence check, sign, PUT). A failed
//! batch call fails every file of the group with the same error, and each is retried with its own backoff.
//!
//! After an upload, every active row with the content gets `remoteKey` (or, when every such row went away
//! meanwhile, the object is queued for deletion). Moving the bytes is `crate::transfer`'s job.

use super::{Completion, Engine};
use crate::context::{active_rows_with_hash, key_referenced};
use crate::error::{FilesError, RemoteError};
use crate::layout::{remote_key_for_path, stored_path};
use crate::local::now_ms;
use crate::plan::Job;
use crate::remote::{BatchSigned, SignerClient, UploadToSign};
use crate::schema::{FileUpdated, LocalFileState, TransferStatus};
use crate::status::TransferKind;
use crate::transfer::{self, TransferContext, Uploaded};

/// One file of an upload group.
pub(super) struct GroupMember {
    pub(super) job: Job,
    pub(super) ctx: TransferContext,
    pub(super) size: u64,
    pub(super) mime_type: String,
}

/// An occupied upload slot: reports the task's completions and frees the slot when the task ends, however it
/// ends (finished, failed, or aborted by a stop).
pub(super) struct UploadSlot {
    sender: tokio::sync::mpsc::UnboundedSender<Completion>,
}

impl UploadSlot {
    pub(super) fn new(sender: tokio::sync::mpsc::UnboundedSender<Completion>) -> UploadSlot {
        UploadSlot { sender }
    }

    pub(super) fn report(&self, completion: Completion) {
        let _ = self.sender.send(completion);
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let _ = self.sender.send(Completion::UploadSlotFreed);
    }
}

/// Uploads a group (see the module docs).
pub(super) async fn run_group(remote: SignerClient, members: Vec<GroupMember>, slot: UploadSlot) {
    let answers = if remote.batch_signing_unsupported() {
        None
    } else {
        let entries: Vec<UploadToSign> = members
            .iter()
            .map(|member| UploadToSign {
                key: transfer::remote_key(&member.ctx, &member.job.hash),
                content_length: member.size,
                sha256: member.job.hash.to_string(),
                content_type: Some(member.mime_type.clone()),
            })
            .collect();
        match remote.sign_uploads(&entries).await {
            Ok(answers) => Some(Ok(answers)),
            Err(RemoteError::Status { status: 404 | 405, .. }) => {
                tracing::info!(target: "livestore_files::_events::upload", "the signer has no sign/uploads; signing each file alone");
                remote.mark_batch_signing_unsupported();
                None
            }
            Err(error) => Some(Err(error)),
        }
    };
    match answers {
        None => {
            for member in members {
                let result =
                    transfer::upload(&member.ctx, member.job.hash, &member.mime_type).await;
                slot.report(Completion::Upload { job: member.job, result });
            }
        }
        Some(Err(error)) => {
            let copies: Vec<RemoteError> =
                members.iter().skip(1).map(|_| error.for_another_file()).collect();
            for (member, error) in members.into_iter().zip(std::iter::once(error).chain(copies)) {
                slot.report(Completion::Upload { job: member.job, result: Err(error.into()) });
            }
        }
        Some(Ok(answers)) => {
            for (member, answer) in members.into_iter().zip(answers) {
                let result = match answer {
                    BatchSigned::Signed { existing, upload } => {
                        transfer::upload_presigned(
                            &member.ctx,
                            member.job.hash,
                            member.size,
                            &member.mime_type,
                            &existing,
                            upload,
                        )
                        .await
                    }
                    BatchSigned::Refused { status, message } => {
                        Err(RemoteError::Status { operation: "sign uploads", status, message }
                            .into())
                    }
                };
                slot.report(Completion::Upload { job: member.job, result });
            }
        }
    }
}

impl Engine {
    /// Records `remoteKey` on every active row with this content that lacks it (one batch), or queues the
    /// object's deletion if every such row was deleted meanwhile.
    pub(super) fn upload_succeeded(
        &mut self,
        job: &Job,
        uploaded: &Uploaded,
    ) -> Result<(), FilesError> {
        self.state.schedule.failures.remove(&(TransferKind::Upload, job.file_id.clone()));
        let hash = job.hash.to_string();
        let rows = active_rows_with_hash(&self.ctx.store, &hash)?;
        let now = now_ms();
        let mut used = false;
        for row in rows {
            if remote_key_for_path(&row.path) != uploaded.key
                && row.path != stored_path(&self.ctx.store_id, &job.hash)
            {
                continue;
            }
            used = true;
            // The key is already there, or already queued by a completion whose writes wait for the next flush
            // (two jobs for one content, the second skipped as existing, finish within one flush delay).
            let needs_key =
                row.remote_key != uploaded.key && self.keys_queued.insert(row.id.clone());
            if needs_key {
                self.queue_write(&FileUpdated {
                    id: row.id.clone(),
                    path: row.path.clone(),
                    remote_key: uploaded.key.clone(),
                    content_hash: hash.clone(),
                    updated_at: now,
                    metadata_json: Some(row.metadata_json.clone()),
                });
            } else if row.id != job.file_id {
                continue;
            }
            // The job's own row always gets its final state, even when its key came earlier: its launch wrote
            // `inProgress` after that (a second row with the same content waited for the first upload, then
            // started and was skipped as existing), and no later reconcile would look at it again.
            self.queue_write(
                &LocalFileState {
                    file_id: row.id.clone(),
                    path: row.path.clone(),
                    local_hash: hash.clone(),
                    download_status: TransferStatus::Done,
                    upload_status: TransferStatus::Done,
                    last_sync_error: String::new(),
                }
                .to_event(),
            );
        }
        if !used && !key_referenced(&self.ctx.store, &uploaded.key, None)? {
            // Deleted while it was uploading: do not leave an orphan object behind.
            self.queue_write(&crate::schema::FileRemoteDeleteQueued {
                key: uploaded.key.clone(),
                queued_at: now,
            });
            if !self.state.work.deletes.contains(&uploaded.key) {
                self.state.work.deletes.push(uploaded.key.clone());
            }
        }
        Ok(())
    }
}
