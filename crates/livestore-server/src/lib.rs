//! A self-hosted sync backend for LiveStore that speaks the `@livestore/sync-cf` 0.4 wire protocol.
//!
//! Real JavaScript clients (`makeWsSync` / `makeHttpSync` from `@livestore/sync-cf/client`) and our Rust client
//! connect to it unchanged. This crate owns the transports (WebSocket and HTTP on axum), authentication, the
//! per-store fan-out of accepted events, persistence behind the [`storage::EventStorage`] trait (SQLite by default,
//! PostgreSQL for several nodes behind one address), and metrics. The meaning of every frame lives in
//! `livestore-proto`; this crate never parses protocol JSON by hand.
//!
//! Features:
//! - one totally ordered log per store, pushes admitted only on `parentSeqNum == head`;
//! - durable group commits: a push is acknowledged only after its transaction is on disk;
//! - several nodes on one Postgres database: pushes serialized by the database, live pulls on every node fed through
//!   `LISTEN/NOTIFY`, a node that loses the database closes its sockets and answers 503;
//! - exactly-once, ascending, gap-free delivery per pull subscription, backlog before live;
//! - static bearer tokens, or JWTs (HS256, or RS/ES/EdDSA with keys from an identity provider's JWKS or static
//!   public keys) whose claims decide the stores, checked before the WebSocket upgrade;
//! - the application's say over connects, pushes and pulls ([`hooks`]): signed HTTP calls configured in `[hooks]`,
//!   or Rust code given to [`Server::builder`];
//! - every committed event delivered to subscribers (the `[hooks] events_url` webhook, or an [`events_out::EventSink`]
//!   passed to [`Server::bind_with_sink`]) at least once, in order per store, from durable cursors;
//! - Prometheus metrics at `/metrics`, liveness at `/healthz`, graceful shutdown that closes sockets with 1012.
//!
//! ```no_run
//! # async fn run() -> Result<(), livestore_server::ServerError> {
//! use livestore_server::{Server, ServerConfig};
//! let server = Server::bind(ServerConfig::default()).await?;
//! println!("listening on {}", server.local_addr());
//! server.run_until(async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```

mod app;
pub mod auth;
mod body_guard;
mod budget;
mod commit_feed;
pub mod config;
mod error;
pub mod events_out;
pub mod hooks;
mod http_error;
mod http_server;
mod http_transport;
mod hub;
mod identity;
mod kinds;
mod metrics;
mod origin;
mod outbox;
mod pull;
mod push;
mod server;
mod state;
mod static_site;
pub mod storage;
mod stored;
mod ws;

pub use config::ServerConfig;
pub use error::ServerError;
pub use server::{Server, ServerBuilder};
