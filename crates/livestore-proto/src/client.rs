//! The client side of the protocol: building requests and the sync URL, decoding server messages and pull pages.
//!
//! Used by the Rust client's sync driver. Like the rest of this crate it does no IO; every decode failure is a
//! [`ProtoError`], so a misbehaving server can make a client reconnect but never crash it.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::ProtoError;
use crate::event::EncodedEvent;
use crate::rpc::EffectOption;

/// The client keep-alive frame; sent every 10 s, answered by `Pong`.
pub const PING: &str = r#"{"_tag":"Ping"}"#;

/// Characters `encodeURIComponent` leaves alone: alphanumerics and `-_.!~*'()`.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// The WebSocket URL for a store: `base?storeId=…&transport=ws[&payload=<double-encoded JSON>]`.
///
/// `http(s)://` bases are turned into `ws(s)://`. The payload is encoded twice, as the JavaScript client does
/// (`encodeURIComponent` of the JSON, then query encoding), so servers that decode twice read it back.
pub fn sync_url(base: &str, store_id: &str, payload_json: Option<&str>) -> String {
    let base = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        base.to_owned()
    };
    // `ws://host:port?query` has an empty path, which some HTTP stacks refuse; use `/`.
    let authority_start = base.find("://").map_or(0, |idx| idx + 3);
    let base = if base[authority_start..].contains(['/', '?']) { base } else { format!("{base}/") };
    let separator = if base.contains('?') { '&' } else { '?' };
    let mut url =
        format!("{base}{separator}storeId={}", utf8_percent_encode(store_id, URI_COMPONENT));
    if let Some(payload) = payload_json {
        let once = utf8_percent_encode(payload, URI_COMPONENT).to_string();
        url.push_str("&payload=");
        url.push_str(&utf8_percent_encode(&once, URI_COMPONENT).to_string());
    }
    url.push_str("&transport=ws");
    url
}

#[derive(Serialize)]
struct Request<'a, P> {
    #[serde(rename = "_tag")]
    kind: &'static str,
    id: &'a str,
    tag: &'static str,
    payload: P,
    headers: [(); 0],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CursorValue<'a> {
    backend_id: &'a str,
    event_sequence_number: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PullPayload<'a> {
    store_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a RawValue>,
    live: bool,
    cursor: EffectOption<CursorValue<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PushPayload<'a> {
    store_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a RawValue>,
    batch: &'a [EncodedEvent],
    backend_id: EffectOption<&'a str>,
}

/// A `SyncWsRpc.Pull` request. `cursor` is `(backendId, last global seqNum)`; `None` pulls from the start.
pub fn pull_request(
    id: &str,
    store_id: &str,
    sync_payload: Option<&RawValue>,
    live: bool,
    cursor: Option<(&str, u64)>,
) -> String {
    let cursor = match cursor {
        Some((backend_id, event_sequence_number)) => {
            EffectOption::Some { value: CursorValue { backend_id, event_sequence_number } }
        }
        None => EffectOption::None,
    };
    let payload = PullPayload { store_id, payload: sync_payload, live, cursor };
    encode_request(id, "SyncWsRpc.Pull", payload)
}

/// A `SyncWsRpc.Push` request for a contiguous batch chained from the server's head.
pub fn push_request(
    id: &str,
    store_id: &str,
    sync_payload: Option<&RawValue>,
    batch: &[EncodedEvent],
    backend_id: Option<&str>,
) -> String {
    let backend_id = backend_id.map_or(EffectOption::None, |value| EffectOption::Some { value });
    encode_request(
        id,
        "SyncWsRpc.Push",
        PushPayload { store_id, payload: sync_payload, batch, backend_id },
    )
}

/// The `Ack` a client sends after consuming a stream chunk.
pub fn ack(request_id: &str) -> String {
    serde_json::json!({ "_tag": "Ack", "requestId": request_id }).to_string()
}

/// The `Interrupt` that cancels a request (e.g. the live pull at shutdown).
pub fn interrupt(request_id: &str) -> String {
    serde_json::json!({ "_tag": "Interrupt", "requestId": request_id }).to_string()
}

fn encode_request<P: Serialize>(id: &str, tag: &'static str, payload: P) -> String {
    let request = Request { kind: "Request", id, tag, payload, headers: [] };
    serde_json::to_string(&request).expect("requests hold only strings, numbers and raw JSON")
}

/// A decoded server → client message.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerMessage {
    /// Stream elements (for Pull: encoded `PullResponse`s) of a request.
    Chunk {
        /// The request the chunk belongs to.
        request_id: String,
        /// The elements, still encoded; decode pull pages with [`decode_pull_response`].
        values: Vec<Box<RawValue>>,
    },
    /// The end of a request.
    Exit {
        /// The finished request.
        request_id: String,
        /// Success or the failure it ended with.
        result: Result<(), RpcFailure>,
    },
    /// Answer to a `Ping`.
    Pong,
    /// A connection-level defect; every in-flight request failed.
    Defect(String),
}

