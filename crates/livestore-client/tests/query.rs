//! The query builder against real SQLite: rows in, query out, for every operator and shape, materializer writes
//! filtered the same way, joins and raw SQL re-running subscriptions by exactly the tables they read, and
//! misspelt or hostile column names failing instead of silently matching nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use livestore_client::schema::{Column, Event, Op, Query, Schema, Table, Write};
use livestore_client::{SqlValue, Storage, Store, StoreError, StoreOptions};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Todo {
    id: String,
    text: String,
    tag: Option<String>,
}
impl Event for Todo {
    const NAME: &'static str = "v1.Todo";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Label {
    #[serde(rename = "todoId")]
    todo_id: String,
    name: String,
}
impl Event for Label {
    const NAME: &'static str = "v1.Label";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Unrelated {
    x: i64,
}
impl Event for Unrelated {
    const NAME: &'static str = "v1.Unrelated";
}

/// Moves every todo whose tag is one of `from` (a null in `from` means untagged) to `to`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Retag {
    from: Vec<Option<String>>,
    to: String,
}
impl Event for Retag {
    const NAME: &'static str = "v1.Retag";
}

/// Deletes every todo whose text matches none of the patterns' `LIKE`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeepLike {
    pattern: String,
}
impl Event for KeepLike {
    const NAME: &'static str = "v1.KeepLike";
}

fn schema() -> Schema {
    Schema::builder()
        .table(
            Table::new("todos")
                .column(Column::text("id").primary_key())
                .column(Column::text("text"))
                .column(Column::text("tag").nullable()),
        )
        .table(Table::new("labels").column(Column::text("todoId")).column(Column::text("name")))
        .table(Table::new("unrelated").column(Column::integer("x")))
        .event(|event: &Todo, _| {
            Ok(vec![
                Write::insert("todos")
                    .set("id", &event.id)
                    .set("text", &event.text)
                    .set("tag", event.tag.clone()),
            ])
        })
        .event(|event: &Label, _| {
            Ok(vec![Write::insert("labels").set("todoId", &event.todo_id).set("name", &event.name)])
        })
        .event(|event: &Unrelated, _| Ok(vec![Write::insert("unrelated").set("x", event.x)]))
        .event(|event: &Retag, _| {
            let from = event.from.iter().cloned().map(SqlValue::from);
            Ok(vec![Write::update("todos").set("tag", &event.to).where_op("tag", Op::is_in(from))])
        })
        .event(|event: &KeepLike, _| {
            Ok(vec![
                Write::delete("todos").where_op("text", Op::NotLike(event.pattern.as_str().into())),
            ])
        })
        .build()
        .expect("valid test schema")
}

fn todo(id: &str, text: &str, tag: Option<&str>) -> Todo {
    Todo { id: id.into(), text: text.into(), tag: tag.map(Into::into) }
}

/// a (work), b (home), c (untagged), d (work).
fn seeded() -> Store {
    let store = Store::open(StoreOptions::new("query", Storage::InMemory), schema()).expect("open");
    for todo in [
        todo("a", "buy milk", Some("work")),
        todo("b", "Buy bread", Some("home")),
        todo("c", "call mum", None),
        todo("d", "write report", Some("work")),
    ] {
        store.commit(&todo).expect("commit todo");
    }
    store
}

fn ids(store: &Store, query: Query) -> Vec<String> {
    store
        .query::<Todo>(&query.order_by("id"))
        .expect("query")
        .into_iter()
        .map(|todo| todo.id)
        .collect()
}

#[test]
fn every_operator_selects_the_right_rows() {
    let store = seeded();
    let select = |column: &str, op: Op| ids(&store, Query::select("todos").where_op(column, op));
    assert_eq!(select("tag", Op::Eq("work".into())), ["a", "d"]);
    assert_eq!(select("tag", Op::Ne("work".into())), ["b"], "SQL: a NULL tag is not != 'work'");
    assert_eq!(select("id", Op::Lt("b".into())), ["a"]);
    assert_eq!(select("id", Op::Le("b".into())), ["a", "b"]);
    assert_eq!(select("id", Op::Gt("c".into())), ["d"]);
    assert_eq!(select("id", Op::Ge("c".into())), ["c", "d"]);
    assert_eq!(select("text", Op::like("buy%")), ["a", "b"], "LIKE is ASCII case-insensitive");
    assert_eq!(select("text", Op::NotLike("%r%".into())), ["a", "c"]);
    assert_eq!(select("text", Op::like("%'; DROP TABLE todos; --")), Vec::<String>::new());
    assert_eq!(select("id", Op::is_in(["d", "b", "zz"])), ["b", "d"]);
    assert_eq!(select("id", Op::not_in(["d", "b"])), ["a", "c"]);
    assert_eq!(select("id", Op::In(vec![])), Vec::<String>::new(), "empty IN matches nothing");
    assert_eq!(
        select("tag", Op::NotIn(vec![])),
        ["a", "b", "c", "d"],
        "empty NOT IN matches all, nulls too"
    );
    assert_eq!(select("tag", Op::IsNull), ["c"]);
    assert_eq!(select("tag", Op::IsNotNull), ["a", "b", "d"]);
    assert_eq!(select("tag", Op::Eq(SqlValue::Null)), ["c"]);
    assert_eq!(select("tag", Op::In(vec!["home".into(), SqlValue::Null])), ["b", "c"]);
    assert_eq!(select("tag", Op::NotIn(vec!["home".into(), SqlValue::Null])), ["a", "d"]);
    assert_eq!(select("id", Op::parse("<>", "a").expect("known operator")), ["b", "c", "d"]);
    assert!(matches!(Op::parse("=<", "a"), Err(StoreError::UnknownOperator(_))));
}

