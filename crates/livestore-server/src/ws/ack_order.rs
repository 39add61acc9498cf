//! Ack before echo: on the pusher's own connection, a push's `Exit` goes out before the live `Chunk` that carries
//! the same sequence numbers.
//!
//! The reference server (sync-cf 0.4.0) replies to a push and then fans the batch out, and LiveStore 0.4.0's client
//! depends on that order: when the echo of its own pending events arrives before their ack, its session can
//! materialize one of them twice (`UNIQUE constraint failed`, and the client shuts down; reproduced by
//! `tests/js/rebase-duplicate-repro.mjs`). Our storage writer publishes a batch to the hub before it replies, so that
//! no subscriber can miss it, and the hub puts live batches straight into each connection's queue; on the pusher's
//! connection the echo would therefore come first. So the connection's writer holds back any live batch that
//! overlaps a push of this connection still waiting for its reply, and releases it right after writing that reply.
//! Held batches keep their order: once one is held, later ones queue behind it. Other connections are not delayed.
//!
//! This module does not decide anything about admission or fan-out; `ws` submits pushes and writes frames.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::outbox::Outbound;

/// The pushes of one connection that were submitted to storage and not answered yet.
#[derive(Debug, Default)]
pub(crate) struct PushesInFlight {
    state: Mutex<InFlightState>,
    /// How many pushes are registered, so the common case (a subscriber that is not pushing) takes no lock.
    count: std::sync::atomic::AtomicUsize,
}

#[derive(Debug, Default)]
struct InFlightState {
    next_token: u64,
    /// `(token, first sequence number, last sequence number)` of each push, in submission order.
    pushes: Vec<(u64, u64, u64)>,
}

impl PushesInFlight {
    /// Records a push of the events `first..=last` before it is submitted; the token identifies its reply.
    pub(crate) fn register(&self, first: u64, last: u64) -> u64 {
        let mut state = self.state.lock().expect("in-flight pushes lock poisoned");
        state.next_token += 1;
        let token = state.next_token;
        state.pushes.push((token, first, last));
        self.count.store(state.pushes.len(), std::sync::atomic::Ordering::Release);
        token
    }

    /// Forgets a push once its reply was written.
    fn finish(&self, token: u64) {
        self.state
            .lock()
            .expect("in-flight pushes lock poisoned")
            .pushes
            .retain(|(t, _, _)| *t != token);
    }

    fn overlaps(&self, first: u64, last: u64) -> bool {
        let state = self.state.lock().expect("in-flight pushes lock poisoned");
        state
            .pushes
            .iter()
            .any(|(_, push_first, push_last)| first <= *push_last && *push_first <= last)
    }
}

/// The writer's side: which live frames may go now and which must wait for a reply.
#[derive(Debug)]
pub(crate) struct AckOrder {
    pushes: std::sync::Arc<PushesInFlight>,
    held: VecDeque<Outbound>,
    /// More held frames than this means the pusher's replies are not coming; the connection is closed as lagging.
    max_held: usize,
}

/// What the writer does with a live frame.
#[derive(Debug)]
pub(crate) enum LiveDecision {
    /// Write it now.
    Write(Outbound),
    /// It is held until a reply is written.
    Held,
    /// Too much is held: close the connection (the client reconnects and resumes from its cursor).
    Overflow,
}

impl AckOrder {
    pub(crate) fn new(pushes: std::sync::Arc<PushesInFlight>, max_held: usize) -> Self {
        AckOrder { pushes, held: VecDeque::new(), max_held }
    }

    /// Decides about a live frame (anything else is written at once by the caller).
    pub(crate) fn live(&mut self, frame: Outbound) -> LiveDecision {
        let must_wait = !self.held.is_empty()
            || matches!(&frame, Outbound::Live { batch, .. }
                if self.pushes.overlaps(batch.first_seq_num, batch.last_seq_num));
        if !must_wait {
            return LiveDecision::Write(frame);
        }
        if self.held.len() >= self.max_held {
            return LiveDecision::Overflow;
        }
        self.held.push_back(frame);
        LiveDecision::Held
    }

    /// After the reply of push `token` was written: the held frames that may go now, in order.
    pub(crate) fn replied(&mut self, token: u64) -> Vec<Outbound> {
        self.pushes.finish(token);
        let mut ready = Vec::new();
        while let Some(Outbound::Live { batch, .. }) = self.held.front() {
            if self.pushes.overlaps(batch.first_seq_num, batch.last_seq_num) {
                break;
            }
            ready.extend(self.held.pop_front());
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::outbox::LiveBatch;

    fn live(first: u64, last: u64) -> Outbound {
        Outbound::Live {
            request_id: Arc::from("pull"),
            batch: Arc::new(LiveBatch::for_test(first, last, 0)),
            _charge: crate::outbox::Charge::default(),
        }
    }

    fn range(frame: &Outbound) -> (u64, u64) {
        match frame {
            Outbound::Live { batch, .. } => (batch.first_seq_num, batch.last_seq_num),
            other => panic!("not a live frame: {other:?}"),
        }
    }

    #[test]
    fn the_echo_of_an_unanswered_push_waits_for_its_reply_and_order_is_kept() {
        let pushes = Arc::new(PushesInFlight::default());
        let mut order = AckOrder::new(pushes.clone(), 8);
        assert!(matches!(order.live(live(1, 2)), LiveDecision::Write(_)), "nothing in flight");
        let first = pushes.register(3, 4);
        let second = pushes.register(5, 5);
        assert!(matches!(order.live(live(3, 4)), LiveDecision::Held));
        // Not overlapping, but behind a held frame: it waits too, so live batches stay in order.
        assert!(matches!(order.live(live(6, 6)), LiveDecision::Held));
        let ready: Vec<_> = order.replied(first).iter().map(range).collect();
        assert_eq!(ready, [(3, 4), (6, 6)]);
        assert!(matches!(order.live(live(5, 5)), LiveDecision::Held));
        assert_eq!(order.replied(second).iter().map(range).collect::<Vec<_>>(), [(5, 5)]);
    }

    #[test]
    fn a_foreign_batch_over_a_refused_push_waits_for_the_refusal() {
        let pushes = Arc::new(PushesInFlight::default());
        let mut order = AckOrder::new(pushes.clone(), 8);
        let refused = pushes.register(7, 7);
        assert!(matches!(order.live(live(7, 9)), LiveDecision::Held));
        assert_eq!(order.replied(refused).len(), 1);
    }

    #[test]
    fn too_many_held_frames_close_the_connection() {
        let pushes = Arc::new(PushesInFlight::default());
        let mut order = AckOrder::new(pushes.clone(), 2);
        pushes.register(1, 100);
        assert!(matches!(order.live(live(1, 1)), LiveDecision::Held));
        assert!(matches!(order.live(live(2, 2)), LiveDecision::Held));
        assert!(matches!(order.live(live(3, 3)), LiveDecision::Overflow));
    }
}
