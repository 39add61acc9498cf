//! The undo log against its oracle: after any rebase, the state must equal a rebuild from the eventlog.
//!
//! Local events mix every kind of row change the undo log records differently (inserts through the update
//! hook; updates, deletes and REPLACE deletes through triggers; several changes of one row inside one event),
//! then part of them is confirmed by an echo and a foreign event forces the rest to roll back and re-apply.

use livestore_client::schema::{Column, Event, Query, Schema, Table, Write};
use livestore_client::store::UpstreamEvent;
use livestore_client::{LocalEvent, NewEvent, Storage, Store, StoreOptions};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Put {
    k: String,
    v: i64,
}
impl Event for Put {
    const NAME: &'static str = "v1.Put";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Replace {
    k: String,
    v: i64,
}
impl Event for Replace {
    const NAME: &'static str = "v1.Replace";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Bump {
    k: String,
}
impl Event for Bump {
    const NAME: &'static str = "v1.Bump";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Del {
    k: String,
}
impl Event for Del {
    const NAME: &'static str = "v1.Del";
}

/// Inserts a row and deletes it again in the same event.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Blip {
    k: String,
}
impl Event for Blip {
    const NAME: &'static str = "v1.Blip";
}

/// Deletes a row and inserts it again with another value in the same event.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Churn {
    k: String,
    v: i64,
}
impl Event for Churn {
    const NAME: &'static str = "v1.Churn";
}

fn schema() -> Schema {
    Schema::builder()
        .table(
            Table::new("kv").column(Column::text("k").primary_key()).column(Column::integer("v")),
        )
        .table(Table::new("log").column(Column::integer("n")).column(Column::text("what")))
        .event(|event: &Put, _| {
            Ok(vec![
                Write::upsert("kv", ["k"]).set("k", &event.k).set("v", event.v),
                Write::insert("log").set("n", event.v).set("what", "put"),
            ])
        })
        .event(|event: &Replace, _| {
            Ok(vec![Write::insert("kv").set("k", &event.k).set("v", event.v).on_conflict_replace()])
        })
        .event(|event: &Bump, _| {
            Ok(vec![Write::raw("UPDATE kv SET v = v + 1 WHERE k = ?", [event.k.as_str().into()])])
        })
        .event(|event: &Del, _| {
            Ok(vec![
                Write::delete("kv").where_eq("k", &event.k),
                Write::insert("log").set("n", 0).set("what", "del"),
            ])
        })
        .event(|event: &Blip, _| {
            Ok(vec![
                Write::insert("log").set("n", -1).set("what", event.k.as_str()),
                Write::delete("log").where_eq("what", event.k.as_str()),
            ])
        })
        .event(|event: &Churn, _| {
            Ok(vec![
                Write::delete("kv").where_eq("k", &event.k),
                Write::insert("kv").set("k", &event.k).set("v", event.v),
            ])
        })
        .build()
        .expect("valid test schema")
}

fn op() -> impl Strategy<Value = NewEvent> {
    let key = prop::sample::select(vec!["a", "b", "c"]);
    (0..6u8, key, -5..5i64).prop_map(|(kind, k, v)| {
        let k = k.to_owned();
        match kind {
            0 => NewEvent::new(&Put { k, v }),
            1 => NewEvent::new(&Replace { k, v }),
            2 => NewEvent::new(&Bump { k }),
            3 => NewEvent::new(&Del { k }),
            4 => NewEvent::new(&Blip { k }),
            _ => NewEvent::new(&Churn { k, v }),
        }
        .expect("test events encode")
    })
}

fn snapshot(store: &Store) -> Vec<livestore_client::Row> {
    let mut rows = store
        .query_rows(&Query::sql("SELECT rowid, * FROM kv ORDER BY k", std::iter::empty()))
        .unwrap();
    rows.extend(
        store
            .query_rows(&Query::sql("SELECT n, what FROM log ORDER BY rowid", std::iter::empty()))
            .unwrap(),
    );
    rows
}

