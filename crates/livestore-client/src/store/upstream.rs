//! Applying what the sync backend says: pulled events (advance or rebase), push candidates, backend reset.
//!
//! These are the store-side halves of the sync driver's decisions; the driver itself ([`crate::sync`]) only
//! moves frames. Everything here runs in one transaction per call and notifies subscribers once.

use std::sync::atomic::Ordering;

use livestore_core::event::LocalEvent;
use livestore_core::seq_num::EventSeqNum;
use livestore_core::sync_state::{MergeResult, Payload, SyncState, merge};

use crate::db::undo::{self, UndoLog};
use crate::db::writer::Writer;
use crate::db::{eventlog, state};
use crate::error::StoreError;
use crate::schema::Schema;
use crate::store::batch::{self, Mode, apply_batch, in_transaction};
use crate::store::{Store, deliver, schema_hash_of};

/// One event pulled from the backend, with the backend's metadata (`Option<SyncMetadata>` JSON) if any.
#[derive(Debug, Clone)]
pub struct UpstreamEvent {
    /// The event in `from_global` form.
    pub event: LocalEvent,
    /// The `metadata` JSON of the pull item (`{"_tag":"Some",...}`), stored as `syncMetadataJson`.
    pub metadata_json: Option<String>,
}

/// What applying a pulled page did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Upstream events materialized (not counting confirmations of our own).
    pub applied: usize,
    /// Pending events the page confirmed.
    pub confirmed: usize,
    /// Pending events rolled back and re-applied on top (0 unless the page caused a rebase).
    pub rebased: usize,
}

impl Store {
    /// Applies one pulled page: confirms matching pending events, materializes new ones, or rebases.
    ///
    /// Events at or below the upstream head are skipped, so re-delivered pages are harmless. A page that breaks
    /// ordering or contiguity is refused with [`StoreError::Sync`] and nothing changes.
    pub fn apply_upstream(
        &self,
        events: &[UpstreamEvent],
        backend_id: &str,
    ) -> Result<ApplyOutcome, StoreError> {
        let schema = std::sync::Arc::clone(&self.shared.schema);
        let (outcome, notifications) = {
            let mut core = self.shared.lock_core()?;
            match core.backend_id.as_deref() {
                Some(known) if known != backend_id => {
                    return Err(StoreError::BackendIdMismatch {
                        expected: known.to_owned(),
                        received: backend_id.to_owned(),
                    });
                }
                Some(_) => {}
                None => {
                    eventlog::set_backend_id(core.conn()?, Some(backend_id))?;
                    core.backend_id = Some(backend_id.to_owned());
                }
            }
            // Events at or below the upstream head were applied before (a re-delivered page).
            let upstream_head = core.sync_state.upstream_head();
            let known = events
                .iter()
                .take_while(|item| !item.event.seq_num.is_greater_than(upstream_head))
                .count();
            let events = &events[known..];
            if events.is_empty() {
                return Ok(ApplyOutcome::default());
            }
            let incoming: Vec<LocalEvent> = events.iter().map(|item| item.event.clone()).collect();
            let result = merge(&core.sync_state, Payload::UpstreamAdvance(incoming), true)?;
            let conn = core.conn()?;
            let undo_log = &core.undo;
            let (new_state, outcome) = in_transaction(conn, undo_log, |conn| match result {
                MergeResult::Advance(advance) => {
                    let matched = events.len() - advance.new_events.len();
                    for item in &events[..matched] {
                        if let Some(metadata) = &item.metadata_json {
                            eventlog::set_sync_metadata(conn, item.event.seq_num.global, metadata)?;
                        }
                    }
                    if let Some(last) = advance.confirmed_events.last() {
                        undo::forget_through(conn, last.seq_num)?;
                    }
                    let mut writer = Writer::new(conn, &schema);
                    insert_upstream(&mut writer, &schema, undo_log, &events[matched..])?;
                    drop(writer);
                    finish(conn, &advance.new_state)?;
                    let outcome = ApplyOutcome {
                        applied: events.len() - matched,
                        confirmed: advance.confirmed_events.len(),
                        rebased: 0,
                    };
                    Ok((advance.new_state, outcome))
                }
                MergeResult::Rebase(rebase) => {
                    let rebased_count = rebase.new_state.pending().len();
                    let upstream_new = rebase.new_events.len() - rebased_count;
                    let matched = events.len() - upstream_new;
                    // Undo the divergent pending suffix newest first, and drop its log rows: the rebased copies
                    // replace them under new numbers.
                    for event in rebase.rollback_events.iter().rev() {
                        undo::roll_back(conn, event.seq_num)?;
                        eventlog::delete(conn, event.seq_num)?;
                    }
                    if let Some(last) = rebase.confirmed_events.last() {
                        undo::forget_through(conn, last.seq_num)?;
                    }
                    let mut writer = Writer::new(conn, &schema);
                    insert_upstream(&mut writer, &schema, undo_log, &events[matched..])?;
                    let rebased = rebase.new_state.pending();
                    let recorded =
                        apply_batch(&mut writer, undo_log, rebased, |writer, event, mode| {
                            writer.append(
                                event,
                                schema_hash_of(&schema, &event.name),
                                eventlog::NO_SYNC_METADATA,
                            )?;
                            undo_log.start(event.seq_num);
                            batch::materialize(writer, &schema, undo_log, event, mode)
                        });
                    undo_log.stop();
                    drop(writer);
                    recorded?;
                    finish(conn, &rebase.new_state)?;
                    tracing::info!(
                        target: "livestore_client::_events::rebase",
                        rolled_back = rebase.rollback_events.len(),
                        upstream = upstream_new,
                        new_local_head = %rebase.new_state.local_head(),
                        "rebased pending events onto upstream"
                    );
                    let outcome = ApplyOutcome {
                        applied: upstream_new,
                        confirmed: rebase.confirmed_events.len(),
                        rebased: rebased_count,
                    };
                    Ok((rebase.new_state, outcome))
                }
                MergeResult::Reject { .. } => {
                    Err(StoreError::InvalidEventlog("upstream advance cannot be rejected".into()))
                }
            })?;
            core.sync_state = new_state;
            (outcome, core.collect_notifications())
        };
        self.shared.upstream_progress.fetch_add(1, Ordering::Relaxed);
        deliver(notifications);
        Ok(outcome)
    }

