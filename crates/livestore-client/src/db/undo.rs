//! Rolling back pending events: an undo log recorded by triggers.
//!
//! Rebase must undo the state changes of pending events. LiveStore records an SQLite session changeset per event;
//! rusqlite's `session` feature needs bindgen and libclang at build time (and would switch the whole workspace's
//! SQLite build to it), so this crate records the same information with SQL alone: every state table gets TEMP
//! triggers that, while recording is on, append the inverse statement of each row change (`DELETE` for an insert,
//! `UPDATE` back to the old values for an update, `INSERT` of the old row for a delete, addressed by rowid and
//! written with `quote()`, which round-trips every SQLite value exactly) to `__livestore_undo`, keyed by the event.
//! Rolling back an event executes its statements newest first. Replay was rejected: it needs a snapshot of the
//! state at the upstream head or a full rebuild, which costs O(log) per rebase.
//!
//! Recording is on only while pending local events are materialized; confirmed history is never rolled back and
//! its undo rows are deleted as soon as the upstream confirms the events.

use livestore_core::seq_num::EventSeqNum;
use rusqlite::{Connection, params};

use crate::schema::Schema;
use crate::schema::table::quote_ident;

/// Creates the control table and the triggers for every state table (TEMP: they live with the connection).
pub(crate) fn install(conn: &Connection, schema: &Schema) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS __ls_undo_ctl (
            active INTEGER NOT NULL, g INTEGER NOT NULL, c INTEGER NOT NULL, r INTEGER NOT NULL);
         DELETE FROM temp.__ls_undo_ctl;
         INSERT INTO temp.__ls_undo_ctl VALUES (0, 0, 0, 0);",
    )?;
    for table in schema.tables() {
        let name = quote_ident(&table.name);
        let target = format!("state.{name}");
        let target_sql = target.replace('\'', "''");
        let columns: Vec<String> =
            table.columns().iter().map(|column| quote_ident(column.name())).collect();
        let column_list = columns.join(",").replace('\'', "''");
        let old_values = columns
            .iter()
            .map(|column| format!("quote(OLD.{column})"))
            .collect::<Vec<_>>()
            .join(" || ',' || ");
        let assignments = columns
            .iter()
            .map(|column| format!("'{}=' || quote(OLD.{column})", column.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(" || ',' || ");
        let trigger = |kind: &str| quote_ident(&format!("__ls_undo_{kind}_{}", table.name));
        let record = "INSERT INTO __livestore_undo (seqNumGlobal, seqNumClient, seqNumRebaseGeneration, stmt) SELECT g, c, r,";
        conn.execute_batch(&format!(
            "DROP TRIGGER IF EXISTS temp.{ins};
             CREATE TEMP TRIGGER {ins} AFTER INSERT ON {target} BEGIN
               {record} 'DELETE FROM {target_sql} WHERE rowid=' || NEW.rowid FROM __ls_undo_ctl WHERE active;
             END;
             DROP TRIGGER IF EXISTS temp.{upd};
             CREATE TEMP TRIGGER {upd} AFTER UPDATE ON {target} BEGIN
               {record} 'UPDATE {target_sql} SET ' || {assignments} || ',rowid=' || OLD.rowid || ' WHERE rowid=' || NEW.rowid
                 FROM __ls_undo_ctl WHERE active;
             END;
             DROP TRIGGER IF EXISTS temp.{del};
             CREATE TEMP TRIGGER {del} AFTER DELETE ON {target} BEGIN
               {record} 'INSERT INTO {target_sql} (rowid,{column_list}) VALUES (' || OLD.rowid || ',' || {old_values} || ')'
                 FROM __ls_undo_ctl WHERE active;
             END;",
            ins = trigger("ins"),
            upd = trigger("upd"),
            del = trigger("del"),
        ))?;
    }
    Ok(())
}

/// Starts recording undo statements under `seq_num`.
pub(crate) fn start_recording(conn: &Connection, seq_num: EventSeqNum) -> rusqlite::Result<()> {
    let mut statement =
        conn.prepare_cached("UPDATE temp.__ls_undo_ctl SET active = 1, g = ?1, c = ?2, r = ?3")?;
    statement.execute(params![
        i64::try_from(seq_num.global).unwrap_or(i64::MAX),
        seq_num.client,
        seq_num.rebase_generation
    ])?;
    Ok(())
}

/// Stops recording.
pub(crate) fn stop_recording(conn: &Connection) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE temp.__ls_undo_ctl SET active = 0")?.execute([])?;
    Ok(())
}

/// Undoes one event's state changes (newest change first) and forgets them. Recording must be off.
pub(crate) fn roll_back(conn: &Connection, seq_num: EventSeqNum) -> rusqlite::Result<()> {
    let key = params![
        i64::try_from(seq_num.global).unwrap_or(i64::MAX),
        seq_num.client,
        seq_num.rebase_generation
    ];
    let statements: Vec<String> = conn
        .prepare_cached(
            "SELECT stmt FROM state.__livestore_undo
             WHERE seqNumGlobal = ?1 AND seqNumClient = ?2 AND seqNumRebaseGeneration = ?3 ORDER BY id DESC",
        )?
        .query_map(key, |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for statement in statements {
        conn.execute_batch(&statement)?;
    }
    conn.prepare_cached(
        "DELETE FROM state.__livestore_undo WHERE seqNumGlobal = ?1 AND seqNumClient = ?2 AND seqNumRebaseGeneration = ?3",
    )?
    .execute(key)?;
    Ok(())
}

/// Forgets undo statements of events up to and including `seq_num` (by global, then client): they are confirmed.
pub(crate) fn forget_through(conn: &Connection, seq_num: EventSeqNum) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "DELETE FROM state.__livestore_undo WHERE (seqNumGlobal, seqNumClient) <= (?1, ?2)",
    )?
    .execute(params![i64::try_from(seq_num.global).unwrap_or(i64::MAX), seq_num.client])?;
    Ok(())
}
