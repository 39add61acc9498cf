//! Sans-IO implementation of the `@livestore/sync-cf` 0.4 wire protocol.
//!
//! This crate owns the *format*: what a client frame means, what a server frame looks like, how a backlog is cut
//! into pages and whether a pushed batch may be appended to a log with a given head. It deliberately does no IO:
//! no sockets, no files, no clock, no randomness. The server crate (`livestore-server`) owns transports and
//! persistence and calls into this crate with bytes and numbers.
//!
//! Features:
//! - [`frame`]: decoding of client messages (`Request`, `Ack`, `Interrupt`, `Ping`, `Eof`) with specific errors;
//! - [`rpc`]: typed payloads of `SyncWsRpc.*` and `SyncHttpRpc.*`;
//! - [`encode`]: server messages (`Chunk`, `Exit`, `Pong`) written as JSON text without re-parsing stored events;
//! - [`page`]: pull pages bounded by [`page::MAX_EVENTS_PER_PAGE`] and [`page::MAX_PAGE_BYTES`];
//! - [`admission`]: the push rules (`parentSeqNum == head`, contiguity, `backendId`);
//! - [`url`]: the `storeId`, `transport` and double-encoded `payload` query parameters;
//! - [`json`]: the nesting limit every decoder of peer JSON applies first.
//!
//! ```
//! use livestore_proto::frame::{decode_client_message, ClientMessage};
//! use livestore_proto::rpc::RpcCall;
//!
//! let frame = r#"{"_tag":"Request","id":"1","tag":"SyncWsRpc.Push","payload":{"storeId":"s1",
//!   "batch":[{"name":"v1.TodoCreated","args":{"id":"t1"},"seqNum":1,"parentSeqNum":0,
//!   "clientId":"c","sessionId":"static"}],"backendId":{"_tag":"None"}},"headers":[]}"#;
//! let ClientMessage::Request { id, call: Ok(RpcCall::WsPush(push)) } = decode_client_message(frame).unwrap() else {
//!     panic!("expected a push request");
//! };
//! assert_eq!(id.as_str(), "1");
//! let admission = livestore_proto::admission::admit(0, "backend-1", &push);
//! assert_eq!(admission, livestore_proto::admission::Admission::Accept);
//! ```

pub mod admission;
pub mod client;
pub mod encode;
pub mod error;
pub mod event;
pub mod frame;
pub mod json;
pub mod page;
pub mod pull_chunk;
pub mod rpc;
pub mod url;

/// The longest `storeId` we accept. The reference places no limit; we bound it so ids stay usable as keys.
pub const MAX_STORE_ID_BYTES: usize = 256;

pub use error::ProtoError;
pub use event::{EncodedEvent, SeqNum};
