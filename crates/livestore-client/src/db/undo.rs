//! Rolling back pending events: an undo log of inverse statements, recorded while pending events materialize.
//!
//! Rebase must undo the state changes of pending events. LiveStore records an SQLite session changeset per event;
//! rusqlite's `session` and `preupdate_hook` features need bindgen and libclang at build time (and would switch the
//! whole workspace's SQLite build), so this crate records the same information with plain SQLite: the inverse
//! statement of every row change (`DELETE` for an insert, `UPDATE` back to the old values for an update, `INSERT`
//! of the old row for a delete; addressed by rowid, values written with `quote()`, which round-trips every SQLite
//! value exactly) goes to `state.__livestore_undo`, keyed by the event and a change counter. Rolling back an event
//! executes its statements newest first. Replay was rejected: it needs a snapshot of the state at the upstream head
//! or a full rebuild, which costs O(log) per rebase.
//!
//! Where the records come from, and why:
//! - **Inserts** are seen by the connection's update hook ([`UndoLog::on_insert`]), which buffers `(table, rowid)`;
//!   [`UndoLog::flush`] writes them before the transaction commits. Inserts are most events, and a trigger on
//!   `INSERT` would make every insert a multi-statement write, which makes SQLite copy each touched page into a
//!   statement journal (measured at about a fifth of a commit's instructions).
//! - **Updates and deletes** need the old values, which only a trigger can see (the pre-update hook needs a
//!   bindgen build). TEMP triggers `WHEN ls_undo_active()` record them.
//! - The recording key (event sequence number, change counter) lives in this struct and reaches SQL through
//!   application-defined functions, so starting and stopping recording is a memory write, not an `UPDATE`.
//!   Hook-buffered and trigger-written records draw their counter from the same sequence, so their order is the
//!   order of the changes.
//!
//! Recording is on only while pending local events materialize; confirmed history is never rolled back and its
//! undo rows are deleted as soon as the upstream confirms the events. The counter restarts at zero when a store
//! opens: it orders the changes of one event, and an event is always recorded within one process.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use livestore_core::seq_num::EventSeqNum;
use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, params};

use crate::schema::Schema;
use crate::schema::table::quote_ident;

/// The recording state shared by the store, the update hook and the SQL functions of one connection.
#[derive(Debug)]
pub(crate) struct UndoLog {
    active: AtomicBool,
    global: AtomicI64,
    client: AtomicI64,
    generation: AtomicI64,
    counter: AtomicI64,
    /// `DELETE FROM state."<table>" WHERE rowid=` per state table, in schema order.
    delete_prefixes: Vec<String>,
    /// Inserts seen by the update hook since the last flush.
    inserts: Mutex<Vec<BufferedInsert>>,
}

#[derive(Debug, Clone, Copy)]
struct BufferedInsert {
    key: [i64; 3],
    counter: i64,
    table: usize,
    rowid: i64,
}

impl UndoLog {
    pub(crate) fn new(schema: &Schema) -> UndoLog {
        let delete_prefixes = schema
            .tables()
            .iter()
            .map(|table| format!("DELETE FROM state.{} WHERE rowid=", quote_ident(&table.name)))
            .collect();
        UndoLog {
            active: AtomicBool::new(false),
            global: AtomicI64::new(0),
            client: AtomicI64::new(0),
            generation: AtomicI64::new(0),
            counter: AtomicI64::new(0),
            delete_prefixes,
            inserts: Mutex::new(Vec::new()),
        }
    }

    /// Starts recording changes under `seq_num`.
    pub(crate) fn start(&self, seq_num: EventSeqNum) {
        let [global, client, generation] = key(seq_num);
        self.global.store(global, Ordering::Relaxed);
        self.client.store(client, Ordering::Relaxed);
        self.generation.store(generation, Ordering::Relaxed);
        self.active.store(true, Ordering::Relaxed);
    }

    /// Stops recording (buffered inserts stay until [`UndoLog::flush`] or [`UndoLog::discard`]).
    pub(crate) fn stop(&self) {
        self.active.store(false, Ordering::Relaxed);
    }

    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Called by the update hook for every row inserted into a state table; `table` is its position in
    /// [`Schema::tables`] (rows of tables outside the schema are not recorded).
    pub(crate) fn on_insert(&self, table: usize, rowid: i64) {
        if !self.is_active() || table >= self.delete_prefixes.len() {
            return;
        }
        let insert = BufferedInsert {
            key: [
                self.global.load(Ordering::Relaxed),
                self.client.load(Ordering::Relaxed),
                self.generation.load(Ordering::Relaxed),
            ],
            counter: self.counter.fetch_add(1, Ordering::Relaxed),
            table,
            rowid,
        };
        if let Ok(mut inserts) = self.inserts.lock() {
            inserts.push(insert);
        }
    }

