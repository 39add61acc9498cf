//! Failures and the signer's health: recording a failed transfer (state, event, capped and jittered backoff),
//! re-checking health after a network-looking failure, going offline and back online (every waiting retry then
//! runs at once).

use std::time::{Duration, Instant};

use super::{Completion, Engine, Failure, Job};
use crate::error::FilesError;
use crate::schema::LocalFileState;
use crate::status::{FileSyncEvent, TransferKind};
use crate::sync::Inner;

impl Engine {
    pub(super) fn maybe_check_health(&mut self, now: Instant) {
        if self.health_running || now < self.next_health {
            return;
        }
        let Some(remote) = self.inner.remote.clone() else { return };
        self.health_running = true;
        let sender = self.completions.clone();
        self.tasks.spawn(async move {
            let healthy = remote.health().await;
            let _ = sender.send(Completion::Health { healthy });
        });
    }

    pub(super) fn transfer_failed(&mut self, kind: TransferKind, job: &Job, error: &FilesError) {
        let message = error.to_string();
        let attempts = {
            let mut runtime = self.inner.runtime.lock().expect("runtime lock");
            // Back in the queue: it is retried after its backoff (or picked up again by the next reconcile).
            match kind {
                TransferKind::Upload => runtime.work.uploads.push_back(job.clone()),
                TransferKind::Download => runtime.work.downloads.push_back(job.clone()),
            }
            let id = (kind, job.file_id.clone());
            let attempts = runtime.failures.get(&id).map_or(0, |failure| failure.attempts) + 1;
            let delay = backoff(&self.inner.options, attempts);
            runtime.failures.insert(
                id,
                Failure { attempts, next_at: Instant::now() + delay, error: message.clone() },
            );
            attempts
        };
        tracing::info!(target: "livestore_files::_events::transfer", ?kind, file_id = %job.file_id, attempts, error = %message, "transfer failed; will retry");
        let (download, upload, local_hash) = match kind {
            TransferKind::Upload => ("done", "error", job.hash.to_string()),
            TransferKind::Download => ("error", "done", String::new()),
        };
        // Only rows that still exist get a state; a deleted row's state is removed by the next reconcile.
        if matches!(crate::sync::row(&self.inner.store, &job.file_id), Ok(Some(row)) if row.is_active())
        {
            self.queue_write(
                &LocalFileState {
                    file_id: job.file_id.clone(),
                    path: job.path.clone(),
                    local_hash,
                    download_status: download.to_owned(),
                    upload_status: upload.to_owned(),
                    last_sync_error: message.clone(),
                }
                .to_event(),
            );
        }
        self.emit(match kind {
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
        let interval = self.inner.options.health_check_interval;
        let was_online = {
            let mut guard = self.inner.runtime.lock().expect("runtime lock");
            let runtime = &mut *guard;
            let was_online = runtime.online;
            runtime.online = healthy;
            if healthy {
                runtime.offline_reason.clear();
                if !was_online {
                    // Back online: every waiting retry runs now.
                    let now = Instant::now();
                    for failure in
                        runtime.failures.values_mut().chain(runtime.delete_failures.values_mut())
                    {
                        failure.next_at = now;
                    }
                }
            } else {
                runtime.offline_reason = "the signer's health check failed".to_owned();
            }
            was_online
        };
        if healthy {
            self.offline_delay = Duration::from_millis(500);
            self.next_health = Instant::now() + interval;
            if !was_online {
                tracing::info!(target: "livestore_files::_events::online", "signer reachable again; resuming transfers");
                self.emit(FileSyncEvent::Online);
            }
        } else {
            self.next_health = Instant::now() + self.offline_delay;
            self.offline_delay = (self.offline_delay * 2).min(interval);
            if was_online {
                tracing::info!(target: "livestore_files::_events::online", "signer unreachable; pausing transfers");
                self.emit(FileSyncEvent::Offline {
                    reason: "the signer's health check failed".to_owned(),
                });
            }
        }
    }
}

/// Capped exponential backoff with ±20 % jitter.
pub(super) fn backoff(options: &crate::sync::FileSyncOptions, attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(20);
    let delay =
        options.retry_base_delay.saturating_mul(1u32 << exponent).min(options.retry_max_delay);
    delay.mul_f64(rand::random_range(0.8..1.2))
}

/// Makes every failed transfer eligible now.
pub(crate) fn retry_now(inner: &Inner) {
    let mut runtime = inner.runtime.lock().expect("runtime lock");
    let now = Instant::now();
    let runtime = &mut *runtime;
    for failure in runtime.failures.values_mut().chain(runtime.delete_failures.values_mut()) {
        failure.next_at = now;
    }
}
