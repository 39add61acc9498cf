//! Test infrastructure for livestore-rs: things tests need that are not part of any product crate.
//!
//! - [`FaultProxy`]: a TCP proxy on `127.0.0.1:0` that forwards to a target and injects network faults at runtime:
//!   latency and per-connection jitter, stalls (stop forwarding without closing), cuts (reset or close both sides,
//!   now or after N more bytes), blackholes (accept, never answer), refusals and connection lifetime limits.
//! - [`jwt`]: fixed RSA, EC and Ed25519 signing keys with their public PEMs and JWKs, to sign tokens the way an
//!   identity provider does.
//! - [`JwksServer`]: an identity provider's JWKS endpoint on `127.0.0.1` whose answers (documents, error statuses,
//!   delays, not listening) the test changes at runtime, counting fetches.
//!
//! The integration tests in `livestore-cli` start the real `livestore serve` and put these between it and real
//! clients; the proxy never parses what it forwards.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use std::time::Duration;
//! use livestore_testkit::FaultProxy;
//!
//! let target = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let proxy = FaultProxy::start(target.local_addr()?).await?;
//! proxy.set_delay(Duration::from_millis(20));
//! let _client = tokio::net::TcpStream::connect(proxy.addr()).await?;
//! proxy.cut_all();
//! assert_eq!(proxy.stats().faults_injected, 2);
//! # Ok(())
//! # }
//! ```

mod jwks_server;
pub mod jwt;
mod proxy;

pub use jwks_server::{JwksReply, JwksServer};
pub use proxy::{CutStyle, FaultProxy, ProxyStats};
