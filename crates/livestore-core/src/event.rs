//! The local form of an event (`LiveStoreEvent.Client.Encoded`) and the equality sync relies on.
//!
//! Args are kept as the encoded JSON text (what goes on the wire and into the eventlog); decoding into a typed
//! payload is the store's job at materialization time. Strings are reference-counted because merges move events
//! between lists (pending, confirmed, rebased) far more often than they create them.

use std::sync::Arc;

use crate::seq_num::EventSeqNum;

/// One event with composite sequence numbers, as a client stores and merges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEvent {
    /// This event's composite sequence number.
    pub seq_num: EventSeqNum,
    /// The previous event's sequence number (see [`EventSeqNum::next_pair`]).
    pub parent_seq_num: EventSeqNum,
    /// The event definition's name, e.g. `v1.TodoCreated`.
    pub name: Arc<str>,
    /// The encoded args as compact JSON text (`{}` when the event has none).
    pub args_json: Arc<str>,
    /// The client that created the event.
    pub client_id: Arc<str>,
    /// The session of that client that created the event.
    pub session_id: Arc<str>,
    /// Whether the event is client-only (never pushed; numbered with client sub-numbers).
    pub client_only: bool,
}

impl LocalEvent {
    /// Builds an event; see [`EventSeqNum::next_pair`] for how to obtain the two numbers.
    pub fn new(
        seq_num: EventSeqNum,
        parent_seq_num: EventSeqNum,
        name: impl Into<Arc<str>>,
        args_json: impl Into<Arc<str>>,
        client_id: impl Into<Arc<str>>,
        session_id: impl Into<Arc<str>>,
        client_only: bool,
    ) -> Self {
        LocalEvent {
            seq_num,
            parent_seq_num,
            name: name.into(),
            args_json: args_json.into(),
            client_id: client_id.into(),
            session_id: session_id.into(),
            client_only,
        }
    }

    /// An event received from the sync backend (`fromGlobal`): client part and generation 0, always synced.
    pub fn from_global(
        seq_num: u64,
        parent_seq_num: u64,
        name: impl Into<Arc<str>>,
        args_json: impl Into<Arc<str>>,
        client_id: impl Into<Arc<str>>,
        session_id: impl Into<Arc<str>>,
    ) -> Self {
        LocalEvent::new(
            EventSeqNum::from_global(seq_num),
            EventSeqNum::from_global(parent_seq_num),
            name,
            args_json,
            client_id,
            session_id,
            false,
        )
    }

    /// The same event as the backend would echo it (`toGlobal` then `fromGlobal`): generation dropped.
    pub fn to_global_form(&self) -> LocalEvent {
        LocalEvent {
            seq_num: EventSeqNum::from_global(self.seq_num.global),
            parent_seq_num: EventSeqNum::from_global(self.parent_seq_num.global),
            ..self.clone()
        }
    }

    /// `isEqualEncoded`: the equality sync uses to recognise an echoed event as one of our pending ones.
    ///
    /// Compares global and client numbers, name, client and session ids and the args as JSON values (so key
    /// order and number spelling do not matter). The rebase generation and the parent are ignored, because a
    /// pending event that was rebased locally still is the same event once the server echoes it.
    pub fn is_same_event(&self, other: &LocalEvent) -> bool {
        self.seq_num.global == other.seq_num.global
            && self.seq_num.client == other.seq_num.client
            && self.name == other.name
            && self.client_id == other.client_id
            && self.session_id == other.session_id
            && args_equal(&self.args_json, &other.args_json)
    }

    /// A copy renumbered on top of `parent` with the given generation (used by rebase).
    pub fn rebased(&self, parent: EventSeqNum, rebase_generation: u32) -> LocalEvent {
        let base = EventSeqNum { rebase_generation, ..parent };
        let (seq_num, parent_seq_num) = base.next_pair(self.client_only);
        LocalEvent { seq_num, parent_seq_num, ..self.clone() }
    }
}

/// Compares two JSON texts as values; text that is not JSON only equals identical text.
fn args_equal(left: &str, right: &str) -> bool {
    if left == right {
        return true;
    }
    match (
        serde_json::from_str::<serde_json::Value>(left),
        serde_json::from_str::<serde_json::Value>(right),
    ) {
        (Ok(left), Ok(right)) => json_equal(&left, &right),
        _ => false,
    }
}

/// Deep equality where numbers compare by value (`1.0 == 1`), as a JavaScript JSON round-trip would make them.
fn json_equal(left: &serde_json::Value, right: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (left, right) {
        (Value::Number(left), Value::Number(right)) => {
            left == right || left.as_f64() == right.as_f64()
        }
        (Value::Array(left), Value::Array(right)) => {
            left.len() == right.len()
                && left.iter().zip(right).all(|(left, right)| json_equal(left, right))
        }
        (Value::Object(left), Value::Object(right)) => {
            left.len() == right.len()
                && left.iter().all(|(key, value)| {
                    right.get(key).is_some_and(|other| json_equal(value, other))
                })
        }
        _ => left == right,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(args: &str) -> LocalEvent {
        LocalEvent::new(
            EventSeqNum::new(2, 0, 1),
            EventSeqNum::new(1, 0, 1),
            "v1.A",
            args,
            "c",
            "s",
            false,
        )
    }

    #[test]
    fn echo_equality_ignores_generation_parent_and_key_order() {
        let local = event(r#"{"a":1,"b":[1.0,"x"]}"#);
        let echoed = LocalEvent::from_global(2, 1, "v1.A", r#"{"b":[1,"x"],"a":1}"#, "c", "s");
        assert!(local.is_same_event(&echoed));
        assert!(!local.is_same_event(&event(r#"{"a":2,"b":[1,"x"]}"#)));
        let other_session = LocalEvent { session_id: "t".into(), ..local.clone() };
        assert!(!local.is_same_event(&other_session));
    }

    #[test]
    fn rebase_renumbers_on_top_of_the_parent() {
        let rebased = event("{}").rebased(EventSeqNum::from_global(7), 3);
        assert_eq!(rebased.seq_num.to_string(), "e8r3");
        assert_eq!(rebased.parent_seq_num.to_string(), "e7r3");
        let client_only = LocalEvent { client_only: true, ..event("{}") };
        assert_eq!(client_only.rebased(EventSeqNum::new(8, 0, 3), 3).seq_num.to_string(), "e8.1r3");
    }
}
