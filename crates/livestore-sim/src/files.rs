//! The file half of the world: the simulated blob store, each client's local file area and the state of each
//! client's sim file engine. What happens to them step by step is `sim::files`.
//!
//! - [`BlobStore`]: `key → bytes`, content-addressed like the signer's object store (`<store>/<sha256>`). Puts are
//!   idempotent and refuse bytes that do not match their key (the real signer binds uploads to a checksum); each
//!   object remembers the server generation it was last put in, so the orphan check can leave alone what a lost
//!   server log orphaned by design. Faults are decided by the caller (`sim::files`), per call.
//! - [`LocalArea`]: one client's content store, `hash → bytes`. Every insert is checked against the hash, which
//!   is the [`crate::Invariant::FilesIntact`] step check. It survives a process crash (the real local store is
//!   files on disk, written by hash-then-rename before the row that names them is committed).
//! - [`FileEngine`]: what the real engine keeps in memory (work lists, schedule, queued state writes) plus the
//!   transfers in flight; a crash drops it, and the next reconcile derives the work again from the rows.

use std::collections::{BTreeMap, BTreeSet};

use livestore_client::NewEvent;
use livestore_files::ContentHash;
use livestore_files::sim::{Job, Schedule, WorkLists};

/// The store id every client shares, as the object keys' prefix.
pub use crate::schema::STORE_ID;

/// The bytes of content number `content`: small, distinct per number, the same on every client.
pub fn content(content: u8) -> Vec<u8> {
    format!("sim file content #{content}\n").repeat(1 + usize::from(content) * 7).into_bytes()
}

/// The generation of objects the orphan check leaves alone.
pub const EXCUSED: u64 = u64::MAX;

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// The server generation (log losses) it was last put in, or [`EXCUSED`].
    pub generation: u64,
}

/// The simulated object store.
#[derive(Debug, Default)]
pub struct BlobStore {
    objects: BTreeMap<String, Object>,
    /// Keys deleted and not put again since.
    deleted: BTreeSet<String>,
}

impl BlobStore {
    /// Stores `bytes` under `key` (idempotent). Refuses bytes whose SHA-256 is not the key's hash.
    pub fn put(&mut self, key: &str, bytes: &[u8], generation: u64) -> Result<(), String> {
        let named = livestore_files::layout::hash_from_path(key);
        if named != Some(ContentHash::of(bytes)) {
            return Err(format!(
                "put of {} bytes under {key}: they do not hash to the key",
                bytes.len()
            ));
        }
        self.objects.insert(key.to_owned(), Object { bytes: bytes.to_vec(), generation });
        self.deleted.remove(key);
        Ok(())
    }

    /// The object under `key`.
    pub fn get(&self, key: &str) -> Option<&Object> {
        self.objects.get(key)
    }

    /// Deletes `key` (deleting a missing object succeeds).
    pub fn delete(&mut self, key: &str) {
        if self.objects.remove(key).is_some() {
            self.deleted.insert(key.to_owned());
        }
    }

    /// Whether `key` was deleted (and not put again since).
    pub fn was_deleted(&self, key: &str) -> bool {
        self.deleted.contains(key)
    }

    /// Leaves every object now stored out of the orphan check (a client wiped its rows after a lost log).
    pub fn excuse_all(&mut self) {
        for object in self.objects.values_mut() {
            object.generation = EXCUSED;
        }
    }

    /// Every object, by key.
    pub fn objects(&self) -> &BTreeMap<String, Object> {
        &self.objects
    }
}

/// One client's local content store.
#[derive(Debug, Default, Clone)]
pub struct LocalArea {
    files: BTreeMap<ContentHash, Vec<u8>>,
}

impl LocalArea {
    /// Stores `bytes` as `hash`; an `Err` (the bytes do not match) is an [`crate::Invariant::FilesIntact`]
    /// violation for the caller to report, and nothing is stored.
    pub fn insert(&mut self, hash: ContentHash, bytes: Vec<u8>) -> Result<(), String> {
        if ContentHash::of(&bytes) != hash {
            return Err(format!(
                "{} bytes stored locally as {hash} do not hash to it",
                bytes.len()
            ));
        }
        self.files.insert(hash, bytes);
        Ok(())
    }

    /// The bytes of `hash`, if here.
    pub fn get(&self, hash: &ContentHash) -> Option<&Vec<u8>> {
        self.files.get(hash)
    }

    /// Whether `hash` is here.
    pub fn contains(&self, hash: &ContentHash) -> bool {
        self.files.contains_key(hash)
    }

    /// Removes `hash`.
    pub fn remove(&mut self, hash: &ContentHash) {
        self.files.remove(hash);
    }
}

/// A transfer or remote delete in flight.
#[derive(Debug, Clone)]
pub enum Transfer {
    /// One upload slot's group (the launch planner's grouping, kept).
    Uploads(Vec<Job>),
    /// A download.
    Download(Job),
    /// A remote delete of this key.
    Delete(String),
}

/// The in-memory state of one client's sim file engine (dropped by a crash).
#[derive(Debug, Default)]
pub struct FileEngine {
    /// The work lists (as `plan::merge_work` keeps them).
    pub work: WorkLists,
    /// Running transfers, failures, slots (as the planners keep them).
    pub schedule: Schedule,
    /// State writes not committed yet (the real engine's deferred writes).
    pub writes: Vec<NewEvent>,
    /// Rows whose `remoteKey` write is queued in `writes` (the real engine's `keys_queued`).
    pub keys_queued: BTreeSet<String>,
    /// Transfers in flight, by id.
    pub inflight: BTreeMap<u64, Transfer>,
    /// The next transfer id.
    pub next_transfer: u64,
    /// Bumped by a crash: completions of the previous process are ignored.
    pub generation: u64,
    /// The armed tick: when, and the number it carries.
    pub armed: Option<std::time::Duration>,
    /// Bumped whenever a tick is armed.
    pub tick_number: u64,
}

impl FileEngine {
    /// The engine of a restarted process: empty, with a new generation.
    pub fn restarted(&self) -> FileEngine {
        FileEngine {
            generation: self.generation + 1,
            tick_number: self.tick_number + 1,
            next_transfer: self.next_transfer,
            ..FileEngine::default()
        }
    }
}
