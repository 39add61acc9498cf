//! One WebSocket connection of the sync driver: the live pull, pushes, the watchdog and the per-connection loop.
//!
//! The loop `select!`s over one closed [`Event`] enum. Frames that have already arrived when one is read are read
//! too (up to [`MAX_COALESCED_FRAMES`]), and consecutive pull pages among them are applied in one store
//! transaction: during a catch-up the server sends pages faster than one transaction per page can absorb, and a
//! live client sees one frame at a time, so coalescing costs it nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use livestore_core::event::LocalEvent;
use livestore_core::seq_num::EventSeqNum;
use livestore_proto::client::{self as wire, PageInfo, RpcFailure, ServerMessage};
use livestore_proto::event::{EncodedEvent, SeqNum};
use livestore_proto::pull_chunk::{PullItemRef, decode_pull_chunk};
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::{
    BackendIdPolicy, ConnectionEnd, DriverOptions, DriverState, MAX_PUSH_BYTES, MAX_PUSH_EVENTS,
};
use crate::error::StoreError;
use crate::store::{Store, UpstreamEvent};

/// At most this many already-arrived frames are handled together. Measured on a 1,000,000-event catch-up:
/// 16-32 pages per transaction beat 64 and 256, where the socket goes unread for so long that the server's
/// sending stalls.
const MAX_COALESCED_FRAMES: usize = 32;
/// How often the loop checks timers (pings, silence, the watchdog).
const TICK: Duration = Duration::from_millis(250);

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

