//! Starting work: picks startable jobs from the work lists up to the concurrency limits (prioritized downloads
//! first), records them as in flight, writes their `inProgress` state and spawns the transfer tasks.
//!
//! Uploads are counted in slots: at most `max_concurrent_uploads` upload tasks run, and each sends one body at a
//! time, so the limit is also the number of bodies in flight. Files up to [`SMALL_UPLOAD_BYTES`] travel in groups
//! that share a slot and one batched signing call (`uploads`); a larger file has a slot to itself. When few files
//! wait, they are spread over the free slots instead of filling one group, so a handful of files still moves in
//! parallel.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use super::uploads::{self, GroupMember};
use super::{Completion, DELETE_CONCURRENCY, Engine, Inflight, Job, RuntimeState, delete_remote};
use crate::layout::ContentHash;
use crate::schema::LocalFileState;
use crate::status::{FileSyncEvent, TransferKind};
use crate::transfer::{self, TransferContext};

/// Files up to this size are uploaded in groups, their bodies read into memory (one chunk's worth at most).
pub(super) const SMALL_UPLOAD_BYTES: u64 = crate::local::CHUNK_BYTES as u64;
/// Most files in one upload group, i.e. in one `sign/uploads` call.
pub(super) const MAX_GROUP_FILES: usize = 64;

/// What one launch starts, decided under the runtime lock.
#[derive(Default)]
struct LaunchPlan {
    downloads: Vec<Job>,
    /// Each group takes one upload slot; a group of one is a file too large to group but small enough for one PUT.
    upload_groups: Vec<Vec<(Job, u64)>>,
    /// Files for the general upload path (multipart, or a local copy whose size is unknown): one slot each.
    uploads_alone: Vec<Job>,
    deletes: Vec<String>,
}

