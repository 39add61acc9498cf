//! The transfer engine: one actor (a tokio task) that owns all scheduling state, derives the work queue from the
//! store, runs transfers with bounded concurrency, records outcomes, retries failures with capped, jittered
//! exponential backoff, tracks the signer's health and evicts local copies over the byte budget.
//!
//! **One owner, messages in.** The handle (`crate::sync::FileSync`) never touches the engine's state: it sends a
//! [`Command`] over an unbounded channel (rows it changed, a priority, retry now, stop, ...), and questions that
//! need an answer carry a `oneshot` (is it idle? may `get_file` download this content?), like iroh-blobs' store
//! actor. What status queries need between turns (online, running transfers with progress, failure counts) is
//! published as a [`Snapshot`] on a `watch` channel after every turn. Transfer tasks report back on a second
//! channel ([`Completion`]). Every trigger of the loop is one [`Event`].
//!
//! **Plan, then perform.** Deciding is pure (`crate::plan`): the actor reads rows and the disk, calls a planner
//! with the current time, and performs the plan (SQL writes, file deletes, spawning transfers).
//!
//! **The queue is derived, not stored.** A reconcile joins `files` with `localFileState` and looks only at rows
//! that are not settled. So a crash, a restart or `kill -9` loses no work: whatever was queued or running is found
//! again from the same tables, and `inProgress` rows without a running transfer are simply queued again.
//! Everything is read at start and after commits the file sync did not make; a local operation names the rows it
//! changed and only those are read again; a completion needs no reconcile at all (it updates the lists itself).
//! A full reconcile also runs every [`HEAL_INTERVAL`] as a safety net.
//!
//! State writes are committed in batches: at once when nothing moves, else within [`FLUSH_DELAY`], so the
//! completions of many small files share a commit. Failures are never dropped: the row shows `error` with the
//! reason, and the transfer is retried after its backoff; when the signer comes back online every waiting retry
//! runs at once.
//!
//! Submodules: `reconcile` (reading rows, performing a reconcile plan), `launch` (spawning what the launch planner
//! picked), `uploads` (upload groups, finished uploads), `downloads` (finished and out-of-queue downloads),
//! `failures` (failures, health, offline), `evict` (byte budget), `status` (snapshot and what callers see).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use livestore_client::NewEvent;
use tokio::sync::{mpsc, oneshot, watch};

use crate::context::{Context, commit_for_file_sync, new_event};
use crate::error::FilesError;
use crate::layout::ContentHash;
use crate::plan::{self, Job, Schedule, WorkLists};
use crate::schema::FileRemoteDeleteDone;
use crate::status::{FileSyncEvent, TransferKind, TransferProgress};
use crate::transfer::Uploaded;

mod downloads;
mod evict;
mod failures;
mod launch;
mod reconcile;
mod status;
mod uploads;

pub(crate) use downloads::download_now;
pub use reconcile::read_unsettled;
pub(crate) use status::{Snapshot, status};

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

/// What the handle asks of the engine.
#[derive(Debug)]
pub(crate) enum Command {
    /// A local operation changed these rows: read them again (and only them).
    RowsChanged { file_ids: Vec<String> },
    /// Someone else committed to `files` (pulled events, other writers): derive everything again.
    StoreChanged,
    /// A file was deleted: forget its retries and priority.
    Forget { file_id: String },
    /// Put this download at the front of the queue (and protect its content from eviction for a while).
    Prioritize { job: Job },
    /// Retry every failed transfer and remote delete now.
    RetryNow,
    /// `get_file` wants to download this content outside the queue: `true` when nothing else moves it (it is then
    /// claimed until [`Command::ReleaseContent`]).
    ClaimContent { hash: ContentHash, reply: oneshot::Sender<bool> },
    /// `get_file`'s download ended: release the content and look at everything again.
    ReleaseContent { hash: ContentHash },
    /// Whether nothing is left to do.
    IsIdle { reply: oneshot::Sender<bool> },
    /// Interrupt transfers and end the loop.
    Stop,
}

/// What the engine keeps across a stop and the next start (a stopped engine hands it back to the handle).
#[derive(Debug)]
pub(crate) struct EngineState {
    schedule: Schedule,
    work: WorkLists,
    online: bool,
    /// Content the application asked for and when (see `plan::evict`).
    requested: std::collections::BTreeMap<ContentHash, Instant>,
    /// Why the last reconcile failed, if it did.
    engine_error: Option<String>,
}

impl EngineState {
    /// Makes every failed transfer and remote delete eligible at `now`.
    pub(crate) fn retry_all(&mut self, now: Instant) {
        self.schedule.retry_all(now);
    }
}

