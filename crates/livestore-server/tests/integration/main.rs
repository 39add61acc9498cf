//! Integration tests of livestore-server's storage backends, through the public API only.
//!
//! - `backend`: opening SQLite in a temp dir and Postgres in a fresh database of the test cluster
//!   (`LIVESTORE_TEST_DATABASE_URL`, see `scripts/with-postgres`);
//! - `conformance`: one suite of `EventStorage` behaviours, instantiated for both backends;
//! - `event_sink`: committed events delivered to a Rust sink (`Server::bind_with_sink` with the channel adapter):
//!   order, refusals resent unchanged, resuming after a restart, one delivering node on Postgres and a takeover;
//! - `nodes`: several Postgres-backed instances on one database: serialized pushes, shared logs, and two in-process
//!   servers whose live pulls see each other's commits.
//!
//! Without `LIVESTORE_TEST_DATABASE_URL` the Postgres tests print a note and pass, unless
//! `LIVESTORE_REQUIRE_POSTGRES` is set (`scripts/test` sets it), in which case they fail.

#![allow(unreachable_pub, clippy::needless_pass_by_value)]

mod backend;
mod conformance;
mod event_sink;
mod nodes;
