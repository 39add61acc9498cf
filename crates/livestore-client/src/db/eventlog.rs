//! The eventlog database: every event this client knows, in order, plus the sync status.
//!
//! Table layouts follow LiveStore's `eventlog@6.db` (spec §2.2) so the files are familiar to read. A row's
//! client-only flag is not stored: client-only events are exactly those with a non-zero client sub-number.

use livestore_core::event::LocalEvent;
use livestore_core::seq_num::EventSeqNum;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::intern::{Interner, intern};

/// The `schemaHash` stored for events the schema does not know.
pub(crate) const UNKNOWN_SCHEMA_HASH: i64 = -1;
/// `syncMetadataJson` of events without backend metadata.
pub(crate) const NO_SYNC_METADATA: &str = r#"{"_tag":"None"}"#;

pub(crate) fn create_tables(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS main.eventlog (
            seqNumGlobal INTEGER NOT NULL,
            seqNumClient INTEGER NOT NULL,
            seqNumRebaseGeneration INTEGER NOT NULL,
            parentSeqNumGlobal INTEGER NOT NULL,
            parentSeqNumClient INTEGER NOT NULL,
            parentSeqNumRebaseGeneration INTEGER NOT NULL,
            name TEXT NOT NULL,
            argsJson TEXT NOT NULL,
            clientId TEXT NOT NULL,
            sessionId TEXT NOT NULL,
            schemaHash INTEGER NOT NULL,
            syncMetadataJson TEXT NOT NULL,
            PRIMARY KEY (seqNumGlobal, seqNumClient, seqNumRebaseGeneration)
        ) STRICT;
        CREATE TABLE IF NOT EXISTS main.__livestore_sync_status (head INTEGER PRIMARY KEY, backendId TEXT) STRICT;
        INSERT INTO main.__livestore_sync_status (head, backendId)
            SELECT 0, NULL WHERE NOT EXISTS (SELECT 1 FROM main.__livestore_sync_status);
        CREATE TABLE IF NOT EXISTS main.__livestore_client_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;",
    )
}

/// The statement that appends one event (see [`execute_insert`]).
pub(crate) const INSERT_SQL: &str =
    "INSERT INTO main.eventlog VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

/// Appends one event with a prepared [`INSERT_SQL`] statement (batches keep it across events).
pub(crate) fn execute_insert(
    statement: &mut rusqlite::Statement<'_>,
    event: &LocalEvent,
    schema_hash: i64,
    sync_metadata_json: &str,
) -> rusqlite::Result<()> {
    statement.execute(params![
        seq_global(event.seq_num),
        event.seq_num.client,
        event.seq_num.rebase_generation,
        seq_global(event.parent_seq_num),
        event.parent_seq_num.client,
        event.parent_seq_num.rebase_generation,
        &*event.name,
        &*event.args_json,
        &*event.client_id,
        &*event.session_id,
        schema_hash,
        sync_metadata_json,
    ])?;
    Ok(())
}

/// Events appended by one statement when a commit has many (12 parameters each, far below SQLite's limit).
pub(crate) const ROWS_PER_INSERT: usize = 32;

/// The statement that appends [`ROWS_PER_INSERT`] events at once (built once: the statement cache is keyed by it).
pub(crate) static INSERT_MANY_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| insert_many_sql(ROWS_PER_INSERT));

/// `INSERT INTO main.eventlog VALUES (…), (…)` with `rows` rows of numbered parameters.
fn insert_many_sql(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO main.eventlog VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push('(');
        for column in 0..12 {
            if column > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("?{}", row * 12 + column + 1));
        }
        sql.push(')');
    }
    sql
}

/// Binds one event's twelve columns from parameter `offset + 1` on (see [`insert_many_sql`]).
pub(crate) fn bind_row(
    statement: &mut rusqlite::Statement<'_>,
    offset: usize,
    event: &LocalEvent,
    schema_hash: i64,
    sync_metadata_json: &str,
) -> rusqlite::Result<()> {
    statement.raw_bind_parameter(offset + 1, seq_global(event.seq_num))?;
    statement.raw_bind_parameter(offset + 2, event.seq_num.client)?;
    statement.raw_bind_parameter(offset + 3, event.seq_num.rebase_generation)?;
    statement.raw_bind_parameter(offset + 4, seq_global(event.parent_seq_num))?;
    statement.raw_bind_parameter(offset + 5, event.parent_seq_num.client)?;
    statement.raw_bind_parameter(offset + 6, event.parent_seq_num.rebase_generation)?;
    statement.raw_bind_parameter(offset + 7, &*event.name)?;
    statement.raw_bind_parameter(offset + 8, &*event.args_json)?;
    statement.raw_bind_parameter(offset + 9, &*event.client_id)?;
    statement.raw_bind_parameter(offset + 10, &*event.session_id)?;
    statement.raw_bind_parameter(offset + 11, schema_hash)?;
    statement.raw_bind_parameter(offset + 12, sync_metadata_json)
}

/// Removes one event (rollback of a pending event before its rebased copy is inserted).
pub(crate) fn delete(conn: &Connection, seq_num: EventSeqNum) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached(
        "DELETE FROM main.eventlog WHERE seqNumGlobal = ?1 AND seqNumClient = ?2 AND seqNumRebaseGeneration = ?3",
    )?;
    statement.execute(params![seq_global(seq_num), seq_num.client, seq_num.rebase_generation])?;
    Ok(())
}

