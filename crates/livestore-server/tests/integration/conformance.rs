//! What every `EventStorage` must do, written once and run against SQLite and Postgres.

use std::sync::Arc;

use futures_util::future::join_all;
use livestore_proto::admission::Admission;
use livestore_proto::rpc::PushArgs;
use livestore_server::storage::{AppendOutcome, EventStorage, ReadLimit};
use serde_json::{Value, json};

use crate::backend::Backend;

/// Instantiates each case for both backends: `sqlite::case` and `postgres::case`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&crate::backend::Backend::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(backend) = crate::backend::Backend::postgres().await else { return };
                    super::$case(&backend).await;
                    backend.cleanup().await;
                }
            )*
        }
    };
}

conformance!(
    opening_creates_one_log_per_store,
    pushes_are_admitted_on_the_head_only,
    pipelined_pushes_keep_submission_order,
    exactly_one_of_concurrent_pushes_with_one_parent_wins,
    reads_honour_range_and_limit,
    events_are_echoed_byte_for_byte,
    the_log_survives_a_reopen,
    a_push_creates_its_store,
    concurrent_pushes_to_many_stores_all_land,
);

pub fn event(seq: u64, args: Value) -> Value {
    json!({"name": "v1.TodoCreated", "args": args, "seqNum": seq, "parentSeqNum": seq - 1,
           "clientId": "conformance", "sessionId": "static"})
}

/// A push of `count` chained events after `parent`.
pub fn push(store: &str, parent: u64, count: u64, backend_id: Option<&str>) -> PushArgs {
    let batch: Vec<Value> = (parent + 1..=parent + count)
        .map(|seq| event(seq, json!({"id": format!("t{seq}")})))
        .collect();
    push_batch(store, batch, backend_id)
}

pub fn push_batch(store: &str, batch: Vec<Value>, backend_id: Option<&str>) -> PushArgs {
    let backend = match backend_id {
        Some(value) => json!({"_tag": "Some", "value": value}),
        None => json!({"_tag": "None"}),
    };
    serde_json::from_value(json!({"storeId": store, "batch": batch, "backendId": backend})).unwrap()
}

pub async fn all_seq_nums(storage: &Arc<dyn EventStorage>, store: &str) -> Vec<u64> {
    let mut seq_nums = Vec::new();
    loop {
        let after = seq_nums.last().copied().unwrap_or(0);
        let events = storage
            .read_events(store, after, u64::MAX >> 12, ReadLimit::events(500))
            .await
            .unwrap();
        if events.is_empty() {
            return seq_nums;
        }
        seq_nums.extend(events.iter().map(|event| event.seq_num));
    }
}

async fn opening_creates_one_log_per_store(backend: &Backend) {
    let storage = backend.open().await;
    let first = storage.open_store("alpha").await.unwrap();
    let again = storage.open_store("alpha").await.unwrap();
    let other = storage.open_store("beta").await.unwrap();
    assert_eq!(first.head, 0);
    assert_eq!(first.backend_id, again.backend_id);
    assert_ne!(first.backend_id, other.backend_id);
    assert_eq!(first.backend_id.len(), 21);
    storage.shutdown().await;
}

async fn pushes_are_admitted_on_the_head_only(backend: &Backend) {
    let storage = backend.open().await;
    let log = storage.open_store("admit").await.unwrap();
    let backend_id = log.backend_id.to_string();
    assert_eq!(
        storage.append("admit", push("admit", 0, 3, None)).await.unwrap(),
        AppendOutcome::Appended { head: 3 }
    );
    assert_eq!(
        storage.append("admit", push("admit", 0, 1, None)).await.unwrap(),
        AppendOutcome::Unchanged(Admission::ServerAhead { head: 3, provided_parent: 0 })
    );
    assert_eq!(
        storage.append("admit", push("admit", 5, 1, None)).await.unwrap(),
        AppendOutcome::Unchanged(Admission::ServerAhead { head: 3, provided_parent: 5 })
    );
    assert_eq!(
        storage.append("admit", push_batch("admit", Vec::new(), None)).await.unwrap(),
        AppendOutcome::Unchanged(Admission::Empty)
    );
    assert_eq!(
        storage.append("admit", push("admit", 3, 1, Some("another-backend"))).await.unwrap(),
        AppendOutcome::Unchanged(Admission::BackendIdMismatch {
            expected: backend_id.clone(),
            received: "another-backend".into()
        })
    );
    assert_eq!(
        storage.append("admit", push("admit", 3, 2, Some(&backend_id))).await.unwrap(),
        AppendOutcome::Appended { head: 5 }
    );
    assert_eq!(all_seq_nums(&storage, "admit").await, [1, 2, 3, 4, 5]);
    storage.shutdown().await;
}

