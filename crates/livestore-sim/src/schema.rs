//! The simulated application: a TodoMVC-like schema whose every event carries a unique operation tag.
//!
//! The tag (`op`, e.g. `o12.3`: the third event of plan operation 12) is how the invariants recognise an event
//! across renumbering by rebases: exactly once in the server log, acknowledged means durable, committed means
//! eventually on the server. The materializers ignore it. Events and the `todos` table are built with the real
//! client's schema builder; the client crate's own `todo` module is the JS-compatible TodoMVC schema, which has
//! no tag and so cannot tell two identical edits apart.

use livestore_client::schema::{Column, Event, Query, Schema, Table, Write};
use livestore_client::{NewEvent, StoreError};
use serde::{Deserialize, Serialize};

/// The store id every client shares.
pub const STORE_ID: &str = "sim";

/// `sim.TodoCreated`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TodoCreated {
    /// The todo id.
    pub id: String,
    /// Its text.
    pub text: String,
    /// The operation tag.
    pub op: String,
}

/// `sim.TodoCompleted`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TodoCompleted {
    /// The todo id.
    pub id: String,
    /// The operation tag.
    pub op: String,
}

/// `sim.TodoRenamed`: concurrent renames of one todo resolve by the server's order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TodoRenamed {
    /// The todo id.
    pub id: String,
    /// The new text.
    pub text: String,
    /// The operation tag.
    pub op: String,
}

/// `sim.TodoDeleted`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TodoDeleted {
    /// The todo id.
    pub id: String,
    /// The operation tag.
    pub op: String,
}

impl Event for TodoCreated {
    const NAME: &'static str = "sim.TodoCreated";
}
impl Event for TodoCompleted {
    const NAME: &'static str = "sim.TodoCompleted";
}
impl Event for TodoRenamed {
    const NAME: &'static str = "sim.TodoRenamed";
}
impl Event for TodoDeleted {
    const NAME: &'static str = "sim.TodoDeleted";
}

/// Just the tag of any event's args.
#[derive(Debug, Deserialize)]
struct Tagged {
    op: String,
}

/// The operation tag in an event's args JSON, if it has one.
pub fn op_tag(args_json: &str) -> Option<String> {
    serde_json::from_str::<Tagged>(args_json).ok().map(|tagged| tagged.op)
}

/// The schema: a `todos` table and the four events, plus the filesync tables and events.
pub fn schema() -> Schema {
    // The real filesync data model (`files`, `localFileState`, their events) rides along: the file workload
    // (`crate::files`) writes it exactly as `livestore-files` does.
    livestore_files::schema::add_to(Schema::builder())
        .table(
            Table::new("todos")
                .column(Column::text("id").primary_key())
                .column(Column::text("text").default_value(""))
                .column(Column::boolean("completed").default_value(false))
                .column(Column::boolean("deleted").default_value(false))
                .column(Column::integer("edits").default_value(0)),
        )
        .event(|event: &TodoCreated, _| {
            // Ids are unique per plan operation, so a duplicate key means an event was materialized twice: the
            // insert fails, and the failure surfaces as a violation instead of being papered over.
            Ok(vec![Write::insert("todos").set("id", &event.id).set("text", &event.text)])
        })
        .event(|event: &TodoCompleted, _| {
            Ok(vec![Write::update("todos").set("completed", true).where_eq("id", &event.id)])
        })
        .event(|event: &TodoRenamed, _| {
            Ok(vec![Write::raw(
                "UPDATE todos SET text = ?, edits = edits + 1 WHERE id = ?",
                [event.text.as_str().into(), event.id.as_str().into()],
            )])
        })
        .event(|event: &TodoDeleted, _| {
            Ok(vec![Write::update("todos").set("deleted", true).where_eq("id", &event.id)])
        })
        .build()
        .expect("the simulation schema is statically valid")
}

/// All `todos` rows in id order, then all `files` rows in id order, as JSON text (what the state comparisons
/// compare: equal to a rebuild from the eventlog, and equal on every client).
pub fn todos_rows(store: &livestore_client::Store) -> Result<String, StoreError> {
    let todos = store.query_rows(&Query::select("todos").order_by("id"))?;
    let files =
        store.query_rows(&Query::select(livestore_files::schema::FILES_TABLE).order_by("id"))?;
    Ok(serde_json::to_string(&(todos, files)).expect("rows are plain JSON"))
}

/// Encodes a typed event.
pub fn new_event<E: Event>(event: &E) -> NewEvent {
    NewEvent::new(event).expect("simulation events always encode")
}
