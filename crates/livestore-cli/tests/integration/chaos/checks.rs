//! The end-of-run checks of the chaos test, one store at a time: every client (Rust and JS) holds exactly the
//! server's log and the same state, every commit any participant made is in the log exactly once, and every active
//! file's bytes are on every file client and hash to the row's `contentHash`.
//!
//! State is compared as a hash: SHA-256 over the `todos` rows ordered by id and then the `files` rows ordered by id,
//! in one canonical JSON form for both languages.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use livestore_client::todo::Todo;
use livestore_files::schema::FileRecord;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::chaos::rust_client::RustClient;
use crate::resilient::LoggedEvent;

/// One synced event as every side can show it: global number, name, args (compared as JSON values, so key order
/// does not matter) and the client that made it.
pub type CanonicalEvent = (u64, String, Value, String);

pub fn server_events(log: &[LoggedEvent]) -> Vec<CanonicalEvent> {
    log.iter()
        .map(|event| (event.seq, event.name.clone(), event.args.clone(), event.client_id.clone()))
        .collect()
}

/// A Rust client's synced events; asserts none is pending (not yet confirmed by the server).
pub fn rust_events(client: &RustClient) -> Vec<CanonicalEvent> {
    let (head, _) = client.store().upstream_cursor().expect("upstream cursor");
    client
        .store()
        .events()
        .expect("eventlog")
        .into_iter()
        .filter(|event| !event.client_only)
        .map(|event| {
            assert_eq!(
                event.seq_num.client, 0,
                "{}: a synced event has a client number",
                client.name
            );
            assert!(
                event.seq_num.global <= head,
                "{}: {} is still pending",
                client.name,
                event.seq_num
            );
            let args: Value = serde_json::from_str(&event.args_json).expect("stored args are JSON");
            (event.seq_num.global, event.name.to_string(), args, event.client_id.to_string())
        })
        .collect()
}

/// A JS client's synced events, from the driver's `eventlog` command.
pub fn js_events(eventlog: &Value) -> Vec<CanonicalEvent> {
    eventlog
        .as_array()
        .expect("the driver returns an array")
        .iter()
        .map(|event| {
            (
                event["seqNum"].as_u64().expect("seqNum"),
                event["name"].as_str().expect("name").to_owned(),
                event["args"].clone(),
                event["clientId"].as_str().expect("clientId").to_owned(),
            )
        })
        .collect()
}

fn todo_value(todo: &Todo) -> Value {
    json!([todo.id, todo.text, todo.completed, todo.deleted_at])
}

fn file_value(row: &FileRecord) -> Value {
    json!([
        row.id,
        row.path,
        row.remote_key,
        row.content_hash,
        row.metadata_json,
        row.created_at,
        row.updated_at,
        row.deleted_at
    ])
}

