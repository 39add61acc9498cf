//! One WebSocket sync connection: reads client frames, runs pulls and pushes, writes replies.
//!
//! Three tasks cooperate per connection. The reader (this function's loop) decodes frames and answers `Ping` at
//! once. Pushes are submitted to storage in arrival order and their replies awaited in that order by a replier
//! task, so a client may pipeline pushes. Every outgoing frame goes through one bounded queue drained by a writer
//! task; a client too slow to drain it is disconnected rather than allowed to stall the others.
//!
//! The writer also keeps the reference server's order on the pusher's own socket: a push's `Exit` before the live
//! `Chunk` with the same events (`ack_order` says why LiveStore's client needs that).
//!
//! The session is generic over the socket's `Sink`/`Stream` halves so tests can drive it without a network.

mod ack_order;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::future::BoxFuture;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use livestore_proto::admission::validate_batch;
use livestore_proto::encode;
use livestore_proto::frame::{ClientMessage, decode_client_message};
use livestore_proto::rpc::RpcCall;
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::ack_order::{AckOrder, LiveDecision, PushesInFlight};
use crate::app::AppState;
use crate::error::ServerError;
use crate::metrics::RejectReason;
use crate::pull::{BACKLOG_BUDGET_BYTES, CLOSE_LAGGING, Outbound, PullJob, run_pull};
use crate::storage::AppendOutcome;

/// Close code when the server shuts down or restarts: clients reconnect.
const CLOSE_SERVICE_RESTART: u16 = 1012;
/// Close code for a frame that is not a protocol message.
const CLOSE_INVALID_FRAME: u16 = 1007;
/// Close code for a message over the size limit.
const CLOSE_TOO_BIG: u16 = 1009;
/// A client that stops reading for this long while frames wait is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// A submitted push: its request id, its token in [`PushesInFlight`] (none for an empty batch), its outcome.
type PendingPush = (String, Option<u64>, BoxFuture<'static, Result<AppendOutcome, ServerError>>);

/// Serves an upgraded socket until either side closes it or the server shuts down.
pub(crate) async fn serve_socket(
    state: AppState,
    socket: WebSocket,
    store_id: String,
    url_payload: Option<Box<RawValue>>,
) {
    let (sink, stream) = socket.split();
    state.metrics.websocket_connections.inc();
    tracing::debug!(store_id, "WebSocket connected");
    run_session(&state, sink, stream, &store_id, url_payload).await;
    tracing::debug!(store_id, "WebSocket closed");
    state.metrics.websocket_connections.dec();
}

async fn run_session<S, R>(
    state: &AppState,
    sink: S,
    mut stream: R,
    store_id: &str,
    url_payload: Option<Box<RawValue>>,
) where
    S: Sink<Message, Error = axum::Error> + Unpin + Send + 'static,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let (out, out_receiver) = mpsc::channel(state.limits.outbound_queue_frames);
    let writer_done = CancellationToken::new();
    let lagging = CancellationToken::new();
    let in_flight = Arc::new(PushesInFlight::default());
    let order = AckOrder::new(in_flight.clone(), state.limits.outbound_queue_frames);
    let writer =
        tokio::spawn(write_loop(sink, out_receiver, order, writer_done.clone(), lagging.clone()));
    let (pushes, push_receiver) = mpsc::unbounded_channel::<PendingPush>();
    let replier = tokio::spawn(reply_loop(push_receiver, out.clone(), state.clone()));
    let mut session = Session {
        state,
        store_id,
        url_payload,
        out: out.clone(),
        lagging,
        backlog_budget: Arc::new(Semaphore::new(BACKLOG_BUDGET_BYTES)),
        pushes,
        in_flight,
        pulls: HashMap::new(),
    };

    // Created once: a fresh `cancelled()` future per frame would lock the token's mutex on every message.
    let shutdown = state.shutdown.cancelled();
    let writer_finished = writer_done.cancelled();
    tokio::pin!(shutdown, writer_finished);
    loop {
        let frame = tokio::select! {
            () = &mut shutdown => {
                let _ = out.send(Outbound::Close { code: CLOSE_SERVICE_RESTART, reason: "server shutting down".into() }).await;
                break;
            }
            () = &mut writer_finished => break,
            frame = stream.next() => frame,
        };
        let text = match frame {
            None | Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Text(text))) => text.to_string(),
            Some(Ok(Message::Binary(bytes))) => match String::from_utf8(bytes.to_vec()) {
                Ok(text) => text,
                Err(_) => {
                    let reason = "binary frame is not UTF-8 JSON".into();
                    let _ = out.send(Outbound::Close { code: CLOSE_INVALID_FRAME, reason }).await;
                    break;
                }
            },
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Err(error)) => {
                // axum wraps the tungstenite error; its `Capacity` variant is a message or frame over the limit.
                let error = error.into_inner();
                let too_big = matches!(
                    error.downcast_ref::<tungstenite_axum::Error>(),
                    Some(tungstenite_axum::Error::Capacity(_))
                );
                if too_big {
                    let reason =
                        format!("message exceeds {} bytes", state.limits.max_message_bytes);
                    tracing::info!(store_id, "closing connection: {reason}");
                    let _ = out.send(Outbound::Close { code: CLOSE_TOO_BIG, reason }).await;
                } else {
                    tracing::debug!(store_id, %error, "WebSocket read failed");
                }
                break;
            }
        };
        if !session.handle_text(&text).await {
            break;
        }
    }

    for (_, pull) in session.pulls.drain() {
        pull.abort();
    }
    drop(session);
    drop(out);
    // The replier finishes the pushes already submitted (they are durable or refused either way), then the writer
    // drains the queue and ends when the last sender is gone.
    let _ = replier.await;
    let _ = writer.await;
}

