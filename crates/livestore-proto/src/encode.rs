//! Server → client messages, written directly as JSON text.
//!
//! Pages of stored events are already JSON; splicing them into frames avoids parsing and re-serializing every
//! event on the hot fan-out and backlog paths. Every string that comes from outside (request ids, messages) goes
//! through `serde_json` escaping.

/// The reply to a client `Ping`.
pub const PONG: &str = r#"{"_tag":"Pong"}"#;

/// The success value of `SyncHttpRpc.Ping`.
pub const HTTP_PONG_VALUE: &str = r#"{"_tag":"SyncMessage.Pong"}"#;

/// The success value of a push (`PushAck`); clients fail to decode an `Exit` without it.
pub const PUSH_ACK_VALUE: &str = "{}";

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("serializing a &str cannot fail")
}

/// A `Chunk` of a stream request carrying the given already-encoded values (pull pages).
pub fn chunk<S: AsRef<str>>(request_id: &str, values: &[S]) -> String {
    let values_len: usize = values.iter().map(|value| value.as_ref().len() + 1).sum();
    let mut frame = String::with_capacity(values_len + request_id.len() + 48);
    frame.push_str(r#"{"_tag":"Chunk","requestId":"#);
    frame.push_str(&json_string(request_id));
    frame.push_str(r#","values":["#);
    for (index, value) in values.iter().enumerate() {
        if index > 0 {
            frame.push(',');
        }
        frame.push_str(value.as_ref());
    }
    frame.push_str("]}");
    frame
}

/// A `Chunk` frame carrying one page, built in the page's own allocation: the page's bytes are shifted to make room
/// for the envelope instead of being copied into a new string, so a large page exists once, not twice.
pub fn chunk_of_page(request_id: &str, mut page_json: String) -> String {
    let mut prefix = String::with_capacity(request_id.len() + 40);
    prefix.push_str(r#"{"_tag":"Chunk","requestId":"#);
    prefix.push_str(&json_string(request_id));
    prefix.push_str(r#","values":["#);
    page_json.reserve_exact(prefix.len() + 2);
    page_json.insert_str(0, &prefix);
    page_json.push_str("]}");
    page_json
}

/// `Exit` success with a value (already JSON), as unary RPCs need.
pub fn exit_success_value(request_id: &str, value_json: &str) -> String {
    format!(
        r#"{{"_tag":"Exit","requestId":{},"exit":{{"_tag":"Success","value":{value_json}}}}}"#,
        json_string(request_id)
    )
}

/// `Exit` success without a value, the end of a finished (non-live) stream.
pub fn exit_stream_done(request_id: &str) -> String {
    format!(
        r#"{{"_tag":"Exit","requestId":{},"exit":{{"_tag":"Success"}}}}"#,
        json_string(request_id)
    )
}

/// `Exit` failure with a typed error (`Cause.Fail`), e.g. [`server_ahead_error`].
pub fn exit_fail(request_id: &str, error_json: &str) -> String {
    format!(
        r#"{{"_tag":"Exit","requestId":{},"exit":{{"_tag":"Failure","cause":{{"_tag":"Fail","error":{error_json}}}}}}}"#,
        json_string(request_id)
    )
}

/// `Exit` failure with a defect (`Cause.Die`): what Effect's RPC server answers for an undecodable request.
pub fn exit_die(request_id: &str, message: &str) -> String {
    format!(
        r#"{{"_tag":"Exit","requestId":{},"exit":{{"_tag":"Failure","cause":{{"_tag":"Die","defect":{}}}}}}}"#,
        json_string(request_id),
        json_string(message)
    )
}

/// `Exit` failure by interruption, the answer to a client `Interrupt`.
pub fn exit_interrupted(request_id: &str) -> String {
    format!(
        r#"{{"_tag":"Exit","requestId":{},"exit":{{"_tag":"Failure","cause":{{"_tag":"Interrupt","fiberId":{{"_tag":"None"}}}}}}}}"#,
        json_string(request_id)
    )
}

/// `ServerAheadError`: the push's parent is not the head. sync-cf fills in `head` and `batch[0].parentSeqNum`.
pub fn server_ahead_error(minimum_expected: u64, provided: u64) -> String {
    format!(
        r#"{{"_tag":"ServerAheadError","minimumExpectedNum":{minimum_expected},"providedNum":{provided}}}"#
    )
}

/// `BackendIdMismatchError`: the client's `backendId` is not this log's.
pub fn backend_id_mismatch_error(expected: &str, received: &str) -> String {
    format!(
        r#"{{"_tag":"BackendIdMismatchError","expected":{},"received":{}}}"#,
        json_string(expected),
        json_string(received)
    )
}

/// `UnknownError` with an `Error`-shaped cause; clients retry pushes that fail this way.
pub fn unknown_error(message: &str) -> String {
    format!(
        r#"{{"_tag":"UnknownError","cause":{{"name":"Error","message":{}}}}}"#,
        json_string(message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_of_one_page_is_the_same_however_it_is_built() {
        let page = r#"{"payload":{"_tag":"SyncMessage.PullResponse"},"remaining":0}"#;
        assert_eq!(chunk_of_page("r\"1", page.to_owned()), chunk("r\"1", &[page]));
    }

    #[test]
    fn frames_are_valid_json_with_escaped_ids() {
        let frames = [
            chunk("a\"b", &["{}", "[]"]),
            exit_success_value("1", PUSH_ACK_VALUE),
            exit_stream_done("1"),
            exit_fail("1", &server_ahead_error(3, 0)),
            exit_fail("1", &backend_id_mismatch_error("x", "y\n")),
            exit_fail("1", &unknown_error("boom \u{1}")),
            exit_die("1", "bad \"payload\""),
            exit_interrupted("1"),
        ];
        for frame in frames {
            serde_json::from_str::<serde_json::Value>(&frame)
                .unwrap_or_else(|error| panic!("{frame}: {error}"));
        }
        assert_eq!(
            exit_success_value("1", "{}"),
            r#"{"_tag":"Exit","requestId":"1","exit":{"_tag":"Success","value":{}}}"#
        );
        assert_eq!(
            exit_fail("5", &server_ahead_error(3, 0)),
            r#"{"_tag":"Exit","requestId":"5","exit":{"_tag":"Failure","cause":{"_tag":"Fail","error":{"_tag":"ServerAheadError","minimumExpectedNum":3,"providedNum":0}}}}"#
        );
    }
}
