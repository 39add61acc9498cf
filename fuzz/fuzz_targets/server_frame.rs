//! The Rust client's side of the wire: `decode_server_message` and `decode_pull_response` read bytes from a server
//! that may be hostile or broken. They may fail, never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use livestore_proto::client::{ServerMessage, decode_pull_response, decode_server_message};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(ServerMessage::Chunk { values, .. }) = decode_server_message(&text) {
        for value in &values {
            let _ = decode_pull_response(value);
        }
    }
    if let Ok(value) = serde_json::from_str::<Box<serde_json::value::RawValue>>(&text) {
        let _ = decode_pull_response(&value);
    }
});
