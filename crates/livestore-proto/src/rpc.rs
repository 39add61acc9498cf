//! Typed payloads of the RPCs in `SyncWsRpc` and `SyncHttpRpc` (spec §6.4) and Effect's `Option` encoding.
//!
//! Decoding by tag lives here; the envelope around it lives in [`crate::frame`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::ProtoError;
use crate::event::{EncodedEvent, SeqNum};
use crate::url::validate_store_id;

/// Effect's `Option<T>` as JSON: `{"_tag":"None"}` or `{"_tag":"Some","value":T}`. `null` is rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "_tag")]
pub enum EffectOption<T> {
    /// No value.
    None,
    /// A value.
    Some {
        /// The wrapped value.
        value: T,
    },
}

impl<T> EffectOption<T> {
    /// Converts into a Rust `Option`.
    pub fn into_option(self) -> Option<T> {
        match self {
            EffectOption::None => None,
            EffectOption::Some { value } => Some(value),
        }
    }

    /// Borrows as a Rust `Option`.
    pub fn as_option(&self) -> Option<&T> {
        match self {
            EffectOption::None => None,
            EffectOption::Some { value } => Some(value),
        }
    }
}

/// Where a pull starts: the backend the client last saw and the last global sequence number it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullCursor {
    /// The `backendId` the client learned from an earlier pull.
    pub backend_id: String,
    /// The last global sequence number the client has; the pull returns events after it.
    pub event_sequence_number: SeqNum,
}

/// Payload of `SyncWsRpc.Pull` and `SyncHttpRpc.Pull` (the HTTP one has no `live`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullArgs {
    /// The store the pull reads.
    pub store_id: String,
    /// The client's sync payload (auth), if any.
    #[serde(default)]
    pub payload: Option<Box<RawValue>>,
    /// Whether the pull stays open and streams newly accepted events.
    #[serde(default)]
    pub live: bool,
    /// Where to start; `None` means from the first event.
    pub cursor: EffectOption<PullCursor>,
}

/// Payload of `SyncWsRpc.Push` and `SyncHttpRpc.Push`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushArgs {
    /// The store the batch is appended to.
    pub store_id: String,
    /// The client's sync payload (auth), if any.
    #[serde(default)]
    pub payload: Option<Box<RawValue>>,
    /// The events, ascending and contiguous.
    pub batch: Vec<EncodedEvent>,
    /// The `backendId` the client knows, `None` before its first pull response.
    pub backend_id: EffectOption<String>,
}

/// Payload of `SyncHttpRpc.Ping`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PingArgs {
    /// The store the client talks to.
    pub store_id: String,
    /// The client's sync payload (auth), if any.
    #[serde(default)]
    pub payload: Option<Box<RawValue>>,
}

/// A decoded RPC call, by tag.
#[derive(Debug, Clone)]
pub enum RpcCall {
    /// `SyncWsRpc.Pull`: a stream of pull pages, live or not.
    WsPull(PullArgs),
    /// `SyncWsRpc.Push`.
    WsPush(PushArgs),
    /// `SyncHttpRpc.Pull`: never live.
    HttpPull(PullArgs),
    /// `SyncHttpRpc.Push`.
    HttpPush(PushArgs),
    /// `SyncHttpRpc.Ping`.
    HttpPing(PingArgs),
}

impl RpcCall {
    /// The store the call addresses.
    pub fn store_id(&self) -> &str {
        match self {
            RpcCall::WsPull(args) | RpcCall::HttpPull(args) => &args.store_id,
            RpcCall::WsPush(args) | RpcCall::HttpPush(args) => &args.store_id,
            RpcCall::HttpPing(args) => &args.store_id,
        }
    }

    /// The sync payload the call carries, if any.
    pub fn sync_payload(&self) -> Option<&RawValue> {
        match self {
            RpcCall::WsPull(args) | RpcCall::HttpPull(args) => args.payload.as_deref(),
            RpcCall::WsPush(args) | RpcCall::HttpPush(args) => args.payload.as_deref(),
            RpcCall::HttpPing(args) => args.payload.as_deref(),
        }
    }

