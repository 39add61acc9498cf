//! The transfer engine: one tokio task that derives the work queue from the store, runs transfers with bounded
//! concurrency, records outcomes, retries failures with capped, jittered exponential backoff, tracks the signer's
//! health and evicts local copies over the byte budget.
//!
//! **The queue is derived, not stored.** A reconcile (`queue`) joins `files` with `localFileState` and looks only
//! at rows that are not settled: an active row with local bytes and no `remoteKey` needs an upload; an active row
//! with a `remoteKey` and no local bytes needs a download; a deleted row with state needs its local copy removed
//! (unless another active row shares the content). Remote deletes come from the client-only `fileRemoteDeletes`
//! table. So a crash, a restart or `kill -9` loses no work: whatever was queued or running is found again from the
//! same tables, and `inProgress` rows without a running transfer are simply queued again. Everything is read at
//! start and after commits the file sync did not make; a local operation names the rows it changed and only
//! those are read again; a completion needs no reconcile at all (it updates the lists itself).
//!
//! A full reconcile also runs every [`HEAL_INTERVAL`] as a safety net, so a state the bookkeeping got wrong heals
//! within seconds.
//!
//! Every trigger of the loop is one [`Event`]: the store changed (subscription or a local operation), a transfer
//! finished, a health check answered, a timer fired, or stop. State writes are committed in batches: at once when
//! nothing moves, else within [`FLUSH_DELAY`], so the completions of many small files share a commit. Failures are
//! never dropped: the row shows `error` with the reason, and the transfer is retried after
//! `min(base × 2^(n-1), max)` ±20 %; when the signer comes back online every waiting retry runs at once.
//!
//! Submodules: `queue` (reconcile), `launch` (starting jobs within the limits), `uploads` (upload groups, finished
//! uploads), `downloads` (finished and out-of-queue downloads), `failures` (backoff, health, offline), `evict`
//! (byte budget), `status` (what callers see).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use livestore_client::NewEvent;
use tokio::sync::{mpsc, watch};

use crate::error::FilesError;
use crate::layout::ContentHash;
use crate::schema::FileRemoteDeleteDone;
use crate::status::{FileSyncEvent, TransferKind, TransferProgress};
use crate::sync::{Inner, commit_for_file_sync, key_referenced, new_event};
use crate::transfer::Uploaded;

mod downloads;
mod evict;
mod failures;
mod launch;
mod queue;
mod status;
mod uploads;

pub(crate) use downloads::download_now;
use failures::backoff;
pub(crate) use failures::retry_now;
pub(crate) use status::{is_idle, status};

/// Remote deletes running at once.
const DELETE_CONCURRENCY: usize = 2;
/// While transfers run, state writes wait at most this long, so the completions of many small files share one
/// commit (each commit is a transaction with an fsync, and each synced event a push).
const FLUSH_DELAY: Duration = Duration::from_millis(50);
/// ... or until this many events wait.
const MAX_DEFERRED_WRITES: usize = 1024;
/// A full reconcile runs at least this often, even when nothing outside the engine changed. The bookkeeping is
/// meant to keep rows and transfers in step without it; this bounds the cost of any case it gets wrong (a row left
/// showing `inProgress` with no transfer behind it) to seconds instead of a stall until the next foreign commit.
const HEAL_INTERVAL: Duration = Duration::from_secs(10);

/// A transfer to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Job {
    pub(crate) file_id: String,
    pub(crate) hash: ContentHash,
    pub(crate) path: String,
    /// The object key (downloads).
    pub(crate) key: String,
}

/// What the last reconcile found to do.
#[derive(Debug, Default)]
pub(crate) struct WorkLists {
    uploads: VecDeque<Job>,
    downloads: VecDeque<Job>,
    deletes: Vec<String>,
    /// Active rows without local bytes or `remoteKey`: another client has to upload them first.
    awaiting_remote: HashSet<String>,
}

#[derive(Debug)]
struct Inflight {
    file_id: String,
    hash: ContentHash,
    loaded: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
}

#[derive(Debug, Clone)]
struct Failure {
    attempts: u32,
    next_at: Instant,
    error: String,
}

/// How long content the application asked for is safe from eviction (see `RuntimeState::requested`).
const REQUESTED_CONTENT_PROTECTION: Duration = Duration::from_secs(60);