async fn pipelined_pushes_keep_submission_order(backend: &Backend) {
    let storage = backend.open().await;
    // Submitted back to back without awaiting: admission order is call order, so every push continues the last.
    let pending: Vec<_> = (0..50)
        .map(|index| storage.append("pipelined", push("pipelined", index * 2, 2, None)))
        .collect();
    let outcomes = join_all(pending).await;
    for (index, outcome) in outcomes.into_iter().enumerate() {
        assert_eq!(outcome.unwrap(), AppendOutcome::Appended { head: (index as u64 + 1) * 2 });
    }
    assert_eq!(all_seq_nums(&storage, "pipelined").await, (1..=100).collect::<Vec<u64>>());
    storage.shutdown().await;
}

async fn exactly_one_of_concurrent_pushes_with_one_parent_wins(backend: &Backend) {
    let storage = backend.open().await;
    storage.append("race", push("race", 0, 4, None)).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let storage = storage.clone();
            tokio::spawn(
                async move { storage.append("race", push("race", 4, 3, None)).await.unwrap() },
            )
        })
        .collect();
    let outcomes: Vec<AppendOutcome> =
        join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    let wins = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, AppendOutcome::Appended { head: 7 }))
        .count();
    let refusals = outcomes
        .iter()
        .filter(|outcome| {
            **outcome
                == AppendOutcome::Unchanged(Admission::ServerAhead { head: 7, provided_parent: 4 })
        })
        .count();
    assert_eq!((wins, refusals), (1, 7), "{outcomes:?}");
    assert_eq!(all_seq_nums(&storage, "race").await, (1..=7).collect::<Vec<u64>>());
    storage.shutdown().await;
}

async fn reads_honour_range_and_limit(backend: &Backend) {
    let storage = backend.open().await;
    for batch in 0..5 {
        storage.append("ranges", push("ranges", batch * 50, 50, None)).await.unwrap();
    }
    let seqs = |events: Vec<livestore_server::storage::StoredEvent>| {
        events.iter().map(|event| event.seq_num).collect::<Vec<u64>>()
    };
    assert_eq!(
        seqs(storage.read_events("ranges", 0, 250, ReadLimit::events(100)).await.unwrap()),
        (1..=100).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(storage.read_events("ranges", 100, 150, ReadLimit::events(1000)).await.unwrap()),
        (101..=150).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(storage.read_events("ranges", 240, 1000, ReadLimit::events(1000)).await.unwrap()),
        (241..=250).collect::<Vec<_>>()
    );
    assert!(
        storage.read_events("ranges", 250, 1000, ReadLimit::events(10)).await.unwrap().is_empty()
    );
    assert!(storage.read_events("ranges", 10, 10, ReadLimit::events(10)).await.unwrap().is_empty());
    assert!(
        storage
            .read_events("no-such-store", 0, 10, ReadLimit::events(10))
            .await
            .unwrap()
            .is_empty()
    );
    let created =
        &storage.read_events("ranges", 0, 1, ReadLimit::events(1)).await.unwrap()[0].created_at;
    assert!(created.ends_with('Z') && created.contains('T'), "{created}");
    // The byte bound: reading stops after the event that reaches it (so a read always returns one event).
    // Events 11 to 14 have ids of the same length, so the same size.
    let one_size = storage.read_events("ranges", 10, 11, ReadLimit::events(1)).await.unwrap()[0]
        .encoded_json
        .len();
    let by_bytes = |bytes| ReadLimit { events: 1000, bytes };
    assert_eq!(seqs(storage.read_events("ranges", 0, 250, by_bytes(1)).await.unwrap()), [1]);
    assert_eq!(
        seqs(storage.read_events("ranges", 10, 250, by_bytes(one_size * 3)).await.unwrap()),
        [11, 12, 13]
    );
    assert_eq!(
        seqs(storage.read_events("ranges", 10, 250, by_bytes(one_size * 3 + 1)).await.unwrap()),
        [11, 12, 13, 14]
    );
    storage.shutdown().await;
}

