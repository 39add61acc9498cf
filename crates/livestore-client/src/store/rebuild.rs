//! Bringing state in line with the eventlog: full rebuild, tail replay after a crash, and stale-file cleanup.
//!
//! A rebuild of an on-disk state materializes the whole eventlog into a scratch file (`state-<hash>.db.rebuild`)
//! with no journal and no syncing, fsyncs it once, and then swaps it in for the old file; a crash at any point
//! leaves either the old state, no state (rebuilt at the next open), or the complete new one. An in-memory state
//! is rebuilt in place in one transaction.
//!
//! Confirmed events are materialized without undo recording and without the undo triggers (a write on a table with
//! triggers pays for a statement journal); events after the upstream head are pending and record undo
//! statements, exactly as when they were first committed, so a later rebase can still roll them back.

use std::path::Path;

use livestore_core::event::LocalEvent;
use livestore_core::seq_num::EventSeqNum;
use rusqlite::Connection;

use crate::db::open::{self, Durability};
use crate::db::undo::{self, UndoLog};
use crate::db::writer::Writer;
use crate::db::{eventlog, state};
use crate::error::StoreError;
use crate::schema::Schema;
use crate::store::batch::{self, Mode, apply_batch, in_transaction};

/// Where the state lives, for rebuilds.
#[derive(Debug, Clone)]
pub(crate) struct StateLocation {
    /// The state file; `None` for an in-memory state.
    pub(crate) path: Option<std::path::PathBuf>,
    pub(crate) durability: Durability,
}

/// Decides between nothing, a tail replay and a full rebuild at open.
pub(crate) fn bring_state_up_to_date(
    conn: &Connection,
    schema: &Schema,
    undo: &UndoLog,
    location: &StateLocation,
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
            in_transaction(conn, undo, |conn| {
                let mut writer = Writer::new(conn, schema);
                eventlog::for_each_page_after(conn, state_head, |page| {
                    apply_page(&mut writer, schema, undo, page, upstream_head)
                })?;
                state::set_head(conn, last)?;
                Ok(())
            })
        }
        _ => rebuild(conn, schema, undo, location, upstream_head),
    }
}

/// Drops all state and re-materializes the whole eventlog.
pub(crate) fn rebuild(
    conn: &Connection,
    schema: &Schema,
    undo: &UndoLog,
    location: &StateLocation,
    upstream_head: EventSeqNum,
) -> Result<(), StoreError> {
    tracing::info!(target: "livestore_client::_events::rebuild", "rebuilding state from the eventlog");
    let Some(path) = &location.path else {
        return in_transaction(conn, undo, |conn| {
            state::clear(conn)?;
            state::create_user_tables(conn, schema)?;
            materialize_log(conn, schema, undo, upstream_head)
        });
    };
    let scratch = open::with_suffix(path, ".rebuild");
    undo::drop_triggers(conn, schema)?;
    // Cached statements would keep referring to the old `state`.
    conn.flush_prepared_statement_cache();
    conn.execute_batch("DETACH DATABASE state")?;
    let built = build_scratch(conn, schema, undo, &scratch, upstream_head);
    if let Err(error) = built {
        let _ = conn.execute_batch("DETACH DATABASE state");
        let _ = std::fs::remove_file(&scratch);
        open::attach_state(conn, path, location.durability)?;
        undo::create_triggers(conn, schema)?;
        return Err(error);
    }
    // Remove the old file before its WAL (a WAL must never outlive its database), then move the new one in.
    open::remove_if_exists(path)?;
    open::remove_wal_files(path)?;
    std::fs::rename(&scratch, path)
        .map_err(|source| StoreError::Io { path: path.clone(), source })?;
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    open::attach_state(conn, path, location.durability)?;
    state::create_user_tables(conn, schema)?;
    undo::create_triggers(conn, schema)?;
    Ok(())
}

fn build_scratch(
    conn: &Connection,
    schema: &Schema,
    undo: &UndoLog,
    scratch: &Path,
    upstream_head: EventSeqNum,
) -> Result<(), StoreError> {
    open::attach_scratch_state(conn, scratch)?;
    state::create_user_tables(conn, schema)?;
    in_transaction(conn, undo, |conn| materialize_log(conn, schema, undo, upstream_head))?;
    undo::drop_triggers(conn, schema)?;
    conn.flush_prepared_statement_cache();
    conn.execute_batch("DETACH DATABASE state")?;
    let file = std::fs::File::open(scratch)
        .map_err(|source| StoreError::Io { path: scratch.to_owned(), source })?;
    file.sync_all().map_err(|source| StoreError::Io { path: scratch.to_owned(), source })?;
    Ok(())
}

/// Materializes every event of the log into an empty state, then records the state head.
fn materialize_log(
    conn: &Connection,
    schema: &Schema,
    undo: &UndoLog,
    upstream_head: EventSeqNum,
) -> Result<(), StoreError> {
    undo::drop_triggers(conn, schema)?;
    let mut triggers = false;
    let mut last = None;
    let mut writer = Writer::new(conn, schema);
    eventlog::for_each_page_after(conn, EventSeqNum::ROOT, |page| {
        if !triggers && page.iter().any(|event| event.seq_num.is_greater_than(upstream_head)) {
            undo::create_triggers(conn, schema)?;
            triggers = true;
        }
        last = page.last().map(|event| event.seq_num);
        apply_page(&mut writer, schema, undo, page, upstream_head)
    })?;
    drop(writer);
    if !triggers {
        undo::create_triggers(conn, schema)?;
    }
    if let Some(last) = last {
        state::set_head(conn, last)?;
    }
    Ok(())
}

/// Materializes logged events; those after the upstream head are pending and record undo statements.
fn apply_page(
    writer: &mut Writer<'_>,
    schema: &Schema,
    undo: &UndoLog,
    page: &[LocalEvent],
    upstream_head: EventSeqNum,
) -> Result<(), StoreError> {
    let result = apply_batch(writer, undo, page, |writer, event, mode: Mode| {
        if event.seq_num.is_greater_than(upstream_head) {
            undo.start(event.seq_num);
        } else {
            undo.stop();
        }
        batch::materialize(writer, schema, undo, event, mode)
    });
    undo.stop();
    result
}

fn exists(conn: &Connection, seq_num: EventSeqNum) -> Result<bool, StoreError> {
    let count: i64 = conn.query_row(
        "SELECT count(*) FROM main.eventlog WHERE seqNumGlobal = ?1 AND seqNumClient = ?2 AND seqNumRebaseGeneration = ?3",
        rusqlite::params![i64::try_from(seq_num.global).unwrap_or(i64::MAX), seq_num.client, seq_num.rebase_generation],
        |row| row.get(0),
    )?;
    Ok(count > 0)
}

/// Makes a rename durable. Best effort: some filesystems refuse to open directories, and the state is derived
/// data that the next open rebuilds if it went missing.
fn sync_dir(dir: &Path) {
    if let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
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
