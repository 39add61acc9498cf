//! Pure planning for the transfer engine: given plain data (rows, what is on disk, what runs and what failed, the
//! current time, a random number), decide what to do. No store, no disk, no network, no clock and no tokio in
//! here; the engine (`crate::engine`) gathers the inputs, calls a planner and performs the plan.
//!
//! - [`reconcile()`]: rows of `files` joined with `localFileState` → uploads, downloads, rows awaiting another
//!   client, local copies to remove, remote deletes to queue and the state each row should show;
//! - [`merge_work`]: folds a reconcile's work lists into the current ones (a full reconcile replaces them, a
//!   partial one replaces only the rows it read), keeping downloads the application asked for;
//! - [`launch()`]: which queued jobs start now, within the concurrency limits, prioritized downloads first;
//! - [`backoff()`]: the retry delay, a pure function of the attempt count and an injected random value;
//! - [`evict()`]: which local copies to remove to get under the byte budget.
//!
//! Everything whose iteration order can change a decision is a `BTreeMap`, a `BTreeSet` or an ordered `Vec`/
//! `VecDeque`, so the same inputs always give the same plan (what a deterministic simulator needs).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use crate::layout::ContentHash;
use crate::status::TransferKind;

mod backoff;
mod evict;
mod launch;
mod reconcile;

pub use backoff::backoff;
pub(crate) use evict::{LocalCopy, evict, forget_old_requests};
pub use launch::{LaunchPlan, Limits, launch};
pub use reconcile::{FileRow, LocalView, ReconcilePlan, StateWrite, merge_work, reconcile};

/// One transfer: its direction and its file id.
pub type TransferId = (TransferKind, String);

/// A transfer to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub file_id: String,
    pub hash: ContentHash,
    pub path: String,
    /// The object key (downloads).
    pub key: String,
    /// Size of the local copy when the job was derived (uploads; `None` when unknown).
    pub size: Option<u64>,
}

/// What the engine knows it has to do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WorkLists {
    pub uploads: VecDeque<Job>,
    pub downloads: VecDeque<Job>,
    /// Object keys to delete remotely, oldest first.
    pub deletes: Vec<String>,
    /// Active rows without local bytes or `remoteKey`: another client has to upload them first.
    pub awaiting_remote: BTreeSet<String>,
}

impl WorkLists {
    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.uploads.is_empty() && self.downloads.is_empty() && self.deletes.is_empty()
    }
}

/// A transfer that runs. The counters are shared with the task moving the bytes (progress for status).
#[derive(Debug, Clone)]
pub struct Inflight {
    pub file_id: String,
    pub hash: ContentHash,
    pub loaded: Arc<AtomicU64>,
    pub total: Arc<AtomicU64>,
}

impl Inflight {
    fn new(job: &Job) -> Inflight {
        Inflight {
            file_id: job.file_id.clone(),
            hash: job.hash,
            loaded: Arc::new(AtomicU64::new(0)),
            total: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// A failed transfer or remote delete, waiting for its retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Failures in a row.
    pub attempts: u32,
    /// Not retried before this.
    pub next_at: Instant,
    pub error: String,
}

/// What runs, what failed and what was asked for first: the engine's bookkeeping that planners read and update.
#[derive(Debug, Default)]
pub struct Schedule {
    pub running: BTreeMap<TransferId, Inflight>,
    /// Content moving right now (a transfer, or `get_file`'s download): one transfer per content at a time.
    pub hashes_moving: BTreeSet<ContentHash>,
    pub failures: BTreeMap<TransferId, Failure>,
    pub deletes_running: BTreeSet<String>,
    pub delete_failures: BTreeMap<String, Failure>,
    /// Downloads the application asked for (`resolve_file_url`, `prioritize_download`), most recent first.
    pub prioritized: VecDeque<String>,
    /// Upload tasks running (each holds a slot until it ends).
    pub upload_slots: usize,
}

impl Schedule {
    /// The next retry time of a transfer or delete that waits for its backoff, if any.
    pub fn next_retry(&self) -> Option<Instant> {
        self.failures.values().chain(self.delete_failures.values()).map(|f| f.next_at).min()
    }

    /// Makes every failed transfer and delete eligible at `now`.
    pub fn retry_all(&mut self, now: Instant) {
        for failure in self.failures.values_mut().chain(self.delete_failures.values_mut()) {
            failure.next_at = now;
        }
    }

    /// Forgets the retries and priority of a file (after a delete).
    pub fn forget_file(&mut self, file_id: &str) {
        self.prioritized.retain(|id| id != file_id);
        self.failures.remove(&(TransferKind::Upload, file_id.to_owned()));
        self.failures.remove(&(TransferKind::Download, file_id.to_owned()));
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Plain data for the planners' tests.

    use super::Job;
    use crate::layout::ContentHash;

    /// A content hash made from one byte.
    pub(crate) fn hash(byte: u8) -> ContentHash {
        ContentHash::from_bytes([byte; 32])
    }

    /// An upload job of `size` bytes.
    pub(crate) fn upload(id: &str, byte: u8, size: u64) -> Job {
        Job {
            file_id: id.to_owned(),
            hash: hash(byte),
            path: format!("livestore-filesync-files/s/{}", hash(byte)),
            key: String::new(),
            size: Some(size),
        }
    }

    /// A download job.
    pub(crate) fn download(id: &str, byte: u8) -> Job {
        Job {
            file_id: id.to_owned(),
            hash: hash(byte),
            path: format!("livestore-filesync-files/s/{}", hash(byte)),
            key: format!("s/{}", hash(byte)),
            size: None,
        }
    }
}
