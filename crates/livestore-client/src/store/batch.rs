//! Transactions and batches of events that are already in the log (pulled, replayed or rebuilt).
//!
//! An event that is already in the log cannot be refused any more: if its materializer fails, the event stays in
//! the log unmaterialized and its partial writes are undone. Doing that with one savepoint per event costs a
//! savepoint and a statement journal per event, so a batch runs optimistically under one savepoint; only when
//! something in it fails is the batch rolled back and run again event by event, each under its own savepoint.

use rusqlite::Connection;

use livestore_core::event::LocalEvent;

use crate::db::undo::UndoLog;
use crate::db::writer::Writer;
use crate::error::StoreError;
use crate::schema::{Schema, UnknownEventHandling};

/// How a batch step should treat a failing materializer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Return the error; the whole batch is retried in [`Mode::Tolerant`].
    Strict,
    /// Undo just this event's writes and keep going (the slow path).
    Tolerant,
}

/// Runs `work` in one `BEGIN IMMEDIATE` transaction. Buffered undo records are written before `COMMIT`; on error
/// everything, including the buffer, is discarded.
pub(crate) fn in_transaction<T>(
    conn: &Connection,
    undo: &UndoLog,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let result = work(conn).and_then(|value| {
        undo.stop();
        undo.flush(conn)?;
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(value)
    });
    if result.is_err() {
        undo.discard();
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    result
}

/// Runs `step` for every item under one savepoint; if any step fails, rolls the batch back and runs it again
/// with `Mode::Tolerant`, where only errors that are not a materializer's own failure stop the batch.
pub(crate) fn apply_batch<I>(
    writer: &mut Writer<'_>,
    undo: &UndoLog,
    items: &[I],
    mut step: impl FnMut(&mut Writer<'_>, &I, Mode) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    if items.is_empty() {
        return Ok(());
    }
    let conn = writer.conn();
    // Records buffered before the savepoint belong to work that stays; write them out so a rollback of the
    // batch can drop the buffer wholesale.
    undo.flush(conn)?;
    conn.prepare_cached("SAVEPOINT ls_batch")?.execute([])?;
    let fast = items.iter().try_for_each(|item| step(writer, item, Mode::Strict));
    match fast {
        Ok(()) => {
            conn.prepare_cached("RELEASE ls_batch")?.execute([])?;
            Ok(())
        }
        Err(error) => {
            tracing::debug!(target: "livestore_client::_events::batch_retry", %error, "batch failed; retrying event by event");
            undo.discard();
            conn.prepare_cached("ROLLBACK TO ls_batch")?.execute([])?;
            conn.prepare_cached("RELEASE ls_batch")?.execute([])?;
            items.iter().try_for_each(|item| step(writer, item, Mode::Tolerant))
        }
    }
}

/// Materializes one event of a batch: strictly (errors propagate) or tolerantly (see the module docs).
pub(crate) fn materialize(
    writer: &mut Writer<'_>,
    schema: &Schema,
    undo: &UndoLog,
    event: &LocalEvent,
    mode: Mode,
) -> Result<(), StoreError> {
    if mode == Mode::Strict {
        return writer.materialize(event);
    }
    let conn = writer.conn();
    undo.flush(conn)?;
    conn.prepare_cached("SAVEPOINT ls_event")?.execute([])?;
    match writer.materialize(event) {
        Ok(()) => {
            conn.prepare_cached("RELEASE ls_event")?.execute([])?;
            Ok(())
        }
        Err(error) => {
            undo.discard();
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
