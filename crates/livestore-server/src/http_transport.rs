//! The HTTP transport: `POST ?storeId=…&transport=http` with one RPC request as the body, answered by a JSON array
//! of every message for that request (spec §6.9).
//!
//! The credential (the URL's `payload` or an `Authorization: Bearer` header, as sync-cf clients send it) is checked
//! before the body is read, so a client without one cannot make the server read and hold a body; the body's own RPC
//! `payload` is not consulted for credentials. The body must arrive within `limits.body_read_timeout_seconds` (408)
//! and fit `limits.max_message_bytes` (413).
//!
//! Pull responses are streamed: the array is written page by page as the backlog is read, so a large backlog never
//! sits in memory whole; a client that stops reading is dropped after the write timeout (`http_server`). HTTP pulls
//! are never live; the client polls.

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use livestore_proto::admission::validate_batch;
use livestore_proto::encode;
use livestore_proto::frame::{ClientMessage, decode_client_message};
use livestore_proto::rpc::RpcCall;
use tokio::sync::mpsc;

use crate::http_error::HttpError;
use crate::identity::Identity;
use crate::metrics::{LimitHit, RejectReason};
use crate::outbox::{CloseSignal, Outbound, Outbox};
use crate::pull::{PullJob, run_pull};
use crate::state::AppState;

/// Frames and bytes an HTTP pull may have queued ahead of the response stream: two pages, so the next one is ready
/// when the socket takes the current one.
const HTTP_PULL_QUEUE_FRAMES: usize = 8;
const HTTP_PULL_QUEUE_BYTES: usize = 2 * 1024 * 1024;

/// Handles one HTTP-transport request.
/// The request was admitted already (`app`): its credential, and the connect hook, decided before its body is read.
pub(crate) async fn handle(
    state: AppState,
    store_id: String,
    identity: Identity,
    body: Body,
) -> Response {
    state.metrics.http_requests.inc();
    let bytes = match read_body(&state, body).await {
        Ok(bytes) => bytes,
        Err(error) => return error.into_response(),
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return HttpError::BodyNotUtf8.into_response();
    };
    let (request_id, call) = match decode_client_message(text) {
        Ok(ClientMessage::Request { id, call }) => (id.as_str().to_owned(), call),
        Ok(_) => {
            return HttpError::NotOneRequest.into_response();
        }
        Err(error) => return HttpError::MalformedMessage(error).into_response(),
    };
    let call = match call {
        Ok(call) => call,
        Err(error) => return json_array(&[encode::exit_die(&request_id, &error.to_string())]),
    };
    if call.store_id() != store_id {
        let message = format!("storeId {:?} does not match the URL's storeId", call.store_id());
        return json_array(&[encode::exit_die(&request_id, &message)]);
    }
    match call {
        RpcCall::HttpPing(_) => {
            json_array(&[encode::exit_success_value(&request_id, encode::HTTP_PONG_VALUE)])
        }
        RpcCall::HttpPush(args) => {
            if let Err(error) = validate_batch(&args.batch) {
                state.metrics.push_rejected(RejectReason::InvalidBatch);
                return json_array(&[encode::exit_die(&request_id, &error.to_string())]);
            }
            if let Some(refusal) =
                crate::push::ask_push_hook(&state, &store_id, &identity, &args.batch)
                    .await
                    .refusal()
            {
                return json_array(&[encode::exit_fail(&request_id, &refusal)]);
            }
            let result = state.storage.append(&store_id, args).await;
            json_array(&[crate::push::push_reply(&request_id, result, &state.metrics)])
        }
        RpcCall::HttpPull(args) => {
            let cursor = args.cursor.into_option();
            let after = cursor.as_ref().map(|cursor| cursor.event_sequence_number.0);
            if let Some(refusal) =
                crate::pull::ask_pull_hook(&state, &store_id, &identity, after, false)
                    .await
                    .refusal()
            {
                return json_array(&[encode::exit_fail(&request_id, &refusal)]);
            }
            // The response stream takes frames from a short queue only as fast as the client reads.
            let (out, frames) = Outbox::new(
                HTTP_PULL_QUEUE_FRAMES,
                Some(HTTP_PULL_QUEUE_BYTES),
                state.budget.clone(),
            );
            let close = CloseSignal::default();
            let job = PullJob {
                storage: state.storage.clone(),
                hubs: state.hubs.clone(),
                metrics: state.metrics.clone(),
                store_id,
                request_id,
                cursor,
                live: false,
                out,
                close: close.clone(),
                read_slots: state.read_slots.clone(),
            };
            tokio::spawn(run_pull(job));
            streamed_json_array(frames, close)
        }
        other => {
            let message = format!("{} is only available over the WebSocket transport", other.tag());
            json_array(&[encode::exit_die(&request_id, &message)])
        }
    }
}

/// Reads the whole body within the size limit and the body timeout.
async fn read_body(state: &AppState, body: Body) -> Result<Bytes, HttpError> {
    let limit = state.limits.max_message_bytes;
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            state.metrics.limit_hit(LimitHit::BodyTooLarge);
            Err(HttpError::BodyTooLarge { limit })
        }
        Err(error) if crate::body_guard::is_body_timeout(error.as_ref()) => {
            Err(HttpError::BodyTimeout { seconds: state.limits.body_read_timeout_seconds })
        }
        Err(_) => Err(HttpError::BodyEndedEarly),
    }
}

fn json_array(frames: &[String]) -> Response {
    let body = format!("[{}]", frames.join(","));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The pull's frames as a streamed JSON array. A pull stopped for lack of memory budget ends the body with an
/// error instead of `]`, so the client sees a broken response (and retries), never a complete-looking one without
/// its `Exit`.
fn streamed_json_array(frames: mpsc::Receiver<Outbound>, close: CloseSignal) -> Response {
    let mut first = true;
    let frames = futures_util::stream::unfold(frames, |mut receiver| async move {
        receiver.recv().await.map(|frame| (frame, receiver))
    });
    let parts = frames.filter_map(move |frame| {
        let part = match frame {
            Outbound::Text(text)
            | Outbound::Page { text, .. }
            | Outbound::PushReply { text, .. } => {
                let separator = if first { "[" } else { "," };
                first = false;
                Some(Ok::<Bytes, std::io::Error>(Bytes::from(format!("{separator}{text}"))))
            }
            // A non-live pull never asks to close; there is no socket to close on HTTP anyway.
            Outbound::Close { .. } | Outbound::Live { .. } => None,
        };
        std::future::ready(part)
    });
    let closing = futures_util::stream::once(async move {
        if close.is_requested() {
            Err(std::io::Error::other("pull stopped: the server is at its memory budget"))
        } else {
            Ok(Bytes::from_static(b"]"))
        }
    });
    // `run_pull` always sends at least one frame (a page or an Exit), so the array is opened before it is closed.
    ([(header::CONTENT_TYPE, "application/json")], Body::from_stream(parts.chain(closing)))
        .into_response()
}