    /// The RPC tag as it appears on the wire.
    pub fn tag(&self) -> &'static str {
        match self {
            RpcCall::WsPull(_) => "SyncWsRpc.Pull",
            RpcCall::WsPush(_) => "SyncWsRpc.Push",
            RpcCall::HttpPull(_) => "SyncHttpRpc.Pull",
            RpcCall::HttpPush(_) => "SyncHttpRpc.Push",
            RpcCall::HttpPing(_) => "SyncHttpRpc.Ping",
        }
    }
}

/// Decodes an RPC payload by its tag and validates the `storeId` it carries.
pub fn decode_rpc_call(tag: &str, payload: &RawValue) -> Result<RpcCall, ProtoError> {
    let call = match tag {
        "SyncWsRpc.Pull" => RpcCall::WsPull(decode_payload("SyncWsRpc.Pull", payload)?),
        "SyncWsRpc.Push" => RpcCall::WsPush(decode_payload("SyncWsRpc.Push", payload)?),
        "SyncHttpRpc.Pull" => {
            let mut args: PullArgs = decode_payload("SyncHttpRpc.Pull", payload)?;
            args.live = false;
            RpcCall::HttpPull(args)
        }
        "SyncHttpRpc.Push" => RpcCall::HttpPush(decode_payload("SyncHttpRpc.Push", payload)?),
        "SyncHttpRpc.Ping" => RpcCall::HttpPing(decode_payload("SyncHttpRpc.Ping", payload)?),
        other => return Err(ProtoError::UnknownRpcTag(crate::error::excerpt(other))),
    };
    validate_store_id(call.store_id())?;
    Ok(call)
}

fn decode_payload<T: DeserializeOwned>(
    tag: &'static str,
    payload: &RawValue,
) -> Result<T, ProtoError> {
    let mut deserializer = serde_json::Deserializer::from_str(payload.get());
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        ProtoError::InvalidPayload {
            tag,
            path: error.path().to_string(),
            source: error.into_inner(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn pull_cursor_some_and_none() {
        let call = decode_rpc_call(
            "SyncWsRpc.Pull",
            &raw(r#"{"storeId":"s","live":true,"cursor":{"_tag":"Some","value":{"backendId":"b","eventSequenceNumber":7}}}"#),
        )
        .unwrap();
        let RpcCall::WsPull(args) = call else { panic!("expected pull") };
        assert!(args.live);
        assert_eq!(args.cursor.into_option().unwrap().event_sequence_number, SeqNum(7));
    }

    #[test]
    fn errors_name_the_path() {
        let error = decode_rpc_call(
            "SyncWsRpc.Push",
            &raw(r#"{"storeId":"s","batch":[{"name":"a","seqNum":1.5,"parentSeqNum":0,"clientId":"c","sessionId":"s"}],"backendId":{"_tag":"None"}}"#),
        )
        .unwrap_err();
        assert!(error.to_string().contains("batch[0].seqNum"), "{error}");
    }

    #[test]
    fn null_option_and_bad_store_id_are_rejected() {
        let error =
            decode_rpc_call("SyncWsRpc.Pull", &raw(r#"{"storeId":"s","live":true,"cursor":null}"#))
                .unwrap_err();
        assert!(error.to_string().contains("cursor"), "{error}");
        let error = decode_rpc_call(
            "SyncWsRpc.Pull",
            &raw(r#"{"storeId":"a/b","cursor":{"_tag":"None"}}"#),
        )
        .unwrap_err();
        assert!(matches!(error, ProtoError::InvalidStoreId(_)));
        assert!(matches!(
            decode_rpc_call("Nope", &raw("{}")).unwrap_err(),
            ProtoError::UnknownRpcTag(_)
        ));
    }
}
