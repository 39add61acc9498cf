//! The HTTP transport: `POST ?storeId=…&transport=http` with one RPC request as the body, answered by a JSON array
//! of every message for that request (spec §6.9).
//!
//! Pull responses are streamed: the array is written page by page as the backlog is read, so a large backlog never
//! sits in memory whole. HTTP pulls are never live; the client polls.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use livestore_proto::admission::validate_batch;
use livestore_proto::encode;
use livestore_proto::frame::{ClientMessage, decode_client_message};
use livestore_proto::rpc::RpcCall;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::app::{AppState, rejection_response};
use crate::metrics::RejectReason;
use crate::pull::{Outbound, PullJob, run_pull};

/// Handles one HTTP-transport request.
pub(crate) async fn handle(
    state: AppState,
    store_id: String,
    url_payload: Option<Box<RawValue>>,
    bearer: Option<String>,
    body: Body,
) -> Response {
    state.metrics.http_requests.inc();
    let Ok(bytes) = axum::body::to_bytes(body, state.limits.max_message_bytes).await else {
        let message = format!("request body exceeds {} bytes", state.limits.max_message_bytes);
        return (StatusCode::PAYLOAD_TOO_LARGE, message).into_response();
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return (StatusCode::BAD_REQUEST, "request body is not UTF-8").into_response();
    };
    let (request_id, call) = match decode_client_message(text) {
        Ok(ClientMessage::Request { id, call }) => (id.as_str().to_owned(), call),
        Ok(_) => {
            return (StatusCode::BAD_REQUEST, "the HTTP transport expects one Request message")
                .into_response();
        }
        Err(error) => return (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    };
    let call = match call {
        Ok(call) => call,
        Err(error) => return json_array(&[encode::exit_die(&request_id, &error.to_string())]),
    };
    if call.store_id() != store_id {
        let message = format!("storeId {:?} does not match the URL's storeId", call.store_id());
        return json_array(&[encode::exit_die(&request_id, &message)]);
    }
    let payload = url_payload.as_deref().or(call.sync_payload());
    if let Err(rejection) = state.auth.authorize(&store_id, payload, bearer.as_deref()) {
        state.metrics.push_rejected(RejectReason::Unauthorized);
        return rejection_response(&rejection);
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
            let result = state.storage.append(&store_id, args).await;
            json_array(&[crate::push::push_reply(&request_id, result, &state.metrics)])
        }
        RpcCall::HttpPull(args) => {
            let (out, frames) = mpsc::channel(8);
            let job = PullJob {
                storage: state.storage.clone(),
                hubs: state.hubs.clone(),
                metrics: state.metrics.clone(),
                store_id,
                request_id,
                cursor: args.cursor.into_option(),
                live: false,
                out,
                lagging: tokio_util::sync::CancellationToken::new(),
                // The response stream pulls from an 8-frame channel only as fast as the client reads.
                backlog_budget: None,
            };
            tokio::spawn(run_pull(job));
            streamed_json_array(frames)
        }
        other => {
            let message = format!("{} is only available over the WebSocket transport", other.tag());
            json_array(&[encode::exit_die(&request_id, &message)])
        }
    }
}

fn json_array(frames: &[String]) -> Response {
    let body = format!("[{}]", frames.join(","));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn streamed_json_array(frames: mpsc::Receiver<Outbound>) -> Response {
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
                Some(Ok::<Bytes, Infallible>(Bytes::from(format!("{separator}{text}"))))
            }
            // A non-live pull never asks to close; there is no socket to close on HTTP anyway.
            Outbound::Close { .. } | Outbound::Live { .. } => None,
        };
        std::future::ready(part)
    });
    let closing =
        futures_util::stream::once(async { Ok::<Bytes, Infallible>(Bytes::from_static(b"]")) });
    // `run_pull` always sends at least one frame (a page or an Exit), so the array is opened before it is closed.
    ([(header::CONTENT_TYPE, "application/json")], Body::from_stream(parts.chain(closing)))
        .into_response()
}
