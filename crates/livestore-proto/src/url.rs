//! The sync endpoint's query parameters: `storeId`, `transport` and the double-encoded `payload` (spec §6.1).

use percent_encoding::percent_decode_str;
use serde_json::value::RawValue;

use crate::error::ProtoError;

pub use crate::MAX_STORE_ID_BYTES;

/// Which transport a sync request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A WebSocket upgrade carrying Effect RPC frames.
    WebSocket,
    /// A `POST` whose body is one RPC request and whose response is a JSON array of messages.
    Http,
}

impl Transport {
    /// Parses the `transport` parameter.
    pub fn parse(value: &str) -> Result<Self, ProtoError> {
        match value {
            "ws" => Ok(Transport::WebSocket),
            "http" => Ok(Transport::Http),
            other => Err(ProtoError::UnsupportedTransport(other.to_owned())),
        }
    }
}

/// Checks `storeId` against `^[a-zA-Z0-9_-]+$` (the rule `createStore` enforces) and [`MAX_STORE_ID_BYTES`].
pub fn validate_store_id(store_id: &str) -> Result<(), ProtoError> {
    let valid = !store_id.is_empty()
        && store_id.len() <= MAX_STORE_ID_BYTES
        && store_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if valid {
        Ok(())
    } else {
        Err(ProtoError::InvalidStoreId(store_id.chars().take(64).collect()))
    }
}

/// Decodes the `payload` parameter after the usual query decoding: one more `decodeURIComponent`, then JSON.
pub fn decode_url_payload(query_value: &str) -> Result<Box<RawValue>, ProtoError> {
    let json = percent_decode_str(query_value).decode_utf8().map_err(|_| {
        ProtoError::InvalidUrlPayload("not UTF-8 after percent-decoding".to_owned())
    })?;
    crate::json::check_depth(&json, crate::json::MAX_JSON_DEPTH)?;
    serde_json::from_str::<Box<RawValue>>(&json)
        .map_err(|error| ProtoError::InvalidUrlPayload(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_payload_decodes() {
        // The query value after form decoding of `%257B%2522authToken%2522...` is `%7B%22authToken%22...`.
        let once_decoded = "%7B%22authToken%22%3A%22secret%20A%26B%3Dc%22%7D";
        let payload = decode_url_payload(once_decoded).unwrap();
        assert_eq!(payload.get(), r#"{"authToken":"secret A&B=c"}"#);
    }

    #[test]
    fn store_ids() {
        assert!(validate_store_id("store-1_A").is_ok());
        for bad in ["", "a/b", "a b", "ä", &"x".repeat(257)] {
            assert!(validate_store_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_payloads() {
        assert!(decode_url_payload("%7B").is_err());
        assert!(decode_url_payload("%FF").is_err());
    }
}
