//! Every client WebSocket frame is first read by `decode_client_message`; the sync URL's query parameters by
//! `validate_store_id`, `Transport::parse` and `decode_url_payload`. None of them may panic, whatever the bytes.
//!
//! Invariants checked beyond "no panic": a decoded push's events serialize back (`to_json`, the stored form) to
//! JSON that decodes to the same event, so the server echoes exactly what it accepted.

#![no_main]

use libfuzzer_sys::fuzz_target;
use livestore_proto::EncodedEvent;
use livestore_proto::frame::{ClientMessage, decode_client_message};
use livestore_proto::rpc::RpcCall;
use livestore_proto::url::{Transport, decode_url_payload, validate_store_id};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(ClientMessage::Request { call: Ok(call), .. }) = decode_client_message(&text) {
        assert!(validate_store_id(call.store_id()).is_ok(), "decoded calls carry a valid storeId");
        if let RpcCall::WsPush(push) | RpcCall::HttpPush(push) = &call {
            for event in &push.batch {
                let stored = event.to_json();
                let back: EncodedEvent =
                    serde_json::from_str(&stored).expect("the stored form of an event decodes");
                assert_eq!(&back, event, "the stored form round-trips");
            }
        }
    }
    let _ = validate_store_id(&text);
    let _ = Transport::parse(&text);
    let _ = decode_url_payload(&text);
});