struct Session<'a> {
    state: &'a AppState,
    store_id: &'a str,
    url_payload: Option<Box<RawValue>>,
    out: mpsc::Sender<Outbound>,
    lagging: CancellationToken,
    /// Shared by this connection's pulls: see `pull::BACKLOG_BUDGET_BYTES`.
    backlog_budget: Arc<Semaphore>,
    pushes: mpsc::UnboundedSender<PendingPush>,
    in_flight: Arc<PushesInFlight>,
    pulls: HashMap<String, JoinHandle<()>>,
}

impl Session<'_> {
    /// Handles one frame; returns false when the connection must close.
    async fn handle_text(&mut self, text: &str) -> bool {
        let message = match decode_client_message(text) {
            Ok(message) => message,
            Err(error) => {
                tracing::info!(store_id = self.store_id, %error, "closing connection after an undecodable frame");
                let reason = truncate_reason(&error.to_string());
                let _ = self.out.send(Outbound::Close { code: CLOSE_INVALID_FRAME, reason }).await;
                return false;
            }
        };
        match message {
            ClientMessage::Ping => self.send(encode::PONG.to_owned()).await,
            ClientMessage::Ack { .. } | ClientMessage::Eof => true,
            ClientMessage::Interrupt { request_id } => {
                if let Some(pull) = self.pulls.remove(request_id.as_str()) {
                    pull.abort();
                }
                true
            }
            ClientMessage::Request { id, call: Err(error) } => {
                self.send(encode::exit_die(id.as_str(), &error.to_string())).await
            }
            ClientMessage::Request { id, call: Ok(call) } => {
                self.dispatch(id.as_str().to_owned(), call).await
            }
        }
    }

    async fn dispatch(&mut self, request_id: String, call: RpcCall) -> bool {
        if call.store_id() != self.store_id {
            let message =
                format!("storeId {:?} does not match this connection's storeId", call.store_id());
            return self.send(encode::exit_die(&request_id, &message)).await;
        }
        let payload_differs = match (call.sync_payload(), self.url_payload.as_deref()) {
            (None, _) => false,
            (Some(given), Some(known)) => given.get() != known.get(),
            (Some(_), None) => true,
        };
        if payload_differs
            && let Err(rejection) =
                self.state.auth.authorize(self.store_id, call.sync_payload(), None)
        {
            self.state.metrics.push_rejected(RejectReason::Unauthorized);
            let error = encode::unknown_error(&format!("unauthorized: {}", rejection.message));
            return self.send(encode::exit_fail(&request_id, &error)).await;
        }
        match call {
            RpcCall::WsPull(args) => {
                self.pulls.retain(|_, pull| !pull.is_finished());
                let job = PullJob {
                    storage: self.state.storage.clone(),
                    hubs: self.state.hubs.clone(),
                    metrics: self.state.metrics.clone(),
                    store_id: self.store_id.to_owned(),
                    request_id: request_id.clone(),
                    cursor: args.cursor.into_option(),
                    live: args.live,
                    out: self.out.clone(),
                    lagging: self.lagging.clone(),
                    backlog_budget: Some(self.backlog_budget.clone()),
                };
                if let Some(previous) = self.pulls.insert(request_id, tokio::spawn(run_pull(job))) {
                    previous.abort();
                }
                true
            }
            RpcCall::WsPush(args) => {
                if let Err(error) = validate_batch(&args.batch) {
                    self.state.metrics.push_rejected(RejectReason::InvalidBatch);
                    return self.send(encode::exit_die(&request_id, &error.to_string())).await;
                }
                // Registered before storage sees the push, so its echo cannot overtake its reply.
                let token = match (args.batch.first(), args.batch.last()) {
                    (Some(first), Some(last)) => {
                        Some(self.in_flight.register(first.seq_num.0, last.seq_num.0))
                    }
                    _ => None,
                };
                let pending = self.state.storage.append(self.store_id, args);
                self.pushes.send((request_id, token, pending)).is_ok()
            }
            other => {
                let message = format!("{} is only available over the HTTP transport", other.tag());
                self.send(encode::exit_die(&request_id, &message)).await
            }
        }
    }

    async fn send(&self, frame: String) -> bool {
        self.out.send(Outbound::Text(frame)).await.is_ok()
    }
}