    /// The synced pending events to push next (at most `max`), in global form, chained from the upstream head.
    pub fn push_candidates(&self, max: usize) -> Result<Vec<LocalEvent>, StoreError> {
        let core = self.shared.lock_core()?;
        Ok(core.sync_state.pending_synced().take(max).map(LocalEvent::to_global_form).collect())
    }

    /// The synced pending events after global number `after` to push next (at most `max`), in global form.
    ///
    /// The driver's form of [`Store::push_candidates`]: it skips what the server already accepted without
    /// copying the whole pending list on every push.
    pub fn push_candidates_after(
        &self,
        after: u64,
        max: usize,
    ) -> Result<Vec<LocalEvent>, StoreError> {
        let core = self.shared.lock_core()?;
        let pending = core.sync_state.pending();
        let start = pending.partition_point(|event| event.seq_num.global <= after);
        Ok(pending[start..]
            .iter()
            .filter(|event| !event.client_only)
            .take(max)
            .map(LocalEvent::to_global_form)
            .collect())
    }

    /// The pull cursor: the upstream head's global number and the known backend id.
    pub fn upstream_cursor(&self) -> Result<(u64, Option<String>), StoreError> {
        let core = self.shared.lock_core()?;
        Ok((core.sync_state.upstream_head().global, core.backend_id.clone()))
    }

    /// Wipes the eventlog and state (the `reset` backend-id policy): the store starts over empty.
    pub fn reset_local(&self) -> Result<(), StoreError> {
        let schema = std::sync::Arc::clone(&self.shared.schema);
        let notifications = {
            let mut core = self.shared.lock_core()?;
            in_transaction(core.conn()?, &core.undo, |conn| {
                eventlog::clear(conn)?;
                state::clear(conn)?;
                state::create_user_tables(conn, &schema)?;
                undo::create_triggers(conn, &schema)?;
                Ok(())
            })?;
            core.sync_state = SyncState::new(EventSeqNum::ROOT);
            core.backend_id = None;
            core.mark_all_tables_changed();
            core.collect_notifications()
        };
        tracing::warn!(target: "livestore_client::_events::reset", store = %self.shared.store_id, "local eventlog and state wiped after a backend reset");
        deliver(notifications);
        Ok(())
    }
}

/// Appends upstream events to the log and materializes them (no undo: they are confirmed).
fn insert_upstream(
    writer: &mut Writer<'_>,
    schema: &Schema,
    undo_log: &UndoLog,
    items: &[UpstreamEvent],
) -> Result<(), StoreError> {
    undo_log.stop();
    apply_batch(writer, undo_log, items, |writer, item, mode: Mode| {
        let metadata = item.metadata_json.as_deref().unwrap_or(eventlog::NO_SYNC_METADATA);
        writer.append(&item.event, schema_hash_of(schema, &item.event.name), metadata)?;
        batch::materialize(writer, schema, undo_log, &item.event, mode)
    })
}

fn finish(conn: &rusqlite::Connection, new_state: &SyncState) -> Result<(), StoreError> {
    eventlog::set_upstream_head(conn, new_state.upstream_head().global)?;
    state::set_head(conn, new_state.local_head())?;
    Ok(())
}
