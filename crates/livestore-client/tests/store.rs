//! Store tests: commit, query, subscribe, client documents, rebuild, rebase via upstream pages, and bad input.

use std::sync::{Arc, Mutex};

use livestore_client::schema::{Column, Event, MaterializerError, Query, Schema, Table, Write};
use livestore_client::store::UpstreamEvent;
use livestore_client::todo::{self, Todo, TodoCompleted, TodoCreated, TodoDeleted};
use livestore_client::{LocalEvent, NewEvent, Storage, Store, StoreError, StoreOptions};
use serde::{Deserialize, Serialize};

fn memory_store() -> Store {
    Store::open(StoreOptions::new("test", Storage::InMemory), todo::schema()).unwrap()
}

fn dir_store(dir: &std::path::Path) -> Result<Store, StoreError> {
    Store::open(StoreOptions::new("test", Storage::Dir(dir.to_owned())), todo::schema())
}

fn todos(store: &Store) -> Vec<Todo> {
    store.query(&Query::select("todos").order_by("id")).unwrap()
}

fn created(id: &str, text: &str) -> TodoCreated {
    TodoCreated { id: id.into(), text: text.into() }
}

#[allow(clippy::needless_pass_by_value)]
fn upstream(seq: u64, name: &str, args: serde_json::Value, client: &str) -> UpstreamEvent {
    UpstreamEvent {
        event: LocalEvent::from_global(seq, seq - 1, name, args.to_string(), client, "static"),
        metadata_json: None,
    }
}

#[test]
fn commit_assigns_sequence_numbers_and_materializes() {
    let store = memory_store();
    assert_eq!(store.commit(&created("a", "A")).unwrap().to_string(), "e1");
    store.set_document("uiState", None, serde_json::json!({"filter": "completed"})).unwrap();
    assert_eq!(store.commit(&TodoCompleted { id: "a".into() }).unwrap().to_string(), "e2");
    let events = store.events().unwrap();
    let numbers: Vec<String> = events.iter().map(|event| event.seq_num.to_string()).collect();
    assert_eq!(numbers, ["e1", "e1.1", "e2"]);
    assert_eq!(events[2].parent_seq_num.to_string(), "e1");
    assert_eq!(
        todos(&store),
        vec![Todo { id: "a".into(), text: "A".into(), completed: true, deleted_at: None }]
    );
    let status = store.sync_status().unwrap();
    assert_eq!((status.pending_count, status.pending_synced_count), (3, 2));
    assert_eq!(status.local_head, "e2");
}

#[test]
fn client_document_merges_and_defaults_per_session() {
    let store = memory_store();
    assert_eq!(
        store.get_document("uiState", None).unwrap(),
        serde_json::json!({"newTodoText": "", "filter": "all"})
    );
    store.set_document("uiState", None, serde_json::json!({"newTodoText": "milk"})).unwrap();
    store.set_document("uiState", None, serde_json::json!({"filter": "active"})).unwrap();
    assert_eq!(
        store.get_document("uiState", None).unwrap(),
        serde_json::json!({"newTodoText": "milk", "filter": "active"})
    );
    let rows = store.query_rows(&Query::select("uiState")).unwrap();
    assert_eq!(rows[0]["id"], "static");
    // Client-only events are never push candidates.
    assert!(store.push_candidates(100).unwrap().is_empty());
}

#[test]
fn bad_payload_is_refused_and_nothing_is_written() {
    let store = memory_store();
    let bad = NewEvent::from_json("v1.TodoCreated", &serde_json::json!({"id": 5}));
    let batch = vec![NewEvent::new(&created("a", "A")).unwrap(), bad];
    assert!(matches!(store.commit_batch(batch), Err(StoreError::InvalidArgs { .. })));
    let bad_date = NewEvent::from_json(
        "v1.TodoDeleted",
        &serde_json::json!({"id": "a", "deletedAt": "not a date"}),
    );
    assert!(matches!(store.commit_batch(vec![bad_date]), Err(StoreError::InvalidArgs { .. })));
    assert!(matches!(
        store.commit_batch(vec![NewEvent::from_json("v9.Nope", &serde_json::json!({}))]),
        Err(StoreError::UnknownEvent(_))
    ));
    assert!(store.events().unwrap().is_empty());
    assert!(todos(&store).is_empty());
}

