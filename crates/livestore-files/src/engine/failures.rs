//! Failures and the signer's health: recording a failed transfer or remote delete (state, event, backoff from
//! `plan::backoff`), re-checking health after a network-looking failure, going offline and back online (every
//! waiting retry then runs at once).

use std::time::{Duration, Instant};

use super::{Completion, Engine};
use crate::context::row;
use crate::error::FilesError;
use crate::plan::{self, Failure, Job};
use crate::schema::{LocalFileState, TransferStatus};
use crate::status::{FileSyncEvent, TransferKind};

impl Engine {
    pub(super) fn maybe_check_health(&mut self, now: Instant) {
        if self.health_running || now < self.next_health {
            return;
        }
        let Some(remote) = self.ctx.remote.clone() else { return };
        self.health_running = true;
        let sender = self.completions.clone();
        self.tasks.spawn(async move {
            let healthy = remote.health().await;
            let _ = sender.send(Completion::Health { healthy });
        });
    }

    /// The failure that follows `previous` (attempts + 1, retried after the backoff from now).
    fn next_failure(&self, previous: Option<&Failure>, error: String) -> Failure {
        let attempts = previous.map_or(0, |failure| failure.attempts) + 1;
        let options = &self.ctx.options;
        let delay = plan::backoff(
            options.retry_base_delay,
            options.retry_max_delay,
            attempts,
            rand::random_range(0.0..1.0),
        );
        Failure { attempts, next_at: Instant::now() + delay, error }
    }

    pub(super) fn record_delete_failure(&mut self, key: &str, error: &FilesError) {
        let previous = self.state.schedule.delete_failures.get(key);
        let failure = self.next_failure(previous, error.to_string());
        self.state.schedule.delete_failures.insert(key.to_owned(), failure);
    }

    pub(super) fn transfer_failed(&mut self, kind: TransferKind, job: &Job, error: &FilesError) {
        let message = error.to_string();
        // Back in the queue: it is retried after its backoff (or picked up again by the next reconcile).
        match kind {
            TransferKind::Upload => self.state.work.uploads.push_back(job.clone()),
            TransferKind::Download => self.state.work.downloads.push_back(job.clone()),
        }
        let id = (kind, job.file_id.clone());
        let failure = self.next_failure(self.state.schedule.failures.get(&id), message.clone());
        let attempts = failure.attempts;
        self.state.schedule.failures.insert(id, failure);
        tracing::info!(target: "livestore_files::_events::transfer", ?kind, file_id = %job.file_id, attempts, error = %message, "transfer failed; will retry");
        let (download, upload, local_hash) = match kind {
            TransferKind::Upload => {
                (TransferStatus::Done, TransferStatus::Error, job.hash.to_string())
            }
            TransferKind::Download => (TransferStatus::Error, TransferStatus::Done, String::new()),
        };
        // Only rows that still exist get a state; a deleted row's state is removed by the next reconcile.
        if matches!(row(&self.ctx.store, &job.file_id), Ok(Some(row)) if row.is_active()) {
            self.queue_write(
                &LocalFileState {
                    file_id: job.file_id.clone(),
                    path: job.path.clone(),
                    local_hash,
                    download_status: download,
                    upload_status: upload,
                    last_sync_error: message.clone(),
                }
                .to_event(),
            );
        }
        self.ctx.emit(match kind {
            TransferKind::Upload => {
                FileSyncEvent::UploadError { file_id: job.file_id.clone(), error: message }
            }
            TransferKind::Download => {
                FileSyncEvent::DownloadError { file_id: job.file_id.clone(), error: message }
            }
        });
        self.check_connectivity(error);
    }

    /// A network-looking failure triggers an immediate health check (which may flip the engine offline).
    pub(super) fn check_connectivity(&mut self, error: &FilesError) {
        if matches!(error, FilesError::Remote(remote) if remote.is_network()) {
            self.next_health = Instant::now();
        }
    }

    pub(super) fn health_answered(&mut self, healthy: bool) {
        self.health_running = false;
        let interval = self.ctx.options.health_check_interval;
        let was_online = self.state.online;
        self.state.online = healthy;
        if healthy {
            self.offline_delay = Duration::from_millis(500);
            self.next_health = Instant::now() + interval;
            if !was_online {
                // Back online: every waiting retry runs now.
                self.state.schedule.retry_all(Instant::now());
                tracing::info!(target: "livestore_files::_events::online", "signer reachable again; resuming transfers");
                self.ctx.emit(FileSyncEvent::Online);
            }
        } else {
            self.next_health = Instant::now() + self.offline_delay;
            self.offline_delay = (self.offline_delay * 2).min(interval);
            if was_online {
                tracing::info!(target: "livestore_files::_events::online", "signer unreachable; pausing transfers");
                self.ctx.emit(FileSyncEvent::Offline {
                    reason: "the signer's health check failed".to_owned(),
                });
            }
        }
    }
}
