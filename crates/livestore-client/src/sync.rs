//! The sync driver: a tokio task that keeps a [`Store`] in sync with a sync-cf compatible server over WebSocket.
//!
//! One connection at a time. Per connection the driver sends a live `Pull` from the store's cursor, applies
//! every page through [`Store::apply_upstream`] (advance, confirm or rebase), and pushes pending synced events in
//! batches of at most [`MAX_PUSH_EVENTS`], one push in flight; after a `ServerAheadError` it waits for the next
//! pulled page (which carries the events it was behind on) and pushes the rebased events.
//!
//! The decisions are sans-IO state machines; the tokio code only moves bytes and time:
//! - [`machine`]: one connection (pull, pushes, acks, pings, silence, the watchdog, the `backendId` policy), fed
//!   [`machine::Input`]s with the current time, calling the store through [`machine::SyncStore`];
//! - [`reconnect`]: after a connection ends, reconnect after a jittered backoff, at once, or stop;
//! - [`reason`]: why a connection ended, as enums ([`EndReason`], [`StallReason`], [`StopReason`]);
//! - `connection` (private): the adapter that opens the socket, feeds the machine and performs its outputs.
//!
//! Failures never strand pending events:
//! - a dropped or silent connection (no frame for [`DriverOptions::silence_timeout`]) reconnects with jittered
//!   exponential backoff (1 s doubling to 30 s), re-pulls from the cursor and re-pushes everything pending;
//! - a watchdog reconnects when a push got no answer, when a `ServerAheadError` was not followed by a pulled page,
//!   or when acknowledged events were not echoed back within [`DriverOptions::stall_timeout`];
//! - malformed frames are logged and skipped; a malformed or out-of-order pull page forces a re-pull.
//!
//! A `backendId` mismatch follows [`BackendIdPolicy`].

mod connection;
pub mod machine;
pub mod reason;
pub mod reconnect;

use std::sync::atomic::Ordering;
use std::time::Duration;

use livestore_proto::client as wire;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::watch;

use crate::error::StoreError;
use crate::store::Store;
use connection::connection;
pub use reason::{
    ConnectionEnd, EndReason, ErrorSource, StallReason, StopReason, TransportFailure,
};
use reconnect::Reconnect;

/// At most this many events per push request (sync-cf's `MAX_PUSH_EVENTS_PER_REQUEST`).
pub const MAX_PUSH_EVENTS: usize = 100;
/// At most this many bytes of events per push request (sync-cf's 900 KB rule).
pub const MAX_PUSH_BYTES: usize = 900_000;

/// What to do when the server's `backendId` differs from the one this store synced with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendIdPolicy {
    /// Wipe the local eventlog and state, then sync from scratch with the new backend (LiveStore's default
    /// also wipes; it then shuts the store down, we keep going since the process is still here).
    #[default]
    Reset,
    /// Stop syncing and shut the store down.
    Shutdown,
    /// Stop syncing and keep the store open (local commits keep working; nothing is pushed).
    Ignore,
}

/// Driver configuration.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// The server URL (`ws://`, `wss://`, `http://` or `https://`; any path).
    pub url: String,
    /// The sync payload sent in the URL and in every request, e.g. `{"authToken": "…"}`.
    pub sync_payload: Option<serde_json::Value>,
    /// What to do on a `backendId` mismatch.
    pub backend_id_policy: BackendIdPolicy,
    /// Keep-alive interval.
    pub ping_interval: Duration,
    /// Reconnect when no frame arrived for this long.
    pub silence_timeout: Duration,
    /// Reconnect when a push or an echo is overdue by this long.
    pub stall_timeout: Duration,
    /// Give up a connection attempt after this long.
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest reconnect delay.
    pub max_backoff: Duration,
}