impl Default for EngineState {
    fn default() -> Self {
        EngineState {
            schedule: Schedule::default(),
            work: WorkLists::default(),
            online: true,
            requested: Default::default(),
            engine_error: None,
        }
    }
}

/// A finished piece of work, reported to the loop by a task.
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
    Command(Command),
    /// The handle went away; the engine keeps running until stopped or the store shuts down.
    HandleGone,
    Completion(Completion),
    Timer,
}

/// Runs the engine until [`Command::Stop`] or the store shuts down; returns the state to keep.
pub(crate) async fn run(
    ctx: Arc<Context>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    state: EngineState,
    snapshot: Arc<watch::Sender<Snapshot>>,
) -> EngineState {
    let (completions, mut completion_receiver) = mpsc::unbounded_channel::<Completion>();
    let mut engine = Engine::new(ctx, state, snapshot, completions);
    let mut handle_gone = false;
    'outer: loop {
        engine.turn();
        engine.publish();
        if engine.ctx.store.is_shut_down() {
            break;
        }
        let deadline = engine.next_deadline();
        let event = tokio::select! {
            command = commands.recv(), if !handle_gone => {
                command.map_or(Event::HandleGone, Event::Command)
            }
            Some(completion) = completion_receiver.recv() => Event::Completion(completion),
            _ = tokio::time::sleep_until(deadline.into()) => Event::Timer,
        };
        match event {
            Event::Command(command) => {
                // Take every command that is already here, so one turn handles them together.
                let mut next = Some(command);
                while let Some(command) = next {
                    if engine.handle(command).is_break() {
                        break 'outer;
                    }
                    next = commands.try_recv().ok();
                }
            }
            Event::HandleGone => handle_gone = true,
            Event::Completion(completion) => {
                // Take every completion that is already here, so one turn commits them together.
                engine.complete(completion);
                while let Ok(completion) = completion_receiver.try_recv() {
                    engine.complete(completion);
                }
            }
            Event::Timer => {}
        }
    }
    engine.shut_down()
}

struct Engine {
    ctx: Arc<Context>,
    state: EngineState,
    snapshot: Arc<watch::Sender<Snapshot>>,
    completions: mpsc::UnboundedSender<Completion>,
    /// Derive everything again (at start, after foreign commits).
    dirty: bool,
    /// Rows a local operation changed since the last reconcile.
    changed: BTreeSet<String>,
    /// A full reconcile has published its lists.
    reconciled: bool,
    writes: Vec<NewEvent>,
    /// When the oldest of `writes` was queued (they are committed within [`FLUSH_DELAY`]).
    first_write_at: Option<Instant>,
    /// Rows whose `remoteKey` update is among `writes`.
    keys_queued: BTreeSet<String>,
    next_health: Instant,
    health_running: bool,
    offline_delay: Duration,
    last_reconcile: Option<Instant>,
    reconcile_cost: Duration,
    next_progress: Instant,
    evict_due: bool,
    /// When the list of running transfers was last published (see `status`).
    transfers_published_at: Instant,
    tasks: tokio::task::JoinSet<()>,
}

impl Engine {
    fn new(
        ctx: Arc<Context>,
        state: EngineState,
        snapshot: Arc<watch::Sender<Snapshot>>,
        completions: mpsc::UnboundedSender<Completion>,
    ) -> Engine {
        let now = Instant::now();
        Engine {
            evict_due: ctx.options.local_byte_budget.is_some(),
            ctx,
            state,
            snapshot,
            completions,
            dirty: true,
            changed: BTreeSet::new(),
            reconciled: false,
            writes: Vec::new(),
            first_write_at: None,
            keys_queued: BTreeSet::new(),
            next_health: now,
            health_running: false,
            offline_delay: Duration::from_millis(500),
            last_reconcile: None,
            reconcile_cost: Duration::ZERO,
            next_progress: now,
            transfers_published_at: now,
            tasks: tokio::task::JoinSet::new(),
        }
    }

    /// Handles one command; `Break` ends the loop.
    fn handle(&mut self, command: Command) -> std::ops::ControlFlow<()> {
        match command {
            Command::RowsChanged { file_ids } => self.changed.extend(file_ids),
            Command::StoreChanged => self.dirty = true,
            Command::Forget { file_id } => self.state.schedule.forget_file(&file_id),
            Command::Prioritize { job } => self.prioritize(job),
            Command::RetryNow => self.state.schedule.retry_all(Instant::now()),
            Command::ClaimContent { hash, reply } => {
                let claimed = self.state.schedule.hashes_moving.insert(hash);
                if reply.send(claimed).is_err() && claimed {
                    // The asker went away before it knew: nobody will release it.
                    self.state.schedule.hashes_moving.remove(&hash);
                }
            }
            Command::ReleaseContent { hash } => {
                self.state.schedule.hashes_moving.remove(&hash);
                self.dirty = true;
            }
            Command::IsIdle { reply } => {
                let _ = reply.send(self.is_idle());
            }
            Command::Stop => return std::ops::ControlFlow::Break(()),
        }
        std::ops::ControlFlow::Continue(())
    }

