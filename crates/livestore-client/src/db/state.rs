//! The state database: user tables, the state head marker and materialization of events.
//!
//! The state is derived data. It records the last event it materialized (`__livestore_state_head`), which lets the
//! store replay a missing tail after a crash and detect a state that is ahead of its eventlog (then it is rebuilt).

use livestore_core::event::LocalEvent;
use livestore_core::seq_num::EventSeqNum;
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::StoreError;
use crate::schema::{MaterializeContext, MaterializeFailure, Schema, UnknownEventHandling};

pub(crate) fn create_system_tables(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS state.__livestore_state_head (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            seqNumGlobal INTEGER NOT NULL, seqNumClient INTEGER NOT NULL, seqNumRebaseGeneration INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE IF NOT EXISTS state.__livestore_undo (
            id INTEGER PRIMARY KEY,
            seqNumGlobal INTEGER NOT NULL, seqNumClient INTEGER NOT NULL, seqNumRebaseGeneration INTEGER NOT NULL,
            stmt TEXT NOT NULL
        ) STRICT;
        CREATE INDEX IF NOT EXISTS state.idx_undo_seq ON __livestore_undo (seqNumGlobal, seqNumClient);",
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
pub(crate) fn set_head(conn: &Connection, seq_num: EventSeqNum) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached(
        "INSERT INTO state.__livestore_state_head (id, seqNumGlobal, seqNumClient, seqNumRebaseGeneration)
         VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET seqNumGlobal = ?1, seqNumClient = ?2, seqNumRebaseGeneration = ?3",
    )?;
    statement.execute(params![
        i64::try_from(seq_num.global).unwrap_or(i64::MAX),
        seq_num.client,
        seq_num.rebase_generation
    ])?;
    Ok(())
}

/// Runs an event's materializer and executes its writes. Unknown events follow the schema's strategy.
pub(crate) fn materialize(
    conn: &Connection,
    schema: &Schema,
    event: &LocalEvent,
) -> Result<(), StoreError> {
    let Some(definition) = schema.definition(&event.name) else {
        return handle_unknown(schema, event);
    };
    let Some(materializer) = &definition.materializer else { return Ok(()) };
    if let Some(message) = &definition.meta.deprecated {
        tracing::warn!(target: "livestore_client::_events::deprecated", event = %event.name, "{message}");
    }
    let ctx = MaterializeContext { conn, event };
    let writes = materializer(&event.args_json, &ctx).map_err(|failure| match failure {
        MaterializeFailure::InvalidArgs(source) => {
            StoreError::InvalidArgs { event: event.name.to_string(), source }
        }
        MaterializeFailure::Materializer(error) => {
            StoreError::Materializer { event: event.name.to_string(), reason: error.0 }
        }
    })?;
    for write in writes {
        let (sql, values) = write.compile();
        let result = conn
            .prepare_cached(&sql)
            .and_then(|mut statement| statement.execute(rusqlite::params_from_iter(values.iter())));
        if let Err(error) = result {
            return Err(StoreError::Materializer {
                event: event.name.to_string(),
                reason: format!("{error} in `{sql}`"),
            });
        }
    }
    Ok(())
}

fn handle_unknown(schema: &Schema, event: &LocalEvent) -> Result<(), StoreError> {
    match &schema.unknown_event_handling {
        UnknownEventHandling::Warn => {
            tracing::warn!(target: "livestore_client::_events::unknown_event", event = %event.name, seq = %event.seq_num, "event not in schema; kept in the log, not materialized");
            Ok(())
        }
        UnknownEventHandling::Ignore => Ok(()),
        UnknownEventHandling::Fail => Err(StoreError::UnknownEvent(event.name.to_string())),
        UnknownEventHandling::Callback(callback) => {
            callback(event);
            Ok(())
        }
    }
}