#[test]
fn first_count_exists_and_paging() {
    let store = seeded();
    let work = || Query::select("todos").where_eq("tag", "work");
    let first: Option<Todo> = store.query_first(&work().order_by_desc("id")).expect("first");
    assert_eq!(first, Some(todo("d", "write report", Some("work"))));
    let none: Option<Todo> = store.query_first(&work().where_eq("id", "b")).expect("first");
    assert_eq!(none, None);
    assert_eq!(store.query_count(&work()).expect("count"), 2);
    assert_eq!(store.query_count(&Query::select("todos").limit(3).offset(2)).expect("count"), 2);
    assert_eq!(store.query_count(&Query::select("labels")).expect("count"), 0);
    assert!(store.query_exists(&work()).expect("exists"));
    assert!(!store.query_exists(&work().where_op("id", Op::In(vec![]))).expect("exists"));
    assert_eq!(ids(&store, Query::select("todos").limit(2).offset(1)), ["b", "c"]);
    assert_eq!(ids(&store, Query::select("todos").offset(3)), ["d"]);
    let raw = Query::sql("SELECT * FROM todos ORDER BY id DESC", []);
    assert_eq!(
        store.query_first::<Todo>(&raw).expect("raw first").map(|todo| todo.id),
        Some("d".into())
    );
    assert_eq!(store.query_count(&raw.where_op("tag", Op::IsNotNull)).expect("raw count"), 3);
}

#[test]
fn materializer_writes_use_the_same_filters() {
    let store = seeded();
    store
        .commit(&Retag { from: vec![Some("home".into()), None], to: "misc".into() })
        .expect("retag");
    assert_eq!(ids(&store, Query::select("todos").where_eq("tag", "misc")), ["b", "c"]);
    store.commit(&Retag { from: vec![], to: "nothing".into() }).expect("empty retag");
    assert_eq!(
        store.query_count(&Query::select("todos").where_eq("tag", "nothing")).expect("count"),
        0
    );
    store.commit(&KeepLike { pattern: "%r%".into() }).expect("keep like");
    assert_eq!(ids(&store, Query::select("todos")), ["b", "d"]);
}

#[test]
fn joins_read_both_tables() {
    let store = seeded();
    for (todo_id, name) in [("a", "urgent"), ("a", "short"), ("d", "urgent")] {
        store.commit(&Label { todo_id: todo_id.into(), name: name.into() }).expect("label");
    }
    let urgent = Query::select("todos")
        .join("labels", ("todos", "id"), ("labels", "todoId"))
        .where_eq(("labels", "name"), "urgent");
    assert_eq!(
        ids(&store, urgent.clone().columns([("todos", "id"), ("todos", "text"), ("todos", "tag")])),
        ["a", "d"]
    );
    assert_eq!(store.query_count(&urgent).expect("count"), 2);
    let unlabeled = Query::select("todos")
        .columns([("todos", "id"), ("todos", "text"), ("todos", "tag")])
        .left_join("labels", ("todos", "id"), ("labels", "todoId"))
        .where_op(("labels", "name"), Op::IsNull);
    assert_eq!(ids(&store, unlabeled), ["b", "c"]);
}

/// Counts the subscription's callbacks after the initial one.
fn watch(
    store: &Store,
    query: Query,
) -> (Arc<AtomicUsize>, livestore_client::subscription::SubscriptionHandle) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let handle = store
        .subscribe(query, move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .expect("subscribe");
    calls.store(0, Ordering::SeqCst);
    (calls, handle)
}

#[test]
fn join_and_raw_subscriptions_fire_on_joined_tables_only() {
    let store = seeded();
    let join = Query::select("todos")
        .columns([("todos", "id"), ("labels", "name")])
        .join("labels", ("todos", "id"), ("labels", "todoId"))
        .count();
    let raw = Query::sql(
        "SELECT t.id, l.name FROM todos t JOIN labels l ON l.todoId = t.id WHERE l.name LIKE ?",
        ["u%".into()],
    );
    let (join_calls, _join_handle) = watch(&store, join);
    let (raw_calls, _raw_handle) = watch(&store, raw);
    store.commit(&Unrelated { x: 1 }).expect("unrelated");
    assert_eq!(join_calls.load(Ordering::SeqCst), 0, "an unrelated table does not re-run the join");
    assert_eq!(
        raw_calls.load(Ordering::SeqCst),
        0,
        "an unrelated table does not re-run the raw query"
    );
    store.commit(&Label { todo_id: "a".into(), name: "urgent".into() }).expect("label");
    assert_eq!(join_calls.load(Ordering::SeqCst), 1, "the joined table re-runs the join");
    assert_eq!(raw_calls.load(Ordering::SeqCst), 1, "the joined table re-runs the raw query");
}

#[test]
fn misspelt_and_hostile_columns_are_errors_not_constants() {
    let store = seeded();
    // Without the store turning off SQLite's double-quoted-string fallback, `"tga" = 'work'` would compare two
    // constants and match nothing, silently.
    let misspelt = store.query_rows(&Query::select("todos").where_eq("tga", "work"));
    assert!(matches!(misspelt, Err(StoreError::Sqlite(_))), "{misspelt:?}");
    let hostile = r#"id" = 'a' OR 1 = 1 OR "id"#;
    let result = store.query_rows(&Query::select("todos").where_eq(hostile, "zz"));
    assert!(matches!(result, Err(StoreError::Sqlite(_))), "{result:?}");
    let hostile_table = store.query_rows(&Query::select(r#"todos"; DROP TABLE todos; --"#));
    assert!(hostile_table.is_err());
    assert_eq!(store.query_count(&Query::select("todos")).expect("table intact"), 4);
}
