//! Test infrastructure for livestore-rs: things tests need that are not part of any product crate.
//!
//! - [`FaultProxy`]: a TCP proxy on `127.0.0.1:0` that forwards to a target and injects network faults at runtime:
//!   latency and per-connection jitter, stalls (stop forwarding without closing), cuts (reset or close both sides,
//!   now or after N more bytes), blackholes (accept, never answer), refusals and connection lifetime limits.
//!
//! This crate does not start servers or speak any protocol; the integration tests in `livestore-cli` do that and put
//! the proxy between real clients and the real `livestore serve`.
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

mod proxy;

pub use proxy::{CutStyle, FaultProxy, ProxyStats};