/// Runs one connection until it ends; the caller reconnects or stops.
pub(super) async fn connection(
    store: &Store,
    options: &DriverOptions,
    url: &str,
    payload: Option<&RawValue>,
    stop: &mut watch::Receiver<bool>,
    state: &watch::Sender<DriverState>,
) -> ConnectionEnd {
    // Nagle's algorithm would hold a small push back until the previous segment is acknowledged, which with
    // delayed ACKs costs tens of milliseconds per commit.
    let connect = tokio::time::timeout(
        options.connect_timeout,
        tokio_tungstenite::connect_async_with_config(url, None, true),
    );
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
    let mut ticker = tokio::time::interval(TICK);
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
            Event::Frame(first) => {
                conn.last_frame = Instant::now();
                let (texts, ended) = read_ready_frames(&mut socket, first);
                if !texts.is_empty() && !store.shared.connected.swap(true, Ordering::Relaxed) {
                    state.send_modify(|state| state.connected = true);
                }
                let handled = handle_frames(store, options, &mut conn, &mut socket, texts).await;
                match (handled, ended) {
                    (Err(end), _) | (Ok(()), Some(end)) => return end,
                    (Ok(()), None) => Ok(()),
                }
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

/// The text of `first` and of every frame that has already arrived after it, and how the connection ended if
/// it did while reading (handled after the frames read before it).
fn read_ready_frames(
    socket: &mut Socket,
    first: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> (Vec<String>, Option<ConnectionEnd>) {
    let mut texts = Vec::new();
    let mut next = Some(first);
    while let Some(frame) = next.take() {
        match frame {
            None => {
                return (
                    texts,
                    Some(ConnectionEnd::Retry("server closed the connection".to_owned())),
                );
            }
            Some(Err(error)) => {
                return (texts, Some(ConnectionEnd::Retry(format!("socket error: {error}"))));
            }
            Some(Ok(Message::Text(text))) => texts.push(text.as_str().to_owned()),
            Some(Ok(Message::Binary(bytes))) => {
                texts.push(String::from_utf8_lossy(&bytes).into_owned())
            }
            Some(Ok(Message::Close(_))) => {
                return (
                    texts,
                    Some(ConnectionEnd::Retry("server closed the connection".to_owned())),
                );
            }
            Some(Ok(_)) => {}
        }
        if texts.len() < MAX_COALESCED_FRAMES {
            // `now_or_never` polls once: a frame that is already buffered, or nothing.
            next = socket.next().now_or_never();
        }
    }
    (texts, None)
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

/// Pull pages turned into store input, owning their data.
struct Page {
    backend_id: String,
    no_more: bool,
    events: Vec<UpstreamEvent>,
}

/// Handles frames in order; consecutive pull pages are applied together.
async fn handle_frames(
    store: &Store,
    options: &DriverOptions,
    conn: &mut Connection,
    socket: &mut Socket,
    texts: Vec<String>,
) -> Result<(), ConnectionEnd> {
    let mut pages = Vec::new();
    let mut strings = Interner::default();
    let mut acks = 0;
    for text in texts {
        // The common case, a chunk of pull pages, in one borrowing pass; anything else the general way.
        if let Some(chunk) = decode_pull_chunk(&text)
            && chunk.request_id == conn.pull_id
        {
            acks += 1;
            pages.extend(chunk.pages.into_iter().map(|page| Page {
                backend_id: page.backend_id.into_owned(),
                no_more: page.page_info == PageInfo::NoMore,
                events:
                    page.batch.iter().map(|item| upstream_from_ref(item, &mut strings)).collect(),
            }));
            continue;
        }
        let message = match wire::decode_server_message(&text) {
            Ok(message) => message,
            Err(error) => {
                // A frame we cannot read is skipped; the watchdog reconnects if it mattered.
                tracing::warn!(target: "livestore_client::_events::bad_frame", %error, "ignoring malformed server frame");
                continue;
            }
        };
        match message {
            ServerMessage::Chunk { request_id, values } if request_id == conn.pull_id => {
                acks += 1;
                for value in values {
                    let page = wire::decode_pull_response(&value).map_err(|error| {
                        ConnectionEnd::RetrySoon(format!("malformed pull page: {error}"))
                    })?;
                    pages.push(Page {
                        no_more: page.page_info == PageInfo::NoMore,
                        events: page
                            .batch
                            .into_iter()
                            .map(|item| upstream_from_owned(item, &mut strings))
                            .collect(),
                        backend_id: page.backend_id,
                    });
                }
            }
            other => {
                apply_pages(store, options, conn, std::mem::take(&mut pages))?;
                handle_message(store, options, conn, other)?;
            }
        }
    }
    apply_pages(store, options, conn, pages)?;
    if acks > 0 {
        for _ in 0..acks {
            let _ = socket.feed(Message::Text(wire::ack(&conn.pull_id).into())).await;
        }
        let _ = socket.flush().await;
    }
    Ok(())
}

/// Everything but pull pages.
fn handle_message(
    store: &Store,
    options: &DriverOptions,
    conn: &mut Connection,
    message: ServerMessage,
) -> Result<(), ConnectionEnd> {
    match message {
        ServerMessage::Pong | ServerMessage::Chunk { .. } => Ok(()),
        ServerMessage::Defect(defect) => {
            Err(ConnectionEnd::Retry(format!("server defect: {defect}")))
        }
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

/// Applies consecutive pull pages in one store call (pages of one backend; a change of backend splits them).
fn apply_pages(
    store: &Store,
    options: &DriverOptions,
    conn: &mut Connection,
    pages: Vec<Page>,
) -> Result<(), ConnectionEnd> {
    let mut pages = pages.into_iter().peekable();
    while let Some(first) = pages.next() {
        let backend_id = first.backend_id;
        let mut no_more = first.no_more;
        let mut count = 1;
        let mut events = first.events;
        while let Some(page) = pages.next_if(|page| page.backend_id == backend_id) {
            no_more |= page.no_more;
            count += 1;
            events.extend(page.events);
        }
        apply_events(store, options, conn, &events, &backend_id)?;
        conn.pages_applied += count;
        if no_more {
            conn.backlog_done = true;
        }
    }
    Ok(())
}

fn apply_events(
    store: &Store,
    options: &DriverOptions,
    conn: &mut Connection,
    events: &[UpstreamEvent],
    backend_id: &str,
) -> Result<(), ConnectionEnd> {
    match store.apply_upstream(events, backend_id) {
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
            Ok(())
        }
        Err(StoreError::BackendIdMismatch { expected, received }) => {
            Err(backend_mismatch(store, options, &expected, &received))
        }
        Err(StoreError::Shutdown) => Err(ConnectionEnd::Stop),
        Err(error) => Err(ConnectionEnd::RetrySoon(format!("pull page refused: {error}"))),
    }
}

/// Reuses the previous event's name, client and session strings when they repeat, as they mostly do in a page.
#[derive(Default)]
struct Interner {
    name: Option<Arc<str>>,
    client_id: Option<Arc<str>>,
    session_id: Option<Arc<str>>,
}

fn intern(slot: &mut Option<Arc<str>>, text: &str) -> Arc<str> {
    match slot {
        Some(previous) if **previous == *text => Arc::clone(previous),
        _ => Arc::clone(slot.insert(Arc::from(text))),
    }
}

fn upstream_from_ref(item: &PullItemRef<'_>, strings: &mut Interner) -> UpstreamEvent {
    let event = &item.event_encoded;
    UpstreamEvent {
        event: LocalEvent {
            seq_num: EventSeqNum::from_global(event.seq_num.0),
            parent_seq_num: EventSeqNum::from_global(event.parent_seq_num.0),
            name: intern(&mut strings.name, &event.name),
            args_json: Arc::from(event.args.map_or("{}", RawValue::get)),
            client_id: intern(&mut strings.client_id, &event.client_id),
            session_id: intern(&mut strings.session_id, &event.session_id),
            client_only: false,
        },
        metadata_json: Some(item.metadata.get().to_owned()),
    }
}

fn upstream_from_owned(item: wire::PullItem, strings: &mut Interner) -> UpstreamEvent {
    let event = item.event_encoded;
    UpstreamEvent {
        event: LocalEvent {
            seq_num: EventSeqNum::from_global(event.seq_num.0),
            parent_seq_num: EventSeqNum::from_global(event.parent_seq_num.0),
            name: intern(&mut strings.name, &event.name),
            args_json: Arc::from(event.args.as_ref().map_or("{}", |raw| raw.get())),
            client_id: intern(&mut strings.client_id, &event.client_id),
            session_id: intern(&mut strings.session_id, &event.session_id),
            client_only: false,
        },
        metadata_json: Some(item.metadata.get().to_owned()),
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
    let Ok(candidates) = store.push_candidates_after(conn.accepted_through, MAX_PUSH_EVENTS) else {
        return Err(ConnectionEnd::Stop);
    };
    let mut batch = Vec::new();
    let mut bytes = 0;
    for event in candidates {
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