async fn events_are_echoed_byte_for_byte(backend: &Backend) {
    let storage = backend.open().await;
    // Raw JSON as a client might send it: key order, number spelling and escapes must survive storage.
    let raw = r#"{"storeId":"echo","backendId":{"_tag":"None"},"batch":[{"name":"v1.Odd","args":{"z":1.0,"a":[1e3,-0,"\u00e9\ud83d\ude00\n\"q\""],"nested":{"b":null,"a":true}},"seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s"},{"name":"v1.NoArgs","seqNum":2,"parentSeqNum":1,"clientId":"c","sessionId":"s"}]}"#;
    let args: PushArgs = serde_json::from_str(raw).unwrap();
    let expected: Vec<String> = args.batch.iter().map(|event| event.to_json()).collect();
    assert!(expected[0].contains(r#"{"z":1.0,"a":[1e3,-0,"#), "{}", expected[0]);
    storage.append("echo", args).await.unwrap();
    let stored = storage.read_events("echo", 0, 2, ReadLimit::events(10)).await.unwrap();
    let stored: Vec<String> = stored.into_iter().map(|event| event.encoded_json).collect();
    assert_eq!(stored, expected);
    storage.shutdown().await;
}

async fn the_log_survives_a_reopen(backend: &Backend) {
    let storage = backend.open().await;
    let before = storage.open_store("durable").await.unwrap();
    storage.append("durable", push("durable", 0, 10, None)).await.unwrap();
    storage.shutdown().await;
    drop(storage);
    let storage = backend.open().await;
    let after = storage.open_store("durable").await.unwrap();
    assert_eq!((after.backend_id.clone(), after.head), (before.backend_id, 10));
    assert_eq!(all_seq_nums(&storage, "durable").await, (1..=10).collect::<Vec<u64>>());
    assert_eq!(
        storage.append("durable", push("durable", 10, 1, Some(&after.backend_id))).await.unwrap(),
        AppendOutcome::Appended { head: 11 }
    );
    storage.shutdown().await;
}

async fn a_push_creates_its_store(backend: &Backend) {
    let storage = backend.open().await;
    assert_eq!(
        storage.append("pushed-first", push("pushed-first", 0, 2, None)).await.unwrap(),
        AppendOutcome::Appended { head: 2 }
    );
    let log = storage.open_store("pushed-first").await.unwrap();
    assert_eq!(log.head, 2);
    storage.shutdown().await;
}

async fn concurrent_pushes_to_many_stores_all_land(backend: &Backend) {
    let storage = backend.open().await;
    let tasks: Vec<_> = (0..20)
        .map(|store| {
            let storage = storage.clone();
            tokio::spawn(async move {
                let store_id = format!("many-{store}");
                for round in 0..10 {
                    let outcome = storage
                        .append(&store_id, push(&store_id, round * 3, 3, None))
                        .await
                        .unwrap();
                    assert_eq!(outcome, AppendOutcome::Appended { head: (round + 1) * 3 });
                }
            })
        })
        .collect();
    for task in join_all(tasks).await {
        task.unwrap();
    }
    for store in 0..20 {
        let store_id = format!("many-{store}");
        assert_eq!(all_seq_nums(&storage, &store_id).await, (1..=30).collect::<Vec<u64>>());
        assert_eq!(storage.open_store(&store_id).await.unwrap().head, 30);
    }
    storage.shutdown().await;
}
