//! One WebSocket sync connection: reads client frames, runs pulls and pushes, writes replies.
//!
//! Three tasks cooperate per connection. The reader (this function's loop) decodes frames and answers `Ping` at
//! once. Pushes are submitted to storage in arrival order and their replies awaited in that order by a replier
//! task, so a client may pipeline pushes. Every outgoing frame goes through one bounded queue (`outbox`) drained by
//! a writer task (`writer`); a client too slow to drain it is disconnected rather than allowed to stall the others.
//!
//! With a push hook, a fourth task (`push_gate`) sits between the reader and storage: it asks the hook about
//! several pushes at once but submits them, or answers their refusal, in arrival order. With a pull hook, each pull
//! task asks it before reading anything; a refused pull ends with an `Exit` failure, even a live one (LiveStore
//! 0.4's client then gives up pulling: `onSyncError`), while a hook that cannot decide closes a live pull's
//! connection with 1013 so the client reconnects and asks again.
//!
//! What one connection may hold is bounded: pushes awaiting their commit (`limits.max_pushes_in_flight`, and twice
//! `max_message_bytes` in bytes; the reader stops reading beyond that, so TCP pushes back), open pulls
//! (`limits.max_pulls_per_connection`, one more closes with 1008), queued outbound bytes (`outbox`), and a message
//! being received (`http_server::guarded_io`). A credential with an expiry stops working at that instant: the
//! connection is closed with 1008 and pushes that arrive meanwhile are refused.
//!
//! The writer also keeps the reference server's order on the pusher's own socket: a push's `Exit` before the live
//! `Chunk` with the same events (`ack_order` says why LiveStore's client needs that).
//!
//! The session is generic over the socket's `Sink`/`Stream` halves so tests can drive it without a network.

mod ack_order;
mod push_gate;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::future::BoxFuture;
use futures_util::{Sink, Stream, StreamExt};
use livestore_proto::admission::validate_batch;
use livestore_proto::encode;
use livestore_proto::frame::{ClientMessage, decode_client_message};
use livestore_proto::rpc::RpcCall;
use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::ack_order::{AckOrder, PushesInFlight};
use crate::auth::{Authenticator, Identity, time_until, unix_now};
use crate::budget::Reservation;
use crate::error::ServerError;
use crate::hooks::Verdict;
use crate::http_server::{ConnectionWatch, IoFailure};
use crate::metrics::{LimitHit, RejectReason, ShedResource};
use crate::outbox::{CloseReason, CloseSignal, Outbound, Outbox};
use crate::pull::{PullJob, run_pull};
use crate::state::AppState;
use crate::storage::AppendOutcome;

/// What a submitted push holds until its reply is written: its slot and bytes on the connection, its memory budget.
struct PushHold {
    _slot: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
    _budget: Reservation,
}

/// A submitted push: its request id, its token in [`PushesInFlight`] (none for an empty batch), its outcome.
struct PendingPush {
    request_id: String,
    token: Option<u64>,
    outcome: PushOutcome,
    _hold: PushHold,
}