/// The engine's in-memory state, shared with status queries.
#[derive(Debug)]
pub(crate) struct RuntimeState {
    pub(crate) online: bool,
    offline_reason: String,
    work: WorkLists,
    inflight: HashMap<(TransferKind, String), Inflight>,
    hashes_inflight: HashSet<ContentHash>,
    deletes_inflight: HashSet<String>,
    failures: HashMap<(TransferKind, String), Failure>,
    delete_failures: HashMap<String, Failure>,
    prioritized: VecDeque<String>,
    /// Content the application asked for (`resolve_file_url`, `prioritize_download`) and when: eviction leaves it
    /// alone for [`REQUESTED_CONTENT_PROTECTION`], so a file fetched back for a reader is not evicted again at once.
    requested: HashMap<ContentHash, std::time::Instant>,
    /// Upload tasks running (each holds a slot until it ends; see `launch`).
    upload_slots: usize,
    /// Set while a reconcile has taken the change marks but not yet published the work lists it derives.
    reconciling: bool,
    reconciled: bool,
    running: bool,
    pending_writes: usize,
    /// Why the last reconcile failed, if it did.
    engine_error: Option<String>,
}

impl Default for RuntimeState {
    fn default() -> Self {
        RuntimeState {
            online: true,
            offline_reason: String::new(),
            work: WorkLists::default(),
            inflight: HashMap::new(),
            hashes_inflight: HashSet::new(),
            deletes_inflight: HashSet::new(),
            failures: HashMap::new(),
            delete_failures: HashMap::new(),
            prioritized: VecDeque::new(),
            requested: HashMap::new(),
            upload_slots: 0,
            reconciling: false,
            reconciled: false,
            running: false,
            pending_writes: 0,
            engine_error: None,
        }
    }
}

/// A finished piece of work, reported to the loop.
#[derive(Debug)]
pub(crate) enum Completion {
    Upload {
        job: Job,
        result: Result<Uploaded, FilesError>,
    },
    Download {
        job: Job,
        result: Result<(), FilesError>,
    },
    Delete {
        key: String,
        result: Result<(), FilesError>,
    },
    Health {
        healthy: bool,
    },
    /// An upload task ended (after its last `Upload`), so its slot is free.
    UploadSlotFreed,
}

/// Every trigger of the engine loop.
enum Event {
    Wake,
    Completion(Completion),
    Timer,
    Stop,
}

/// The engine loop. Ends when `stop` is set or the store shuts down.
pub(crate) async fn run(
    inner: Arc<Inner>,
    mut stop: watch::Receiver<bool>,
    completions: mpsc::UnboundedSender<Completion>,
    mut completion_receiver: mpsc::UnboundedReceiver<Completion>,
) {
    let mut engine = Engine {
        inner: Arc::clone(&inner),
        completions,
        writes: Vec::new(),
        first_write_at: None,
        keys_queued: HashSet::new(),
        next_health: Instant::now(),
        health_running: false,
        offline_delay: Duration::from_millis(500),
        last_reconcile: None,
        reconcile_cost: Duration::ZERO,
        next_progress: Instant::now(),
        evict_due: inner.options.local_byte_budget.is_some(),
        tasks: tokio::task::JoinSet::new(),
    };
    inner.runtime.lock().expect("runtime lock").running = true;
    loop {
        engine.turn();
        if inner.store.is_shut_down() {
            break;
        }
        let deadline = engine.next_deadline();
        let event = tokio::select! {
            _ = inner.wake.notified() => Event::Wake,
            Some(completion) = completion_receiver.recv() => Event::Completion(completion),
            _ = tokio::time::sleep_until(deadline.into()) => Event::Timer,
            _ = stop.changed() => Event::Stop,
        };
        match event {
            Event::Stop => break,
            Event::Completion(completion) => {
                engine.complete(completion);
                // Take every completion that is already here, so one turn commits them together.
                while let Ok(completion) = completion_receiver.try_recv() {
                    engine.complete(completion);
                }
            }
            Event::Wake | Event::Timer => {}
        }
    }
    // Interrupt running transfers: their rows say `inProgress` or `queued`, and the next start picks them up
    // again (partial downloads and multipart uploads resume).
    engine.tasks.abort_all();
    engine.flush();
    let mut runtime = inner.runtime.lock().expect("runtime lock");
    runtime.inflight.clear();
    runtime.hashes_inflight.clear();
    runtime.deletes_inflight.clear();
    runtime.upload_slots = 0;
    runtime.running = false;
    runtime.reconciled = false;
}

