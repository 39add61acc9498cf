//! The sync driver: a tokio task that keeps a [`Store`] in sync with a sync-cf compatible server over WebSocket.
//!
//! One connection at a time. Per connection the driver sends a live `Pull` from the store's cursor, applies
//! every page through [`Store::apply_upstream`] (advance, confirm or rebase), and pushes pending synced events in
//! batches of at most [`MAX_PUSH_EVENTS`], pipelining batches until the server answers `ServerAheadError`; then it
//! waits for the next pulled page (which carries the events it was behind on) and pushes the rebased events.
//!
//! Everything that can wake the loop is one closed [`Event`] enum. Failures never strand pending events:
//! - a dropped or silent connection (no frame for [`DriverOptions::silence_timeout`]) reconnects with jittered
//!   exponential backoff (1 s doubling to 30 s), re-pulls from the cursor and re-pushes everything pending;
//! - a watchdog reconnects when a push got no answer, when a `ServerAheadError` was not followed by a pulled page,
//!   or when acknowledged events were not echoed back within [`DriverOptions::stall_timeout`];
//! - malformed frames are logged and skipped; a malformed or out-of-order pull page forces a re-pull.
//!
//! A `backendId` mismatch follows [`BackendIdPolicy`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use livestore_core::event::LocalEvent;
use livestore_proto::client::{self as wire, PageInfo, RpcFailure, ServerMessage};
use livestore_proto::event::{EncodedEvent, SeqNum};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::error::StoreError;
use crate::store::{Store, UpstreamEvent};

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
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Set when the driver stopped for good (backend-id policy `shutdown`/`ignore`, or `stop`).
    pub stopped: bool,
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
    let (stop_sender, stop_receiver) = watch::channel(false);
    let (state_sender, state_receiver) = watch::channel(DriverState::default());
    let task = tokio::spawn(run(store, options, stop_receiver, state_sender));
    SyncHandle { stop: stop_sender, state: state_receiver, task: Some(task) }
}

/// How a connection ended.
enum ConnectionEnd {
    /// Reconnect after a backoff.
    Retry(String),
    /// Reconnect at once (the backoff resets): the connection made progress.
    RetrySoon(String),
    /// Stop the driver.
    Stop,
}