#[test]
fn failing_materializer_rolls_back_the_whole_batch() {
    let store = memory_store();
    store.commit(&created("a", "A")).unwrap();
    // The second insert of `a` violates the primary key: the batch, including `b`, must vanish.
    let batch = vec![
        NewEvent::new(&created("b", "B")).unwrap(),
        NewEvent::new(&created("a", "again")).unwrap(),
    ];
    assert!(matches!(store.commit_batch(batch), Err(StoreError::Materializer { .. })));
    assert_eq!(store.events().unwrap().len(), 1);
    assert_eq!(todos(&store).len(), 1);
    assert_eq!(store.commit(&created("c", "C")).unwrap().to_string(), "e2");

    #[derive(Serialize, Deserialize)]
    struct Boom {}
    impl Event for Boom {
        const NAME: &'static str = "v1.Boom";
    }
    let schema = Schema::builder()
        .table(Table::new("t").column(Column::integer("x")))
        .event(|_: &Boom, _| Err(MaterializerError::new("refused")))
        .build()
        .unwrap();
    let store = Store::open(StoreOptions::new("boom", Storage::InMemory), schema).unwrap();
    assert!(matches!(store.commit(&Boom {}), Err(StoreError::Materializer { .. })));
    assert!(store.events().unwrap().is_empty());
}

#[test]
fn subscriptions_fire_once_per_batch_and_only_on_change() {
    let store = memory_store();
    let seen: Arc<Mutex<Vec<usize>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let handle = store
        .subscribe(Query::select("todos"), move |rows| sink.lock().unwrap().push(rows.len()))
        .unwrap();
    store
        .commit_batch(vec![
            NewEvent::new(&created("a", "A")).unwrap(),
            NewEvent::new(&created("b", "B")).unwrap(),
        ])
        .unwrap();
    store.set_document("uiState", None, serde_json::json!({"filter": "active"})).unwrap(); // other table
    store.commit(&TodoCompleted { id: "zzz".into() }).unwrap(); // touches no row: no change
    store.commit(&created("c", "C")).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![0, 2, 3]);
    drop(handle);
    store.commit(&created("d", "D")).unwrap();
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn subscription_stream_yields_results() {
    use futures_util::StreamExt;
    let store = memory_store();
    let mut stream = store
        .subscribe_stream::<Todo>(Query::select("todos").where_eq("completed", false))
        .unwrap();
    assert!(stream.next().await.unwrap().unwrap().is_empty());
    store.commit(&created("a", "A")).unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap()[0].id, "a");
}

#[test]
fn persistence_reopen_lock_and_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = dir_store(dir.path()).unwrap();
        store.commit(&created("a", "A")).unwrap();
        store.commit(&TodoDeleted { id: "a".into(), deleted_at: 1_700_000_000_123 }).unwrap();
        assert!(matches!(dir_store(dir.path()), Err(StoreError::Locked { .. })));
        store.rebuild().unwrap();
        assert_eq!(todos(&store)[0].deleted_at, Some(1_700_000_000_123));
        store.shutdown().unwrap();
        assert!(matches!(store.commit(&created("x", "X")), Err(StoreError::Shutdown)));
    }
    let store = dir_store(dir.path()).unwrap();
    assert_eq!(todos(&store).len(), 1);
    assert_eq!(store.sync_status().unwrap().pending_count, 2);
    let client_id = store.client_id().to_owned();
    store.shutdown().unwrap();

    // A schema with another state hash gets a fresh state database rebuilt from the eventlog.
    let schema = Schema::builder()
        .table(
            todo::todos_table()
                .index(livestore_client::schema::Index::new("todos_by_text", ["text"])),
        )
        .event(|event: &TodoCreated, _| {
            Ok(vec![Write::insert("todos").set("id", &event.id).set("text", &event.text)])
        })
        .build()
        .unwrap();
    let store = Store::open(StoreOptions::new("test", Storage::Dir(dir.path().to_owned())), schema)
        .unwrap();
    assert_eq!(store.client_id(), client_id);
    let rows: Vec<Todo> = store.query(&Query::select("todos")).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].deleted_at, None, "unknown v1.TodoDeleted is kept but not materialized");
    assert_eq!(store.events().unwrap().len(), 2);
}