struct Engine {
    inner: Arc<Inner>,
    completions: mpsc::UnboundedSender<Completion>,
    writes: Vec<NewEvent>,
    /// When the oldest of `writes` was queued (they are committed within [`FLUSH_DELAY`]).
    first_write_at: Option<Instant>,
    /// Rows whose `remoteKey` update is among `writes`.
    keys_queued: HashSet<String>,
    next_health: Instant,
    health_running: bool,
    offline_delay: Duration,
    last_reconcile: Option<Instant>,
    reconcile_cost: Duration,
    next_progress: Instant,
    evict_due: bool,
    tasks: tokio::task::JoinSet<()>,
}

impl Engine {
    /// One turn: reconcile if needed, start what may start, commit state, evict, report progress.
    fn turn(&mut self) {
        while self.tasks.try_join_next().is_some() {}
        let now = Instant::now();
        // Before the marks are taken, so `is_idle` sees either a mark or a reconcile in progress.
        self.inner.runtime.lock().expect("runtime lock").reconciling = true;
        if self.last_reconcile.is_some_and(|last| now >= last + HEAL_INTERVAL) {
            self.inner.dirty.store(true, Ordering::SeqCst);
        }
        let everything = self.inner.dirty.load(Ordering::SeqCst) && self.reconcile_allowed(now);
        let files = if everything {
            self.inner.dirty.store(false, Ordering::SeqCst);
            // A full reconcile covers them.
            self.inner.changed_files.lock().expect("changed files lock").clear();
            None
        } else {
            let mut changed = self.inner.changed_files.lock().expect("changed files lock");
            (!changed.is_empty()).then(|| std::mem::take(&mut *changed))
        };
        if everything || files.is_some() {
            // State written by completions must be in the store before a reconcile reads it back.
            self.flush();
            let started = Instant::now();
            let result = self.reconcile(files.as_ref());
            self.inner.runtime.lock().expect("runtime lock").engine_error =
                result.as_ref().err().map(ToString::to_string);
            if let Err(error) = result {
                tracing::warn!(target: "livestore_files::_events::reconcile", %error, "reconcile failed");
                self.emit(FileSyncEvent::SyncError {
                    error: error.to_string(),
                    context: "reconcile".to_owned(),
                });
                self.inner.dirty.store(true, Ordering::SeqCst);
            }
            if everything {
                self.reconcile_cost = started.elapsed();
                self.last_reconcile = Some(Instant::now());
            }
        }
        self.inner.runtime.lock().expect("runtime lock").reconciling = false;
        if self.inner.remote.is_some() {
            self.maybe_check_health(now);
            self.launch();
        }
        if self.evict_due {
            // Before the completions' states are committed, so a finished download and the eviction it causes
            // become visible together. Rows whose `remoteKey` update is still queued look not uploaded, which
            // only makes eviction more careful.
            self.evict_due = false;
            let queued = self.writes.len();
            if let Err(error) = self.evict() {
                self.emit(FileSyncEvent::SyncError {
                    error: error.to_string(),
                    context: "evict".to_owned(),
                });
            }
            if self.writes.len() > queued {
                // Evictions change what a caller sees (bytes gone); their states are not held back.
                self.flush();
            }
        }
        if self.flush_due(now) {
            self.flush();
        }
        if now >= self.next_progress {
            self.report_progress();
            self.next_progress = now + Duration::from_millis(250);
        }
    }

    /// Whether the queued state writes should be committed now: always when nothing is moving, else once the
    /// oldest waited [`FLUSH_DELAY`] or [`MAX_DEFERRED_WRITES`] wait.
    fn flush_due(&self, now: Instant) -> bool {
        let Some(first) = self.first_write_at else { return false };
        self.writes.len() >= MAX_DEFERRED_WRITES
            || now >= first + FLUSH_DELAY
            || self.inner.runtime.lock().expect("runtime lock").inflight.is_empty()
    }

    /// Reconciles at most about every five times its own cost (and at least 20 ms apart), so a large table that
    /// changes constantly does not keep the loop busy.
    fn reconcile_allowed(&self, now: Instant) -> bool {
        self.last_reconcile.is_none_or(|last| now >= last + self.reconcile_gap())
    }