    /// Writes the inverse statements of buffered inserts; must run inside the transaction that made them.
    ///
    /// A batch commit buffers one insert per event or more, so the records go out [`ROWS_PER_INSERT`] rows per
    /// statement: one statement execution per chunk instead of per row is most of what writing them costs.
    pub(crate) fn flush(&self, conn: &Connection) -> rusqlite::Result<()> {
        let inserts = match self.inserts.lock() {
            Ok(mut inserts) if !inserts.is_empty() => std::mem::take(&mut *inserts),
            _ => return Ok(()),
        };
        let mut chunks = inserts.chunks_exact(ROWS_PER_INSERT);
        let mut text = String::new();
        if chunks.len() > 0 {
            let mut statement = conn.prepare_cached(&INSERT_MANY_SQL)?;
            for chunk in &mut chunks {
                for (row, insert) in chunk.iter().enumerate() {
                    self.bind_record(&mut statement, row * 5, insert, &mut text)?;
                }
                statement.raw_execute()?;
            }
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut statement = conn.prepare_cached(&INSERT_ONE_SQL)?;
            for insert in rest {
                self.bind_record(&mut statement, 0, insert, &mut text)?;
                statement.raw_execute()?;
            }
        }
        Ok(())
    }

    /// Binds one record's five values from parameter `offset + 1` on.
    fn bind_record(
        &self,
        statement: &mut rusqlite::CachedStatement<'_>,
        offset: usize,
        insert: &BufferedInsert,
        text: &mut String,
    ) -> rusqlite::Result<()> {
        use std::fmt::Write as _;
        text.clear();
        text.push_str(&self.delete_prefixes[insert.table]);
        let _ = write!(text, "{}", insert.rowid);
        let [global, client, generation] = insert.key;
        statement.raw_bind_parameter(offset + 1, global)?;
        statement.raw_bind_parameter(offset + 2, client)?;
        statement.raw_bind_parameter(offset + 3, generation)?;
        statement.raw_bind_parameter(offset + 4, insert.counter)?;
        statement.raw_bind_parameter(offset + 5, text.as_str())
    }

    /// Forgets buffered inserts of a transaction that rolled back.
    pub(crate) fn discard(&self) {
        self.stop();
        if let Ok(mut inserts) = self.inserts.lock() {
            inserts.clear();
        }
    }
}

/// Undo records written by one statement when a flush has many (5 parameters each, far below SQLite's limit).
const ROWS_PER_INSERT: usize = 64;

/// The statements writing [`ROWS_PER_INSERT`] records and one record (built once: the statement cache is keyed
/// by their text).
static INSERT_MANY_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| insert_sql(ROWS_PER_INSERT));
static INSERT_ONE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| insert_sql(1));

/// `INSERT INTO state.__livestore_undo … VALUES (…), (…)` with `rows` rows of numbered parameters.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO state.__livestore_undo (seqNumGlobal, seqNumClient, seqNumRebaseGeneration, n, stmt) VALUES ",
    );
    for row in 0..rows {
        let first = row * 5 + 1;
        if row > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(?{first},?{},?{},?{},?{})",
            first + 1,
            first + 2,
            first + 3,
            first + 4
        ));
    }
    sql
}

/// Registers the recording functions and creates the update/delete triggers of every state table.
///
/// Triggers are TEMP (they live with the connection), so they are created at every open and after a rebuild.
pub(crate) fn install(
    conn: &Connection,
    schema: &Schema,
    log: &std::sync::Arc<UndoLog>,
) -> rusqlite::Result<()> {
    // Not deterministic (they read the recording state), and not innocuous either: only our TEMP triggers
    // should call them, which `DIRECTONLY` would forbid, so they are plain functions.
    let flags = FunctionFlags::SQLITE_UTF8;
    let active = std::sync::Arc::clone(log);
    conn.create_scalar_function("ls_undo_active", 0, flags, move |_| Ok(active.is_active()))?;
    let record = std::sync::Arc::clone(log);
    conn.create_scalar_function("ls_undo_key", 1, flags, move |context| {
        Ok(match context.get::<i64>(0)? {
            0 => record.global.load(Ordering::Relaxed),
            1 => record.client.load(Ordering::Relaxed),
            2 => record.generation.load(Ordering::Relaxed),
            _ => record.counter.fetch_add(1, Ordering::Relaxed),
        })
    })?;
    create_triggers(conn, schema)
}

