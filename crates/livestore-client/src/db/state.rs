//! The state database: user tables and the state head marker (materialization itself is in [`crate::db::writer`]).
//!
//! The state is derived data. It records the last event it materialized (`__livestore_state_head`), which lets the
//! store replay a missing tail after a crash and detect a state that is ahead of its eventlog (then it is rebuilt).

use livestore_core::seq_num::EventSeqNum;
use rusqlite::{Connection, OptionalExtension, params};

use crate::schema::Schema;

pub(crate) fn create_system_tables(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS state.__livestore_state_head (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            seqNumGlobal INTEGER NOT NULL, seqNumClient INTEGER NOT NULL, seqNumRebaseGeneration INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE IF NOT EXISTS state.__livestore_undo (
            seqNumGlobal INTEGER NOT NULL, seqNumClient INTEGER NOT NULL, seqNumRebaseGeneration INTEGER NOT NULL,
            n INTEGER NOT NULL, stmt TEXT NOT NULL,
            PRIMARY KEY (seqNumGlobal, seqNumClient, seqNumRebaseGeneration, n)
        ) WITHOUT ROWID, STRICT;",
    )
}

/// Creates the schema's tables and indexes.
pub(crate) fn create_user_tables(conn: &Connection, schema: &Schema) -> rusqlite::Result<()> {
    for table in schema.tables() {
        for statement in table.ddl("state") {
            conn.execute_batch(&statement)?;
        }
    }
    Ok(())
}

/// Drops every user table and clears the system tables (backend reset, rebuild).
pub(crate) fn clear(conn: &Connection) -> rusqlite::Result<()> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM state.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '__livestore_%'")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for table in tables {
        conn.execute_batch(&format!(
            "DROP TABLE IF EXISTS state.{}",
            crate::schema::table::quote_ident(&table)
        ))?;
    }
    conn.execute_batch(
        "DELETE FROM state.__livestore_state_head; DELETE FROM state.__livestore_undo;",
    )
}

/// The last event the state materialized (`None` for a fresh state).
pub(crate) fn head(conn: &Connection) -> rusqlite::Result<Option<EventSeqNum>> {
    conn.query_row(
        "SELECT seqNumGlobal, seqNumClient, seqNumRebaseGeneration FROM state.__livestore_state_head WHERE id = 1",
        [],
        |row| Ok(EventSeqNum::new(row.get::<_, i64>(0)?.max(0) as u64, row.get(1)?, row.get(2)?)),
    )
    .optional()
}

/// Records the last materialized event; written in the same transaction as the event itself.
///
/// A plain single-row `UPDATE` (an upsert would need a statement journal); the row is inserted the first time.
pub(crate) fn set_head(conn: &Connection, seq_num: EventSeqNum) -> rusqlite::Result<()> {
    let values = params![
        i64::try_from(seq_num.global).unwrap_or(i64::MAX),
        seq_num.client,
        seq_num.rebase_generation
    ];
    let updated = conn
        .prepare_cached(
            "UPDATE state.__livestore_state_head SET seqNumGlobal = ?1, seqNumClient = ?2, seqNumRebaseGeneration = ?3
             WHERE id = 1",
        )?
        .execute(values)?;
    if updated == 0 {
        conn.prepare_cached(
            "INSERT INTO state.__livestore_state_head (id, seqNumGlobal, seqNumClient, seqNumRebaseGeneration)
             VALUES (1, ?1, ?2, ?3)",
        )?
        .execute(values)?;
    }
    Ok(())
}