/// Stores the backend's metadata for a confirmed event.
pub(crate) fn set_sync_metadata(
    conn: &Connection,
    global: u64,
    metadata_json: &str,
) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached(
        "UPDATE main.eventlog SET syncMetadataJson = ?2 WHERE seqNumGlobal = ?1 AND seqNumClient = 0",
    )?;
    statement.execute(params![i64::try_from(global).unwrap_or(i64::MAX), metadata_json])?;
    Ok(())
}

/// The last event's sequence number, or `None` for an empty log.
pub(crate) fn last_seq_num(conn: &Connection) -> rusqlite::Result<Option<EventSeqNum>> {
    conn.query_row(
        "SELECT seqNumGlobal, seqNumClient, seqNumRebaseGeneration FROM main.eventlog
         ORDER BY seqNumGlobal DESC, seqNumClient DESC LIMIT 1",
        [],
        |row| Ok(EventSeqNum::new(row.get::<_, i64>(0)?.max(0) as u64, row.get(1)?, row.get(2)?)),
    )
    .optional()
}

/// Visits events strictly after `after` (by global, then client) in order, a page at a time so memory stays flat.
pub(crate) fn for_each_page_after(
    conn: &Connection,
    after: EventSeqNum,
    mut visit: impl FnMut(&[LocalEvent]) -> Result<(), crate::error::StoreError>,
) -> Result<(), crate::error::StoreError> {
    const PAGE: i64 = 10_000;
    let mut cursor = after;
    let mut strings = Interner::default();
    loop {
        let mut statement = conn.prepare_cached(
            "SELECT seqNumGlobal, seqNumClient, seqNumRebaseGeneration, parentSeqNumGlobal, parentSeqNumClient,
                    parentSeqNumRebaseGeneration, name, argsJson, clientId, sessionId
             FROM main.eventlog WHERE (seqNumGlobal, seqNumClient) > (?1, ?2)
             ORDER BY seqNumGlobal, seqNumClient LIMIT ?3",
        )?;
        let mut rows = statement.query(params![seq_global(cursor), cursor.client, PAGE])?;
        let mut page = Vec::new();
        while let Some(row) = rows.next()? {
            page.push(row_to_event(row, &mut strings)?);
        }
        drop(rows);
        drop(statement);
        let Some(last) = page.last() else { return Ok(()) };
        cursor = last.seq_num;
        visit(&page)?;
        if (page.len() as i64) < PAGE {
            return Ok(());
        }
    }
}

/// All events strictly after `after`, in order.
pub(crate) fn load_after(
    conn: &Connection,
    after: EventSeqNum,
) -> Result<Vec<LocalEvent>, crate::error::StoreError> {
    let mut events = Vec::new();
    for_each_page_after(conn, after, |page| {
        events.extend_from_slice(page);
        Ok(())
    })?;
    Ok(events)
}

fn row_to_event(row: &Row<'_>, strings: &mut Interner) -> rusqlite::Result<LocalEvent> {
    let seq_num = EventSeqNum::new(row.get::<_, i64>(0)?.max(0) as u64, row.get(1)?, row.get(2)?);
    let parent_seq_num =
        EventSeqNum::new(row.get::<_, i64>(3)?.max(0) as u64, row.get(4)?, row.get(5)?);
    let text = |index: usize| -> rusqlite::Result<&str> {
        row.get_ref(index)?.as_str().map_err(|error| {
            rusqlite::Error::FromSqlConversionFailure(
                index,
                rusqlite::types::Type::Text,
                Box::new(error),
            )
        })
    };
    Ok(LocalEvent {
        seq_num,
        parent_seq_num,
        name: intern(&mut strings.name, text(6)?),
        args_json: Arc::from(text(7)?),
        client_id: intern(&mut strings.client_id, text(8)?),
        session_id: intern(&mut strings.session_id, text(9)?),
        client_only: seq_num.client > 0,
    })
}

/// The upstream head (last global number the backend confirmed) and the known `backendId`.
pub(crate) fn sync_status(conn: &Connection) -> rusqlite::Result<(u64, Option<String>)> {
    conn.query_row("SELECT head, backendId FROM main.__livestore_sync_status LIMIT 1", [], |row| {
        Ok((row.get::<_, i64>(0)?.max(0) as u64, row.get(1)?))
    })
}

/// Records the upstream head.
pub(crate) fn set_upstream_head(conn: &Connection, head: u64) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached("UPDATE main.__livestore_sync_status SET head = ?1")?;
    statement.execute([i64::try_from(head).unwrap_or(i64::MAX)])?;
    Ok(())
}

/// Records the backend identity learned from the first pull response.
pub(crate) fn set_backend_id(conn: &Connection, backend_id: Option<&str>) -> rusqlite::Result<()> {
    conn.execute("UPDATE main.__livestore_sync_status SET backendId = ?1", [backend_id])?;
    Ok(())
}

/// A value from the client metadata table (e.g. the persisted client id).
pub(crate) fn meta_get(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM main.__livestore_client_meta WHERE key = ?1", [key], |row| {
        row.get(0)
    })
    .optional()
}

/// Sets a value in the client metadata table.
pub(crate) fn meta_set(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO main.__livestore_client_meta (key, value) VALUES (?1, ?2)",
        [key, value],
    )?;
    Ok(())
}

/// Deletes every event and resets the sync status (backend reset).
pub(crate) fn clear(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("DELETE FROM main.eventlog; UPDATE main.__livestore_sync_status SET head = 0, backendId = NULL;")
}

/// SQLite integers are signed; global numbers above `i64::MAX` cannot occur (the wire caps them at 2^53).
fn seq_global(seq_num: EventSeqNum) -> i64 {
    i64::try_from(seq_num.global).unwrap_or(i64::MAX)
}
