//! Fuzz inputs replayed against the real code: every committed seed, corpus entry and saved crasher of the wire
//! targets (`fuzz/seeds/<target>`, `fuzz/corpus/<target>`, `fuzz/regressions/<target>`) goes through the public
//! decoders in process; the seeds and crashers also through the real server over WebSocket and HTTP (one
//! connection each, so the few thousand corpus entries stay in process). Bad input must come back as an error value, a 4xx or a close code;
//! never a panic, a 5xx or a dead server.
//!
//! When `scripts/fuzz` finds a crash, copy the input from `fuzz/artifacts/<target>/` to
//! `fuzz/regressions/<target>/` with a name saying what it found, fix the bug, and this suite keeps it fixed.

use std::path::PathBuf;

use livestore_proto::admission::{admit, validate_batch};
use livestore_proto::client::{ServerMessage, decode_pull_response, decode_server_message};
use livestore_proto::frame::{ClientMessage, decode_client_message};
use livestore_proto::rpc::RpcCall;
use livestore_proto::url::{decode_url_payload, validate_store_id};

use crate::support::*;

/// The saved inputs of a fuzz target in the given folders (`seeds`, `corpus`, `regressions`).
fn inputs_in(target: &str, kinds: &[&str]) -> Vec<(String, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut found = Vec::new();
    for kind in kinds {
        let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            found.push((
                format!("{kind}/{target}/{}", path.file_name().unwrap().to_string_lossy()),
                std::fs::read(&path).unwrap(),
            ));
        }
    }
    found.sort();
    found
}

/// Every saved input of a fuzz target: seeds, the committed corpus and regressions.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    inputs_in(target, &["seeds", "corpus", "regressions"])
}

/// The hand-picked inputs of a fuzz target: seeds and regressions.
fn seeds_and_regressions(target: &str) -> Vec<(String, Vec<u8>)> {
    inputs_in(target, &["seeds", "regressions"])
}

/// What the wire targets run, minus the fuzz-only invariants: decode, validate, admit.
fn decode_like_the_server(text: &str) {
    if let Ok(ClientMessage::Request {
        call: Ok(RpcCall::WsPush(push) | RpcCall::HttpPush(push)),
        ..
    }) = decode_client_message(text)
        && validate_batch(&push.batch).is_ok()
    {
        let _ = admit(0, "backend", &push);
    }
    let _ = validate_store_id(text);
    let _ = decode_url_payload(text);
}

#[test]
fn saved_fuzz_inputs_decode_to_values_or_errors_in_process() {
    let wire = inputs("wire_frame");
    assert!(wire.len() >= 10, "the wire_frame seeds are missing");
    for (_, bytes) in &wire {
        decode_like_the_server(&String::from_utf8_lossy(bytes));
    }
    // Missing seed directories would make these loops check nothing.
    let http_bodies = inputs("http_body");
    assert!(
        http_bodies.iter().any(|(_, bytes)| bytes.len() >= 8),
        "the http_body seeds are missing"
    );
    for (_, bytes) in http_bodies {
        if bytes.len() >= 8 {
            decode_like_the_server(&String::from_utf8_lossy(&bytes[8..]));
        }
    }
    let server_frames = inputs("server_frame");
    assert!(!server_frames.is_empty(), "the server_frame seeds are missing");
    for (_, bytes) in server_frames {
        if let Ok(ServerMessage::Chunk { values, .. }) =
            decode_server_message(&String::from_utf8_lossy(&bytes))
        {
            for value in &values {
                let _ = decode_pull_response(value);
            }
        }
    }
}

#[tokio::test]
async fn saved_fuzz_inputs_never_break_the_server() {
    let server = TestServer::start();
    let mut frames = seeds_and_regressions("wire_frame");
    frames.extend(
        seeds_and_regressions("http_body")
            .into_iter()
            .filter(|(_, bytes)| bytes.len() >= 8)
            .map(|(name, bytes)| (name, bytes[8..].to_vec())),
    );
    for (name, bytes) in &frames {
        let text = String::from_utf8_lossy(bytes).into_owned();
        // Over WebSocket: a reply or a close, and the next connection works.
        let mut client = WsClient::connect(&server.ws_url("fuzz")).await;
        if client.try_send_text(text.clone()).await
            && client.try_send_text(pull_request("probe", "fuzz", false, None).to_string()).await
        {
            match client.receive().await {
                Received::Frame(_)
                | Received::Closed(Some(1007 | 1000))
                | Received::Closed(None) => {}
                Received::Closed(code) => panic!("{name}: closed with {code:?}"),
            }
        }
        // Over HTTP: a 4xx or a JSON array, never a 5xx.
        let (status, body) =
            http_post(&format!("{}/?storeId=fuzz&transport=http", server.http_url()), text).await;
        assert!(status < 500, "{name}: {status} {body}");
        if status == 200 {
            assert!(
                serde_json::from_str::<serde_json::Value>(&body)
                    .is_ok_and(|value| value.is_array()),
                "{name}: {body}"
            );
        }
    }
    let mut probe = WsClient::connect(&server.ws_url("fuzz")).await;
    probe.send(&pull_request("last", "fuzz", false, None)).await;
    assert_eq!(probe.frame().await["_tag"], "Chunk");
    assert!(!server.log().contains("panicked"), "a handler panicked:\n{}", server.log());
}
