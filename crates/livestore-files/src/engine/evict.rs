//! The local byte budget: removing least recently used local copies that are safe to remove (uploaded, or
//! unreferenced and not brand new), never pinned or moving content, nor content the application just asked for.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use livestore_client::schema::Query;
use serde::Deserialize;

use super::Engine;
use crate::error::FilesError;
use crate::schema::LocalFileState;
use crate::status::FileSyncEvent;
use crate::sync::active_rows_with_hash;

impl Engine {
    /// Removes least recently used local copies until the budget holds. Only content that every active row has
    /// uploaded (non-empty `remoteKey`), or that no active row uses, is evicted; pinned or moving content never.
    pub(super) fn evict(&mut self) -> Result<(), FilesError> {
        let Some(budget) = self.inner.options.local_byte_budget else { return Ok(()) };
        let mut inventory = self.inner.local.inventory();
        let mut used: u64 = inventory.iter().map(|(_, size, _)| size).sum();
        if used <= budget {
            return Ok(());
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct HashUse {
            content_hash: String,
            not_uploaded: i64,
        }
        let uses: Vec<HashUse> = self.inner.store.query(&Query::sql(
            "SELECT contentHash, sum(remoteKey = '') AS notUploaded FROM files WHERE deletedAt IS NULL GROUP BY contentHash",
            [],
        ))?;
        let uses: HashMap<String, i64> =
            uses.into_iter().map(|usage| (usage.content_hash, usage.not_uploaded)).collect();
        inventory.sort_by_key(|(_, _, modified)| *modified);
        let (hashes_inflight, requested) = {
            let mut runtime = self.inner.runtime.lock().expect("runtime lock");
            runtime.requested.retain(|_, at| at.elapsed() < super::REQUESTED_CONTENT_PROTECTION);
            (
                runtime.hashes_inflight.clone(),
                runtime.requested.keys().copied().collect::<HashSet<_>>(),
            )
        };
        for (hash, size, modified) in inventory {
            if used <= budget {
                break;
            }
            let hex = hash.to_string();
            let safe = match uses.get(&hex) {
                Some(not_uploaded) => *not_uploaded == 0,
                // Unreferenced content: only when it is not brand new (a save may be about to commit its row).
                None => modified.elapsed().unwrap_or_default() > Duration::from_secs(60),
            };
            if !safe
                || hashes_inflight.contains(&hash)
                || requested.contains(&hash)
                || self.inner.pinned.lock().expect("pin lock").contains_key(&hash)
            {
                continue;
            }
            self.inner.local.remove(&hash)?;
            used = used.saturating_sub(size);
            for row in active_rows_with_hash(&self.inner.store, &hex)? {
                self.queue_write(
                    &LocalFileState {
                        file_id: row.id.clone(),
                        path: row.path.clone(),
                        local_hash: String::new(),
                        download_status: "done".to_owned(),
                        upload_status: "done".to_owned(),
                        last_sync_error: String::new(),
                    }
                    .to_event(),
                );
            }
            tracing::info!(target: "livestore_files::_events::evict", hash = %hex, bytes = size, "evicted a local copy");
            self.emit(FileSyncEvent::Evicted { content_hash: hex, bytes: size });
        }
        Ok(())
    }
}
