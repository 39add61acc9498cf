//! The file workload and each client's sim file engine.
//!
//! File operations write the real filesync events (`v1.FileCreated`, `v1.FileUpdated`, `v1.FileDeleted`, the
//! client-only `localFileState` and `fileRemoteDeletes` events) to the client's real `Store`, exactly as
//! `livestore_files::FileSync` does; the synced ones travel through the simulated server like every other event.
//!
//! At its ticks a client's sim file engine does what the real engine's turn does, with the real pieces where they
//! are pure: it reads the rows with the engine's own query (`livestore_files::sim::read_unsettled`), calls the
//! real planners (`reconcile`, `merge_work`, `launch`, and `backoff` with a seeded random value) and performs
//! the plan against the simulated [`BlobStore`](crate::files::BlobStore) and the client's
//! [`LocalArea`](crate::files::LocalArea). The *perform* part is re-implemented here, small on purpose, mirroring
//! `livestore-files/src/engine/{reconcile,launch,uploads,downloads,failures}.rs` and `sync.rs` (save, update,
//! delete): what a finished upload, download or delete writes, and what a failure records. It does not model
//! eviction, prioritized downloads, pins (a save is one step here), health checks or multipart; the real actor's
//! I/O is tested by `livestore-files`' integration tests. So this tests the planners, the schema and the events
//! under sync, crashes and blob faults, not the actor's tokio plumbing.
//!
//! State writes are queued and committed at the next tick (the real engine defers them up to 50 ms), so a crash
//! can drop them, as it can in the real engine.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use livestore_client::NewEvent;
use livestore_client::schema::Query;
use livestore_files::layout::{remote_key_for_path, stored_path};
use livestore_files::schema::{
    FILES_TABLE, FileCreated, FileDeleted, FileRecord, FileRemoteDeleteDone,
    FileRemoteDeleteQueued, FileUpdated, LocalFileState, LocalFileStateRemove,
    REMOTE_DELETES_TABLE, RemoteDelete, TransferStatus,
};
use livestore_files::sim::{
    Failure, Job, Limits, LocalView, StateWrite, active_rows_with_hash, backoff, hash_referenced,
    key_referenced, launch, merge_work, read_unsettled, reconcile, row,
};
use livestore_files::status::TransferKind;
use livestore_files::{ContentHash, FilesError};
use rand::Rng;

use super::{Event, Phase, Sim};
use crate::error::{Invariant, Violation};
use crate::files::{STORE_ID, Transfer, content};
use crate::mutant::Mutant;
use crate::plan::Op;
use crate::schema::new_event;
use crate::stats::Hit;
use crate::trace::Node;

/// A client's file engine looks at its rows at least this often.
const TICK_EVERY: Duration = Duration::from_secs(1);
/// Queued state writes are committed within this delay (the real engine's `FLUSH_DELAY`).
const FLUSH_DELAY: Duration = Duration::from_millis(50);
/// The real engine's default retry delays (`FileSyncOptions`).
const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// The real engine's default limits.
const LIMITS: Limits = Limits {
    max_downloads: 4,
    max_uploads: 4,
    max_deletes: 2,
    multipart_threshold: 4 * 1024 * 1024 * 1024,
};
/// Virtual time 0 as epoch milliseconds (2026-01-01), for `createdAt` and friends.
const EPOCH_MS: i64 = 1_767_225_600_000;

/// A blob store fault drawn for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlobFault {
    /// 5xx: nothing done.
    ServerError,
    /// Done, but the client sees a timeout.
    TimeoutAfterSuccess,
    /// The upload's body was cut: nothing stored.
    CutUpload,
    /// The bytes served are not the object's.
    CorruptRead,
}

/// What a call is, for the fault draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Put,
    Get,
    Delete,
}

