//! Push requests: the next batch of pending synced events, unless a push is unanswered or pushing is parked.

use std::time::Duration;

use livestore_core::event::LocalEvent;
use livestore_proto::client as wire;
use livestore_proto::event::{EncodedEvent, SeqNum};
use serde_json::value::RawValue;

use super::{ConnectionMachine, FrameKind, PushInFlight, SyncStore, store_stop};
use crate::sync::reason::ConnectionEnd;
use crate::sync::{MAX_PUSH_BYTES, MAX_PUSH_EVENTS};

impl ConnectionMachine {
    /// Sends the next batch of pending synced events unless a push is unanswered or the server said it is ahead.
    ///
    /// One push at a time: the server answers pushes in order and a `ServerAheadError` invalidates everything
    /// behind the refused batch, so pipelining would only produce more refusals.
    pub(super) fn try_push(
        &mut self,
        now: Duration,
        store: &mut impl SyncStore,
    ) -> Result<(), ConnectionEnd> {
        if self.push_in_flight.is_some() || self.parked_since.is_some() {
            return Ok(());
        }
        let candidates = store
            .push_candidates_after(self.accepted_through, MAX_PUSH_EVENTS)
            .map_err(store_stop)?;
        let batch = push_batch(&candidates);
        let Some(last) = batch.last() else { return Ok(()) };
        let last_global = last.seq_num.0;
        let (_, backend_id) = store.upstream_cursor().map_err(store_stop)?;
        let request_id = self.next_id();
        let frame = wire::push_request(
            &request_id,
            store.store_id(),
            self.config.sync_payload.as_deref(),
            &batch,
            backend_id.as_deref(),
        );
        self.send(FrameKind::Push, frame);
        self.push_in_flight = Some(PushInFlight { request_id, last_global, sent_at: now });
        self.pages_at_push = self.pages_applied;
        Ok(())
    }
}

/// The longest prefix of `candidates` within [`MAX_PUSH_EVENTS`] and [`MAX_PUSH_BYTES`] (at least one event).
fn push_batch(candidates: &[LocalEvent]) -> Vec<EncodedEvent> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    for event in candidates {
        let encoded = to_wire(event);
        let size = encoded.to_json().len();
        if batch.len() == MAX_PUSH_EVENTS || (!batch.is_empty() && bytes + size > MAX_PUSH_BYTES) {
            break;
        }
        bytes += size;
        batch.push(encoded);
    }
    batch
}

fn to_wire(event: &LocalEvent) -> EncodedEvent {
    EncodedEvent {
        name: event.name.to_string(),
        args: RawValue::from_string(event.args_json.to_string()).ok(),
        seq_num: SeqNum(event.seq_num.global),
        parent_seq_num: SeqNum(event.parent_seq_num.global),
        client_id: event.client_id.to_string(),
        session_id: event.session_id.to_string(),
    }
}
