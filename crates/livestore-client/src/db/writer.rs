//! Writing events: appending to the eventlog and running materializers, with prepared statements kept for a
//! whole batch.
//!
//! A batch (a commit of many events, a pulled page, a rebuild page) runs the same few statements again and again.
//! Going through the connection's statement cache for each one costs a hash of the SQL text and a cache
//! round trip per statement; a [`Writer`] keeps the eventlog insert and the most recent materializer statements
//! checked out for its lifetime instead.

use livestore_core::event::LocalEvent;
use rusqlite::{CachedStatement, Connection};

use crate::db::eventlog;
use crate::error::StoreError;
use crate::schema::{MaterializeContext, MaterializeFailure, Schema, UnknownEventHandling};

/// How many distinct materializer statements a writer keeps (most events write one or two).
const KEPT_STATEMENTS: usize = 8;

/// Appends and materializes events on one connection; see the module docs.
pub(crate) struct Writer<'c> {
    conn: &'c Connection,
    schema: &'c Schema,
    insert: Option<CachedStatement<'c>>,
    /// Materializer statements by SQL text, most recently used last.
    statements: Vec<(String, CachedStatement<'c>)>,
    sql: String,
}

impl std::fmt::Debug for Writer<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Writer").field("statements", &self.statements.len()).finish()
    }
}

impl<'c> Writer<'c> {
    pub(crate) fn new(conn: &'c Connection, schema: &'c Schema) -> Self {
        Writer {
            conn,
            schema,
            insert: None,
            statements: Vec::new(),
            sql: String::with_capacity(128),
        }
    }

    pub(crate) fn conn(&self) -> &'c Connection {
        self.conn
    }

    /// Appends one event to the eventlog.
    pub(crate) fn append(
        &mut self,
        event: &LocalEvent,
        schema_hash: i64,
        sync_metadata_json: &str,
    ) -> rusqlite::Result<()> {
        let statement = match &mut self.insert {
            Some(statement) => statement,
            slot => slot.insert(self.conn.prepare_cached(eventlog::INSERT_SQL)?),
        };
        eventlog::execute_insert(statement, event, schema_hash, sync_metadata_json)
    }

    /// Appends many events, [`eventlog::ROWS_PER_INSERT`] rows per statement (one statement execution per chunk
    /// instead of per event is a good part of what appending costs); `schema_hash` gives each event's hash.
    pub(crate) fn append_all(
        &mut self,
        events: &[LocalEvent],
        schema_hash: impl Fn(usize) -> i64,
        sync_metadata_json: &str,
    ) -> rusqlite::Result<()> {
        let rows = eventlog::ROWS_PER_INSERT;
        let full_chunks = events.len() / rows;
        if full_chunks > 0 {
            let mut statement = self.conn.prepare_cached(&eventlog::INSERT_MANY_SQL)?;
            for chunk in 0..full_chunks {
                for row in 0..rows {
                    let index = chunk * rows + row;
                    eventlog::bind_row(
                        &mut statement,
                        row * 12,
                        &events[index],
                        schema_hash(index),
                        sync_metadata_json,
                    )?;
                }
                statement.raw_execute()?;
            }
        }
        for (index, event) in events.iter().enumerate().skip(full_chunks * rows) {
            self.append(event, schema_hash(index), sync_metadata_json)?;
        }
        Ok(())
    }

    /// Runs an event's materializer and executes its writes. Unknown events follow the schema's strategy.
    pub(crate) fn materialize(&mut self, event: &LocalEvent) -> Result<(), StoreError> {
        let schema = self.schema;
        let Some(definition) = schema.definition(&event.name) else {
            return handle_unknown(schema, event);
        };
        let Some(materializer) = &definition.materializer else { return Ok(()) };
        if let Some(message) = &definition.meta.deprecated {
            tracing::warn!(target: "livestore_client::_events::deprecated", event = %event.name, "{message}");
        }
        let ctx = MaterializeContext { state: self.conn, event };
        let writes = materializer(&event.args_json, &ctx).map_err(|failure| match failure {
            MaterializeFailure::InvalidArgs(source) => {
                StoreError::InvalidArgs { event: event.name.to_string(), source }
            }
            MaterializeFailure::Materializer(error) => {
                StoreError::Materializer { event: event.name.to_string(), reason: error.0 }
            }
        })?;
        for write in writes {
            self.sql.clear();
            write.write_sql(&mut self.sql);
            let result = self.statement().and_then(|statement| {
                statement.execute(rusqlite::params_from_iter(write.params()))
            });
            if let Err(error) = result {
                return Err(StoreError::Materializer {
                    event: event.name.to_string(),
                    reason: format!("{error} in `{}`", self.sql),
                });
            }
        }
        Ok(())
    }

    /// The prepared statement for `self.sql`, kept or taken from the connection's cache.
    fn statement(&mut self) -> rusqlite::Result<&mut CachedStatement<'c>> {
        let found = self.statements.iter().rposition(|(sql, _)| *sql == self.sql);
        let entry = match found {
            Some(idx) => self.statements.remove(idx),
            None => {
                if self.statements.len() == KEPT_STATEMENTS {
                    self.statements.remove(0);
                }
                (self.sql.clone(), self.conn.prepare_cached(&self.sql)?)
            }
        };
        self.statements.push(entry);
        let last = self.statements.len() - 1;
        Ok(&mut self.statements[last].1)
    }
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