/// What becomes of a push: storage's answer, or the push hook's refusal (never written).
enum PushOutcome {
    Storage(BoxFuture<'static, Result<AppendOutcome, ServerError>>),
    /// The `UnknownError` to answer with.
    Refused(String),
}

/// The upgraded socket and what the upgrade request established.
pub(crate) struct Connection {
    pub(crate) store_id: String,
    pub(crate) url_payload: Option<Box<RawValue>>,
    /// Who the client is (its credential, the connect hook); its expiry ends the connection.
    pub(crate) identity: Identity,
    /// The socket's watchdogs (absent only when a test drives the session without the HTTP server).
    pub(crate) watch: Option<Arc<ConnectionWatch>>,
}

/// Serves an upgraded socket until either side closes it or the server shuts down.
pub(crate) async fn serve_socket(state: AppState, socket: WebSocket, connection: Connection) {
    let (sink, stream) = socket.split();
    if let Some(watch) = &connection.watch {
        watch.websocket_started();
    }
    state.metrics.websocket_connections.inc();
    tracing::debug!(store_id = connection.store_id, "WebSocket connected");
    run_session(&state, sink, stream, &connection).await;
    tracing::debug!(store_id = connection.store_id, "WebSocket closed");
    state.metrics.websocket_connections.dec();
}

async fn run_session<S, R>(state: &AppState, sink: S, mut stream: R, connection: &Connection)
where
    S: Sink<Message, Error = axum::Error> + Unpin + Send + 'static,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let limits = &state.limits;
    let (out, out_receiver) = Outbox::new(
        limits.outbound_queue_frames,
        Some(limits.outbound_queue_bytes),
        state.budget.clone(),
    );
    let writer_done = CancellationToken::new();
    let close = CloseSignal::default();
    let in_flight = Arc::new(PushesInFlight::default());
    let order = AckOrder::new(in_flight.clone(), limits.outbound_queue_frames);
    let write_timeout = Duration::from_secs(limits.write_timeout_seconds);
    let writer = tokio::spawn(writer::write_loop(
        sink,
        out_receiver,
        order,
        writer_done.clone(),
        close.clone(),
        write_timeout,
    ));
    let (pushes, push_receiver) = tokio::sync::mpsc::unbounded_channel::<PendingPush>();
    let replier = tokio::spawn(reply_loop(push_receiver, out.clone(), state.clone()));
    let identity = Arc::new(connection.identity.clone());
    // The gate ends once the session drops its sender, after answering what it holds; the replier, which also waits
    // for the gate's sender, ends after it.
    let gate = state.auth.hooks().wants_push().then(|| {
        push_gate::start(
            state.clone(),
            Arc::from(connection.store_id.as_str()),
            identity.clone(),
            pushes.clone(),
            limits.max_pushes_in_flight,
        )
    });
    let mut session = Session {
        state,
        connection,
        identity,
        gate,
        out: out.clone(),
        close: close.clone(),
        push_slots: Arc::new(Semaphore::new(limits.max_pushes_in_flight)),
        push_bytes: Arc::new(Semaphore::new(limits.max_message_bytes * 2)),
        pushes,
        in_flight,
        pulls: HashMap::new(),
    };

    // Created once: a fresh `cancelled()` future per frame would lock the token's mutex on every message.
    let shutdown = state.shutdown.cancelled();
    let writer_finished = writer_done.cancelled();
    let expiry = expiry_timer(connection.identity.expires_at);
    tokio::pin!(shutdown, writer_finished, expiry);
    loop {
        let frame = tokio::select! {
            () = &mut shutdown => {
                let _ = out.send(Outbound::Close(CloseReason::ServerShutdown)).await;
                break;
            }
            () = &mut writer_finished => break,
            () = &mut expiry => {
                state.metrics.limit_hit(LimitHit::CredentialExpired);
                tracing::info!(store_id = connection.store_id, "closing connection: its credential expired");
                close.close(CloseReason::CredentialExpired);
                break;
            }
            frame = stream.next() => frame,
        };
        if matches!(frame, Some(Ok(_)))
            && let Some(watch) = &connection.watch
        {
            watch.message_completed();
        }
        let text = match frame {
            None | Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Text(text))) => text.to_string(),
            Some(Ok(Message::Binary(bytes))) => match String::from_utf8(bytes.to_vec()) {
                Ok(text) => text,
                Err(_) => {
                    let reason = CloseReason::InvalidFrame("binary frame is not UTF-8 JSON".into());
                    let _ = out.send(Outbound::Close(reason)).await;
                    break;
                }
            },
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Err(error)) => {
                read_failed(state, connection, &close, error);
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

/// Resolves when the credential expires (never for credentials without an expiry).
async fn expiry_timer(expires_at: Option<u64>) {
    match expires_at {
        Some(expires_at) => tokio::time::sleep(time_until(expires_at)).await,
        None => std::future::pending().await,
    }
}

/// Picks the close for a failed read: a message over the size limit, one not finished in time, no budget for it.
fn read_failed(state: &AppState, connection: &Connection, close: &CloseSignal, error: axum::Error) {
    let failure = connection.watch.as_ref().and_then(|watch| watch.failure());
    let error = error.into_inner();
    // axum wraps the tungstenite error; its `Capacity` variant is a message or frame over the limit.
    let too_big = matches!(
        error.downcast_ref::<tungstenite_axum::Error>(),
        Some(tungstenite_axum::Error::Capacity(_))
    );
    let reason = match failure {
        Some(IoFailure::MessageTimeout) => CloseReason::MessageTimeout,
        Some(IoFailure::Budget) => CloseReason::Overloaded,
        Some(IoFailure::WriteTimeout) => return,
        None if too_big => {
            state.metrics.limit_hit(LimitHit::MessageTooLarge);
            CloseReason::MessageTooBig(state.limits.max_message_bytes)
        }
        None => {
            tracing::debug!(store_id = connection.store_id, %error, "WebSocket read failed");
            return;
        }
    };
    tracing::info!(store_id = connection.store_id, "closing connection: {}", reason.text());
    close.close(reason);
}

struct Session<'a> {
    state: &'a AppState,
    connection: &'a Connection,
    /// The connection's identity, for the hooks.
    identity: Arc<Identity>,
    /// Where pushes go when there is a push hook (`push_gate`); without one they go straight to storage.
    gate: Option<tokio::sync::mpsc::UnboundedSender<push_gate::GatedPush>>,
    out: Outbox,
    close: CloseSignal,
    push_slots: Arc<Semaphore>,
    push_bytes: Arc<Semaphore>,
    pushes: tokio::sync::mpsc::UnboundedSender<PendingPush>,
    in_flight: Arc<PushesInFlight>,
    pulls: HashMap<String, JoinHandle<()>>,
}

