//! Bringing state in line with the eventlog: full rebuild, tail replay after a crash, and stale-file cleanup.
//!
//! A rebuild is one transaction: drop the user tables, recreate them, and materialize every event in order.
//! Confirmed events are applied without undo recording; events after the upstream head are pending and record undo
//! statements, exactly as when they were first committed, so they can still be rolled back by a later rebase.

use std::path::Path;

use livestore_core::event::LocalEvent;
use livestore_core::seq_num::EventSeqNum;
use rusqlite::Connection;

use crate::db::{eventlog, state, undo};
use crate::error::StoreError;
use crate::schema::{Schema, UnknownEventHandling};
use crate::store::in_transaction;

/// Decides between nothing, a tail replay and a full rebuild at open.
pub(crate) fn bring_state_up_to_date(
    conn: &Connection,
    schema: &Schema,
    state_is_new: bool,
    upstream_head: EventSeqNum,
    last: Option<EventSeqNum>,
) -> Result<(), StoreError> {
    let state_head = state::head(conn)?;
    match (state_head, last) {
        (None, None) => Ok(()),
        (Some(state_head), Some(last)) if !state_is_new && state_head == last => Ok(()),
        (Some(state_head), Some(last))
            if !state_is_new && last.is_greater_than(state_head) && exists(conn, state_head)? =>
        {
            tracing::info!(target: "livestore_client::_events::replay", from = %state_head, to = %last, "replaying eventlog tail into state");
            in_transaction(conn, |conn| {
                let mut recording = false;
                eventlog::for_each_after(conn, state_head, |event| {
                    apply_one(conn, schema, &event, upstream_head, &mut recording)
                })?;
                undo::stop_recording(conn)?;
                state::set_head(conn, last)?;
                Ok(())
            })
        }
        _ => rebuild(conn, schema, upstream_head),
    }
}

/// Drops all state and re-materializes the whole eventlog.
pub(crate) fn rebuild(
    conn: &Connection,
    schema: &Schema,
    upstream_head: EventSeqNum,
) -> Result<(), StoreError> {
    tracing::info!(target: "livestore_client::_events::rebuild", "rebuilding state from the eventlog");
    in_transaction(conn, |conn| {
        state::clear(conn)?;
        state::create_user_tables(conn, schema)?;
        undo::install(conn, schema)?;
        let mut recording = false;
        let mut last = None;
        eventlog::for_each_after(conn, EventSeqNum::ROOT, |event| {
            last = Some(event.seq_num);
            apply_one(conn, schema, &event, upstream_head, &mut recording)
        })?;
        undo::stop_recording(conn)?;
        if let Some(last) = last {
            state::set_head(conn, last)?;
        }
        Ok(())
    })
}

fn apply_one(
    conn: &Connection,
    schema: &Schema,
    event: &LocalEvent,
    upstream_head: EventSeqNum,
    recording: &mut bool,
) -> Result<(), StoreError> {
    let pending = event.seq_num.is_greater_than(upstream_head);
    if pending {
        undo::start_recording(conn, event.seq_num)?;
        *recording = true;
    } else if *recording {
        undo::stop_recording(conn)?;
        *recording = false;
    }
    materialize_tolerant(conn, schema, event)
}

/// Materializes an event that is already in the log (from upstream or a replay). A failure cannot be refused
/// any more, so it is logged and the event's partial writes are undone; only the `fail` unknown-event strategy
/// turns an unknown event into an error.
pub(crate) fn materialize_tolerant(
    conn: &Connection,
    schema: &Schema,
    event: &LocalEvent,
) -> Result<(), StoreError> {
    conn.prepare_cached("SAVEPOINT ls_event")?.execute([])?;
    match state::materialize(conn, schema, event) {
        Ok(()) => {
            conn.prepare_cached("RELEASE ls_event")?.execute([])?;
            Ok(())
        }
        Err(error) => {
            conn.prepare_cached("ROLLBACK TO ls_event")?.execute([])?;
            conn.prepare_cached("RELEASE ls_event")?.execute([])?;
            if matches!(error, StoreError::UnknownEvent(_))
                && matches!(schema.unknown_event_handling, UnknownEventHandling::Fail)
            {
                return Err(error);
            }
            tracing::warn!(target: "livestore_client::_events::materialize_failed", event = %event.name, seq = %event.seq_num, %error, "event kept in the log but not materialized");
            Ok(())
        }
    }
}

fn exists(conn: &Connection, seq_num: EventSeqNum) -> Result<bool, StoreError> {
    let count: i64 = conn.query_row(
        "SELECT count(*) FROM main.eventlog WHERE seqNumGlobal = ?1 AND seqNumClient = ?2 AND seqNumRebaseGeneration = ?3",
        rusqlite::params![i64::try_from(seq_num.global).unwrap_or(i64::MAX), seq_num.client, seq_num.rebase_generation],
        |row| row.get(0),
    )?;
    Ok(count > 0)
}

/// Deletes state files of other schema versions after a successful rebuild into a new file.
pub(crate) fn remove_stale_state_files(store_dir: &Path, keep: Option<&Path>) {
    let Ok(entries) = std::fs::read_dir(store_dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else { continue };
        let keep_name =
            keep.and_then(|keep| keep.file_name()).and_then(|name| name.to_str()).unwrap_or("");
        if name.starts_with("state-") && !name.starts_with(keep_name) {
            let _ = std::fs::remove_file(&path);
        }
    }
}