impl Engine {
    /// Starts queued transfers and deletes up to the concurrency limits, prioritized downloads first.
    pub(super) fn launch(&mut self) {
        let Some(remote) = self.inner.remote.clone() else { return };
        let Some(plan) = self.plan_launch(Instant::now()) else { return };
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
            self.emit(FileSyncEvent::DownloadStart { file_id: job.file_id.clone() });
            let sender = self.completions.clone();
            self.tasks.spawn(async move {
                let result = transfer::download(&ctx, job.hash, &job.key).await;
                let _ = sender.send(Completion::Download { job, result });
            });
        }
        for group in plan.upload_groups {
            let members: Vec<GroupMember> = group
                .into_iter()
                .map(|(job, size)| {
                    self.mark_in_progress(TransferKind::Upload, &job);
                    self.emit(FileSyncEvent::UploadStart { file_id: job.file_id.clone() });
                    GroupMember {
                        ctx: self.transfer_context(TransferKind::Upload, &job),
                        mime_type: self.inner.local.mime_type(&job.hash),
                        size,
                        job,
                    }
                })
                .collect();
            let slot = uploads::UploadSlot::new(self.completions.clone());
            let remote = remote.clone();
            self.tasks.spawn(uploads::run_group(remote, members, slot));
        }
        for job in plan.uploads_alone {
            let ctx = self.transfer_context(TransferKind::Upload, &job);
            self.mark_in_progress(TransferKind::Upload, &job);
            self.emit(FileSyncEvent::UploadStart { file_id: job.file_id.clone() });
            let mime = self.inner.local.mime_type(&job.hash);
            let slot = uploads::UploadSlot::new(self.completions.clone());
            self.tasks.spawn(async move {
                let result = transfer::upload(&ctx, job.hash, &mime).await;
                slot.report(Completion::Upload { job, result });
            });
        }
        for key in plan.deletes {
            let inner = Arc::clone(&self.inner);
            let remote = remote.clone();
            let sender = self.completions.clone();
            self.tasks.spawn(async move {
                let result = delete_remote(&inner, &remote, &key).await;
                let _ = sender.send(Completion::Delete { key, result });
            });
        }
    }

    /// Picks what starts now and records it as in flight. `None` while offline.
    fn plan_launch(&self, now: Instant) -> Option<LaunchPlan> {
        let mut plan = LaunchPlan::default();
        let mut runtime = self.inner.runtime.lock().expect("runtime lock");
        if !runtime.online {
            return None;
        }
        let runtime = &mut *runtime;
        let RuntimeState {
            work,
            inflight,
            hashes_inflight,
            failures,
            prioritized,
            upload_slots,
            deletes_inflight,
            delete_failures,
            ..
        } = runtime;
        // A job may start unless it or its content is moving, or it waits for its backoff.
        let startable = |inflight: &HashMap<(TransferKind, String), Inflight>,
                         hashes_inflight: &HashSet<ContentHash>,
                         kind: TransferKind,
                         job: &Job| {
            let id = (kind, job.file_id.clone());
            !inflight.contains_key(&id)
                && !hashes_inflight.contains(&job.hash)
                && failures.get(&id).is_none_or(|failure| failure.next_at <= now)
        };
        let register = |inflight: &mut HashMap<(TransferKind, String), Inflight>,
                        hashes_inflight: &mut HashSet<ContentHash>,
                        kind: TransferKind,
                        job: &Job| {
            inflight.insert(
                (kind, job.file_id.clone()),
                Inflight {
                    file_id: job.file_id.clone(),
                    hash: job.hash,
                    loaded: Arc::new(AtomicU64::new(0)),
                    total: Arc::new(AtomicU64::new(0)),
                },
            );
            hashes_inflight.insert(job.hash);
        };

        let download_limit = self.inner.options.max_concurrent_downloads;
        let mut running_downloads =
            inflight.keys().filter(|(kind, _)| *kind == TransferKind::Download).count();
        // Prioritized downloads first (few: the ones an app asked a URL for).
        for id in prioritized.iter() {
            if running_downloads >= download_limit {
                break;
            }
            if let Some(position) = work.downloads.iter().position(|job| &job.file_id == id)
                && startable(
                    inflight,
                    hashes_inflight,
                    TransferKind::Download,
                    &work.downloads[position],
                )
            {
                let job = work.downloads.remove(position).expect("the position was just found");
                register(inflight, hashes_inflight, TransferKind::Download, &job);
                running_downloads += 1;
                plan.downloads.push(job);
            }
        }
        // Then the queues front to back. A job that cannot start now (same content moving, backoff, already
        // running) goes to the back; each job is looked at once per turn, so the cost is bounded by what starts
        // plus what waits.
        let mut looked_at = 0;
        let waiting = work.downloads.len();
        while running_downloads < download_limit && looked_at < waiting {
            looked_at += 1;
            let Some(job) = work.downloads.pop_front() else { break };
            if startable(inflight, hashes_inflight, TransferKind::Download, &job) {
                register(inflight, hashes_inflight, TransferKind::Download, &job);
                running_downloads += 1;
                plan.downloads.push(job);
            } else {
                work.downloads.push_back(job);
            }
        }

        let free_slots = self.inner.options.max_concurrent_uploads.saturating_sub(*upload_slots);
        let multipart_threshold = self.inner.options.multipart_threshold;
        let mut small: Vec<(Job, u64)> = Vec::new();
        let mut large: Vec<(Job, u64)> = Vec::new();
        let mut looked_at = 0;
        let waiting = work.uploads.len();
        while looked_at < waiting {
            let slots_used =
                large.len() + plan.uploads_alone.len() + small.len().div_ceil(MAX_GROUP_FILES);
            let last_group_has_room = !small.len().is_multiple_of(MAX_GROUP_FILES);
            if slots_used >= free_slots && !last_group_has_room {
                break;
            }
            looked_at += 1;
            let Some(job) = work.uploads.pop_front() else { break };
            if !startable(inflight, hashes_inflight, TransferKind::Upload, &job) {
                work.uploads.push_back(job);
                continue;
            }
            match self.inner.local.size(&job.hash) {
                Some(size) if size <= SMALL_UPLOAD_BYTES => {
                    register(inflight, hashes_inflight, TransferKind::Upload, &job);
                    small.push((job, size));
                }
                // Only a small file may join the last group once every slot is taken.
                _ if slots_used >= free_slots => work.uploads.push_back(job),
                Some(size) if size < multipart_threshold => {
                    register(inflight, hashes_inflight, TransferKind::Upload, &job);
                    large.push((job, size));
                }
                _ => {
                    register(inflight, hashes_inflight, TransferKind::Upload, &job);
                    plan.uploads_alone.push(job);
                }
            }
        }
        plan.upload_groups = large.into_iter().map(|member| vec![member]).collect();
        let small_slots =
            free_slots.saturating_sub(plan.upload_groups.len() + plan.uploads_alone.len());
        if !small.is_empty() {
            // Spread over the free slots (a few files move in parallel), at most `MAX_GROUP_FILES` per group.
            let groups = small_slots.clamp(1, small.len());
            let per_group = small.len().div_ceil(groups);
            let mut members = small.into_iter().peekable();
            while members.peek().is_some() {
                plan.upload_groups.push(members.by_ref().take(per_group).collect());
            }
        }
        *upload_slots += plan.upload_groups.len() + plan.uploads_alone.len();

        for key in &work.deletes {
            if deletes_inflight.len() >= DELETE_CONCURRENCY {
                break;
            }
            if deletes_inflight.contains(key)
                || delete_failures.get(key).is_some_and(|failure| failure.next_at > now)
            {
                continue;
            }
            deletes_inflight.insert(key.clone());
            plan.deletes.push(key.clone());
        }
        Some(plan)
    }

    /// The context of a job registered as in flight (its progress counters are the ones status reports).
    fn transfer_context(&self, kind: TransferKind, job: &Job) -> TransferContext {
        let (loaded, total) = {
            let runtime = self.inner.runtime.lock().expect("runtime lock");
            let inflight = &runtime.inflight[&(kind, job.file_id.clone())];
            (Arc::clone(&inflight.loaded), Arc::clone(&inflight.total))
        };
        TransferContext {
            remote: self.inner.remote.clone().expect("transfers run only with a remote"),
            local: self.inner.local.clone(),
            store_id: self.inner.store_id.clone(),
            multipart_threshold: self.inner.options.multipart_threshold,
            part_size: self.inner.options.part_size,
            loaded,
            total,
        }
    }

    /// Writes the `inProgress` state of a job that starts.
    fn mark_in_progress(&mut self, kind: TransferKind, job: &Job) {
        let (download, upload, local_hash) = match kind {
            TransferKind::Upload => ("done", "inProgress", job.hash.to_string()),
            TransferKind::Download => ("inProgress", "done", String::new()),
        };
        let state = LocalFileState {
            file_id: job.file_id.clone(),
            path: job.path.clone(),
            local_hash,
            download_status: download.to_owned(),
            upload_status: upload.to_owned(),
            last_sync_error: self.last_error(kind, &job.file_id),
        };
        self.queue_write(&state.to_event());
    }
}
