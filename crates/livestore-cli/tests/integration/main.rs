//! Integration tests of the `livestore` binary: real processes, real sockets on 127.0.0.1, real SQLite files.
//!
//! - `support`: starting and stopping the server, a raw WebSocket protocol client, the JS driver;
//! - `protocol`: the sync-cf wire protocol spoken frame by frame, including every bad-input case;
//! - `auth`: static tokens and JWTs, before the upgrade and on the HTTP transport;
//! - `jwks`: tokens from an identity provider's JWKS (RS256, ES256): rotation, issuer and audience, store access
//!   patterns, expiry, the endpoint down or serving garbage, forged tokens, JS and Rust clients syncing with them;
//! - `hooks`: `[hooks]` over HTTP against a receiver served by the test (connect, push and pull decisions, failures,
//!   forwarded headers, the cache, expiry, logs), a real JS client whose pushes are refused, the docs' receivers;
//! - `lifecycle`: restarts, backendId persistence, graceful shutdown, the data-dir lock, config refusal;
//! - `js_clients`: real `@livestore/*` 0.4.0 Node clients syncing through the server;
//! - `resilient`: raw protocol clients that survive faults (used by `faults`, `crash`, `chaos`);
//! - `faults`: cuts, stalls, delays and blackholes injected by `livestore_testkit::FaultProxy`;
//! - `crash`: `kill -9` during concurrent pipelined pushes, repeated with seeded timings;
//! - `chaos`: a seeded schedule of offline periods, faults and restarts with raw, JS and Rust clients and file sync
//!   on two stores;
//! - `security`: other stores' credentials everywhere, key and path escapes, size limits, slow and idle clients,
//!   many sockets, secrets in logs;
//! - `hardening`: what one client can make the server hold (stalled bodies and messages, slow readers of large
//!   events, pulls per socket, unread HTTP pulls), with the server's memory measured;
//! - `policy`: origins and hosts without auth, credentials expiring on open sockets, a static site around server
//!   state, range-checked settings, secrets in config errors and trace logs, private files, JSON nesting;
//! - `files_sync`, `files_resume`: the `livestore files` CLI end to end (propagation, external S3, `kill -9` during
//!   transfers, bad input, a resumed multipart upload that sends only the missing parts);
//! - `readme`: the README's Authentication examples (JWKS config, JS client snippet, hooks config) run as written;
//! - `cookie_login`: a browser signed in by session cookie through the connect hook (gallery, both transports, files);
//! - `fuzz_regressions`: saved fuzz inputs (seeds and crashers) replayed in process and against the server;
//! - `events_out`: committed events to `[hooks] events_url` with a receiver served by the test (signatures, dedup
//!   by `Idempotency-Key`, order per store), with concurrent writers, across `kill -9`, a webhook outage, and two
//!   Postgres nodes of which one delivers at a time.

#![allow(unreachable_pub, clippy::needless_pass_by_value, clippy::unused_async)]

mod auth;
mod browser;
mod chaos;
mod cookie_login;
mod crash;
mod events_out;
mod faults;
mod files;
mod files_resume;
mod files_sync;
mod filesync_js;
mod fuzz_regressions;
mod hardening;
mod hooks;
mod js_clients;
mod js_driver;
mod jwks;
mod lifecycle;
mod multinode;
mod policy;
mod protocol;
mod readme;
#[allow(dead_code)]
mod resilient;
mod security;
#[allow(dead_code)]
mod support;
