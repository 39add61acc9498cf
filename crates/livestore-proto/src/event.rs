//! The global (wire) form of a LiveStore event, `LiveStoreEvent.Global.Encoded`.
//!
//! Owns the six-field event shape and the sequence-number newtype. It keeps `args` as the raw JSON text the client
//! sent, because clients compare their own echoed events with the originals field by field (spec §1.2): a server
//! that re-encoded `args` could turn a client's own event into a "foreign" one.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

/// The largest integer JavaScript clients can represent exactly (`Number.MAX_SAFE_INTEGER`).
pub const MAX_SAFE_SEQ_NUM: u64 = 9_007_199_254_740_991;

/// A global sequence number: 1 for the first event of a log, 0 for "before the first event".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SeqNum(pub u64);

impl<'de> Deserialize<'de> for SeqNum {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = u64::deserialize(deserializer)?;
        if value > MAX_SAFE_SEQ_NUM {
            return Err(serde::de::Error::custom(format!(
                "sequence number {value} exceeds Number.MAX_SAFE_INTEGER"
            )));
        }
        Ok(SeqNum(value))
    }
}

impl std::fmt::Display for SeqNum {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "e{}", self.0)
    }
}

/// One event as it travels between clients and the sync backend.
///
/// Field order matches what the reference server emits; excess fields sent by a client are dropped, exactly as
/// the Effect schema on the client side would drop them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncodedEvent {
    /// The event type, e.g. `v1.TodoCreated`.
    pub name: String,
    /// The encoded arguments, verbatim. `None` when the client omitted the key; JSON `null` stays `null`.
    #[serde(
        default,
        deserialize_with = "present_raw_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub args: Option<Box<RawValue>>,
    /// This event's global sequence number.
    pub seq_num: SeqNum,
    /// The previous event's global sequence number (0 for the first event).
    pub parent_seq_num: SeqNum,
    /// The client that created the event.
    pub client_id: String,
    /// The session (tab, process) of that client.
    pub session_id: String,
}

impl EncodedEvent {
    /// The compact JSON text stored in the log and echoed to clients.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .expect("an EncodedEvent always serializes: all fields are plain JSON")
    }
}

impl PartialEq for EncodedEvent {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.args.as_ref().map(|raw| raw.get()) == other.args.as_ref().map(|raw| raw.get())
            && self.seq_num == other.seq_num
            && self.parent_seq_num == other.parent_seq_num
            && self.client_id == other.client_id
            && self.session_id == other.session_id
    }
}

/// Deserializes a present value (including `null`) into `Some`, so that `null` and "missing" stay distinct.
fn present_raw_value<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_args_stay_null_and_missing_args_stay_missing() {
        let with_null: EncodedEvent = serde_json::from_str(
            r#"{"name":"a","args":null,"seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s"}"#,
        )
        .unwrap();
        assert_eq!(
            with_null.to_json(),
            r#"{"name":"a","args":null,"seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s"}"#
        );
        let missing: EncodedEvent = serde_json::from_str(
            r#"{"name":"a","seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s"}"#,
        )
        .unwrap();
        assert_eq!(
            missing.to_json(),
            r#"{"name":"a","seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s"}"#
        );
    }

    #[test]
    fn args_are_kept_verbatim() {
        let event: EncodedEvent = serde_json::from_str(
            r#"{"name":"a","args":{"b":1.50,"a":"\u00e9"},"seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s","extra":1}"#,
        )
        .unwrap();
        assert_eq!(event.args.unwrap().get(), r#"{"b":1.50,"a":"\u00e9"}"#);
    }

    #[test]
    fn sequence_numbers_must_be_safe_non_negative_integers() {
        for bad in ["1.5", "\"1\"", "-1", "9007199254740992", "null"] {
            let text = format!(
                r#"{{"name":"a","seqNum":{bad},"parentSeqNum":0,"clientId":"c","sessionId":"s"}}"#
            );
            assert!(serde_json::from_str::<EncodedEvent>(&text).is_err(), "{bad} must be rejected");
        }
    }
}
