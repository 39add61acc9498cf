//! One-pass, borrowing decoding of pull `Chunk` frames, for clients catching up on a large backlog.
//!
//! [`crate::client::decode_server_message`] followed by [`crate::client::decode_pull_response`] reads every page
//! twice (once to find the end of each raw value, once to decode it, with path tracking for error messages) and
//! copies every string. At catch-up rates that is most of a client's decoding time. This module decodes a whole
//! `Chunk` of pull pages in one pass into borrowed views, applying the same rules as the owned types (sequence
//! numbers up to `Number.MAX_SAFE_INTEGER`, `args` present-or-missing kept verbatim, unknown fields ignored).
//!
//! It answers only the fast question "is this a chunk of well-formed pull pages?": on `None` the caller decodes
//! the frame with [`crate::client::decode_server_message`], which explains what is wrong.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::client::PageInfo;
use crate::event::SeqNum;

/// A `Chunk` frame whose values are all pull pages.
#[derive(Debug)]
pub struct PullChunk<'a> {
    /// The request (the pull) the chunk belongs to.
    pub request_id: Cow<'a, str>,
    /// The pages, in order.
    pub pages: Vec<PullPageRef<'a>>,
}

/// A `PullResponse`, borrowing from the frame.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullPageRef<'a> {
    /// Events after the cursor, ascending.
    #[serde(borrow)]
    pub batch: Vec<PullItemRef<'a>>,
    /// Whether more of the backlog follows.
    pub page_info: PageInfo,
    /// The server's log identity.
    #[serde(borrow)]
    pub backend_id: Cow<'a, str>,
}

/// One item of a pull page.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullItemRef<'a> {
    /// The event.
    #[serde(borrow)]
    pub event_encoded: EventRef<'a>,
    /// The backend's `Option<SyncMetadata>`, verbatim.
    #[serde(borrow)]
    pub metadata: &'a RawValue,
}

/// `LiveStoreEvent.Global.Encoded`, borrowing from the frame (see [`crate::event::EncodedEvent`]).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRef<'a> {
    /// The event type.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// The encoded arguments, verbatim; `None` when the key is missing, `Some("null")` for `null`.
    #[serde(default, borrow, deserialize_with = "present_raw_value")]
    pub args: Option<&'a RawValue>,
    /// This event's global sequence number.
    pub seq_num: SeqNum,
    /// The previous event's global sequence number.
    pub parent_seq_num: SeqNum,
    /// The client that created the event.
    #[serde(borrow)]
    pub client_id: Cow<'a, str>,
    /// The session of that client.
    #[serde(borrow)]
    pub session_id: Cow<'a, str>,
}

fn present_raw_value<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChunkFrame<'a> {
    #[serde(rename = "_tag", borrow)]
    tag: Cow<'a, str>,
    #[serde(borrow)]
    request_id: Cow<'a, str>,
    #[serde(borrow)]
    values: Vec<PullPageRef<'a>>,
}

/// Decodes a `Chunk` frame of pull pages; `None` for any other frame or any malformed one.
pub fn decode_pull_chunk(frame: &str) -> Option<PullChunk<'_>> {
    let chunk: ChunkFrame<'_> = serde_json::from_str(frame).ok()?;
    (chunk.tag == "Chunk")
        .then_some(PullChunk { request_id: chunk.request_id, pages: chunk.values })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ServerMessage, decode_pull_response, decode_server_message};

    const FRAME: &str = r#"{"_tag":"Chunk","requestId":"0","values":[{"batch":[
        {"eventEncoded":{"name":"v1.A","args":{"b":1.50,"a":"\u00e9"},"seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s","x":1},
         "metadata":{"_tag":"Some","value":{"createdAt":"t"}}},
        {"eventEncoded":{"name":"v1.B","args":null,"seqNum":2,"parentSeqNum":1,"clientId":"c\"q","sessionId":"s"},"metadata":{"_tag":"None"}},
        {"eventEncoded":{"name":"v1.C","seqNum":3,"parentSeqNum":2,"clientId":"c","sessionId":"s"},"metadata":{"_tag":"None"}}
      ],"pageInfo":{"_tag":"MoreKnown","remaining":5},"backendId":"b1"}]}"#;

    #[test]
    fn agrees_with_the_owned_decoders() {
        let fast = decode_pull_chunk(FRAME).unwrap();
        let ServerMessage::Chunk { request_id, values } = decode_server_message(FRAME).unwrap()
        else {
            panic!("a chunk");
        };
        assert_eq!(fast.request_id, request_id);
        assert_eq!(fast.pages.len(), values.len());
        for (page, value) in fast.pages.iter().zip(&values) {
            let owned = decode_pull_response(value).unwrap();
            assert_eq!(page.page_info, owned.page_info);
            assert_eq!(page.backend_id, owned.backend_id);
            // `zip` below stops at the shorter batch: a dropped item must fail here.
            assert_eq!(page.batch.len(), owned.batch.len());
            for (item, owned) in page.batch.iter().zip(&owned.batch) {
                let (event, expected) = (&item.event_encoded, &owned.event_encoded);
                assert_eq!(event.name, expected.name);
                assert_eq!(
                    event.args.map(RawValue::get),
                    expected.args.as_deref().map(RawValue::get)
                );
                assert_eq!(
                    (event.seq_num, event.parent_seq_num),
                    (expected.seq_num, expected.parent_seq_num)
                );
                assert_eq!(
                    (&*event.client_id, &*event.session_id),
                    (&*expected.client_id, &*expected.session_id)
                );
                assert_eq!(item.metadata.get(), owned.metadata.get());
            }
        }
    }

    #[test]
    fn anything_else_is_none() {
        for frame in [
            r#"{"_tag":"Pong"}"#,
            r#"{"_tag":"Exit","requestId":"1","exit":{"_tag":"Success","value":null}}"#,
            r#"{"_tag":"Chunk","requestId":"1","values":[{"batch":[],"pageInfo":{"_tag":"NoMore"}}]}"#,
            r#"{"_tag":"Chunk","requestId":"1","values":[{"batch":[{"eventEncoded":{"name":"a","seqNum":9007199254740992,"parentSeqNum":0,"clientId":"c","sessionId":"s"},"metadata":null}],"pageInfo":{"_tag":"NoMore"},"backendId":"b"}]}"#,
            "not json",
        ] {
            assert!(decode_pull_chunk(frame).is_none(), "{frame}");
        }
    }
}
