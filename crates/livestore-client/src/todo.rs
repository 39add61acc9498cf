//! The TodoMVC schema of LiveStore's example, shared with the JavaScript clients (`tests/js/todo-schema.mjs`).
//!
//! Event names, arg shapes, table and column names and materializers must stay exactly as in the JS example so a
//! Rust and a JS client can share a store: `deletedAt` travels as an ISO-8601 string and is stored as epoch ms.

use serde::{Deserialize, Serialize};

use crate::schema::datetime::iso_millis;
use crate::schema::{ClientDocument, Column, Event, Schema, Table, Write};

/// `v1.TodoCreated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TodoCreated {
    /// The todo id.
    pub id: String,
    /// Its text.
    pub text: String,
}

/// `v1.TodoCompleted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TodoCompleted {
    /// The todo id.
    pub id: String,
}

/// `v1.TodoUncompleted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TodoUncompleted {
    /// The todo id.
    pub id: String,
}

/// `v1.TodoDeleted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TodoDeleted {
    /// The todo id.
    pub id: String,
    /// When it was deleted (epoch ms; ISO-8601 on the wire).
    #[serde(rename = "deletedAt", with = "iso_millis")]
    pub deleted_at: i64,
}

/// `v1.TodoClearedCompleted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TodoClearedCompleted {
    /// When the completed todos were cleared (epoch ms; ISO-8601 on the wire).
    #[serde(rename = "deletedAt", with = "iso_millis")]
    pub deleted_at: i64,
}

impl Event for TodoCreated {
    const NAME: &'static str = "v1.TodoCreated";
}
impl Event for TodoCompleted {
    const NAME: &'static str = "v1.TodoCompleted";
}
impl Event for TodoUncompleted {
    const NAME: &'static str = "v1.TodoUncompleted";
}
impl Event for TodoDeleted {
    const NAME: &'static str = "v1.TodoDeleted";
}
impl Event for TodoClearedCompleted {
    const NAME: &'static str = "v1.TodoClearedCompleted";
}

/// A row of `todos`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Todo {
    /// Primary key.
    pub id: String,
    /// The text.
    pub text: String,
    /// Whether it is done.
    pub completed: bool,
    /// Deletion time in epoch ms, if deleted.
    #[serde(rename = "deletedAt")]
    pub deleted_at: Option<i64>,
}

/// The `todos` table.
pub fn todos_table() -> Table {
    Table::new("todos")
        .column(Column::text("id").primary_key())
        .column(Column::text("text").default_value(""))
        .column(Column::boolean("completed").default_value(false))
        .column(Column::date_ms("deletedAt").nullable())
}

/// The `uiState` client document (per session, never synced).
pub fn ui_state_document() -> ClientDocument {
    ClientDocument::new("uiState", serde_json::json!({ "newTodoText": "", "filter": "all" }))
}

/// The complete TodoMVC schema.
pub fn schema() -> Schema {
    Schema::builder()
        .table(todos_table())
        .client_document(ui_state_document())
        .event(|event: &TodoCreated, _| {
            Ok(vec![
                Write::insert("todos")
                    .set("id", &event.id)
                    .set("text", &event.text)
                    .set("completed", false),
            ])
        })
        .event(|event: &TodoCompleted, _| {
            Ok(vec![Write::update("todos").set("completed", true).where_eq("id", &event.id)])
        })
        .event(|event: &TodoUncompleted, _| {
            Ok(vec![Write::update("todos").set("completed", false).where_eq("id", &event.id)])
        })
        .event(|event: &TodoDeleted, _| {
            Ok(vec![
                Write::update("todos").set("deletedAt", event.deleted_at).where_eq("id", &event.id),
            ])
        })
        .event(|event: &TodoClearedCompleted, _| {
            Ok(vec![
                Write::update("todos")
                    .set("deletedAt", event.deleted_at)
                    .where_eq("completed", true),
            ])
        })
        .build()
        .expect("the TodoMVC schema is statically valid")
}
