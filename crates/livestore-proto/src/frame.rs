//! Decoding of client → server messages of the Effect RPC envelope (`@effect/rpc` 0.75, JSON serialization).
//!
//! One WebSocket text frame (or one HTTP body) holds exactly one JSON object. A frame that cannot be attributed to a
//! request is a connection-level error (the server closes the socket); a request whose payload is bad is a
//! per-request error (the server answers that request with a failure and keeps the connection).

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ProtoError;
use crate::rpc::{RpcCall, decode_rpc_call};

/// The client's id for one request; opaque, scoped to one connection (clients share one counter per process).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// Wraps a request id.
    pub fn new(id: impl Into<String>) -> Self {
        RequestId(id.into())
    }

    /// The id as sent by the client.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A decoded client message.
#[derive(Debug)]
pub enum ClientMessage {
    /// An RPC request. `call` is an error when the tag is unknown or the payload does not decode; the server must
    /// then fail this request only.
    Request {
        /// The request id, echoed in every reply.
        id: RequestId,
        /// The decoded call, or why it could not be decoded.
        call: Result<RpcCall, ProtoError>,
    },
    /// The client consumed a chunk of a stream (backpressure hint; safe to ignore).
    Ack {
        /// The stream's request id.
        request_id: RequestId,
    },
    /// The client cancelled a request (e.g. its live pull at shutdown).
    Interrupt {
        /// The cancelled request.
        request_id: RequestId,
    },
    /// Keep-alive; answer with `Pong` at once.
    Ping,
    /// End of input (never sent over WebSocket by 0.4 clients).
    Eof,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "_tag", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default, borrow)]
    tag: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
    #[serde(default, rename = "requestId")]
    request_id: Option<String>,
}

/// Decodes one client frame.
///
/// Returns `Err` only when the frame as a whole is unusable (not JSON, no `_tag`, unknown `_tag`, a request without
/// an id); errors inside a request's payload come back as `Ok(ClientMessage::Request { call: Err(..), .. })`.
pub fn decode_client_message(frame: &str) -> Result<ClientMessage, ProtoError> {
    crate::json::check_depth(frame, crate::json::MAX_JSON_DEPTH)?;
    let envelope: Envelope<'_> = serde_json::from_str(frame).map_err(ProtoError::MalformedFrame)?;
    match envelope.kind.as_ref() {
        "Request" => {
            let id =
                envelope.id.ok_or(ProtoError::MissingField { message: "Request", field: "id" })?;
            let call = match (envelope.tag, envelope.payload) {
                (None, _) => Err(ProtoError::MissingField { message: "Request", field: "tag" }),
                (Some(_), None) => {
                    Err(ProtoError::MissingField { message: "Request", field: "payload" })
                }
                (Some(tag), Some(payload)) => decode_rpc_call(&tag, payload),
            };
            Ok(ClientMessage::Request { id: RequestId(id), call })
        }
        "Ack" => {
            let request_id = envelope
                .request_id
                .ok_or(ProtoError::MissingField { message: "Ack", field: "requestId" })?;
            Ok(ClientMessage::Ack { request_id: RequestId(request_id) })
        }
        "Interrupt" => {
            let request_id = envelope
                .request_id
                .ok_or(ProtoError::MissingField { message: "Interrupt", field: "requestId" })?;
            Ok(ClientMessage::Interrupt { request_id: RequestId(request_id) })
        }
        "Ping" => Ok(ClientMessage::Ping),
        "Eof" => Ok(ClientMessage::Eof),
        other => Err(ProtoError::UnknownMessageTag(crate::error::excerpt(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_frames_decode() {
        assert!(matches!(
            decode_client_message(r#"{"_tag":"Ping"}"#).unwrap(),
            ClientMessage::Ping
        ));
        assert!(matches!(
            decode_client_message(r#"{"_tag":"Ack","requestId":"0"}"#).unwrap(),
            ClientMessage::Ack { .. }
        ));
        let pull = r#"{"_tag":"Request","id":"0","tag":"SyncWsRpc.Pull","traceId":"t","payload":{"storeId":"store-1","payload":{"authToken":"secret A&B=c"},"live":true,"cursor":{"_tag":"None"}},"spanId":"s","sampled":false,"headers":[]}"#;
        let ClientMessage::Request { id, call } = decode_client_message(pull).unwrap() else {
            panic!()
        };
        assert_eq!(id.as_str(), "0");
        let call = call.unwrap();
        assert_eq!(call.tag(), "SyncWsRpc.Pull");
        assert_eq!(call.sync_payload().unwrap().get(), r#"{"authToken":"secret A&B=c"}"#);
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        for frame in [
            "",
            "[]",
            "{",
            "null",
            r#"{"_tag":1}"#,
            r#"{"_tag":"Nope"}"#,
            r#"{"_tag":"Request"}"#,
            r#"{"_tag":"Ack"}"#,
        ] {
            assert!(decode_client_message(frame).is_err(), "{frame}");
        }
    }

    #[test]
    fn bad_payloads_are_per_request_errors() {
        let frame = r#"{"_tag":"Request","id":"3","tag":"SyncWsRpc.Nope","payload":{}}"#;
        let ClientMessage::Request { id, call } = decode_client_message(frame).unwrap() else {
            panic!()
        };
        assert_eq!(id.as_str(), "3");
        assert!(matches!(call, Err(ProtoError::UnknownRpcTag(_))), "{call:?}");
    }
}