/// Why a request failed, by the error `_tag` the client branches on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RpcFailure {
    /// The push's parent is not the server's head: pull, rebase, push again.
    ServerAhead {
        /// The server's head (sync-cf) or head + 1 (mock).
        minimum_expected: u64,
        /// What the client sent.
        provided: u64,
    },
    /// The server's log is a different one than the client synced with.
    BackendIdMismatch {
        /// The server's id.
        expected: String,
        /// The id the client sent.
        received: String,
    },
    /// A typed `UnknownError`; pushes are retried.
    Unknown(String),
    /// A defect (`Die`), interruption or any other cause.
    Other(String),
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "_tag")]
    kind: String,
    #[serde(default, rename = "requestId")]
    request_id: Option<String>,
    #[serde(default)]
    values: Option<Vec<Box<RawValue>>>,
    #[serde(default)]
    exit: Option<serde_json::Value>,
    #[serde(default)]
    defect: Option<serde_json::Value>,
}

/// Decodes one server frame.
pub fn decode_server_message(frame: &str) -> Result<ServerMessage, ProtoError> {
    crate::json::check_depth(frame, crate::json::MAX_JSON_DEPTH)?;
    let envelope: Envelope = serde_json::from_str(frame).map_err(ProtoError::MalformedFrame)?;
    let request_id = |message: &'static str| {
        envelope.request_id.clone().ok_or(ProtoError::MissingField { message, field: "requestId" })
    };
    match envelope.kind.as_str() {
        "Chunk" => Ok(ServerMessage::Chunk {
            request_id: request_id("Chunk")?,
            values: envelope
                .values
                .ok_or(ProtoError::MissingField { message: "Chunk", field: "values" })?,
        }),
        "Exit" => {
            let request_id = request_id("Exit")?;
            let exit =
                envelope.exit.ok_or(ProtoError::MissingField { message: "Exit", field: "exit" })?;
            Ok(ServerMessage::Exit { request_id, result: decode_exit(&exit) })
        }
        "Pong" => Ok(ServerMessage::Pong),
        "Defect" => Ok(ServerMessage::Defect(
            envelope.defect.map(|defect| defect.to_string()).unwrap_or_default(),
        )),
        other => Err(ProtoError::UnknownMessageTag(crate::error::excerpt(other))),
    }
}

fn decode_exit(exit: &serde_json::Value) -> Result<(), RpcFailure> {
    if exit.get("_tag").and_then(|tag| tag.as_str()) == Some("Success") {
        return Ok(());
    }
    let cause = exit.get("cause").cloned().unwrap_or_default();
    let Some(error) = find_fail_error(&cause) else {
        return Err(RpcFailure::Other(cause.to_string()));
    };
    let text =
        |key: &str| error.get(key).and_then(|value| value.as_str()).unwrap_or_default().to_owned();
    let number = |key: &str| error.get(key).and_then(serde_json::Value::as_u64).unwrap_or_default();
    Err(match error.get("_tag").and_then(|tag| tag.as_str()) {
        Some("ServerAheadError") => RpcFailure::ServerAhead {
            minimum_expected: number("minimumExpectedNum"),
            provided: number("providedNum"),
        },
        Some("BackendIdMismatchError") => {
            RpcFailure::BackendIdMismatch { expected: text("expected"), received: text("received") }
        }
        Some("UnknownError") => RpcFailure::Unknown(error.to_string()),
        _ => RpcFailure::Other(error.to_string()),
    })
}

/// Finds the first `Fail` error in a cause tree (`Sequential`/`Parallel` nest causes).
fn find_fail_error(cause: &serde_json::Value) -> Option<&serde_json::Value> {
    match cause.get("_tag").and_then(|tag| tag.as_str())? {
        "Fail" => cause.get("error"),
        "Sequential" | "Parallel" => cause
            .get("left")
            .and_then(find_fail_error)
            .or_else(|| cause.get("right").and_then(find_fail_error)),
        _ => None,
    }
}

/// `PullResponse.pageInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "_tag")]
pub enum PageInfo {
    /// More events may follow.
    MoreUnknown,
    /// This many events follow.
    MoreKnown {
        /// Events still to come in this backlog.
        remaining: u64,
    },
    /// The last page of a backlog (and every live page).
    NoMore,
}

/// One item of a pull page.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullItem {
    /// The event.
    pub event_encoded: EncodedEvent,
    /// The backend's `Option<SyncMetadata>`, kept verbatim.
    pub metadata: Box<RawValue>,
}

/// A decoded `PullResponse`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullResponse {
    /// Events after the cursor, ascending.
    pub batch: Vec<PullItem>,
    /// Whether more of the backlog follows.
    pub page_info: PageInfo,
    /// The server's log identity.
    pub backend_id: String,
}