    /// The pause between reconciles: five times the last one's cost, at least 20 ms, and at least 200 ms while
    /// transfers run. Launching does not need a reconcile (started jobs leave the queue, failed ones return to
    /// it), so while many small transfers complete, re-deriving the queue after each batch would only burn CPU.
    fn reconcile_gap(&self) -> Duration {
        let busy = !self.inner.runtime.lock().expect("runtime lock").inflight.is_empty();
        let floor = if busy { Duration::from_millis(200) } else { Duration::from_millis(20) };
        (self.reconcile_cost * 5).max(floor)
    }

    fn next_deadline(&self) -> Instant {
        let now = Instant::now();
        let mut deadline = now + Duration::from_secs(1);
        if self.inner.remote.is_some() && !self.health_running {
            deadline = deadline.min(self.next_health);
        }
        if let Some(last) = self.last_reconcile {
            deadline = deadline.min(last + HEAL_INTERVAL);
            if self.inner.dirty.load(Ordering::SeqCst) {
                deadline = deadline.min(last + self.reconcile_gap());
            }
        }
        if let Some(first) = self.first_write_at {
            deadline = deadline.min(first + FLUSH_DELAY);
        }
        let runtime = self.inner.runtime.lock().expect("runtime lock");
        if !runtime.inflight.is_empty() {
            deadline = deadline.min(self.next_progress);
        }
        for failure in runtime.failures.values().chain(runtime.delete_failures.values()) {
            deadline = deadline.min(failure.next_at);
        }
        deadline.max(now + Duration::from_millis(1))
    }

    fn emit(&self, event: FileSyncEvent) {
        let _ = self.inner.events.send(event);
    }

    fn queue_write<E: livestore_client::schema::Event>(&mut self, event: &E) {
        match new_event(event) {
            Ok(event) => {
                self.first_write_at.get_or_insert_with(Instant::now);
                self.writes.push(event);
            }
            Err(error) => {
                tracing::error!(target: "livestore_files::_events::state", %error, "cannot encode a state event")
            }
        }
        self.inner.runtime.lock().expect("runtime lock").pending_writes = self.writes.len();
    }

    fn flush(&mut self) {
        if self.writes.is_empty() {
            return;
        }
        let writes = std::mem::take(&mut self.writes);
        self.first_write_at = None;
        self.keys_queued.clear();
        if let Err(error) = commit_for_file_sync(&self.inner.store, writes) {
            tracing::warn!(target: "livestore_files::_events::state", %error, "could not commit transfer state");
            self.emit(FileSyncEvent::SyncError {
                error: error.to_string(),
                context: "state".to_owned(),
            });
            self.inner.dirty.store(true, Ordering::SeqCst);
        }
        self.inner.runtime.lock().expect("runtime lock").pending_writes = 0;
    }

    fn last_error(&self, kind: TransferKind, file_id: &str) -> String {
        let runtime = self.inner.runtime.lock().expect("runtime lock");
        runtime
            .failures
            .get(&(kind, file_id.to_owned()))
            .map(|failure| failure.error.clone())
            .unwrap_or_default()
    }