impl Session<'_> {
    /// Handles one frame; returns false when the connection must close.
    async fn handle_text(&mut self, text: &str) -> bool {
        let message = match decode_client_message(text) {
            Ok(message) => message,
            Err(error) => {
                tracing::info!(store_id = self.connection.store_id, %error, "closing connection after an undecodable frame");
                let reason = CloseReason::InvalidFrame(error.to_string());
                let _ = self.out.send(Outbound::Close(reason)).await;
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
                self.dispatch(id.as_str().to_owned(), call, text.len()).await
            }
        }
    }

    async fn dispatch(&mut self, request_id: String, call: RpcCall, frame_bytes: usize) -> bool {
        let store_id = self.connection.store_id.as_str();
        if call.store_id() != store_id {
            let message =
                format!("storeId {:?} does not match this connection's storeId", call.store_id());
            return self.send(encode::exit_die(&request_id, &message)).await;
        }
        if self.connection.identity.expires_at.is_some_and(|expires_at| unix_now() >= expires_at) {
            self.state.metrics.push_rejected(RejectReason::Unauthorized);
            let error = encode::unknown_error("unauthorized: credentials expired");
            let _ = self.send(encode::exit_fail(&request_id, &error)).await;
            self.close.close(CloseReason::CredentialExpired);
            return false;
        }
        let payload_differs = match (call.sync_payload(), self.connection.url_payload.as_deref()) {
            (None, _) => false,
            (Some(given), Some(known)) => given.get() != known.get(),
            (Some(_), None) => true,
        };
        // A request may carry a payload of its own; a credential in it must be valid for this store too.
        if payload_differs
            && let Err(rejection) = self.check_request_credential(call.sync_payload()).await
        {
            self.state.metrics.push_rejected(RejectReason::Unauthorized);
            let error = encode::unknown_error(&format!("unauthorized: {}", rejection.message));
            return self.send(encode::exit_fail(&request_id, &error)).await;
        }
        match call {
            RpcCall::WsPull(args) => {
                self.pulls.retain(|_, pull| !pull.is_finished());
                let limit = self.state.limits.max_pulls_per_connection;
                if self.pulls.len() >= limit && !self.pulls.contains_key(&request_id) {
                    self.state.metrics.limit_hit(LimitHit::TooManyPulls);
                    let _ = self.out.send(Outbound::Close(CloseReason::TooManyPulls(limit))).await;
                    return false;
                }
                let job = PullJob {
                    storage: self.state.storage.clone(),
                    hubs: self.state.hubs.clone(),
                    metrics: self.state.metrics.clone(),
                    store_id: store_id.to_owned(),
                    request_id: request_id.clone(),
                    cursor: args.cursor.into_option(),
                    live: args.live,
                    out: self.out.clone(),
                    close: self.close.clone(),
                    read_slots: self.state.read_slots.clone(),
                };
                let task = if self.state.auth.hooks().wants_pull() {
                    tokio::spawn(pull_after_hook(self.state.clone(), self.identity.clone(), job))
                } else {
                    tokio::spawn(run_pull(job))
                };
                if let Some(previous) = self.pulls.insert(request_id, task) {
                    previous.abort();
                }
                true
            }
            RpcCall::WsPush(args) => {
                if let Err(error) = validate_batch(&args.batch) {
                    self.state.metrics.push_rejected(RejectReason::InvalidBatch);
                    return self.send(encode::exit_die(&request_id, &error.to_string())).await;
                }
                let Some(hold) = self.hold_push(frame_bytes).await else {
                    self.state.metrics.push_rejected(RejectReason::Overloaded);
                    let error = encode::unknown_error("server at its memory budget; retry later");
                    return self.send(encode::exit_fail(&request_id, &error)).await;
                };
                // Registered before storage sees the push, so its echo cannot overtake its reply.
                let token = match (args.batch.first(), args.batch.last()) {
                    (Some(first), Some(last)) => {
                        Some(self.in_flight.register(first.seq_num.0, last.seq_num.0))
                    }
                    _ => None,
                };
                if let Some(gate) = &self.gate {
                    let push = push_gate::GatedPush { request_id, token, args, hold };
                    return gate.send(push).is_ok();
                }
                let outcome = PushOutcome::Storage(self.state.storage.append(store_id, args));
                self.pushes.send(PendingPush { request_id, token, outcome, _hold: hold }).is_ok()
            }
            other => {
                let message = format!("{} is only available over the HTTP transport", other.tag());
                self.send(encode::exit_die(&request_id, &message)).await
            }
        }
    }

    /// Checks the credential a request's own payload carries (none: the connection's identity stands).
    async fn check_request_credential(
        &self,
        payload: Option<&RawValue>,
    ) -> Result<(), crate::auth::AuthRejection> {
        if !self.state.auth.is_enabled() {
            return Ok(());
        }
        match Authenticator::credential(payload, None)? {
            Some(token) => {
                self.state.auth.authorize_token(&self.connection.store_id, &token).await.map(|_| ())
            }
            None => Ok(()),
        }
    }

    /// Waits for a push slot and the push's bytes on this connection (backpressure: the reader stops reading), then
    /// reserves the bytes in the memory budget; `None` when the budget has no room.
    async fn hold_push(&self, frame_bytes: usize) -> Option<PushHold> {
        let slot = self.push_slots.clone().acquire_owned().await.ok()?;
        let max = self.state.limits.max_message_bytes * 2;
        let permits = u32::try_from(frame_bytes.clamp(1, max)).unwrap_or(u32::MAX);
        let bytes = self.push_bytes.clone().acquire_many_owned(permits).await.ok()?;
        let budget = self.state.budget.try_reserve(frame_bytes as u64, ShedResource::Push)?;
        Some(PushHold { _slot: slot, _bytes: bytes, _budget: budget })
    }

    async fn send(&self, frame: String) -> bool {
        self.out.send(Outbound::Text(frame)).await.is_ok()
    }
}