impl DriverOptions {
    /// Defaults matching the JavaScript client: 10 s pings, backoff 1 s → 30 s.
    pub fn new(url: impl Into<String>) -> Self {
        DriverOptions {
            url: url.into(),
            sync_payload: None,
            backend_id_policy: BackendIdPolicy::Reset,
            ping_interval: Duration::from_secs(10),
            silence_timeout: Duration::from_secs(25),
            stall_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// What the driver reports while it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DriverState {
    /// A WebSocket is open and the server has answered.
    pub connected: bool,
    /// The current connection received the last page of its backlog (`NoMore`) and no push is unanswered.
    pub caught_up: bool,
    /// Connections made so far.
    pub connections: u64,
    /// Why the last connection ended, if one did (`Display` gives the sentence for humans; serialized as it).
    pub last_error: Option<EndReason>,
    /// Set when the driver stopped for good (backend-id policy `shutdown`/`ignore`, or `stop`).
    pub stopped: bool,
    /// Why the driver stopped, once it has (serialized as a sentence).
    pub stop_reason: Option<StopReason>,
}

/// A running driver; dropping it stops the driver.
#[derive(Debug)]
pub struct SyncHandle {
    stop: watch::Sender<bool>,
    state: watch::Receiver<DriverState>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SyncHandle {
    /// The driver's state, updated as it changes.
    pub fn state(&self) -> watch::Receiver<DriverState> {
        self.state.clone()
    }

    /// Stops the driver (interrupting its live pull) and waits for it.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SyncHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Starts syncing `store` in a background task.
pub fn start(store: Store, options: DriverOptions) -> SyncHandle {
    install_crypto_provider();
    let (stop_sender, stop_receiver) = watch::channel(false);
    let (state_sender, state_receiver) = watch::channel(DriverState::default());
    let task = tokio::spawn(run(store, options, stop_receiver, state_sender));
    SyncHandle { stop: stop_sender, state: state_receiver, task: Some(task) }
}

async fn run(
    store: Store,
    options: DriverOptions,
    mut stop: watch::Receiver<bool>,
    state: watch::Sender<DriverState>,
) {
    let mut reconnect = Reconnect::new(options.min_backoff, options.max_backoff);
    // Jitter only has to differ between clients; the machine takes any RNG, a simulator passes a seeded one.
    let mut rng = SmallRng::from_os_rng();
    let config = machine_config(&options);
    let url = wire::sync_url(&options.url, store.store_id(), payload_json(&options).as_deref());
    let stop_reason = loop {
        if *stop.borrow() {
            break StopReason::Requested;
        }
        if store.is_shut_down() {
            break StopReason::Store(ErrorSource::new(StoreError::Shutdown));
        }
        state.send_modify(|state| state.connections += 1);
        let end = connection(&store, config.clone(), &url, &mut stop, &state).await;
        store.shared.connected.store(false, Ordering::Relaxed);
        state.send_modify(|state| {
            state.connected = false;
            state.caught_up = false;
        });
        let reason = match end {
            ConnectionEnd::Stop(reason) => break reason,
            ConnectionEnd::Retry(reason) => reason,
        };
        let delay = reconnect.delay_after(&reason, &mut rng);
        tracing::info!(target: "livestore_client::_events::reconnect", %reason, delay_ms = delay.as_millis() as u64, "reconnecting");
        state.send_modify(|state| state.last_error = Some(reason));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => break StopReason::Requested,
        }
    };
    store.shared.connected.store(false, Ordering::Relaxed);
    state.send_modify(|state| {
        state.connected = false;
        state.stopped = true;
        state.stop_reason = Some(stop_reason);
    });
}

/// The per-connection machine's configuration from the driver's options.
fn machine_config(options: &DriverOptions) -> machine::Config {
    let sync_payload = payload_json(options).and_then(|json| RawValue::from_string(json).ok());
    machine::Config {
        ping_interval: options.ping_interval,
        silence_timeout: options.silence_timeout,
        stall_timeout: options.stall_timeout,
        connect_timeout: options.connect_timeout,
        backend_id_policy: options.backend_id_policy,
        sync_payload,
    }
}

fn payload_json(options: &DriverOptions) -> Option<String> {
    options.sync_payload.as_ref().map(serde_json::Value::to_string)
}

/// `wss://` connections build their TLS configuration from rustls' process-wide crypto provider, which rustls
/// can only pick by itself when exactly one provider is compiled in. Install ring unless the application
/// already chose one.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // An error means another thread installed one first, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Connects, pushes everything pending and pulls until caught up, or gives up after `timeout`.
///
/// Returns whether the store ended with nothing pending to push. Used by one-shot tools like the `todo` CLI.
pub async fn sync_until_caught_up(
    store: &Store,
    options: DriverOptions,
    timeout: Duration,
) -> Result<bool, StoreError> {
    let handle = start(store.clone(), options);
    let mut state = handle.state();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut synced = false;
    loop {
        let done = {
            let current = state.borrow_and_update();
            if current.stopped {
                break;
            }
            current.caught_up
        };
        if done && store.sync_status()?.pending_synced_count == 0 {
            synced = true;
            break;
        }
        tokio::select! {
            changed = state.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    handle.stop().await;
    if store.is_shut_down() {
        return Err(StoreError::Shutdown);
    }
    Ok(synced && store.sync_status()?.pending_synced_count == 0)
}
