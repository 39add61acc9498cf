//! Performing the byte budget: when the local copies exceed it, ask `plan::evict` which least recently used
//! copies may go (uploaded, or unreferenced and not brand new; never moving, pinned or recently asked for),
//! remove them and record the affected rows as having no local bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Instant, SystemTime};

use livestore_client::schema::Query;
use serde::Deserialize;

use super::Engine;
use crate::context::active_rows_with_hash;
use crate::error::FilesError;
use crate::plan::{self, LocalCopy};
use crate::schema::{LocalFileState, TransferStatus};
use crate::status::FileSyncEvent;

impl Engine {
    /// Evicts if due; its states are committed at once (they change what a caller sees: bytes gone).
    pub(super) fn evict_now(&mut self) {
        // Before the completions' states are committed, so a finished download and the eviction it causes become
        // visible together. Rows whose `remoteKey` update is still queued look not uploaded, which only makes
        // eviction more careful.
        self.evict_due = false;
        let queued = self.writes.len();
        if let Err(error) = self.evict() {
            self.ctx.emit(FileSyncEvent::SyncError {
                error: error.to_string(),
                context: "evict".to_owned(),
            });
        }
        if self.writes.len() > queued {
            self.flush();
        }
    }

    fn evict(&mut self) -> Result<(), FilesError> {
        let Some(budget) = self.ctx.options.local_byte_budget else { return Ok(()) };
        let copies: Vec<LocalCopy> = self
            .ctx
            .local
            .inventory()
            .into_iter()
            .map(|(hash, size, modified)| LocalCopy { hash, size, modified })
            .collect();
        if copies.iter().map(|copy| copy.size).sum::<u64>() <= budget {
            return Ok(());
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct HashUse {
            content_hash: String,
            not_uploaded: i64,
        }
        let uses: Vec<HashUse> = self.ctx.store.query(&Query::sql(
            "SELECT contentHash, sum(remoteKey = '') AS notUploaded FROM files WHERE deletedAt IS NULL GROUP BY contentHash",
            [],
        ))?;
        let not_uploaded: BTreeMap<String, i64> =
            uses.into_iter().map(|usage| (usage.content_hash, usage.not_uploaded)).collect();
        plan::forget_old_requests(&mut self.state.requested, Instant::now());
        let mut protected: BTreeSet<_> = self.state.schedule.hashes_moving.clone();
        protected.extend(self.state.requested.keys().copied());
        protected.extend(self.ctx.pins.hashes());
        let chosen = plan::evict(&copies, budget, &not_uploaded, &protected, SystemTime::now());
        for copy in chosen {
            // Checked again: a save may have pinned the content since.
            if self.ctx.pins.contains(&copy.hash) {
                continue;
            }
            self.ctx.local.remove(&copy.hash)?;
            let hex = copy.hash.to_string();
            for row in active_rows_with_hash(&self.ctx.store, &hex)? {
                self.queue_write(
                    &LocalFileState {
                        file_id: row.id.clone(),
                        path: row.path.clone(),
                        local_hash: String::new(),
                        download_status: TransferStatus::Done,
                        upload_status: TransferStatus::Done,
                        last_sync_error: String::new(),
                    }
                    .to_event(),
                );
            }
            tracing::info!(target: "livestore_files::_events::evict", hash = %hex, bytes = copy.size, "evicted a local copy");
            self.ctx.emit(FileSyncEvent::Evicted { content_hash: hex, bytes: copy.size });
        }
        Ok(())
    }
}
