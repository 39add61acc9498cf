//! Whether a pushed batch may be appended to a log (spec §6.8).
//!
//! The rules, in the order the reference Durable Object applies them: an empty batch is acknowledged at once; a
//! `backendId` that is present and differs from the log's fails with `BackendIdMismatchError`; a first parent that
//! is not the head fails with `ServerAheadError`. We also require what real clients always satisfy and the
//! reference does not check: every event's `seqNum` is its `parentSeqNum + 1`, and each parent is the previous
//! event's `seqNum`. A batch that breaks those is malformed input, not a conflict.

use crate::error::ProtoError;
use crate::event::EncodedEvent;
use crate::rpc::PushArgs;

/// The verdict on a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Append the batch; it extends the head.
    Accept,
    /// Nothing to append; acknowledge.
    Empty,
    /// The batch's first parent is not the head: the client must pull and rebase.
    ServerAhead {
        /// The current head (sync-cf's `minimumExpectedNum`).
        head: u64,
        /// `batch[0].parentSeqNum` (sync-cf's `providedNum`).
        provided_parent: u64,
    },
    /// The client knows another backend: the log was reset or lost since it last synced.
    BackendIdMismatch {
        /// This log's `backendId`.
        expected: String,
        /// The client's.
        received: String,
    },
}

/// Checks that a batch is a chain: `seqNum = parentSeqNum + 1` and each parent is the previous event.
pub fn validate_batch(batch: &[EncodedEvent]) -> Result<(), ProtoError> {
    let mut previous: Option<u64> = None;
    for (index, event) in batch.iter().enumerate() {
        if event.seq_num.0 != event.parent_seq_num.0 + 1 {
            return Err(ProtoError::InvalidBatch(format!(
                "batch[{index}] has seqNum {} but parentSeqNum {}; expected seqNum = parentSeqNum + 1",
                event.seq_num.0, event.parent_seq_num.0
            )));
        }
        if let Some(previous_seq) = previous
            && event.parent_seq_num.0 != previous_seq
        {
            return Err(ProtoError::InvalidBatch(format!(
                "batch[{index}] has parentSeqNum {} but the previous event has seqNum {previous_seq}",
                event.parent_seq_num.0
            )));
        }
        if event.name.is_empty() {
            return Err(ProtoError::InvalidBatch(format!("batch[{index}] has an empty name")));
        }
        previous = Some(event.seq_num.0);
    }
    Ok(())
}

/// Decides on a validated push against a log with `head` and `backend_id`.
pub fn admit(head: u64, backend_id: &str, push: &PushArgs) -> Admission {
    let Some(first) = push.batch.first() else { return Admission::Empty };
    if let Some(received) = push.backend_id.as_option()
        && received != backend_id
    {
        return Admission::BackendIdMismatch {
            expected: backend_id.to_owned(),
            received: received.clone(),
        };
    }
    if first.parent_seq_num.0 != head {
        return Admission::ServerAhead { head, provided_parent: first.parent_seq_num.0 };
    }
    Admission::Accept
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::event::SeqNum;
    use crate::rpc::EffectOption;

    fn event(seq: u64, parent: u64) -> EncodedEvent {
        EncodedEvent {
            name: "v1.E".into(),
            args: None,
            seq_num: SeqNum(seq),
            parent_seq_num: SeqNum(parent),
            client_id: "c".into(),
            session_id: "s".into(),
        }
    }

    fn push(batch: Vec<EncodedEvent>, backend: Option<&str>) -> PushArgs {
        PushArgs {
            store_id: "s".into(),
            payload: None,
            batch,
            backend_id: match backend {
                Some(id) => EffectOption::Some { value: id.to_owned() },
                None => EffectOption::None,
            },
        }
    }

    #[test]
    fn rules_in_reference_order() {
        assert_eq!(admit(5, "b", &push(vec![], Some("other"))), Admission::Empty);
        assert_eq!(
            admit(5, "b", &push(vec![event(3, 2)], Some("other"))),
            Admission::BackendIdMismatch { expected: "b".into(), received: "other".into() }
        );
        assert_eq!(
            admit(5, "b", &push(vec![event(3, 2)], None)),
            Admission::ServerAhead { head: 5, provided_parent: 2 }
        );
        assert_eq!(admit(5, "b", &push(vec![event(6, 5)], Some("b"))), Admission::Accept);
    }

    #[test]
    fn chains_only() {
        assert!(validate_batch(&[event(1, 0), event(2, 1), event(3, 2)]).is_ok());
        assert!(validate_batch(&[event(1, 0), event(3, 2)]).is_err());
        assert!(validate_batch(&[event(2, 0)]).is_err());
        assert!(validate_batch(&[event(1, 0), event(1, 0)]).is_err());
    }

    proptest! {
        /// Exactly one of any set of pushes with the same parent can be admitted against a given head.
        ///
        /// Heads and parents come from a small range, so pushes on the head (and just behind or ahead of it) are
        /// common: drawn from 0..1000, almost no case had a push that may be admitted.
        #[test]
        fn one_parent_one_winner(head in 0u64..8, parents in proptest::collection::vec(0u64..8, 1..20)) {
            let accepted = parents.iter().filter(|parent| admit(head, "b", &push(vec![event(**parent + 1, **parent)], None)) == Admission::Accept).count();
            prop_assert_eq!(accepted, parents.iter().filter(|parent| **parent == head).count());
        }
    }
}