impl Sim<'_> {
    fn instant(&self, at: Duration) -> Instant {
        self.base + at
    }

    fn now_ms(&self) -> i64 {
        EPOCH_MS + i64::try_from(self.world.now().as_millis()).unwrap_or(i64::MAX)
    }

    fn files_error(&self, client: usize, doing: &str, error: &FilesError) -> Violation {
        Violation::files(client, self.world.now(), doing, error)
    }

    fn intact(&self, client: usize, detail: &str) -> Violation {
        Violation::new(
            Invariant::FilesIntact,
            self.world.now(),
            format!("client {client}: {detail}"),
        )
    }

    /// The `delete-referenced-object` mutant: remote deletes skip their reference checks.
    fn delete_unchecked(&self) -> bool {
        self.options.mutant == Some(Mutant::DeleteReferencedObject)
    }

    /// Carries out a file operation of the plan on a running client.
    pub(super) fn run_file_op(
        &mut self,
        client: usize,
        op_id: usize,
        what: &Op,
    ) -> Result<(), Violation> {
        let now_ms = self.now_ms();
        let store = self.clients[client].store.clone().expect("a running client has a store");
        let active = |id: &str| -> Result<Option<FileRecord>, FilesError> {
            Ok(row(&store, id)?.filter(FileRecord::is_active))
        };
        let mut events = Vec::new();
        let mut old_content = None;
        let file_id;
        match *what {
            Op::SaveFile { content: number, .. } => {
                self.hits.count(Hit::FileSave);
                let bytes = content(number);
                let hash = ContentHash::of(&bytes);
                self.clients[client]
                    .local
                    .insert(hash, bytes)
                    .map_err(|detail| self.intact(client, &detail))?;
                file_id = format!("f{op_id}");
                let path = stored_path(STORE_ID, &hash);
                events.push(new_event(&FileCreated {
                    id: file_id.clone(),
                    path: path.clone(),
                    content_hash: hash.to_string(),
                    created_at: now_ms,
                    updated_at: now_ms,
                    metadata_json: None,
                }));
                events.push(new_event(&new_bytes_state(&file_id, &path, &hash).to_event()));
            }
            Op::ReplaceFile { target, content: number, .. } => {
                let id = format!("f{target}");
                let Some(row) = active(&id).map_err(|e| self.files_error(client, "row", &e))?
                else {
                    return Ok(());
                };
                let bytes = content(number);
                let hash = ContentHash::of(&bytes);
                if hash.to_string() == row.content_hash {
                    return Ok(());
                }
                self.hits.count(Hit::FileReplace);
                self.clients[client]
                    .local
                    .insert(hash, bytes)
                    .map_err(|detail| self.intact(client, &detail))?;
                let path = stored_path(STORE_ID, &hash);
                events.push(new_event(&FileUpdated {
                    id: id.clone(),
                    path: path.clone(),
                    remote_key: String::new(),
                    content_hash: hash.to_string(),
                    updated_at: now_ms,
                    metadata_json: Some(None),
                }));
                events.push(new_event(&new_bytes_state(&id, &path, &hash).to_event()));
                events.extend(
                    remote_delete_if_unreferenced(&store, &row, now_ms, self.delete_unchecked())
                        .map_err(|e| self.files_error(client, "references", &e))?,
                );
                old_content = Some(row.content_hash);
                file_id = id;
            }
            Op::DeleteFile { target, .. } => {
                let id = format!("f{target}");
                let Some(row) = active(&id).map_err(|e| self.files_error(client, "row", &e))?
                else {
                    return Ok(());
                };
                self.hits.count(Hit::FileDelete);
                events.push(new_event(&FileDeleted { id: id.clone(), deleted_at: now_ms }));
                events.push(new_event(&LocalFileStateRemove { file_id: id.clone() }));
                events.extend(
                    remote_delete_if_unreferenced(&store, &row, now_ms, self.delete_unchecked())
                        .map_err(|e| self.files_error(client, "references", &e))?,
                );
                old_content = Some(row.content_hash);
                self.clients[client].files.schedule.forget_file(&id);
                file_id = id;
            }
            _ => unreachable!("only file operations come here"),
        }
        let now = self.world.now();
        self.trace.step(now, Node::Client(client), "file op", file_id.as_bytes());
        self.commit(client, events, Vec::new())?;
        if let Some(old) = old_content {
            // `remove_local_if_unreferenced`: the old bytes go unless an active row still uses them.
            let used = hash_referenced(&store, &old)
                .map_err(|e| self.files_error(client, "references", &e))?;
            if let (false, Ok(hash)) = (used, old.parse::<ContentHash>()) {
                self.clients[client].local.remove(&hash);
            }
        }
        self.arm_file_tick(client, now);
        Ok(())
    }

    /// Arms the client's file tick at `at` unless one is armed earlier.
    pub(super) fn arm_file_tick(&mut self, client: usize, at: Duration) {
        if self.plan.files.is_none() {
            return;
        }
        let files = &mut self.clients[client].files;
        if files.armed.is_some_and(|armed| armed <= at) {
            return;
        }
        files.tick_number += 1;
        files.armed = Some(at);
        let number = files.tick_number;
        self.world.schedule(at, Event::FileTick { client, number });
    }

    /// One turn of the client's file engine: commit queued writes, reconcile, launch, commit, re-arm.
    pub(super) fn file_tick(&mut self, client: usize, number: u64) -> Result<(), Violation> {
        let state = &mut self.clients[client];
        if state.files.tick_number != number {
            return Ok(());
        }
        state.files.armed = None;
        if state.crashed || state.store.is_none() {
            return Ok(());
        }
        self.flush_files(client)?;
        self.reconcile_files(client)?;
        self.launch_files(client);
        self.flush_files(client)?;
        let now = self.world.now();
        let mut next = now + TICK_EVERY;
        if let Some(retry) = self.clients[client].files.schedule.next_retry() {
            // Not before the next flush: a retry that is due but cannot start yet (its content is moving, the
            // slots are full) must not spin at one instant.
            let retry = retry.saturating_duration_since(self.base).max(now + FLUSH_DELAY);
            next = next.min(retry);
        }
        self.arm_file_tick(client, next);
        Ok(())
    }

    /// Commits the queued state writes (one batch, like the real engine's flush).
    fn flush_files(&mut self, client: usize) -> Result<(), Violation> {
        let files = &mut self.clients[client].files;
        if files.writes.is_empty() {
            return Ok(());
        }
        let writes = std::mem::take(&mut files.writes);
        files.keys_queued.clear();
        let names: Vec<&str> = writes.iter().map(|event| event.name.as_str()).collect();
        self.trace.step(
            self.world.now(),
            Node::Client(client),
            "file state",
            names.join(",").as_bytes(),
        );
        self.commit(client, writes, Vec::new())
    }

    fn queue_write<E: livestore_client::schema::Event>(&mut self, client: usize, event: &E) {
        self.clients[client].files.writes.push(new_event(event));
    }

    /// `Engine::reconcile` with every row: the real query and the real planner, then its plan performed.
    fn reconcile_files(&mut self, client: usize) -> Result<(), Violation> {
        let plan = {
            let state = &self.clients[client];
            let store = state.store.as_ref().expect("a running client has a store");
            let rows = read_unsettled(store, None, false)
                .map_err(|e| self.files_error(client, "read rows", &e))?;
            let mut local = LocalView::default();
            for row in rows.iter().filter(|row| row.deleted_at.is_none()) {
                if let Ok(hash) = row.content_hash.parse::<ContentHash>()
                    && let Some(bytes) = state.local.get(&hash)
                {
                    local.present.insert(hash, bytes.len() as u64);
                }
            }
            let deletes: Vec<RemoteDelete> = store
                .query(&Query::select(REMOTE_DELETES_TABLE).order_by("queuedAt"))
                .map_err(|e| Violation::store(client, self.world.now(), "remote deletes", &e))?;
            let keys: Vec<String> = deletes.into_iter().map(|delete| delete.key).collect();
            reconcile(&rows, &local, &state.files.schedule, false, &keys)
        };
        for hash in &plan.local_deletes {
            self.clients[client].local.remove(hash);
        }
        let now_ms = self.now_ms();
        for write in &plan.writes {
            match write {
                StateWrite::Upsert(state) => self.queue_write(client, &state.to_event()),
                StateWrite::Remove { file_id } => {
                    self.queue_write(client, &LocalFileStateRemove { file_id: file_id.clone() })
                }
                StateWrite::QueueRemoteDelete { key } => self.queue_write(
                    client,
                    &FileRemoteDeleteQueued { key: key.clone(), queued_at: now_ms },
                ),
            }
        }
        let files = &mut self.clients[client].files;
        for file_id in &plan.forget {
            files.schedule.forget_file(file_id);
        }
        merge_work(
            &mut files.work,
            plan.work,
            None,
            &mut files.schedule.prioritized,
            &BTreeSet::new(),
        );
        Ok(())
    }

    /// `Engine::launch`: the real launch planner, then the transfers started (each completes after a latency).
    fn launch_files(&mut self, client: usize) {
        let now = self.instant(self.world.now());
        let files = &mut self.clients[client].files;
        let plan = launch(&mut files.work, &mut files.schedule, &LIMITS, now);
        for job in plan.downloads {
            self.mark_in_progress(client, TransferKind::Download, &job);
            self.start_transfer(client, Transfer::Download(job));
        }
        let groups = plan
            .upload_groups
            .into_iter()
            .chain(plan.uploads_alone.into_iter().map(|job| vec![job]));
        for group in groups {
            for job in &group {
                self.mark_in_progress(client, TransferKind::Upload, job);
            }
            self.start_transfer(client, Transfer::Uploads(group));
        }
        for key in plan.deletes {
            self.start_transfer(client, Transfer::Delete(key));
        }
    }

    fn mark_in_progress(&mut self, client: usize, kind: TransferKind, job: &Job) {
        let (download, upload, local_hash) = match kind {
            TransferKind::Upload => {
                (TransferStatus::Done, TransferStatus::InProgress, job.hash.to_string())
            }
            TransferKind::Download => {
                (TransferStatus::InProgress, TransferStatus::Done, String::new())
            }
        };
        let last_sync_error = self.clients[client]
            .files
            .schedule
            .failures
            .get(&(kind, job.file_id.clone()))
            .map(|failure| failure.error.clone())
            .unwrap_or_default();
        let state = LocalFileState {
            file_id: job.file_id.clone(),
            path: job.path.clone(),
            local_hash,
            download_status: download,
            upload_status: upload,
            last_sync_error,
        };
        self.queue_write(client, &state.to_event());
    }

    fn start_transfer(&mut self, client: usize, transfer: Transfer) {
        let state = &mut self.clients[client];
        let id = state.files.next_transfer;
        state.files.next_transfer += 1;
        state.files.inflight.insert(id, transfer);
        let latency = Duration::from_millis(state.file_rng.random_range(5..300));
        let generation = state.files.generation;
        self.world.schedule_in(latency, Event::FileDone { client, generation, id });
    }

    /// A blob store fault for this call, if one fires (only while the faults run).
    fn blob_fault(&mut self, call: Call) -> Option<BlobFault> {
        let percent = self.plan.files.map_or(0, |files| files.fault_percent);
        if self.phase != Phase::Faults || self.blob_rng.random_range(0..100) >= percent {
            return None;
        }
        let kinds: &[BlobFault] = match call {
            Call::Put => {
                &[BlobFault::ServerError, BlobFault::TimeoutAfterSuccess, BlobFault::CutUpload]
            }
            Call::Get => &[BlobFault::ServerError, BlobFault::CorruptRead],
            Call::Delete => &[BlobFault::ServerError, BlobFault::TimeoutAfterSuccess],
        };
        let fault = kinds[self.blob_rng.random_range(0..kinds.len())];
        self.hits.count(match fault {
            BlobFault::ServerError => Hit::BlobServerError,
            BlobFault::TimeoutAfterSuccess => Hit::BlobTimeoutAfterSuccess,
            BlobFault::CutUpload => Hit::BlobCutUpload,
            BlobFault::CorruptRead => Hit::BlobCorruptRead,
        });
        Some(fault)
    }

    /// A transfer of the client finished (ignored if its process has died since).
    pub(super) fn file_done(
        &mut self,
        client: usize,
        generation: u64,
        id: u64,
    ) -> Result<(), Violation> {
        let state = &mut self.clients[client];
        if state.crashed || state.files.generation != generation {
            return Ok(());
        }
        let Some(transfer) = state.files.inflight.remove(&id) else { return Ok(()) };
        let reachable = !state.offline && !self.net.is_partitioned(client);
        let now = self.world.now();
        self.trace.step(now, Node::Client(client), "file done", format!("{transfer:?}").as_bytes());
        match transfer {
            Transfer::Uploads(jobs) => {
                for job in jobs {
                    self.finish_upload(client, &job, reachable)?;
                }
                let slots = &mut self.clients[client].files.schedule.upload_slots;
                *slots = slots.saturating_sub(1);
            }
            Transfer::Download(job) => self.finish_download(client, &job, reachable)?,
            Transfer::Delete(key) => self.finish_delete(client, key, reachable)?,
        }
        self.arm_file_tick(client, now + FLUSH_DELAY);
        Ok(())
    }

    fn finish_upload(
        &mut self,
        client: usize,
        job: &Job,
        reachable: bool,
    ) -> Result<(), Violation> {
        let key = remote_key_for_path(&stored_path(STORE_ID, &job.hash));
        let bytes = self.clients[client].local.get(&job.hash).cloned();
        let generation = self.server.generation();
        let outcome = match bytes {
            _ if !reachable => {
                self.hits.count(Hit::BlobUnreachable);
                Err("the object store is unreachable".to_owned())
            }
            None => Err("the local copy is missing".to_owned()),
            Some(bytes) => {
                let fault = self.blob_fault(Call::Put);
                if matches!(fault, None | Some(BlobFault::TimeoutAfterSuccess)) {
                    self.blob
                        .put(&key, &bytes, generation)
                        .map_err(|detail| self.intact(client, &detail))?;
                }
                match fault {
                    None | Some(BlobFault::CorruptRead) => Ok(()),
                    Some(BlobFault::ServerError) => Err("PUT: 503 Service Unavailable".to_owned()),
                    Some(BlobFault::CutUpload) => Err("PUT: connection reset mid-body".to_owned()),
                    Some(BlobFault::TimeoutAfterSuccess) => Err("PUT: timed out".to_owned()),
                }
            }
        };
        let outcome = match outcome {
            Err(_) if reachable && self.options.mutant == Some(Mutant::UploadDoneBeforePut) => {
                Ok(())
            }
            other => other,
        };
        match outcome {
            Ok(()) => {
                self.hits.count(Hit::Upload);
                self.upload_succeeded(client, job, &key)?;
            }
            Err(error) => self.transfer_failed(client, TransferKind::Upload, job, error)?,
        }
        self.finish_inflight(client, TransferKind::Upload, job);
        Ok(())
    }

    /// `Engine::upload_succeeded`: `remoteKey` on every active row with this content (and path) that lacks it,
    /// `done`/`done` for the job's row, or the object's deletion queued when every such row went away.
    fn upload_succeeded(&mut self, client: usize, job: &Job, key: &str) -> Result<(), Violation> {
        self.clients[client]
            .files
            .schedule
            .failures
            .remove(&(TransferKind::Upload, job.file_id.clone()));
        let store = self.clients[client].store.clone().expect("a running client has a store");
        let hash = job.hash.to_string();
        let rows = active_rows_with_hash(&store, &hash)
            .map_err(|e| self.files_error(client, "rows by hash", &e))?;
        let now_ms = self.now_ms();
        let mut used = false;
        for row in rows {
            if remote_key_for_path(&row.path) != key && row.path != stored_path(STORE_ID, &job.hash)
            {
                continue;
            }
            used = true;
            let needs_key = row.remote_key != key
                && self.clients[client].files.keys_queued.insert(row.id.clone());
            if needs_key {
                self.queue_write(
                    client,
                    &FileUpdated {
                        id: row.id.clone(),
                        path: row.path.clone(),
                        remote_key: key.to_owned(),
                        content_hash: hash.clone(),
                        updated_at: now_ms,
                        metadata_json: Some(row.metadata_json.clone()),
                    },
                );
            } else if row.id != job.file_id {
                continue;
            }
            let done = LocalFileState {
                file_id: row.id.clone(),
                path: row.path.clone(),
                local_hash: hash.clone(),
                download_status: TransferStatus::Done,
                upload_status: TransferStatus::Done,
                last_sync_error: String::new(),
            };
            self.queue_write(client, &done.to_event());
        }
        let referenced = key_referenced(&store, key, None)
            .map_err(|e| self.files_error(client, "references", &e))?;
        if !used && !referenced {
            self.queue_write(
                client,
                &FileRemoteDeleteQueued { key: key.to_owned(), queued_at: now_ms },
            );
            let deletes = &mut self.clients[client].files.work.deletes;
            if !deletes.iter().any(|queued| queued == key) {
                deletes.push(key.to_owned());
            }
        }
        Ok(())
    }

    fn finish_download(
        &mut self,
        client: usize,
        job: &Job,
        reachable: bool,
    ) -> Result<(), Violation> {
        let object = self.blob.get(&job.key).map(|object| object.bytes.clone());
        let outcome = match object {
            _ if !reachable => {
                self.hits.count(Hit::BlobUnreachable);
                Err("the object store is unreachable".to_owned())
            }
            None => {
                self.hits.count(Hit::BlobUnreachable);
                Err(format!("GET {}: 404 Not Found", job.key))
            }
            Some(mut bytes) => match self.blob_fault(Call::Get) {
                Some(BlobFault::ServerError) => Err("GET: 503 Service Unavailable".to_owned()),
                fault => {
                    if fault == Some(BlobFault::CorruptRead) {
                        bytes.push(b'!');
                        bytes[0] ^= 0x20;
                    }
                    // The client's check (`transfer::download` verifies the SHA-256 before publishing).
                    if ContentHash::of(&bytes) == job.hash {
                        Ok(bytes)
                    } else {
                        Err(format!("GET {}: the bytes do not match their SHA-256", job.key))
                    }
                }
            },
        };
        match outcome {
            Ok(bytes) => {
                self.hits.count(Hit::Download);
                self.clients[client]
                    .local
                    .insert(job.hash, bytes)
                    .map_err(|detail| self.intact(client, &detail))?;
                self.download_succeeded(client, job)?;
            }
            Err(error) => self.transfer_failed(client, TransferKind::Download, job, error)?,
        }
        self.finish_inflight(client, TransferKind::Download, job);
        Ok(())
    }

    /// `Engine::download_succeeded`: `done`/`done` for every active row with the content and a key.
    fn download_succeeded(&mut self, client: usize, job: &Job) -> Result<(), Violation> {
        self.clients[client]
            .files
            .schedule
            .failures
            .remove(&(TransferKind::Download, job.file_id.clone()));
        let store = self.clients[client].store.clone().expect("a running client has a store");
        let rows = active_rows_with_hash(&store, &job.hash.to_string())
            .map_err(|e| self.files_error(client, "rows by hash", &e))?;
        for row in rows.into_iter().filter(|row| !row.remote_key.is_empty()) {
            let done = LocalFileState {
                file_id: row.id.clone(),
                path: row.path.clone(),
                local_hash: job.hash.to_string(),
                download_status: TransferStatus::Done,
                upload_status: TransferStatus::Done,
                last_sync_error: String::new(),
            };
            self.queue_write(client, &done.to_event());
        }
        Ok(())
    }

    /// `delete_remote` and `Engine::delete_finished`.
    fn finish_delete(
        &mut self,
        client: usize,
        key: String,
        reachable: bool,
    ) -> Result<(), Violation> {
        let store = self.clients[client].store.clone().expect("a running client has a store");
        let referenced = !self.delete_unchecked()
            && key_referenced(&store, &key, None)
                .map_err(|e| self.files_error(client, "references", &e))?;
        let outcome = if referenced {
            Ok(())
        } else if !reachable {
            self.hits.count(Hit::BlobUnreachable);
            Err("the object store is unreachable".to_owned())
        } else {
            match self.blob_fault(Call::Delete) {
                Some(BlobFault::ServerError) => Err("DELETE: 503 Service Unavailable".to_owned()),
                fault => {
                    self.blob.delete(&key);
                    if fault == Some(BlobFault::TimeoutAfterSuccess) {
                        Err("DELETE: timed out".to_owned())
                    } else {
                        Ok(())
                    }
                }
            }
        };
        self.clients[client].files.schedule.deletes_running.remove(&key);
        match outcome {
            Ok(()) => {
                self.hits.count(Hit::RemoteDelete);
                let files = &mut self.clients[client].files;
                files.schedule.delete_failures.remove(&key);
                files.work.deletes.retain(|queued| queued != &key);
                self.queue_write(client, &FileRemoteDeleteDone { key });
            }
            Err(error) => {
                let previous =
                    self.clients[client].files.schedule.delete_failures.get(&key).cloned();
                let failure = self.next_failure(client, previous.as_ref(), error);
                self.clients[client].files.schedule.delete_failures.insert(key, failure);
            }
        }
        Ok(())
    }

    /// `Engine::next_failure`: attempts + 1, retried after the real `backoff` with a seeded jitter.
    fn next_failure(
        &mut self,
        client: usize,
        previous: Option<&Failure>,
        error: String,
    ) -> Failure {
        let attempts = previous.map_or(0, |failure| failure.attempts) + 1;
        let random = self.clients[client].file_rng.random_range(0.0..1.0);
        let delay = backoff(RETRY_BASE, RETRY_MAX, attempts, random);
        Failure { attempts, next_at: self.instant(self.world.now() + delay), error }
    }

    /// `Engine::transfer_failed`: back in the queue, a failure with its backoff, `error` on a row that still exists.
    fn transfer_failed(
        &mut self,
        client: usize,
        kind: TransferKind,
        job: &Job,
        error: String,
    ) -> Result<(), Violation> {
        let files = &mut self.clients[client].files;
        match kind {
            TransferKind::Upload => files.work.uploads.push_back(job.clone()),
            TransferKind::Download => files.work.downloads.push_back(job.clone()),
        }
        let id = (kind, job.file_id.clone());
        let previous = files.schedule.failures.get(&id).cloned();
        let failure = self.next_failure(client, previous.as_ref(), error.clone());
        self.clients[client].files.schedule.failures.insert(id, failure);
        let (download, upload, local_hash) = match kind {
            TransferKind::Upload => {
                (TransferStatus::Done, TransferStatus::Error, job.hash.to_string())
            }
            TransferKind::Download => (TransferStatus::Error, TransferStatus::Done, String::new()),
        };
        let store = self.clients[client].store.clone().expect("a running client has a store");
        let exists = row(&store, &job.file_id)
            .map_err(|e| self.files_error(client, "row", &e))?
            .is_some_and(|row| row.is_active());
        if exists {
            let state = LocalFileState {
                file_id: job.file_id.clone(),
                path: job.path.clone(),
                local_hash,
                download_status: download,
                upload_status: upload,
                last_sync_error: error,
            };
            self.queue_write(client, &state.to_event());
        }
        Ok(())
    }

    fn finish_inflight(&mut self, client: usize, kind: TransferKind, job: &Job) {
        let schedule = &mut self.clients[client].files.schedule;
        schedule.running.remove(&(kind, job.file_id.clone()));
        schedule.hashes_moving.remove(&job.hash);
    }

    /// Whether every client's file engine is settled: nothing in flight or queued to write, and a fresh reconcile
    /// finds nothing to do (no transfer, no delete, no state to write, no row waiting for another client).
    pub(super) fn files_settled(&self) -> Result<bool, Violation> {
        if self.plan.files.is_none() {
            return Ok(true);
        }
        for (client, state) in self.clients.iter().enumerate() {
            let Some(store) = &state.store else { return Ok(false) };
            let files = &state.files;
            if !files.inflight.is_empty() || !files.writes.is_empty() {
                return Ok(false);
            }
            let rows = read_unsettled(store, None, false)
                .map_err(|e| self.files_error(client, "read rows", &e))?;
            let mut local = LocalView::default();
            for row in &rows {
                if let Ok(hash) = row.content_hash.parse::<ContentHash>()
                    && let Some(bytes) = state.local.get(&hash)
                {
                    local.present.insert(hash, bytes.len() as u64);
                }
            }
            let deletes: Vec<RemoteDelete> = store
                .query(&Query::select(REMOTE_DELETES_TABLE))
                .map_err(|e| Violation::store(client, self.world.now(), "remote deletes", &e))?;
            let keys: Vec<String> = deletes.into_iter().map(|delete| delete.key).collect();
            let plan = reconcile(&rows, &local, &files.schedule, false, &keys);
            if !plan.work.is_empty()
                || !plan.work.awaiting_remote.is_empty()
                || !plan.writes.is_empty()
                || !plan.local_deletes.is_empty()
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// One client's file engine, for a stuck report: in flight, queued writes, work, failures, unsettled rows.
    pub(super) fn files_report(&self, client: usize) -> String {
        let state = &self.clients[client];
        let files = &state.files;
        let rows = state
            .store
            .as_ref()
            .map(|store| read_unsettled(store, None, false).map_err(|e| e.to_string()));
        format!(
            "inflight {:?}, {} writes queued, uploads {:?}, downloads {:?}, deletes {:?}, failures {:?}, delete \
             failures {:?}, unsettled rows {rows:?}",
            files.inflight.values().collect::<Vec<_>>(),
            files.writes.len(),
            files.work.uploads.iter().map(|job| &job.file_id).collect::<Vec<_>>(),
            files.work.downloads.iter().map(|job| &job.file_id).collect::<Vec<_>>(),
            files.work.deletes,
            files.schedule.failures,
            files.schedule.delete_failures,
        )
    }

    /// The file checks at quiescence (or when quiescence never came): every active row reachable on every
    /// client, and no object in the blob store that no active row uses.
    ///
    /// Two open findings (RELIABILITY.md) fail the run only with
    /// [`RunOptions::strict_files`](super::RunOptions::strict_files), and are otherwise counted: an orphan
    /// (`files_orphaned_object`; the planners leave one when a file is replaced or deleted on one client while
    /// another client's upload of its previous content is in flight, seed 78), and an active row whose object was
    /// deleted (`files_unreachable_after_delete`; a remote delete raced a save of the same content on another
    /// client, whose upload found the object still there, seed 898). A row whose object was never stored always
    /// fails.
    ///
    /// Returns how many rows the second finding excused (their downloads never succeed, so such a run never
    /// settles; `run` then ends it at the deadline as a pass).
    pub(super) fn check_files(&mut self) -> Result<usize, Violation> {
        if self.plan.files.is_none() {
            return Ok(0);
        }
        let now = self.world.now();
        let mut unreachable_after_delete = 0;
        for (client, state) in self.clients.iter().enumerate() {
            let Some(store) = &state.store else { continue };
            let rows: Vec<FileRecord> = store
                .query(
                    &Query::select(FILES_TABLE).where_eq("deletedAt", None::<i64>).order_by("id"),
                )
                .map_err(|e| Violation::store(client, now, "files", &e))?;
            for row in rows {
                let Ok(hash) = row.content_hash.parse::<ContentHash>() else { continue };
                let local = state.local.contains(&hash);
                let remote = !row.remote_key.is_empty()
                    && self
                        .blob
                        .get(&row.remote_key)
                        .is_some_and(|object| ContentHash::of(&object.bytes) == hash);
                // Unreachable, or a `remoteKey` that promises an object which is not there (other clients
                // would try to download it forever).
                let broken = !remote && (!local || !row.remote_key.is_empty());
                if broken && !self.options.strict_files && self.blob.was_deleted(&row.remote_key) {
                    // Open finding (seed 898): a remote delete raced a save of the same content elsewhere.
                    unreachable_after_delete += 1;
                } else if broken {
                    return Err(Violation::new(
                        Invariant::FilesReachable,
                        now,
                        format!(
                            "client {client}: active file {} ({hash}, remoteKey {:?}): local bytes {local}, \
                             object stored {}",
                            row.id,
                            row.remote_key,
                            self.blob.get(&row.remote_key).is_some()
                        ),
                    ));
                }
            }
        }
        for _ in 0..unreachable_after_delete {
            self.hits.count(Hit::UnreachableAfterDelete);
        }
        let Some(store) = self.clients.iter().find_map(|state| state.store.as_ref()) else {
            return Ok(unreachable_after_delete);
        };
        let generation = self.server.generation();
        let mut orphans = 0;
        for (key, object) in self.blob.objects() {
            // A lost server log orphans what the clients then wiped, by design; only this generation's count.
            if object.generation != generation {
                continue;
            }
            let used = key_referenced(store, key, None)
                .map_err(|e| self.files_error(0, "references", &e))?;
            if !used && !self.options.strict_files {
                orphans += 1;
            } else if !used {
                return Err(Violation::new(
                    Invariant::FilesNoOrphans,
                    now,
                    format!("object {key} is in the blob store, but no active file uses it"),
                ));
            }
        }
        for _ in 0..orphans {
            self.hits.count(Hit::OrphanedObject);
        }
        Ok(unreachable_after_delete)
    }
}

/// The state a save or replace writes with its row (`FileSync::local_state_for_new_bytes` with a remote).
fn new_bytes_state(file_id: &str, path: &str, hash: &ContentHash) -> LocalFileState {
    LocalFileState {
        file_id: file_id.to_owned(),
        path: path.to_owned(),
        local_hash: hash.to_string(),
        download_status: TransferStatus::Done,
        upload_status: TransferStatus::Queued,
        last_sync_error: String::new(),
    }
}

/// `FileSync::remote_delete_if_unreferenced`: the delete to queue when `row` stops using its object.
fn remote_delete_if_unreferenced(
    store: &livestore_client::Store,
    row: &FileRecord,
    now_ms: i64,
    unchecked: bool,
) -> Result<Option<NewEvent>, FilesError> {
    if row.remote_key.is_empty()
        || (!unchecked && key_referenced(store, &row.remote_key, Some(&row.id))?)
    {
        return Ok(None);
    }
    Ok(Some(new_event(&FileRemoteDeleteQueued { key: row.remote_key.clone(), queued_at: now_ms })))
}