    /// Interrupts running transfers (their rows say `inProgress` or `queued`, and the next start picks them up
    /// again: partial downloads and multipart uploads resume), commits what waits, and hands the state back.
    fn shut_down(mut self) -> EngineState {
        self.tasks.abort_all();
        self.flush();
        let schedule = &mut self.state.schedule;
        schedule.running.clear();
        schedule.hashes_moving.clear();
        schedule.deletes_running.clear();
        schedule.upload_slots = 0;
        let state = self.state;
        // What the stopped engine was doing is no longer running.
        self.snapshot.send_modify(|snapshot| snapshot.transfers.clear());
        state
    }

    /// One turn: reconcile if needed, start what may start, commit state, evict, report progress.
    fn turn(&mut self) {
        while self.tasks.try_join_next().is_some() {}
        let now = Instant::now();
        if self.last_reconcile.is_some_and(|last| now >= last + HEAL_INTERVAL) {
            self.dirty = true;
        }
        let everything = self.dirty && self.reconcile_allowed(now);
        let files = if everything {
            self.dirty = false;
            // A full reconcile covers them.
            self.changed.clear();
            None
        } else {
            (!self.changed.is_empty()).then(|| std::mem::take(&mut self.changed))
        };
        if everything || files.is_some() {
            // State written by completions must be in the store before a reconcile reads it back.
            self.flush();
            let started = Instant::now();
            let result = self.reconcile(files.as_ref());
            self.state.engine_error = result.as_ref().err().map(ToString::to_string);
            if let Err(error) = result {
                tracing::warn!(target: "livestore_files::_events::reconcile", %error, "reconcile failed");
                self.ctx.emit(FileSyncEvent::SyncError {
                    error: error.to_string(),
                    context: "reconcile".to_owned(),
                });
                self.dirty = true;
            }
            if everything {
                self.reconcile_cost = started.elapsed();
                self.last_reconcile = Some(Instant::now());
            }
        }
        if self.ctx.remote.is_some() {
            self.maybe_check_health(now);
            self.launch();
        }
        if self.evict_due {
            self.evict_now();
        }
        if self.flush_due(now) {
            self.flush();
        }
        if now >= self.next_progress {
            self.report_progress();
            self.next_progress = now + Duration::from_millis(250);
        }
    }

    /// Whether nothing is left to do: everything reconciled, committed, and no work waiting or running.
    fn is_idle(&self) -> bool {
        let schedule = &self.state.schedule;
        !self.dirty
            && self.changed.is_empty()
            && self.reconciled
            && self.state.engine_error.is_none()
            && self.writes.is_empty()
            && schedule.running.is_empty()
            && schedule.deletes_running.is_empty()
            && self.state.work.is_empty()
    }

    /// Whether the queued state writes should be committed now: always when nothing is moving, else once the
    /// oldest waited [`FLUSH_DELAY`] or [`MAX_DEFERRED_WRITES`] wait.
    fn flush_due(&self, now: Instant) -> bool {
        let Some(first) = self.first_write_at else { return false };
        self.writes.len() >= MAX_DEFERRED_WRITES
            || now >= first + FLUSH_DELAY
            || self.state.schedule.running.is_empty()
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
        let busy = !self.state.schedule.running.is_empty();
        let floor = if busy { Duration::from_millis(200) } else { Duration::from_millis(20) };
        (self.reconcile_cost * 5).max(floor)
    }

    fn next_deadline(&self) -> Instant {
        let now = Instant::now();
        let mut deadline = now + Duration::from_secs(1);
        if self.ctx.remote.is_some() && !self.health_running {
            deadline = deadline.min(self.next_health);
        }
        if let Some(last) = self.last_reconcile {
            deadline = deadline.min(last + HEAL_INTERVAL);
            if self.dirty {
                deadline = deadline.min(last + self.reconcile_gap());
            }
        }
        if let Some(first) = self.first_write_at {
            deadline = deadline.min(first + FLUSH_DELAY);
        }
        if !self.state.schedule.running.is_empty() {
            deadline = deadline.min(self.next_progress);
        }
        if let Some(retry) = self.state.schedule.next_retry() {
            deadline = deadline.min(retry);
        }
        deadline.max(now + Duration::from_millis(1))
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
    }

