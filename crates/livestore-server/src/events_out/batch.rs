//! One batch of committed events for one subscriber and store: what the webhook POSTs and what an
//! [`crate::events_out::EventSink`] receives, with its idempotency key and the bounds on its size.

use std::sync::Arc;

use crate::storage::{ReadLimit, StoredEvent};

/// Most events in one batch. A thousand keeps a receiver's work per request small enough to answer well within the
/// delivery timeout, while a store written at tens of thousands of events per second needs only tens of requests
/// per second.
pub const BATCH_MAX_EVENTS: usize = 1_000;

/// Most bytes of encoded events in one batch (a single larger event travels alone). Under a mebibyte with room
/// for the envelope, so a batch passes the default body limits of common proxies (nginx's `client_max_body_size`
/// is 1 MiB); it also bounds what one delivery in flight holds in memory.
pub const BATCH_MAX_BYTES: usize = 1_000_000;

/// What one storage read for a new batch returns at most (the read includes the event that crosses the byte
/// bound; [`trim_to_batch`] takes it off again unless it is the only one).
pub(crate) const BATCH_READ_LIMIT: ReadLimit =
    ReadLimit { events: BATCH_MAX_EVENTS, bytes: BATCH_MAX_BYTES };

/// Committed events of one store, ascending and contiguous, as stored (each one's JSON exactly as the sync
/// protocol serves it). Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBatch {
    inner: Arc<BatchInner>,
}

#[derive(Debug)]
struct BatchInner {
    store_id: String,
    events: Vec<StoredEvent>,
}

impl EventBatch {
    /// A batch of `events`, which must be non-empty, ascending and contiguous (the caller reads them so).
    pub(crate) fn new(store_id: &str, events: Vec<StoredEvent>) -> Self {
        debug_assert!(
            events
                .first()
                .is_some_and(|first| is_contiguous(&events, first.seq_num.saturating_sub(1)))
        );
        EventBatch { inner: Arc::new(BatchInner { store_id: store_id.to_owned(), events }) }
    }

    /// The store the events belong to.
    pub fn store_id(&self) -> &str {
        &self.inner.store_id
    }

    /// The events, ascending by sequence number, without gaps.
    pub fn events(&self) -> &[StoredEvent] {
        &self.inner.events
    }

    /// The first event's sequence number.
    pub fn first_seq_num(&self) -> u64 {
        self.inner.events.first().map_or(0, |event| event.seq_num)
    }

    /// The last event's sequence number.
    pub fn last_seq_num(&self) -> u64 {
        self.inner.events.last().map_or(0, |event| event.seq_num)
    }