async fn run(
    store: Store,
    options: DriverOptions,
    mut stop: watch::Receiver<bool>,
    state: watch::Sender<DriverState>,
) {
    let mut backoff = options.min_backoff;
    let payload_json = options.sync_payload.as_ref().map(serde_json::Value::to_string);
    let payload_raw =
        payload_json.as_deref().and_then(|json| RawValue::from_string(json.to_owned()).ok());
    let url = wire::sync_url(&options.url, store.store_id(), payload_json.as_deref());
    loop {
        if *stop.borrow() || store.is_shut_down() {
            break;
        }
        state.send_modify(|state| state.connections += 1);
        let end =
            connection(&store, &options, &url, payload_raw.as_deref(), &mut stop, &state).await;
        store.shared.connected.store(false, Ordering::Relaxed);
        state.send_modify(|state| {
            state.connected = false;
            state.caught_up = false;
        });
        let delay = match end {
            ConnectionEnd::Stop => break,
            ConnectionEnd::RetrySoon(reason) => {
                tracing::info!(target: "livestore_client::_events::reconnect", %reason, "reconnecting");
                state.send_modify(|state| state.last_error = Some(reason));
                backoff = options.min_backoff;
                Duration::from_millis(50)
            }
            ConnectionEnd::Retry(reason) => {
                tracing::info!(target: "livestore_client::_events::reconnect", %reason, delay_ms = backoff.as_millis() as u64, "reconnecting after backoff");
                state.send_modify(|state| state.last_error = Some(reason));
                let delay = jitter(backoff);
                backoff = (backoff * 2).min(options.max_backoff);
                delay
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => break,
        }
    }
    store.shared.connected.store(false, Ordering::Relaxed);
    state.send_modify(|state| {
        state.connected = false;
        state.stopped = true;
    });
}

/// ±25 % jitter so many clients do not reconnect in lockstep.
fn jitter(delay: Duration) -> Duration {
    use rand::Rng;
    let factor = rand::rng().random_range(0.75..1.25);
    delay.mul_f64(factor)
}

/// Every trigger of the per-connection loop.
enum Event {
    Frame(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    LocalCommit,
    Tick,
    Stop,
}

/// Per-connection bookkeeping.
struct Connection {
    next_request_id: u64,
    pull_id: String,
    /// The unanswered push: request id, last global number in it, when it was sent.
    push_in_flight: Option<(String, u64, Instant)>,
    /// Pull pages applied on this connection, and how many had been applied when the in-flight push was sent.
    pages_applied: u64,
    pages_at_push: u64,
    /// Events up to this global number were accepted by the server but not yet echoed.
    accepted_through: u64,
    accepted_at: Option<Instant>,
    /// A `ServerAheadError` came back; wait for the next pulled page before pushing again.
    parked_since: Option<Instant>,
    last_frame: Instant,
    last_ping: Instant,
    backlog_done: bool,
}

impl Connection {
    fn next_id(&mut self) -> String {
        let id = self.next_request_id.to_string();
        self.next_request_id += 1;
        id
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connection(
    store: &Store,
    options: &DriverOptions,
    url: &str,
    payload: Option<&RawValue>,
    stop: &mut watch::Receiver<bool>,
    state: &watch::Sender<DriverState>,
) -> ConnectionEnd {
    let connect =
        tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url));
    let mut socket: Socket = tokio::select! {
        result = connect => match result {
            Ok(Ok((socket, _response))) => socket,
            Ok(Err(error)) => return ConnectionEnd::Retry(format!("connect failed: {error}")),
            Err(_) => return ConnectionEnd::Retry("connect timed out".to_owned()),
        },
        _ = stop.changed() => return ConnectionEnd::Stop,
    };
    let now = Instant::now();
    let mut conn = Connection {
        next_request_id: 0,
        pull_id: String::new(),
        push_in_flight: None,
        pages_applied: 0,
        pages_at_push: 0,
        accepted_through: 0,
        accepted_at: None,
        parked_since: None,
        last_frame: now,
        last_ping: now,
        backlog_done: false,
    };
    let Ok((cursor_head, backend_id)) = store.upstream_cursor() else { return ConnectionEnd::Stop };
    conn.pull_id = conn.next_id();
    let cursor = match (&backend_id, cursor_head) {
        (Some(backend_id), head) if head > 0 => Some((backend_id.as_str(), head)),
        _ => None,
    };
    let pull = wire::pull_request(&conn.pull_id, store.store_id(), payload, true, cursor);
    for frame in [wire::PING.to_owned(), pull] {
        if let Err(error) = socket.send(Message::Text(frame.into())).await {
            return ConnectionEnd::Retry(format!("send failed: {error}"));
        }
    }
    let store_shared = Arc::clone(&store.shared);
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            frame = socket.next() => Event::Frame(frame),
            _ = store_shared.local_commits.notified() => Event::LocalCommit,
            _ = ticker.tick() => Event::Tick,
            _ = stop.changed() => Event::Stop,
        };
        let outcome = match event {
            Event::Stop => {
                let _ = socket.send(Message::Text(wire::interrupt(&conn.pull_id).into())).await;
                let _ = socket.close(None).await;
                return ConnectionEnd::Stop;
            }
            Event::Frame(None) => {
                return ConnectionEnd::Retry("server closed the connection".to_owned());
            }
            Event::Frame(Some(Err(error))) => {
                return ConnectionEnd::Retry(format!("socket error: {error}"));
            }
            Event::Frame(Some(Ok(message))) => {
                conn.last_frame = Instant::now();
                if !store.shared.connected.swap(true, Ordering::Relaxed) {
                    state.send_modify(|state| state.connected = true);
                }
                let text = match &message {
                    Message::Text(text) => text.as_str().to_owned(),
                    Message::Binary(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                    Message::Close(_) => {
                        return ConnectionEnd::Retry("server closed the connection".to_owned());
                    }
                    _ => continue,
                };
                handle_frame(store, options, &mut conn, &mut socket, &text).await
            }
            Event::LocalCommit => Ok(()),
            Event::Tick => {
                let now = Instant::now();
                if now.duration_since(conn.last_frame) > options.silence_timeout {
                    return ConnectionEnd::Retry("server went silent".to_owned());
                }
                if now.duration_since(conn.last_ping) >= options.ping_interval {
                    conn.last_ping = now;
                    if let Err(error) = socket.send(Message::Text(wire::PING.into())).await {
                        return ConnectionEnd::Retry(format!("send failed: {error}"));
                    }
                }
                if let Some(reason) = watchdog(&conn, now, options.stall_timeout) {
                    tracing::warn!(target: "livestore_client::_events::watchdog", %reason, "sync stalled; reconnecting");
                    return ConnectionEnd::RetrySoon(reason);
                }
                Ok(())
            }
        };
        if let Err(end) = outcome {
            return end;
        }
        if let Err(end) = try_push(store, &mut conn, &mut socket, payload).await {
            return end;
        }
        let caught_up = conn.backlog_done && conn.push_in_flight.is_none();
        if state.borrow().caught_up != caught_up {
            state.send_modify(|state| state.caught_up = caught_up);
        }
    }
}

/// Detects a push or pull that stopped making progress.
fn watchdog(conn: &Connection, now: Instant, stall_timeout: Duration) -> Option<String> {
    if let Some((_, _, sent_at)) = &conn.push_in_flight
        && now.duration_since(*sent_at) > stall_timeout
    {
        return Some("push got no answer".to_owned());
    }
    if let Some(parked_since) = conn.parked_since
        && now.duration_since(parked_since) > stall_timeout
    {
        return Some("server ahead but no events were pulled".to_owned());
    }
    if let Some(accepted_at) = conn.accepted_at
        && now.duration_since(accepted_at) > stall_timeout
    {
        return Some("accepted events were not echoed by the pull".to_owned());
    }
    None
}

async fn handle_frame(
    store: &Store,
    options: &DriverOptions,
    conn: &mut Connection,
    socket: &mut Socket,
    text: &str,
) -> Result<(), ConnectionEnd> {
    let message = match wire::decode_server_message(text) {
        Ok(message) => message,
        Err(error) => {
            // A frame we cannot read is skipped; the watchdog reconnects if it mattered.
            tracing::warn!(target: "livestore_client::_events::bad_frame", %error, "ignoring malformed server frame");
            return Ok(());
        }
    };
    match message {
        ServerMessage::Pong => Ok(()),
        ServerMessage::Defect(defect) => {
            Err(ConnectionEnd::Retry(format!("server defect: {defect}")))
        }
        ServerMessage::Chunk { request_id, values } if request_id == conn.pull_id => {
            for value in values {
                let page = wire::decode_pull_response(&value).map_err(|error| {
                    ConnectionEnd::RetrySoon(format!("malformed pull page: {error}"))
                })?;
                apply_page(store, options, conn, page)?;
            }
            let _ = socket.send(Message::Text(wire::ack(&conn.pull_id).into())).await;
            Ok(())
        }
        ServerMessage::Chunk { .. } => Ok(()),
        ServerMessage::Exit { request_id, result } if request_id == conn.pull_id => match result {
            Err(RpcFailure::BackendIdMismatch { expected, received }) => {
                Err(backend_mismatch(store, options, &expected, &received))
            }
            other => Err(ConnectionEnd::Retry(format!("live pull ended: {other:?}"))),
        },
        ServerMessage::Exit { request_id, result } => {
            let Some((push_id, last_global, _)) = conn.push_in_flight.take() else { return Ok(()) };
            if push_id != request_id {
                conn.push_in_flight = Some((push_id, last_global, Instant::now()));
                return Ok(());
            }
            match result {
                Ok(()) => {
                    conn.accepted_through = conn.accepted_through.max(last_global);
                    conn.accepted_at.get_or_insert_with(Instant::now);
                    Ok(())
                }
                Err(RpcFailure::ServerAhead { .. }) => {
                    conn.accepted_through = 0;
                    conn.accepted_at = None;
                    // Wait for the page that carries what we are behind on, unless it already arrived while the
                    // push was in flight (then the pending events are rebased and can go out right away).
                    if conn.pages_applied == conn.pages_at_push {
                        conn.parked_since = Some(Instant::now());
                    }
                    Ok(())
                }
                Err(RpcFailure::BackendIdMismatch { expected, received }) => {
                    Err(backend_mismatch(store, options, &expected, &received))
                }
                Err(other) => Err(ConnectionEnd::Retry(format!("push failed: {other:?}"))),
            }
        }
        _ => Ok(()),
    }
}

fn apply_page(
    store: &Store,
    options: &DriverOptions,
    conn: &mut Connection,
    page: wire::PullResponse,
) -> Result<(), ConnectionEnd> {
    let events: Vec<UpstreamEvent> = page
        .batch
        .into_iter()
        .map(|item| {
            let event = item.event_encoded;
            let args = event.args.as_ref().map_or("{}", |raw| raw.get()).to_owned();
            UpstreamEvent {
                event: LocalEvent::from_global(
                    event.seq_num.0,
                    event.parent_seq_num.0,
                    event.name,
                    args,
                    event.client_id,
                    event.session_id,
                ),
                metadata_json: Some(item.metadata.get().to_owned()),
            }
        })
        .collect();
    match store.apply_upstream(&events, &page.backend_id) {
        Ok(outcome) => {
            if outcome.rebased > 0 {
                conn.accepted_through = 0;
            }
            let (head, _) = store.upstream_cursor().map_err(|_| ConnectionEnd::Stop)?;
            if conn.accepted_through <= head {
                conn.accepted_through = 0;
                conn.accepted_at = None;
            }
            // Any pulled page ends a `ServerAheadError` wait: it carries what we were behind on.
            conn.parked_since = None;
            conn.pages_applied += 1;
            if page.page_info == PageInfo::NoMore {
                conn.backlog_done = true;
            }
            Ok(())
        }
        Err(StoreError::BackendIdMismatch { expected, received }) => {
            Err(backend_mismatch(store, options, &expected, &received))
        }
        Err(StoreError::Shutdown) => Err(ConnectionEnd::Stop),
        Err(error) => Err(ConnectionEnd::RetrySoon(format!("pull page refused: {error}"))),
    }
}

fn backend_mismatch(
    store: &Store,
    options: &DriverOptions,
    expected: &str,
    received: &str,
) -> ConnectionEnd {
    tracing::warn!(target: "livestore_client::_events::backend_id_mismatch", expected, received, policy = ?options.backend_id_policy, "backend id mismatch");
    match options.backend_id_policy {
        BackendIdPolicy::Reset => match store.reset_local() {
            Ok(()) => ConnectionEnd::RetrySoon("backend reset: local data wiped".to_owned()),
            Err(error) => ConnectionEnd::Retry(format!("reset failed: {error}")),
        },
        BackendIdPolicy::Shutdown => {
            let _ = store.shutdown();
            ConnectionEnd::Stop
        }
        BackendIdPolicy::Ignore => ConnectionEnd::Stop,
    }
}

/// Sends the next batch of pending synced events unless a push is unanswered or the server said it is ahead.
async fn try_push(
    store: &Store,
    conn: &mut Connection,
    socket: &mut Socket,
    payload: Option<&RawValue>,
) -> Result<(), ConnectionEnd> {
    if conn.push_in_flight.is_some() || conn.parked_since.is_some() {
        return Ok(());
    }
    let Ok(candidates) = store.push_candidates(usize::MAX) else { return Err(ConnectionEnd::Stop) };
    let mut batch = Vec::new();
    let mut bytes = 0;
    for event in candidates.into_iter().filter(|event| event.seq_num.global > conn.accepted_through)
    {
        let encoded = to_wire(&event);
        let size = encoded.to_json().len();
        if batch.len() == MAX_PUSH_EVENTS || (!batch.is_empty() && bytes + size > MAX_PUSH_BYTES) {
            break;
        }
        bytes += size;
        batch.push(encoded);
    }
    let Some(last) = batch.last() else { return Ok(()) };
    let last_global = last.seq_num.0;
    let (_, backend_id) = store.upstream_cursor().map_err(|_| ConnectionEnd::Stop)?;
    let id = conn.next_id();
    let frame = wire::push_request(&id, store.store_id(), payload, &batch, backend_id.as_deref());
    socket
        .send(Message::Text(frame.into()))
        .await
        .map_err(|error| ConnectionEnd::Retry(format!("send failed: {error}")))?;
    conn.push_in_flight = Some((id, last_global, Instant::now()));
    conn.pages_at_push = conn.pages_applied;
    Ok(())
}

fn to_wire(event: &LocalEvent) -> EncodedEvent {
    EncodedEvent {
        name: event.name.to_string(),
        args: RawValue::from_string(event.args_json.to_string()).ok(),
        seq_num: SeqNum(event.seq_num.global),
        parent_seq_num: SeqNum(event.parent_seq_num.global),
        client_id: event.client_id.to_string(),
        session_id: event.session_id.to_string(),
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