#[test]
fn foreign_and_corrupt_files_are_errors_not_resets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("test")).unwrap();
    std::fs::write(dir.path().join("test/eventlog.db"), b"this is not a database at all").unwrap();
    assert!(matches!(dir_store(dir.path()), Err(StoreError::ForeignDatabase { .. })));
    assert_eq!(
        std::fs::read(dir.path().join("test/eventlog.db")).unwrap(),
        b"this is not a database at all"
    );

    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(other.path().join("test")).unwrap();
    write_foreign_sqlite(&other.path().join("test/eventlog.db"));
    assert!(matches!(dir_store(other.path()), Err(StoreError::ForeignDatabase { .. })));

    let corrupt = tempfile::tempdir().unwrap();
    {
        let store = dir_store(corrupt.path()).unwrap();
        store.commit(&created("a", "A")).unwrap();
        store.shutdown().unwrap();
    }
    let path = corrupt.path().join("test/eventlog.db");
    let mut bytes = std::fs::read(&path).unwrap();
    for byte in bytes.iter_mut().skip(100) {
        *byte = 0xAB;
    }
    std::fs::write(&path, &bytes).unwrap();
    let _ = std::fs::remove_file(corrupt.path().join("test/eventlog.db-wal"));
    let error = dir_store(corrupt.path()).unwrap_err();
    assert!(
        matches!(error, StoreError::CorruptDatabase { .. } | StoreError::ForeignDatabase { .. }),
        "{error}"
    );
}

/// Writes an SQLite file that belongs to some other application (no application_id of ours).
fn write_foreign_sqlite(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');").unwrap();
}