    fn complete(&mut self, completion: Completion) {
        match completion {
            Completion::Health { healthy } => self.health_answered(healthy),
            Completion::Upload { job, result } => {
                match result {
                    Ok(uploaded) => {
                        if let Err(error) = self.upload_succeeded(&job, &uploaded) {
                            self.transfer_failed(TransferKind::Upload, &job, &error);
                        } else {
                            self.emit(FileSyncEvent::UploadComplete {
                                file_id: job.file_id.clone(),
                                skipped: uploaded.skipped,
                            });
                        }
                    }
                    Err(error) => self.transfer_failed(TransferKind::Upload, &job, &error),
                }
                // Only now: the job counts as in flight until its state writes are queued, so `is_idle` never
                // sees a moment with neither.
                self.finish_inflight(TransferKind::Upload, &job);
            }
            Completion::Download { job, result } => {
                match result {
                    Ok(()) => {
                        self.inner
                            .runtime
                            .lock()
                            .expect("runtime lock")
                            .failures
                            .remove(&(TransferKind::Download, job.file_id.clone()));
                        if let Err(error) = self.download_succeeded(&job) {
                            self.transfer_failed(TransferKind::Download, &job, &error);
                        } else {
                            self.emit(FileSyncEvent::DownloadComplete {
                                file_id: job.file_id.clone(),
                            });
                        }
                        self.evict_due = self.inner.options.local_byte_budget.is_some();
                    }
                    Err(error) => self.transfer_failed(TransferKind::Download, &job, &error),
                }
                self.finish_inflight(TransferKind::Download, &job);
            }
            Completion::Delete { key, result } => {
                let mut runtime = self.inner.runtime.lock().expect("runtime lock");
                runtime.deletes_inflight.remove(&key);
                match result {
                    Ok(()) => {
                        runtime.delete_failures.remove(&key);
                        runtime.work.deletes.retain(|queued| queued != &key);
                        drop(runtime);
                        self.queue_write(&FileRemoteDeleteDone { key: key.clone() });
                        self.emit(FileSyncEvent::RemoteDeleteComplete { key });
                    }
                    Err(error) => {
                        let attempts =
                            runtime.delete_failures.get(&key).map_or(0, |failure| failure.attempts)
                                + 1;
                        let delay = backoff(&self.inner.options, attempts);
                        runtime.delete_failures.insert(
                            key.clone(),
                            Failure {
                                attempts,
                                next_at: Instant::now() + delay,
                                error: error.to_string(),
                            },
                        );
                        drop(runtime);
                        self.check_connectivity(&error);
                        self.emit(FileSyncEvent::RemoteDeleteError {
                            key,
                            error: error.to_string(),
                        });
                    }
                }
            }
            Completion::UploadSlotFreed => {
                let mut runtime = self.inner.runtime.lock().expect("runtime lock");
                runtime.upload_slots = runtime.upload_slots.saturating_sub(1);
            }
        }
        // No reconcile is needed: a completion updates the work lists itself (a failed job goes back to its
        // queue, a finished one left it when it started), and what it commits is the engine's own doing.
    }

    fn finish_inflight(&mut self, kind: TransferKind, job: &Job) {
        let mut runtime = self.inner.runtime.lock().expect("runtime lock");
        runtime.inflight.remove(&(kind, job.file_id.clone()));
        runtime.hashes_inflight.remove(&job.hash);
    }

    fn report_progress(&self) {
        if self.inner.events.receiver_count() == 0 {
            return;
        }
        let progress: Vec<TransferProgress> =
            status::transfers(&self.inner.runtime.lock().expect("runtime lock"));
        for progress in progress {
            self.emit(match progress.kind {
                TransferKind::Upload => FileSyncEvent::UploadProgress { progress },
                TransferKind::Download => FileSyncEvent::DownloadProgress { progress },
            });
        }
    }
}

/// Deletes a remote object unless an active row uses it again (identical content saved meanwhile).
async fn delete_remote(
    inner: &Inner,
    remote: &crate::remote::SignerClient,
    key: &str,
) -> Result<(), FilesError> {
    if key_referenced(&inner.store, key, None)? {
        return Ok(());
    }
    remote.delete(key).await?;
    Ok(())
}

/// Forgets in-memory scheduling state of a file (after a delete).
pub(crate) fn forget_file(inner: &Inner, file_id: &str) {
    let mut runtime = inner.runtime.lock().expect("runtime lock");
    runtime.prioritized.retain(|id| id != file_id);
    runtime.failures.remove(&(TransferKind::Upload, file_id.to_owned()));
    runtime.failures.remove(&(TransferKind::Download, file_id.to_owned()));
}

/// Puts a download at the front of the queue.
///
/// The download is queued here too, not only through the row's state: an evicted row looks settled, and a state
/// write of the engine that was computed before this call (an eviction, say) may still land after it.
pub(crate) fn prioritize(inner: &Inner, job: Job) {
    let mut runtime = inner.runtime.lock().expect("runtime lock");
    let runtime = &mut *runtime;
    runtime.prioritized.retain(|id| id != &job.file_id);
    runtime.prioritized.push_front(job.file_id.clone());
    runtime.requested.insert(job.hash, std::time::Instant::now());
    runtime.failures.remove(&(TransferKind::Download, job.file_id.clone()));
    let known = runtime.inflight.contains_key(&(TransferKind::Download, job.file_id.clone()))
        || runtime.work.downloads.iter().any(|queued| queued.file_id == job.file_id);
    if !known {
        runtime.work.downloads.push_front(job);
    }
}
