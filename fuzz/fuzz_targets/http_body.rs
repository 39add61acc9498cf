//! The HTTP transport's request path without the network: body bytes → UTF-8 → `decode_client_message` →
//! `validate_batch` → `admit` against a log head, as `livestore-server::http_transport` runs them.
//!
//! The first 8 bytes pick the log head; the rest is the body. Invariants: `validate_batch` accepts only chains, and
//! `admit` accepts only batches whose first parent is the head.

#![no_main]

use libfuzzer_sys::fuzz_target;
use livestore_proto::admission::{Admission, admit, validate_batch};
use livestore_proto::frame::{ClientMessage, decode_client_message};
use livestore_proto::rpc::RpcCall;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (head_bytes, body) = data.split_at(8);
    let head = u64::from_le_bytes(head_bytes.try_into().expect("8 bytes")) % 1_000_000;
    let Ok(text) = std::str::from_utf8(body) else { return };
    let Ok(ClientMessage::Request { call: Ok(call), .. }) = decode_client_message(text) else {
        return;
    };
    let (RpcCall::HttpPush(push) | RpcCall::WsPush(push)) = call else { return };
    if validate_batch(&push.batch).is_err() {
        return;
    }
    for pair in push.batch.windows(2) {
        assert_eq!(pair[1].parent_seq_num, pair[0].seq_num, "validated batches are chains");
    }
    for event in &push.batch {
        assert_eq!(event.seq_num.0, event.parent_seq_num.0 + 1);
        assert!(!event.name.is_empty());
    }
    match admit(head, "backend-fuzz", &push) {
        Admission::Accept => assert_eq!(push.batch[0].parent_seq_num.0, head),
        Admission::Empty => assert!(push.batch.is_empty()),
        Admission::ServerAhead { head: reported, provided_parent } => {
            assert_eq!(reported, head);
            assert_ne!(provided_parent, head);
        }
        Admission::BackendIdMismatch { expected, received } => assert_ne!(expected, received),
    }
});