/// Awaits push outcomes in submission order and sends their `Exit` frames.
async fn reply_loop(
    mut pushes: mpsc::UnboundedReceiver<PendingPush>,
    out: mpsc::Sender<Outbound>,
    state: AppState,
) {
    while let Some((request_id, token, pending)) = pushes.recv().await {
        let text = crate::push::push_reply(&request_id, pending.await, &state.metrics);
        let frame = match token {
            Some(push) => Outbound::PushReply { text, push },
            None => Outbound::Text(text),
        };
        if out.send(frame).await.is_err() {
            // The connection is gone; keep awaiting so the remaining pushes still finish, but stop sending.
            continue;
        }
    }
}

async fn write_loop<S>(
    mut sink: S,
    mut frames: mpsc::Receiver<Outbound>,
    mut order: AckOrder,
    done: CancellationToken,
    lagging: CancellationToken,
) where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    let lagging = lagging.cancelled();
    tokio::pin!(lagging);
    loop {
        let first = tokio::select! {
            biased;
            () = &mut lagging => Outbound::Close { code: CLOSE_LAGGING, reason: "subscriber lagging".into() },
            frame = frames.recv() => match frame {
                Some(frame) => frame,
                None => break,
            },
        };
        let mut next = Some(first);
        // Feed everything already queued, then flush once: fewer syscalls under fan-out.
        while let Some(frame) = next.take() {
            let ready = match frame {
                Outbound::Live { .. } => match order.live(frame) {
                    LiveDecision::Write(frame) => vec![frame],
                    LiveDecision::Held => Vec::new(),
                    LiveDecision::Overflow => vec![Outbound::Close {
                        code: CLOSE_LAGGING,
                        reason: "push replies overdue".into(),
                    }],
                },
                Outbound::PushReply { text, push } => {
                    let mut ready = vec![Outbound::Text(text)];
                    ready.extend(order.replied(push));
                    ready
                }
                other => vec![other],
            };
            for frame in ready {
                if !write_frame(&mut sink, frame).await {
                    done.cancel();
                    return;
                }
            }
            next = frames.try_recv().ok();
        }
        if !matches!(tokio::time::timeout(WRITE_TIMEOUT, sink.flush()).await, Ok(Ok(()))) {
            done.cancel();
            return;
        }
    }
    let _ = sink.close().await;
    done.cancel();
}

/// Writes one outbound item; false when the connection is finished (closed on purpose or broken).
async fn write_frame<S>(sink: &mut S, frame: Outbound) -> bool
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    match frame {
        Outbound::Text(text) | Outbound::PushReply { text, .. } => feed_text(sink, text).await,
        // The budget is released once the socket took the page (its write buffer holds at most about one frame).
        Outbound::Page { text, budget } => {
            let fed = feed_text(sink, text).await;
            drop(budget);
            fed
        }
        Outbound::Live { request_id, batch } => {
            for page in &batch.pages {
                if !feed_text(sink, encode::chunk(&request_id, &[page.json.as_str()])).await {
                    return false;
                }
            }
            true
        }
        Outbound::Close { code, reason } => {
            let close = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
            let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.send(close)).await;
            false
        }
    }
}

async fn feed_text<S>(sink: &mut S, text: String) -> bool
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, sink.feed(Message::Text(text.into()))).await,
        Ok(Ok(()))
    )
}

/// Close reasons are limited to 123 bytes by the WebSocket protocol.
fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}
