//! Virtual time and the event queue: the only scheduler of a run.
//!
//! Events are ordered by `(time, sequence number)`; the sequence number is assigned at scheduling, so two events
//! due at the same instant run in the order they were scheduled, on every run. Popping an event advances the
//! clock to its time; nothing else moves time. What an event *means* is the caller's (`sim`): this module holds
//! any payload type.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

/// The clock and the queue of a run.
#[derive(Debug)]
pub struct World<E> {
    now: Duration,
    next_sequence: u64,
    /// `(time, sequence)` keys, earliest first; the payloads live in `events` under the sequence number.
    queue: BinaryHeap<Reverse<(Duration, u64)>>,
    events: BTreeMap<u64, E>,
}

impl<E> Default for World<E> {
    fn default() -> Self {
        World {
            now: Duration::ZERO,
            next_sequence: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
        }
    }
}

impl<E> World<E> {
    /// The current virtual time.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Schedules `event` at `at` (clamped to now: nothing runs in the past).
    pub fn schedule(&mut self, at: Duration, event: E) {
        let at = at.max(self.now);
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.queue.push(Reverse((at, sequence)));
        self.events.insert(sequence, event);
    }

    /// Schedules `event` after `delay`.
    pub fn schedule_in(&mut self, delay: Duration, event: E) {
        self.schedule(self.now + delay, event);
    }

    /// Pops the next event, advancing the clock to its time.
    pub fn pop(&mut self) -> Option<E> {
        let Reverse((at, sequence)) = self.queue.pop()?;
        self.now = at;
        let event = self.events.remove(&sequence).expect("every queued key has its event");
        Some(event)
    }

    /// When the next event is due.
    pub fn next_time(&self) -> Option<Duration> {
        self.queue.peek().map(|Reverse((at, _))| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_run_in_scheduling_order_and_time_only_moves_forward() {
        let mut world = World::default();
        world.schedule(Duration::from_secs(2), "b");
        world.schedule(Duration::from_secs(1), "a");
        world.schedule(Duration::from_secs(2), "c");
        assert_eq!(world.pop(), Some("a"));
        assert_eq!(world.now(), Duration::from_secs(1));
        world.schedule(Duration::ZERO, "now");
        assert_eq!(world.pop(), Some("now"));
        assert_eq!(world.now(), Duration::from_secs(1));
        assert_eq!(world.pop(), Some("b"));
        assert_eq!(world.pop(), Some("c"));
        assert_eq!(world.pop(), None);
    }
}
