//! Opening a store's databases: directory layout, the single-process lock and format checks.
//!
//! Layout of `<data_dir>/<store_id>/`: `LOCK` (held with an exclusive file lock while a store is open),
//! `eventlog.db` (the source of truth) and `state-<schema hash>.db` (derived; a new schema hash means a new file
//! rebuilt from the eventlog). Every database carries our `application_id` and a format version in
//! `user_version`; a file that is not SQLite, or is SQLite but not ours, is reported and left untouched.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::path::{Path, PathBuf};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use crate::error::StoreError;

/// `PRAGMA application_id` of every database this crate writes ("LSRS").
pub(crate) const APPLICATION_ID: i64 = 0x4C53_5253;
/// `PRAGMA user_version` of the eventlog database.
pub(crate) const EVENTLOG_FORMAT: i64 = 1;
/// `PRAGMA user_version` of state databases.
pub(crate) const STATE_FORMAT: i64 = 2;

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

/// What a successful commit guarantees about the disk (both databases run in WAL mode).
///
/// A commit is appended to the write-ahead log before [`crate::Store::commit`] returns, so it survives a crash of
/// the process either way. The difference is a power loss or kernel crash:
/// - [`Durability::Normal`] (the default, `synchronous=NORMAL`, what LiveStore's own adapters use): the WAL is
///   fsynced only when it is checkpointed, so the last commits before a power loss may be lost. The log stays a
///   consistent prefix, and events that were not pushed yet simply never happened; events that were pushed come
///   back from the server on the next pull.
/// - [`Durability::Full`] (`synchronous=FULL`): every commit fsyncs the WAL before it returns. A commit costs one
///   disk flush (hundreds of microseconds on common SSDs); batching events into one commit amortizes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// On disk in the WAL when the commit returns; fsynced at checkpoints. Survives process crashes.
    #[default]
    Normal,
    /// Fsynced on every commit. Survives power loss.
    Full,
}

impl Durability {
    fn synchronous(self) -> &'static str {
        match self {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        }
    }
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
    durability: Durability,
) -> Result<Opened, StoreError> {
    let (dir, memory_state) = match storage {
        Storage::InMemory => {
            let conn = Connection::open_in_memory()?;
            conn.execute_batch("ATTACH DATABASE ':memory:' AS state")?;
            init_eventlog_pragmas(&conn, Path::new(":memory:"), durability)?;
            init_state_pragmas(&conn, Path::new(":memory:"), durability)?;
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
    // Set before the first access, for `main` and every database attached later. The `LOCK` file already keeps
    // other processes out, so SQLite may keep its locks for the connection's lifetime: no lock and shared-memory
    // calls per transaction, and the WAL index lives in heap memory instead of a `-shm` file.
    conn.execute_batch("PRAGMA locking_mode = EXCLUSIVE")
        .map_err(|source| corrupt(&eventlog_path, source))?;
    check_ownership(&conn, "main", &eventlog_path, EVENTLOG_FORMAT)?;
    init_eventlog_pragmas(&conn, &eventlog_path, durability)?;

    let (state_is_new, state_path) = if memory_state {
        conn.execute_batch("ATTACH DATABASE ':memory:' AS state")?;
        (true, None)
    } else {
        let state_path = store_dir.join(format!("state-{state_hash:016x}.db"));
        let is_new = std::fs::metadata(&state_path).map(|meta| meta.len() == 0).unwrap_or(true);
        if is_new {
            // A WAL without its database (a crash while a rebuild swapped files) must not be replayed into a
            // new, empty file.
            remove_wal_files(&state_path)?;
        }
        attach_state(&conn, &state_path, durability)?;
        (is_new, Some(state_path))
    };
    if memory_state {
        init_state_pragmas(&conn, Path::new(":memory:"), durability)?;
    }
    Ok(Opened { conn, lock: Some(lock), state_is_new, store_dir: Some(store_dir), state_path })
}

/// Attaches a state database file as `state`: format checks, WAL, the store's durability, system tables.
pub(crate) fn attach_state(
    conn: &Connection,
    path: &Path,
    durability: Durability,
) -> Result<(), StoreError> {
    check_sqlite_header(path)?;
    let path_text = path.to_str().ok_or_else(|| {
        StoreError::InvalidSchema(format!("state path {} is not UTF-8", path.display()))
    })?;
    conn.execute("ATTACH DATABASE ?1 AS state", [path_text])
        .map_err(|source| corrupt(path, source))?;
    check_ownership(conn, "state", path, STATE_FORMAT)?;
    init_state_pragmas(conn, path, durability)
}

/// Attaches a new, empty file as `state` for a rebuild: no WAL and no syncing while it fills (it only replaces
/// the real state file once complete and fsynced), a large page cache, and our format stamp.
pub(crate) fn attach_scratch_state(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    for stale in [path.to_owned(), with_suffix(path, "-journal")] {
        remove_if_exists(&stale)?;
    }
    let path_text = path.to_str().ok_or_else(|| {
        StoreError::InvalidSchema(format!("state path {} is not UTF-8", path.display()))
    })?;
    conn.execute("ATTACH DATABASE ?1 AS state", [path_text])
        .map_err(|source| corrupt(path, source))?;
    conn.execute_batch(&format!(
        "PRAGMA state.journal_mode = MEMORY; PRAGMA state.synchronous = OFF; PRAGMA state.cache_size = -65536;
         PRAGMA state.application_id = {APPLICATION_ID}; PRAGMA state.user_version = {STATE_FORMAT};"
    ))
    .map_err(|source| corrupt(path, source))?;
    crate::db::state::create_system_tables(conn).map_err(|source| corrupt(path, source))?;
    Ok(())
}

/// Removes `<db>-wal` and `<db>-shm`.
pub(crate) fn remove_wal_files(path: &Path) -> Result<(), StoreError> {
    for suffix in ["-wal", "-shm"] {
        remove_if_exists(&with_suffix(path, suffix))?;
    }
    Ok(())
}

pub(crate) fn remove_if_exists(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io { path: path.to_owned(), source }),
    }
}

pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
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

fn init_eventlog_pragmas(
    conn: &Connection,
    path: &Path,
    durability: Durability,
) -> Result<(), StoreError> {
    // See `Durability` for what each level promises. Temporary tables and indexes stay in memory: nothing in
    // them has to survive the connection. Checkpoints run every 10,000 WAL pages (40 MiB) instead of 1,000:
    // each costs two fsyncs whatever its size, and the WAL is checkpointed and removed when the store closes.
    conn.execute_batch(&format!(
        "PRAGMA main.journal_mode = WAL; PRAGMA main.synchronous = {}; PRAGMA temp_store = MEMORY;
         PRAGMA wal_autocheckpoint = 10000; PRAGMA main.cache_size = -8192;",
        durability.synchronous()
    ))
    .map_err(|source| corrupt(path, source))?;
    // SQLite by default reads a double-quoted name that matches no column as a string literal, so a misspelt
    // column in a filter (`"compelted" = 1`) would compare a constant and silently match nothing. Identifiers are
    // always double-quoted here (`schema::filter`), so turn the fallback off: an unknown column is an error.
    for setting in [DbConfig::SQLITE_DBCONFIG_DQS_DML, DbConfig::SQLITE_DBCONFIG_DQS_DDL] {
        conn.set_db_config(setting, false).map_err(|source| corrupt(path, source))?;
    }
    crate::db::eventlog::create_tables(conn).map_err(|source| corrupt(path, source))?;
    Ok(())
}

fn init_state_pragmas(
    conn: &Connection,
    path: &Path,
    durability: Durability,
) -> Result<(), StoreError> {
    // The state is derived and rebuilt when it is behind, but a state that claims a head it does not hold would
    // be wrong, so it gets the same durability as the eventlog. Page caches (8 MiB eventlog, 64 MiB state, grown
    // on demand) keep the index pages of a large store in memory: a miss costs a WAL lookup and a read syscall
    // (a 1,000,000-event catch-up pulled 40 % faster with 64 MiB than with 16 MiB).
    conn.execute_batch(&format!(
        "PRAGMA state.journal_mode = WAL; PRAGMA state.synchronous = {}; PRAGMA state.cache_size = -65536;",
        durability.synchronous()
    ))
    .map_err(|source| corrupt(path, source))?;
    crate::db::state::create_system_tables(conn).map_err(|source| corrupt(path, source))?;
    Ok(())
}

fn corrupt(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::CorruptDatabase { path: path.to_owned(), source }
}
