//! Opening a store's databases: directory layout, the single-process lock and format checks.
//!
//! Layout of `<data_dir>/<store_id>/`: `LOCK` (held with an exclusive file lock while a store is open),
//! `eventlog.db` (the source of truth) and `state-<schema hash>.db` (derived; a new schema hash means a new file
//! rebuilt from the eventlog). Every database carries our `application_id` and a format version in
//! `user_version`; a file that is not SQLite, or is SQLite but not ours, is reported and left untouched.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::error::StoreError;

/// `PRAGMA application_id` of every database this crate writes ("LSRS").
pub(crate) const APPLICATION_ID: i64 = 0x4C53_5253;
/// `PRAGMA user_version` of the eventlog database.
pub(crate) const EVENTLOG_FORMAT: i64 = 1;
/// `PRAGMA user_version` of state databases.
pub(crate) const STATE_FORMAT: i64 = 1;

/// Where a store keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Nothing persists; both databases live in memory.
    InMemory,
    /// Both databases persist under `<data_dir>/<store_id>/`.
    Dir(PathBuf),
    /// The eventlog persists under `<data_dir>/<store_id>/`; state lives in memory and is rebuilt at open.
    DirWithMemoryState(PathBuf),
}

/// An opened pair of databases.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) conn: Connection,
    /// Held for the store's lifetime; dropping it releases the directory.
    pub(crate) lock: Option<File>,
    /// Whether the state database was just created (and must be rebuilt from the eventlog).
    pub(crate) state_is_new: bool,
    /// The store directory, if persistent.
    pub(crate) store_dir: Option<PathBuf>,
    /// The state database file, if persistent.
    pub(crate) state_path: Option<PathBuf>,
}

/// Opens (creating if needed) the eventlog and state databases for a store.
pub(crate) fn open(
    storage: &Storage,
    store_id: &str,
    state_hash: u64,
) -> Result<Opened, StoreError> {
    let (dir, memory_state) = match storage {
        Storage::InMemory => {
            let conn = Connection::open_in_memory()?;
            conn.execute_batch("ATTACH DATABASE ':memory:' AS state")?;
            init_eventlog_pragmas(&conn, Path::new(":memory:"))?;
            init_state_pragmas(&conn, Path::new(":memory:"))?;
            return Ok(Opened {
                conn,
                lock: None,
                state_is_new: true,
                store_dir: None,
                state_path: None,
            });
        }
        Storage::Dir(dir) => (dir, false),
        Storage::DirWithMemoryState(dir) => (dir, true),
    };
    let store_dir = dir.join(store_id);
    std::fs::create_dir_all(&store_dir)
        .map_err(|source| StoreError::Io { path: store_dir.clone(), source })?;
    let lock = acquire_lock(&store_dir.join("LOCK"))?;

    let eventlog_path = store_dir.join("eventlog.db");
    check_sqlite_header(&eventlog_path)?;
    let conn = Connection::open_with_flags(
        &eventlog_path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| corrupt(&eventlog_path, source))?;
    check_ownership(&conn, "main", &eventlog_path, EVENTLOG_FORMAT)?;
    init_eventlog_pragmas(&conn, &eventlog_path)?;

    let (state_is_new, state_path) = if memory_state {
        conn.execute_batch("ATTACH DATABASE ':memory:' AS state")?;
        (true, None)
    } else {
        let state_path = store_dir.join(format!("state-{state_hash:016x}.db"));
        check_sqlite_header(&state_path)?;
        let is_new = std::fs::metadata(&state_path).map(|meta| meta.len() == 0).unwrap_or(true);
        let path_text = state_path.to_str().ok_or_else(|| {
            StoreError::InvalidSchema(format!("state path {} is not UTF-8", state_path.display()))
        })?;
        conn.execute("ATTACH DATABASE ?1 AS state", [path_text])
            .map_err(|source| corrupt(&state_path, source))?;
        check_ownership(&conn, "state", &state_path, STATE_FORMAT)?;
        (is_new, Some(state_path))
    };
    init_state_pragmas(&conn, state_path.as_deref().unwrap_or(Path::new(":memory:")))?;
    Ok(Opened { conn, lock: Some(lock), state_is_new, store_dir: Some(store_dir), state_path })
}

fn acquire_lock(path: &Path) -> Result<File, StoreError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| StoreError::Io { path: path.to_owned(), source })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Locked { path: path.to_owned() }),
        Err(TryLockError::Error(source)) => Err(StoreError::Io { path: path.to_owned(), source }),
    }
}

/// Rejects a non-empty file that does not start with the SQLite header, before SQLite gets to touch it.
fn check_sqlite_header(path: &Path) -> Result<(), StoreError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(StoreError::Io { path: path.to_owned(), source }),
    };
    let mut header = [0u8; 16];
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..]) {
            Ok(0) => break,
            Ok(count) => read += count,
            Err(source) => return Err(StoreError::Io { path: path.to_owned(), source }),
        }
    }
    if read == 0 {
        return Ok(());
    }
    if read < header.len() || &header != b"SQLite format 3\0" {
        return Err(StoreError::ForeignDatabase {
            path: path.to_owned(),
            reason: "the file is not an SQLite database".to_owned(),
        });
    }
    Ok(())
}

/// Checks `application_id` and `user_version` of an existing database; stamps a new (empty) one.
fn check_ownership(
    conn: &Connection,
    schema: &str,
    path: &Path,
    format: i64,
) -> Result<(), StoreError> {
    let application_id: i64 = conn
        .query_row(&format!("PRAGMA {schema}.application_id"), [], |row| row.get(0))
        .map_err(|source| corrupt(path, source))?;
    let user_version: i64 = conn
        .query_row(&format!("PRAGMA {schema}.user_version"), [], |row| row.get(0))
        .map_err(|source| corrupt(path, source))?;
    let object_count: i64 = conn
        .query_row(&format!("SELECT count(*) FROM {schema}.sqlite_master"), [], |row| row.get(0))
        .map_err(|source| corrupt(path, source))?;
    if application_id == 0 && object_count == 0 {
        conn.execute_batch(&format!("PRAGMA {schema}.application_id = {APPLICATION_ID}; PRAGMA {schema}.user_version = {format};"))?;
        return Ok(());
    }
    if application_id != APPLICATION_ID {
        return Err(StoreError::ForeignDatabase {
            path: path.to_owned(),
            reason: format!("application_id is {application_id:#x}, expected {APPLICATION_ID:#x}"),
        });
    }
    if user_version != format {
        return Err(StoreError::ForeignDatabase {
            path: path.to_owned(),
            reason: format!("format version {user_version}, this build reads version {format}"),
        });
    }
    Ok(())
}

fn init_eventlog_pragmas(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    // WAL with synchronous=NORMAL: a commit survives a process crash; a power loss may drop the last commits,
    // which then look like events that were never made (the log stays consistent).
    conn.execute_batch("PRAGMA main.journal_mode = WAL; PRAGMA main.synchronous = NORMAL;")
        .map_err(|source| corrupt(path, source))?;
    crate::db::eventlog::create_tables(conn).map_err(|source| corrupt(path, source))?;
    Ok(())
}

fn init_state_pragmas(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    conn.execute_batch("PRAGMA state.journal_mode = WAL; PRAGMA state.synchronous = NORMAL;")
        .map_err(|source| corrupt(path, source))?;
    crate::db::state::create_system_tables(conn).map_err(|source| corrupt(path, source))?;
    Ok(())
}

fn corrupt(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::CorruptDatabase { path: path.to_owned(), source }
}
