//! Sans-IO core of a LiveStore client: the parts of the sync algorithm that are pure functions of their inputs.
//!
//! This crate owns:
//! - [`seq_num`]: composite event sequence numbers (`global`, `client`, `rebaseGeneration`), `nextPair`, ordering
//!   and the `e3.1r2` notation;
//! - [`event`]: the local form of an event (composite sequence numbers, encoded args as JSON text) and the
//!   equality sync uses to recognise a client's own echoed events;
//! - [`event_def`]: metadata of an event definition (name, synced or client-only, derived, deprecated);
//! - [`sync_state`]: the `SyncState` value and `merge` (local push, upstream advance, upstream rebase);
//! - [`store_id`]: `sanitizeStoreId`, the store prefix of file paths and object keys.
//!
//! It deliberately does no IO: no SQLite, no sockets, no tokio, no clock, no randomness. The store
//! (`livestore-client`) persists events and applies the merge results; the sync driver moves bytes.
//!
//! ```
//! use livestore_core::event::LocalEvent;
//! use livestore_core::seq_num::EventSeqNum;
//! use livestore_core::sync_state::{merge, MergeResult, Payload, SyncState};
//!
//! let state = SyncState::new(EventSeqNum::ROOT);
//! let (seq_num, parent) = state.local_head().next_pair(false);
//! let event = LocalEvent::new(seq_num, parent, "v1.TodoCreated", r#"{"id":"t1","text":"a"}"#, "client-a", "static", false);
//! let MergeResult::Advance(advance) = merge(&state, Payload::LocalPush(vec![event.clone()]), true).unwrap() else {
//!     panic!("a push after the local head advances");
//! };
//! assert_eq!(advance.new_state.pending().len(), 1);
//! assert_eq!(advance.new_state.local_head().to_string(), "e1");
//!
//! // The server echoes the event: it becomes confirmed and pending is empty again.
//! let echoed = event.to_global_form();
//! let MergeResult::Advance(confirmed) = merge(&advance.new_state, Payload::UpstreamAdvance(vec![echoed]), true).unwrap() else {
//!     panic!("the echo of our own event confirms it");
//! };
//! assert!(confirmed.new_state.pending().is_empty());
//! assert_eq!(confirmed.confirmed_events.len(), 1);
//! ```

pub mod error;
pub mod event;
pub mod event_def;
pub mod seq_num;
pub mod store_id;
pub mod sync_state;

pub use error::CoreError;
pub use event::LocalEvent;
pub use seq_num::EventSeqNum;
pub use sync_state::{MergeResult, Payload, SyncState, merge};