    /// `<storeId>:<firstSeqNum>-<lastSeqNum>`: the same for every attempt to deliver this batch, across retries,
    /// restarts and a change of delivering node (the batch's end is committed before its first attempt).
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}-{}", self.store_id(), self.first_seq_num(), self.last_seq_num())
    }

    /// The webhook body: `{"storeId":…,"events":[…]}`, each event's stored JSON verbatim.
    pub fn to_json(&self) -> String {
        let store_id =
            serde_json::to_string(self.store_id()).expect("a string always serializes to JSON");
        let events_bytes: usize =
            self.events().iter().map(|event| event.encoded_json.len() + 1).sum();
        let mut body = String::with_capacity(events_bytes + store_id.len() + 32);
        body.push_str(r#"{"storeId":"#);
        body.push_str(&store_id);
        body.push_str(r#","events":["#);
        for (index, event) in self.events().iter().enumerate() {
            if index > 0 {
                body.push(',');
            }
            body.push_str(&event.encoded_json);
        }
        body.push_str("]}");
        body
    }
}

/// Drops events from the end until the batch fits [`BATCH_MAX_BYTES`], keeping at least one.
pub(crate) fn trim_to_batch(events: &mut Vec<StoredEvent>) {
    let mut bytes = 0usize;
    let fitting = events
        .iter()
        .take_while(|event| {
            bytes = bytes.saturating_add(event.encoded_json.len());
            bytes <= BATCH_MAX_BYTES
        })
        .count();
    events.truncate(fitting.clamp(1, BATCH_MAX_EVENTS));
}

/// Whether `events` starts right after `after` and has no holes.
pub(crate) fn is_contiguous(events: &[StoredEvent], after: u64) -> bool {
    events.iter().enumerate().all(|(index, event)| event.seq_num == after + 1 + index as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq_num: u64, bytes: usize) -> StoredEvent {
        // `bytes` of JSON: {"n":"xxx…"} is 8 bytes of frame around the filler.
        let filler = "x".repeat(bytes.saturating_sub(8));
        StoredEvent {
            seq_num,
            encoded_json: format!(r#"{{"n":"{filler}"}}"#),
            created_at: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    #[test]
    fn the_body_is_the_stored_events_verbatim_with_a_stable_key() {
        let events = vec![
            StoredEvent {
                seq_num: 7,
                encoded_json: r#"{"name":"v1.A","args":{"t":"é\"x"},"seqNum":7}"#.into(),
                created_at: String::new(),
            },
            StoredEvent {
                seq_num: 8,
                encoded_json: r#"{"name":"v1.B","args":{},"seqNum":8}"#.into(),
                created_at: String::new(),
            },
        ];
        let batch = EventBatch::new("store-1", events);
        assert_eq!(
            batch.to_json(),
            r#"{"storeId":"store-1","events":[{"name":"v1.A","args":{"t":"é\"x"},"seqNum":7},{"name":"v1.B","args":{},"seqNum":8}]}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&batch.to_json()).unwrap();
        assert_eq!(parsed["events"][0]["args"]["t"], "é\"x");
        assert_eq!(batch.idempotency_key(), "store-1:7-8");
        assert_eq!((batch.first_seq_num(), batch.last_seq_num()), (7, 8));
        assert_eq!(batch.clone().idempotency_key(), batch.idempotency_key());
    }

    /// Boundaries: under, at and over the byte bound, a single event over it, and the event count bound.
    #[test]
    fn batches_are_cut_at_the_byte_bound_but_never_empty() {
        let cases: &[(&[usize], usize)] = &[
            (&[100, 100, 100], 3),
            (&[BATCH_MAX_BYTES / 2, BATCH_MAX_BYTES / 2], 2),
            (&[BATCH_MAX_BYTES / 2, BATCH_MAX_BYTES / 2, 1], 2),
            (&[BATCH_MAX_BYTES / 2, BATCH_MAX_BYTES / 2 + 1], 1),
            (&[BATCH_MAX_BYTES + 1, 10], 1),
            (&[4 * BATCH_MAX_BYTES], 1),
        ];
        for (sizes, kept) in cases {
            let mut events: Vec<StoredEvent> = sizes
                .iter()
                .enumerate()
                .map(|(index, size)| event(index as u64 + 1, *size))
                .collect();
            assert_eq!(events[0].encoded_json.len(), sizes[0].max(8));
            trim_to_batch(&mut events);
            assert_eq!(events.len(), *kept, "sizes {sizes:?}");
        }
        let mut many: Vec<StoredEvent> =
            (1..=BATCH_MAX_EVENTS as u64 + 5).map(|seq_num| event(seq_num, 10)).collect();
        trim_to_batch(&mut many);
        assert_eq!(many.len(), BATCH_MAX_EVENTS);
        let mut none = Vec::new();
        trim_to_batch(&mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn contiguity_is_checked_from_the_cursor() {
        let events = vec![event(4, 10), event(5, 10), event(6, 10)];
        assert!(is_contiguous(&events, 3));
        assert!(!is_contiguous(&events, 2), "a gap before the first event");
        assert!(!is_contiguous(&[event(4, 10), event(6, 10)], 3), "a hole");
    }
}