fn hash_state(todos: Vec<Value>, files: Vec<Value>) -> String {
    let canonical = json!({"todos": todos, "files": files}).to_string();
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

pub fn rust_state_hash(client: &RustClient) -> String {
    hash_state(
        client.todos().iter().map(todo_value).collect(),
        client.file_rows().iter().map(file_value).collect(),
    )
}

/// The state hash of a JS client from the driver's `todos` result and a `SELECT * FROM files ORDER BY id`.
pub fn js_state_hash(todos: &Value, files: &Value) -> String {
    let todos: Vec<Todo> = serde_json::from_value(todos.clone()).expect("todos rows");
    let files: Vec<FileRecord> = serde_json::from_value(files.clone()).expect("files rows");
    hash_state(todos.iter().map(todo_value).collect(), files.iter().map(file_value).collect())
}

/// One event a participant committed, with the schedule step that committed it.
struct Commit {
    client: String,
    name: String,
    /// The args as they travel (`None` for file events, whose args the file sync fills in).
    args: Option<Value>,
    step: u64,
}

/// Every event each client committed; compared with the log, so nothing is lost or doubled.
#[derive(Default)]
pub struct Commits(Vec<Commit>);

impl Commits {
    pub fn add(&mut self, client: &str, name: &str, args: Option<Value>, step: u64) {
        self.0.push(Commit { client: client.to_owned(), name: name.to_owned(), args, step });
    }

    pub fn total(&self) -> usize {
        self.0.len()
    }

    /// For each client and event name, the log holds as many events as were committed, and each committed event's
    /// args once (equal counts alone would pass a lost event with another one doubled, e.g. two `TodoCompleted`).
    /// Names the engine commits by itself (`v1.FileUpdated` after an upload) are not recorded and not checked. A
    /// mismatch names the commits missing from the log (or found there too often), with their steps.
    pub fn assert_in(&self, store: &str, clients: &[&str], log: &[LoggedEvent]) {
        let mut in_log: HashMap<(&str, &str), Vec<&Value>> = HashMap::new();
        for event in log {
            in_log.entry((&event.client_id, &event.name)).or_default().push(&event.args);
        }
        let mut committed: HashMap<(&str, &str), Vec<&Commit>> = HashMap::new();
        for commit in self.0.iter().filter(|commit| clients.contains(&commit.client.as_str())) {
            committed.entry((&commit.client, &commit.name)).or_default().push(commit);
        }
        for ((client, name), commits) in &committed {
            let mut found = in_log.get(&(*client, *name)).cloned().unwrap_or_default();
            let same_count = found.len() == commits.len();
            let mut missing = Vec::new();
            for commit in commits {
                let Some(args) = &commit.args else { continue };
                match found.iter().position(|logged| *logged == args) {
                    Some(index) => {
                        found.swap_remove(index);
                    }
                    None => missing.push(format!("step {} {args}", commit.step)),
                }
            }
            if same_count && missing.is_empty() {
                continue;
            }
            panic!(
                "{store}: {client} committed {} {name}, the log has {}; missing: {missing:?}; \
                 in the log but not committed: {found:?}",
                commits.len(),
                in_log.get(&(*client, *name)).map_or(0, Vec::len)
            );
        }
    }
}

/// A file saved during the run.
pub struct SavedFile {
    pub store: usize,
    pub file_id: String,
    pub content_hash: String,
    pub size: usize,
}

/// Files: the active rows are exactly the saved and not deleted ones, each carries the hash of the bytes that were
/// saved and a `remoteKey`; on a file client each one's local bytes read back verified and hash to it, and no
/// visible content file is corrupt. Returns the bytes verified.
pub fn check_files(
    store: usize,
    client: &RustClient,
    saved: &[SavedFile],
    deleted: &HashSet<String>,
) -> u64 {
    let expected: HashMap<&str, &SavedFile> = saved
        .iter()
        .filter(|file| file.store == store && !deleted.contains(&file.file_id))
        .map(|file| (file.file_id.as_str(), file))
        .collect();
    let rows = client.file_rows();
    let active: Vec<&FileRecord> = rows.iter().filter(|row| row.is_active()).collect();
    let active_ids: HashSet<&str> = active.iter().map(|row| row.id.as_str()).collect();
    let expected_ids: HashSet<&str> = expected.keys().copied().collect();
    assert_eq!(active_ids, expected_ids, "{}: active files", client.name);
    for row in &rows {
        if deleted.contains(&row.id) {
            assert!(!row.is_active(), "{}: deleted {} is active", client.name, row.id);
        }
    }
    let mut verified = 0;
    for row in active {
        let file = expected[row.id.as_str()];
        assert_eq!(row.content_hash, file.content_hash, "{}: {}'s hash", client.name, row.id);
        assert_eq!(
            row.remote_key,
            format!("{}/{}", client.store_id, file.content_hash),
            "{}: {} uploaded",
            client.name,
            row.id
        );
        let Some(files) = client.files() else { continue };
        let mut bytes = Vec::new();
        files
            .read_file(&row.id)
            .unwrap_or_else(|error| panic!("{}: {} is not here: {error}", client.name, row.id))
            .read_to_end(&mut bytes)
            .unwrap_or_else(|error| panic!("{}: {} does not verify: {error}", client.name, row.id));
        assert_eq!(bytes.len(), file.size, "{}: {}'s size", client.name, row.id);
        assert_eq!(hex::encode(Sha256::digest(&bytes)), file.content_hash);
        verified += bytes.len() as u64;
    }
    if let Some(files) = client.files() {
        assert_no_corrupt_visible(client.name, files.local_files().content_dir());
    }
    verified
}

/// Every visible content file hashes to its name (partial and quarantined files live elsewhere).
fn assert_no_corrupt_visible(name: &str, dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if file_name.ends_with(".meta.json") || !entry.path().is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path()).expect("content file readable");
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            file_name,
            "{name}: a visible local file does not match its name"
        );
    }
}