/// Creates the TEMP update/delete triggers (idempotent).
pub(crate) fn create_triggers(conn: &Connection, schema: &Schema) -> rusqlite::Result<()> {
    let record = "INSERT INTO __livestore_undo (seqNumGlobal, seqNumClient, seqNumRebaseGeneration, n, stmt) \
                  VALUES (ls_undo_key(0), ls_undo_key(1), ls_undo_key(2), ls_undo_key(3),";
    let mut sql = String::new();
    for table in schema.tables() {
        let target = format!("state.{}", quote_ident(&table.name));
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
        let (update, delete) = trigger_names(&table.name);
        sql.push_str(&format!(
            "CREATE TEMP TRIGGER IF NOT EXISTS {update} AFTER UPDATE ON {target} WHEN ls_undo_active() BEGIN
               {record} 'UPDATE {target_sql} SET ' || {assignments} || ',rowid=' || OLD.rowid || ' WHERE rowid=' || NEW.rowid);
             END;
             CREATE TEMP TRIGGER IF NOT EXISTS {delete} AFTER DELETE ON {target} WHEN ls_undo_active() BEGIN
               {record} 'INSERT INTO {target_sql} (rowid,{column_list}) VALUES (' || OLD.rowid || ',' || {old_values} || ')');
             END;"
        ));
    }
    conn.execute_batch(&sql)
}

/// Drops the TEMP triggers, e.g. while a rebuild materializes confirmed events (no undo needed, and a write on a
/// table with triggers pays for a statement journal) or before the state database is detached.
pub(crate) fn drop_triggers(conn: &Connection, schema: &Schema) -> rusqlite::Result<()> {
    let mut sql = String::new();
    for table in schema.tables() {
        let (update, delete) = trigger_names(&table.name);
        sql.push_str(&format!(
            "DROP TRIGGER IF EXISTS temp.{update}; DROP TRIGGER IF EXISTS temp.{delete};"
        ));
    }
    conn.execute_batch(&sql)
}

fn trigger_names(table: &str) -> (String, String) {
    (quote_ident(&format!("__ls_undo_upd_{table}")), quote_ident(&format!("__ls_undo_del_{table}")))
}

/// Undoes one event's state changes (newest change first) and forgets them. Recording must be off.
pub(crate) fn roll_back(conn: &Connection, seq_num: EventSeqNum) -> rusqlite::Result<()> {
    let [global, client, generation] = key(seq_num);
    let statements: Vec<String> = conn
        .prepare_cached(
            "SELECT stmt FROM state.__livestore_undo
             WHERE seqNumGlobal = ?1 AND seqNumClient = ?2 AND seqNumRebaseGeneration = ?3 ORDER BY n DESC",
        )?
        .query_map(params![global, client, generation], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for statement in statements {
        conn.execute_batch(&statement)?;
    }
    conn.prepare_cached(
        "DELETE FROM state.__livestore_undo WHERE seqNumGlobal = ?1 AND seqNumClient = ?2 AND seqNumRebaseGeneration = ?3",
    )?
    .execute(params![global, client, generation])?;
    Ok(())
}

/// Forgets undo statements of events up to and including `seq_num` (by global, then client): they are confirmed.
pub(crate) fn forget_through(conn: &Connection, seq_num: EventSeqNum) -> rusqlite::Result<()> {
    let [global, client, _] = key(seq_num);
    conn.prepare_cached(
        "DELETE FROM state.__livestore_undo WHERE (seqNumGlobal, seqNumClient) <= (?1, ?2)",
    )?
    .execute(params![global, client])?;
    Ok(())
}

fn key(seq_num: EventSeqNum) -> [i64; 3] {
    [
        i64::try_from(seq_num.global).unwrap_or(i64::MAX),
        i64::from(seq_num.client),
        i64::from(seq_num.rebase_generation),
    ]
}