fn foreign(seq: u64, k: &str, v: i64) -> UpstreamEvent {
    UpstreamEvent {
        event: LocalEvent::from_global(
            seq,
            seq - 1,
            "v1.Put",
            format!(r#"{{"k":"{k}","v":{v}}}"#),
            "other-client",
            "static",
        ),
        metadata_json: None,
    }
}

/// Commits `ops` (in batches of `batch`), confirms the first `confirmed` by echo, then forces a rebase with a
/// foreign event and checks the state against a rebuild.
#[allow(clippy::needless_pass_by_value)] // proptest hands over owned cases
fn check(store: &Store, ops: Vec<NewEvent>, batch: usize, confirmed: usize) {
    for chunk in ops.chunks(batch.max(1)) {
        store.commit_batch(chunk.to_vec()).unwrap();
    }
    let echo: Vec<UpstreamEvent> = store
        .push_candidates(confirmed)
        .unwrap()
        .into_iter()
        .map(|event| UpstreamEvent { event, metadata_json: None })
        .collect();
    let next = echo.last().map_or(1, |item| item.event.seq_num.global + 1);
    store.apply_upstream(&echo, "backend").unwrap();
    let outcome = store.apply_upstream(&[foreign(next, "b", 42)], "backend").unwrap();
    assert_eq!(outcome.rebased, ops.len() - echo.len());
    let after_rebase = snapshot(store);
    store.rebuild().unwrap();
    assert_eq!(after_rebase, snapshot(store), "rollback + re-apply must equal a rebuild");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn rebase_equals_rebuild(ops in prop::collection::vec(op(), 1..25), batch in 1..6usize, confirmed in 0..10usize) {
        let store = Store::open(StoreOptions::new("undo", Storage::InMemory), schema()).unwrap();
        check(&store, ops, batch, confirmed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Large commits go through the multi-row eventlog appends and undo writes (32 and 64 rows per statement),
    /// with remainders: the laws hold there too.
    #[test]
    fn rebase_equals_rebuild_with_large_commits(ops in prop::collection::vec(op(), 30..200), batch in 20..160usize, confirmed in 0..120usize) {
        let store = Store::open(StoreOptions::new("undo-large", Storage::InMemory), schema()).unwrap();
        check(&store, ops, batch, confirmed);
    }
}

#[test]
fn undo_survives_reopen_and_a_second_rebase() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        Store::open(StoreOptions::new("undo", Storage::Dir(dir.path().to_owned())), schema())
            .unwrap()
    };
    let store = open();
    let ops = vec![
        NewEvent::new(&Put { k: "a".into(), v: 1 }).unwrap(),
        NewEvent::new(&Churn { k: "a".into(), v: 2 }).unwrap(),
        NewEvent::new(&Replace { k: "b".into(), v: 3 }).unwrap(),
        NewEvent::new(&Blip { k: "x".into() }).unwrap(),
        NewEvent::new(&Del { k: "a".into() }).unwrap(),
    ];
    store.commit_batch(ops).unwrap();
    store.shutdown().unwrap();
    // The undo records of the pending events were persisted with the state.
    let store = open();
    store.apply_upstream(&[foreign(1, "a", 9)], "backend").unwrap();
    let first = snapshot(&store);
    store.rebuild().unwrap();
    assert_eq!(first, snapshot(&store));
    store.commit(&Bump { k: "b".into() }).unwrap();
    store.shutdown().unwrap();
    // A rebuild re-records undo for what is still pending, so a rebase after it works too.
    let store = open();
    store.apply_upstream(&[foreign(2, "b", 7)], "backend").unwrap();
    let second = snapshot(&store);
    store.rebuild().unwrap();
    assert_eq!(second, snapshot(&store));
    assert_eq!(store.sync_status().unwrap().pending_count, 6);
}

#[test]
fn a_failing_event_in_a_pulled_batch_leaves_the_others_applied() {
    let store = Store::open(StoreOptions::new("batch", Storage::InMemory), schema()).unwrap();
    let mut page: Vec<UpstreamEvent> =
        (1..=5).map(|seq| foreign(seq, &format!("k{seq}"), seq as i64)).collect();
    // Event 3 cannot be decoded by the schema: it stays in the log unmaterialized, the others apply.
    page[2].event = LocalEvent::from_global(3, 2, "v1.Put", r#"{"k":5}"#, "other-client", "static");
    store.apply_upstream(&page, "backend").unwrap();
    assert_eq!(store.events().unwrap().len(), 5);
    let keys: Vec<String> = store
        .query_rows(&Query::select("kv").order_by("k"))
        .unwrap()
        .into_iter()
        .map(|row| row["k"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["k1", "k2", "k4", "k5"]);
    store.rebuild().unwrap();
    assert_eq!(store.query_rows(&Query::select("kv")).unwrap().len(), 4);
}