    fn flush(&mut self) {
        if self.writes.is_empty() {
            return;
        }
        let writes = std::mem::take(&mut self.writes);
        self.first_write_at = None;
        self.keys_queued.clear();
        if let Err(error) = commit_for_file_sync(&self.ctx.store, writes) {
            tracing::warn!(target: "livestore_files::_events::state", %error, "could not commit transfer state");
            self.ctx.emit(FileSyncEvent::SyncError {
                error: error.to_string(),
                context: "state".to_owned(),
            });
            self.dirty = true;
        }
    }

    fn last_error(&self, kind: TransferKind, file_id: &str) -> String {
        self.state
            .schedule
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
                            self.ctx.emit(FileSyncEvent::UploadComplete {
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
                        self.state
                            .schedule
                            .failures
                            .remove(&(TransferKind::Download, job.file_id.clone()));
                        if let Err(error) = self.download_succeeded(&job) {
                            self.transfer_failed(TransferKind::Download, &job, &error);
                        } else {
                            self.ctx.emit(FileSyncEvent::DownloadComplete {
                                file_id: job.file_id.clone(),
                            });
                        }
                        self.evict_due = self.ctx.options.local_byte_budget.is_some();
                    }
                    Err(error) => self.transfer_failed(TransferKind::Download, &job, &error),
                }
                self.finish_inflight(TransferKind::Download, &job);
            }
            Completion::Delete { key, result } => self.delete_finished(key, result),
            Completion::UploadSlotFreed => {
                let slots = &mut self.state.schedule.upload_slots;
                *slots = slots.saturating_sub(1);
            }
        }
        // No reconcile is needed: a completion updates the work lists itself (a failed job goes back to its
        // queue, a finished one left it when it started), and what it commits is the engine's own doing.
    }

    fn delete_finished(&mut self, key: String, result: Result<(), FilesError>) {
        self.state.schedule.deletes_running.remove(&key);
        match result {
            Ok(()) => {
                self.state.schedule.delete_failures.remove(&key);
                self.state.work.deletes.retain(|queued| queued != &key);
                self.queue_write(&FileRemoteDeleteDone { key: key.clone() });
                self.ctx.emit(FileSyncEvent::RemoteDeleteComplete { key });
            }
            Err(error) => {
                self.record_delete_failure(&key, &error);
                self.check_connectivity(&error);
                self.ctx.emit(FileSyncEvent::RemoteDeleteError { key, error: error.to_string() });
            }
        }
    }

    fn finish_inflight(&mut self, kind: TransferKind, job: &Job) {
        self.state.schedule.running.remove(&(kind, job.file_id.clone()));
        self.state.schedule.hashes_moving.remove(&job.hash);
    }

    fn report_progress(&self) {
        if self.ctx.events.receiver_count() == 0 {
            return;
        }
        let progress: Vec<TransferProgress> = status::transfers(&self.state.schedule.running);
        for progress in progress {
            self.ctx.emit(match progress.kind {
                TransferKind::Upload => FileSyncEvent::UploadProgress { progress },
                TransferKind::Download => FileSyncEvent::DownloadProgress { progress },
            });
        }
    }

    /// Puts a download at the front of the queue.
    ///
    /// The download is queued here too, not only through the row's state: an evicted row looks settled, and a
    /// state write of the engine that was computed before this command (an eviction, say) may still land after it.
    fn prioritize(&mut self, job: Job) {
        let schedule = &mut self.state.schedule;
        schedule.prioritized.retain(|id| id != &job.file_id);
        schedule.prioritized.push_front(job.file_id.clone());
        self.state.requested.insert(job.hash, Instant::now());
        let id = (TransferKind::Download, job.file_id.clone());
        schedule.failures.remove(&id);
        let known = schedule.running.contains_key(&id)
            || self.state.work.downloads.iter().any(|queued| queued.file_id == job.file_id);
        if !known {
            self.state.work.downloads.push_front(job);
        }
    }
}

/// Deletes a remote object unless an active row uses it again (identical content saved meanwhile).
async fn delete_remote(
    ctx: &Context,
    remote: &crate::remote::SignerClient,
    key: &str,
) -> Result<(), FilesError> {
    if crate::context::key_referenced(&ctx.store, key, None)? {
        return Ok(());
    }
    remote.delete(key).await?;
    Ok(())
}

/// The launch limits from the options.
fn limits(options: &crate::options::FileSyncOptions) -> plan::Limits {
    plan::Limits {
        max_downloads: options.max_concurrent_downloads,
        max_uploads: options.max_concurrent_uploads,
        max_deletes: DELETE_CONCURRENCY,
        multipart_threshold: options.multipart_threshold,
    }
}