/// Decodes one element of a pull `Chunk`.
pub fn decode_pull_response(value: &RawValue) -> Result<PullResponse, ProtoError> {
    let mut deserializer = serde_json::Deserializer::from_str(value.get());
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        ProtoError::InvalidPayload {
            tag: "PullResponse",
            path: error.path().to_string(),
            source: error.into_inner(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_gets_a_path() {
        assert_eq!(sync_url("ws://h:1", "s", None), "ws://h:1/?storeId=s&transport=ws");
        assert_eq!(sync_url("ws://h:1/x?a=b", "s", None), "ws://h:1/x?a=b&storeId=s&transport=ws");
    }

    #[test]
    fn url_double_encodes_the_payload() {
        let url = sync_url(
            "http://127.0.0.1:8787/sync",
            "store-1",
            Some(r#"{"authToken":"secret A&B=c"}"#),
        );
        assert_eq!(
            url,
            "ws://127.0.0.1:8787/sync?storeId=store-1&payload=%257B%2522authToken%2522%253A%2522secret%2520A%2526B%253Dc%2522%257D&transport=ws"
        );
        let query_value = url.split("payload=").nth(1).unwrap().split('&').next().unwrap();
        let once = percent_encoding::percent_decode_str(query_value).decode_utf8().unwrap();
        let payload = crate::url::decode_url_payload(&once).unwrap();
        assert_eq!(payload.get(), r#"{"authToken":"secret A&B=c"}"#);
    }

    #[test]
    fn requests_decode_on_the_server_side() {
        let payload = RawValue::from_string(r#"{"authToken":"t"}"#.to_owned()).unwrap();
        let frame = pull_request("0", "s", Some(&payload), true, Some(("b1", 7)));
        let crate::frame::ClientMessage::Request {
            call: Ok(crate::rpc::RpcCall::WsPull(args)),
            ..
        } = crate::frame::decode_client_message(&frame).unwrap()
        else {
            panic!("{frame}")
        };
        assert!(args.live);
        assert_eq!(args.cursor.into_option().unwrap().event_sequence_number.0, 7);
        let event: EncodedEvent = serde_json::from_str(
            r#"{"name":"v1.A","args":{"id":"x"},"seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"static"}"#,
        )
        .unwrap();
        let frame = push_request("1", "s", None, std::slice::from_ref(&event), None);
        assert!(
            !frame.contains("\"payload\":{\"storeId\":\"s\",\"payload\""),
            "no sync payload key when absent"
        );
        let crate::frame::ClientMessage::Request {
            call: Ok(crate::rpc::RpcCall::WsPush(args)),
            ..
        } = crate::frame::decode_client_message(&frame).unwrap()
        else {
            panic!("{frame}")
        };
        assert_eq!(args.batch, vec![event]);
    }

    #[test]
    fn server_frames_decode() {
        let ahead = crate::encode::exit_fail("5", &crate::encode::server_ahead_error(3, 0));
        let ServerMessage::Exit { request_id, result } = decode_server_message(&ahead).unwrap()
        else {
            panic!()
        };
        assert_eq!(request_id, "5");
        assert_eq!(result, Err(RpcFailure::ServerAhead { minimum_expected: 3, provided: 0 }));
        let mismatch =
            crate::encode::exit_fail("1", &crate::encode::backend_id_mismatch_error("a", "b"));
        assert!(matches!(
            decode_server_message(&mismatch).unwrap(),
            ServerMessage::Exit { result: Err(RpcFailure::BackendIdMismatch { .. }), .. }
        ));
        let ok = crate::encode::exit_success_value("1", "{}");
        assert!(matches!(
            decode_server_message(&ok).unwrap(),
            ServerMessage::Exit { result: Ok(()), .. }
        ));
        let page = r#"{"batch":[{"eventEncoded":{"name":"a","args":{},"seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s"},"metadata":{"_tag":"None"}}],"pageInfo":{"_tag":"NoMore"},"backendId":"b"}"#;
        let chunk = crate::encode::chunk("0", &[page]);
        let ServerMessage::Chunk { values, .. } = decode_server_message(&chunk).unwrap() else {
            panic!()
        };
        let response = decode_pull_response(&values[0]).unwrap();
        assert_eq!(response.page_info, PageInfo::NoMore);
        assert_eq!(response.batch[0].event_encoded.seq_num.0, 1);
    }

    #[test]
    fn malformed_server_frames_are_errors() {
        for frame in [
            "",
            "{",
            "[]",
            r#"{"_tag":"Chunk"}"#,
            r#"{"_tag":"Exit","requestId":"1"}"#,
            r#"{"_tag":"Weird"}"#,
        ] {
            assert!(decode_server_message(frame).is_err(), "{frame}");
        }
        let bad_page =
            RawValue::from_string(r#"{"batch":[{"eventEncoded":{"seqNum":"x"}}]}"#.to_owned())
                .unwrap();
        assert!(decode_pull_response(&bad_page).is_err());
    }
}