/// Awaits push outcomes in submission order and sends their `Exit` frames.
async fn reply_loop(
    mut pushes: tokio::sync::mpsc::UnboundedReceiver<PendingPush>,
    out: Outbox,
    state: AppState,
) {
    while let Some(PendingPush { request_id, token, outcome, _hold }) = pushes.recv().await {
        let text = match outcome {
            PushOutcome::Storage(outcome) => {
                crate::push::push_reply(&request_id, outcome.await, &state.metrics)
            }
            PushOutcome::Refused(error) => encode::exit_fail(&request_id, &error),
        };
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

/// Asks the pull hook, then runs the pull it allowed. A refusal ends the pull with an `Exit` failure (live or not:
/// it has sent nothing yet); a hook that cannot decide closes a live pull's connection with 1013 instead, so the
/// client reconnects and asks again rather than give up pulling.
async fn pull_after_hook(state: AppState, identity: Arc<Identity>, job: PullJob) {
    let after = job.cursor.as_ref().map(|cursor| cursor.event_sequence_number.0);
    let verdict =
        crate::pull::ask_pull_hook(&state, &job.store_id, &identity, after, job.live).await;
    let error = match verdict {
        Verdict::Proceed => return run_pull(job).await,
        Verdict::Undecided(_) if job.live => {
            let _ = job.out.send(Outbound::Close(CloseReason::HookUnavailable)).await;
            return;
        }
        Verdict::Refused(error) | Verdict::Undecided(error) => error,
    };
    let _ = job.out.send(Outbound::Text(encode::exit_fail(&job.request_id, &error))).await;
}
