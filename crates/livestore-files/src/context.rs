//! What the public handle and the engine share: the store, the local content store, the options, the signer
//! client, the event channel and the pins; plus the store helpers both use (committing on behalf of the file sync,
//! looking rows up, checking whether content or an object is still referenced).
//!
//! This module knows nothing about the engine or the handle: `sync` and `engine` both import it, and neither
//! imports the other's internals through it, so there is no module circle.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use livestore_client::schema::{Event, Query};
use livestore_client::{NewEvent, Store};
use tokio::sync::broadcast;

use crate::error::FilesError;
use crate::layout::{ContentHash, remote_key_for_path};
use crate::local::LocalFiles;
use crate::options::FileSyncOptions;
use crate::remote::SignerClient;
use crate::schema::{FILES_TABLE, FileRecord};
use crate::status::FileSyncEvent;

/// The parts of a file sync that do not change while it lives.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) store: Store,
    pub(crate) store_id: String,
    pub(crate) local: LocalFiles,
    pub(crate) options: FileSyncOptions,
    pub(crate) remote: Option<SignerClient>,
    pub(crate) events: broadcast::Sender<FileSyncEvent>,
    /// Content being saved right now.
    pub(crate) pins: Pins,
}

impl Context {
    /// Sends an event to subscribers (none listening is fine).
    pub(crate) fn emit(&self, event: FileSyncEvent) {
        let _ = self.events.send(event);
    }
}

/// Content a save is writing right now: neither eviction nor the removal of a deleted row's copy may take it
/// before the save's row is committed.
///
/// This is the one lock the handle and the engine share, on purpose: `save_file` is synchronous and callable from
/// any thread, and must protect its bytes at once, without waiting for the engine (which may not even run). Like
/// iroh-blobs' `TempTag`, a pin is a guard ([`PinGuard`]) that unpins on drop.
#[derive(Debug, Default)]
pub(crate) struct Pins {
    counts: Mutex<BTreeMap<ContentHash, usize>>,
}

impl Pins {
    /// Whether a save currently holds this content.
    pub(crate) fn contains(&self, hash: &ContentHash) -> bool {
        self.counts.lock().expect("pin lock").contains_key(hash)
    }

    /// Every content pinned right now.
    pub(crate) fn hashes(&self) -> Vec<ContentHash> {
        self.counts.lock().expect("pin lock").keys().copied().collect()
    }
}

/// Pins `hash` until dropped.
pub(crate) fn pin(ctx: &Arc<Context>, hash: ContentHash) -> PinGuard {
    *ctx.pins.counts.lock().expect("pin lock").entry(hash).or_default() += 1;
    PinGuard { ctx: Arc::clone(ctx), hash }
}

/// A held pin (see [`Pins`]).
#[must_use = "the content is unpinned when the guard drops"]
pub(crate) struct PinGuard {
    ctx: Arc<Context>,
    hash: ContentHash,
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut counts = self.ctx.pins.counts.lock().expect("pin lock");
        if let Some(count) = counts.get_mut(&self.hash) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.hash);
            }
        }
    }
}

thread_local! {
    /// Set while this thread commits on behalf of the file sync. The store delivers subscription callbacks on the
    /// committing thread, so the engine's change subscription can tell these commits (whose rows the committer
    /// names itself) from everyone else's.
    pub(crate) static COMMITTING_FOR_FILE_SYNC: Cell<bool> = const { Cell::new(false) };
}

/// Commits events of the file sync itself (its own saves, updates, deletes and transfer state). Whoever calls this
/// tells the engine which rows changed; the change subscription ignores these commits.
pub(crate) fn commit_for_file_sync(
    store: &Store,
    events: Vec<NewEvent>,
) -> Result<(), livestore_client::StoreError> {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            COMMITTING_FOR_FILE_SYNC.set(false);
        }
    }
    COMMITTING_FOR_FILE_SYNC.set(true);
    let _reset = Reset;
    store.commit_batch(events).map(drop)
}

/// One row of `files` by id.
pub fn row(store: &Store, file_id: &str) -> Result<Option<FileRecord>, FilesError> {
    let rows: Vec<FileRecord> = store.query(&Query::select(FILES_TABLE).where_eq("id", file_id))?;
    Ok(rows.into_iter().next())
}

/// Active rows with this content hash.
pub fn active_rows_with_hash(
    store: &Store,
    content_hash: &str,
) -> Result<Vec<FileRecord>, FilesError> {
    Ok(store.query(
        &Query::select(FILES_TABLE)
            .where_eq("contentHash", content_hash)
            .where_eq("deletedAt", None::<i64>),
    )?)
}

/// Whether an active row uses this content hash.
pub fn hash_referenced(store: &Store, content_hash: &str) -> Result<bool, FilesError> {
    Ok(!active_rows_with_hash(store, content_hash)?.is_empty())
}

/// Whether an active row (other than `except`) uses this object: by `remoteKey`, or by content whose key it is.
pub fn key_referenced(store: &Store, key: &str, except: Option<&str>) -> Result<bool, FilesError> {
    let by_key: Vec<FileRecord> = store.query(
        &Query::select(FILES_TABLE).where_eq("remoteKey", key).where_eq("deletedAt", None::<i64>),
    )?;
    if by_key.iter().any(|row| Some(row.id.as_str()) != except) {
        return Ok(true);
    }
    let Some(hash) = crate::layout::hash_from_path(key) else { return Ok(false) };
    Ok(active_rows_with_hash(store, &hash.to_string())?
        .iter()
        .any(|row| Some(row.id.as_str()) != except && remote_key_for_path(&row.path) == key))
}

/// The row's `contentHash`, parsed.
pub(crate) fn parse_hash(row: &FileRecord) -> Result<ContentHash, FilesError> {
    row.content_hash.parse().map_err(|_| FilesError::InvalidRow {
        id: row.id.clone(),
        reason: format!("contentHash {:?} is not a SHA-256 hex digest", row.content_hash),
    })
}

/// Encodes an event for a commit.
pub(crate) fn new_event<E: Event>(event: &E) -> Result<NewEvent, FilesError> {
    Ok(NewEvent::new(event)?)
}