#[test]
fn upstream_echo_confirms_and_foreign_events_rebase() {
    let store = memory_store();
    store.commit(&created("mine", "M")).unwrap();
    store.commit(&TodoCompleted { id: "mine".into() }).unwrap();
    // A foreign client won e1 and e2; our two events roll back and come back as e3r1, e4r1 on top.
    let outcome = store
        .apply_upstream(
            &[
                upstream(
                    1,
                    "v1.TodoCreated",
                    serde_json::json!({"id": "theirs", "text": "T"}),
                    "other",
                ),
                upstream(2, "v1.TodoCompleted", serde_json::json!({"id": "theirs"}), "other"),
            ],
            "backend-1",
        )
        .unwrap();
    assert_eq!((outcome.applied, outcome.rebased), (2, 2));
    let status = store.sync_status().unwrap();
    assert_eq!((status.local_head.as_str(), status.upstream_head.as_str()), ("e4r1", "e2"));
    let numbers: Vec<String> =
        store.events().unwrap().iter().map(|event| event.seq_num.to_string()).collect();
    assert_eq!(numbers, ["e1", "e2", "e3r1", "e4r1"]);
    assert!(todos(&store).iter().all(|todo| todo.completed));
    let push: Vec<u64> =
        store.push_candidates(10).unwrap().iter().map(|event| event.seq_num.global).collect();
    assert_eq!(push, [3, 4]);

    // The server echoes our rebased events: confirmed, nothing pending, nothing re-applied.
    let echo: Vec<UpstreamEvent> = store
        .push_candidates(10)
        .unwrap()
        .into_iter()
        .map(|event| UpstreamEvent { event, metadata_json: Some(r#"{"_tag":"None"}"#.into()) })
        .collect();
    let outcome = store.apply_upstream(&echo, "backend-1").unwrap();
    assert_eq!((outcome.applied, outcome.confirmed), (0, 2));
    assert_eq!(store.sync_status().unwrap().pending_count, 0);
    // Replaying the same page is a no-op.
    assert_eq!(store.apply_upstream(&echo, "backend-1").unwrap(), Default::default());
    assert_eq!(todos(&store).len(), 2);
    // A different backend id is refused.
    assert!(matches!(
        store.apply_upstream(&[], "backend-2"),
        Err(StoreError::BackendIdMismatch { .. })
    ));
}

#[test]
fn rollback_restores_updates_and_deletes_exactly() {
    let store = memory_store();
    store
        .apply_upstream(
            &[
                upstream(1, "v1.TodoCreated", serde_json::json!({"id": "a", "text": "A"}), "o"),
                upstream(2, "v1.TodoCreated", serde_json::json!({"id": "c", "text": "C"}), "o"),
            ],
            "b",
        )
        .unwrap();
    store.commit(&TodoCompleted { id: "a".into() }).unwrap();
    store.commit(&TodoDeleted { id: "a".into(), deleted_at: 5 }).unwrap();
    store.commit(&created("b", "B")).unwrap();
    store.commit(&TodoCompleted { id: "c".into() }).unwrap();
    // Foreign events force the rebase; after rollback and replay the state equals: upstream effects, then our four
    // events. Their clear reads the state our events were rolled back to: with our completion of `c` undone it
    // clears nothing. (Every write of ours is re-applied on top, so only a write of theirs that depends on the
    // rolled-back state can tell a real rollback from none.)
    store
        .apply_upstream(
            &[
                upstream(3, "v1.TodoUncompleted", serde_json::json!({"id": "a"}), "o"),
                upstream(
                    4,
                    "v1.TodoClearedCompleted",
                    serde_json::json!({"deletedAt": "1970-01-01T00:00:00.009Z"}),
                    "o",
                ),
            ],
            "b",
        )
        .unwrap();
    let rows = todos(&store);
    assert_eq!(
        rows,
        vec![
            // Our complete was re-applied after their uncomplete.
            Todo { id: "a".into(), text: "A".into(), completed: true, deleted_at: Some(5) },
            Todo { id: "b".into(), text: "B".into(), completed: false, deleted_at: None },
            // Not cleared: their clear ran before our completion of `c`.
            Todo { id: "c".into(), text: "C".into(), completed: true, deleted_at: None },
        ]
    );
    // And that is what the eventlog alone materializes to.
    store.rebuild().unwrap();
    assert_eq!(todos(&store), rows);
}

#[test]
fn malformed_upstream_pages_are_refused_without_changes() {
    let store = memory_store();
    store.commit(&created("a", "A")).unwrap();
    let gap = vec![upstream(2, "v1.TodoCreated", serde_json::json!({"id": "x", "text": "X"}), "o")];
    assert!(matches!(store.apply_upstream(&gap, "b"), Err(StoreError::Sync(_))));
    let bad_args = vec![upstream(1, "v1.TodoCreated", serde_json::json!({"nope": true}), "o")];
    // A foreign event with args our schema cannot decode is kept in the log but not materialized.
    store.apply_upstream(&bad_args, "b").unwrap();
    assert_eq!(store.events().unwrap().len(), 2);
    assert_eq!(todos(&store).len(), 1);
}

#[test]
fn rebase_really_undoes_pending_writes() {
    let store = memory_store();
    store.commit(&created("a", "mine")).unwrap();
    store.commit(&TodoCompleted { id: "a".into() }).unwrap();
    // Their create of the same id wins upstream. Our insert is undone first, so theirs lands; our re-applied
    // insert then conflicts and is kept in the log without effect, while our completion applies to their row.
    store
        .apply_upstream(
            &[upstream(1, "v1.TodoCreated", serde_json::json!({"id": "a", "text": "theirs"}), "o")],
            "b",
        )
        .unwrap();
    let rows = todos(&store);
    assert_eq!(
        rows,
        vec![Todo { id: "a".into(), text: "theirs".into(), completed: true, deleted_at: None }]
    );
    let names: Vec<String> = store
        .events()
        .unwrap()
        .iter()
        .map(|event| format!("{}:{}", event.seq_num, event.client_id))
        .collect();
    assert_eq!(
        names,
        [
            "e1:o".to_owned(),
            format!("e2r1:{}", store.client_id()),
            format!("e3r1:{}", store.client_id())
        ]
    );
}
