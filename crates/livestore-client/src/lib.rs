//! A LiveStore client in Rust: an event-sourced store with SQLite state that syncs with `@livestore/sync-cf`
//! compatible servers (our `livestore serve` or the reference Cloudflare worker).
//!
//! Modules:
//! - [`schema`]: event definitions (serde payloads), tables, materializers, client documents, and the query and
//!   write builders with typed filters (`schema::Op`);
//! - [`store`]: [`Store`] with `open`, `commit`, `query` (`query_first`, `query_count`, `query_exists`), `subscribe`, `sync_status`, `rebuild`, `shutdown`;
//! - [`subscription`]: subscription handles and async streams;
//! - [`sync`]: the WebSocket sync driver that pushes, pulls, rebases and reconnects: sans-IO state machines
//!   (`sync::machine`, `sync::reconnect`) behind a thin tokio adapter;
//! - [`todo`]: the TodoMVC schema shared with the JavaScript example;
//! - `db` (private): the eventlog and state databases, undo log and queries.
//!
//! The sync algorithm itself (sequence numbers, merge, rebase) is sans-IO in `livestore-core`; wire frames come
//! from `livestore-proto`.
//!
//! ```
//! use livestore_client::schema::{Op, Query};
//! use livestore_client::store::{Store, StoreOptions};
//! use livestore_client::todo::{self, Todo, TodoCreated};
//! use livestore_client::Storage;
//!
//! let store = Store::open(StoreOptions::new("doc-test", Storage::InMemory), todo::schema()).unwrap();
//! store.commit(&TodoCreated { id: "t1".into(), text: "write docs".into() }).unwrap();
//! let todos: Vec<Todo> = store.query(&Query::select("todos").order_by("id")).unwrap();
//! assert_eq!(todos[0].text, "write docs");
//! assert!(!todos[0].completed);
//! let open = Query::select("todos").where_eq("completed", false).where_op("id", Op::is_in(["t1", "t2"]));
//! assert_eq!(store.query_count(&open).unwrap(), 1);
//! let first: Option<Todo> = store.query_first(&open).unwrap();
//! assert_eq!(first.map(|todo| todo.id), Some("t1".to_owned()));
//! assert_eq!(store.sync_status().unwrap().pending_count, 1);
//! ```

mod db;
pub mod error;
mod intern;
pub mod schema;
pub mod store;
pub mod subscription;
pub mod sync;
pub mod todo;
mod value;

pub use db::open::{Durability, Storage};
pub use db::query::Row;
pub use error::StoreError;
pub use livestore_core::{EventSeqNum, LocalEvent};
pub use store::{NewEvent, Store, StoreOptions, SyncStatus};
pub use value::SqlValue;
