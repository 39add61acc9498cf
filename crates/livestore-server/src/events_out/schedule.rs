//! Which stores of one subscriber need a delivery, in which order, and when a failed one may retry. No IO: the
//! delivery task (`engine`) feeds it what it hears (announced heads, scanned stores, finished steps, the clock) and
//! takes ready stores from it.
//!
//! Each tracked store is in exactly one state: idle (nothing known to deliver), ready (queued), in flight (one step
//! running: at most one batch per store at a time, which is what keeps a store's events in order) or waiting (a
//! failed step's backoff). Ready stores are served first come, first served, and a store that delivered a batch
//! queues again behind the others, so a busy store cannot starve the rest. Stores with nothing to deliver are
//! forgotten; the next announcement or scan brings them back. The sum of `head - delivered` over tracked stores
//! is kept up to date as the lag.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::storage::cursors::{Cursor, ScannedStore};

/// What a finished step reports to the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Finished {
    /// A batch was acknowledged; the cursor moved.
    Delivered(Cursor),
    /// Nothing after the cursor was committed when the step read.
    CaughtUp(Cursor),
    /// The attempt failed; `cursor` is what the step knew (with the pending end it committed), if anything.
    Failed(Option<Cursor>),
    /// The cursor row did not hold what the step expected: reload it before the next attempt.
    Moved,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Ready,
    InFlight,
    Waiting(Instant),
}

#[derive(Debug)]
struct Entry {
    /// The highest committed head heard of.
    head: u64,
    /// The cursor, once loaded (a scan brings it; a step loads it otherwise).
    cursor: Option<Cursor>,
    state: State,
    /// Failures in a row; sets the backoff.
    failures: u32,
    /// A head was announced while a step ran: that step's "caught up" may predate the commit.
    announced_in_flight: bool,
}

impl Entry {
    fn wants_delivery(&self) -> bool {
        self.cursor.is_none_or(|cursor| cursor.pending.is_some() || self.head > cursor.delivered)
    }

    fn lag(&self) -> u64 {
        self.cursor.map_or(0, |cursor| self.head.saturating_sub(cursor.delivered))
    }
}

/// The per-store bookkeeping of one subscriber's delivery.
#[derive(Debug, Default)]
pub(super) struct Schedule {
    entries: HashMap<Arc<str>, Entry>,
    ready: VecDeque<Arc<str>>,
    retries: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
    lag: u64,
}

impl Schedule {
    /// Stores tracked (with something to deliver or in flight).
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Committed events not yet acknowledged, over the tracked stores whose cursor is known.
    pub(super) fn lag(&self) -> u64 {
        self.lag
    }

    /// A commit of `store_id` up to `head` was announced.
    pub(super) fn announce(&mut self, store_id: &str, head: u64) {
        self.update(store_id, |entry| {
            entry.head = entry.head.max(head);
            if entry.state == State::InFlight {
                entry.announced_in_flight = true;
            }
        });
    }

    /// A scan found `store` behind; its cursor is taken unless one is already known (ours is newer).
    pub(super) fn scanned(&mut self, store: &ScannedStore) {
        self.update(&store.store_id, |entry| {
            entry.head = entry.head.max(store.head);
            if entry.cursor.is_none() && entry.state != State::InFlight {
                entry.cursor = Some(store.cursor);
            }
        });
    }

    /// The next store to deliver, now in flight, with its cursor if known.
    pub(super) fn next_ready(&mut self) -> Option<(Arc<str>, Option<Cursor>)> {
        while let Some(store_id) = self.ready.pop_front() {
            let Some(entry) = self.entries.get_mut(&store_id) else { continue };
            if entry.state != State::Ready {
                continue;
            }
            entry.state = State::InFlight;
            entry.announced_in_flight = false;
            return Some((store_id, entry.cursor));
        }
        None
    }

    /// A step of `store_id` ended; a failure waits `backoff(failures in a row)` before the next attempt.
    pub(super) fn finished(
        &mut self,
        store_id: &str,
        finished: Finished,
        now: Instant,
        backoff: impl FnOnce(u32) -> Duration,
    ) {
        let Some(entry) = self.entries.get(store_id) else { return };
        let lag_before = entry.lag();
        let key = self.key(store_id);
        let entry = self.entries.get_mut(store_id).expect("present above");
        let mut retry_at = None;
        match finished {
            Finished::Delivered(cursor) => {
                entry.cursor = Some(cursor);
                entry.head = entry.head.max(cursor.delivered);
                entry.failures = 0;
                entry.state = State::Idle;
            }
            Finished::CaughtUp(cursor) => {
                entry.cursor = Some(cursor);
                if !entry.announced_in_flight {
                    // The read saw everything committed before it; a later commit announces itself.
                    entry.head = cursor.delivered;
                }
                entry.failures = 0;
                entry.state = State::Idle;
            }
            Finished::Failed(cursor) => {
                if cursor.is_some() {
                    entry.cursor = cursor;
                }
                entry.failures = entry.failures.saturating_add(1);
                retry_at = Some(now + backoff(entry.failures));
            }
            Finished::Moved => {
                entry.cursor = None;
                entry.failures = entry.failures.saturating_add(1);
                retry_at = Some(now + backoff(entry.failures));
            }
        }
        if let Some(at) = retry_at {
            entry.state = State::Waiting(at);
            self.retries.push(Reverse((at, key.clone())));
        }
        let lag_after = entry.lag();
        self.lag = self.lag.saturating_sub(lag_before).saturating_add(lag_after);
        self.settle(&key);
    }

    /// Stores whose backoff ended by `now` become ready.
    pub(super) fn release_due(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.retries.peek() {
            if *at > now {
                return;
            }
            let Reverse((at, store_id)) = self.retries.pop().expect("peeked");
            if let Some(entry) = self.entries.get_mut(&store_id)
                && entry.state == State::Waiting(at)
            {
                entry.state = State::Idle;
                self.settle(&store_id);
            }
        }
    }

    /// When the earliest backoff ends.
    pub(super) fn next_retry(&self) -> Option<Instant> {
        self.retries.peek().map(|Reverse((at, _))| *at)
    }

    /// Applies `change` to the entry of `store_id` (created idle), keeping the lag, then settles it.
    fn update(&mut self, store_id: &str, change: impl FnOnce(&mut Entry)) {
        let key = self.key(store_id);
        let entry = self.entries.entry(key.clone()).or_insert(Entry {
            head: 0,
            cursor: None,
            state: State::Idle,
            failures: 0,
            announced_in_flight: false,
        });
        let lag_before = entry.lag();
        change(entry);
        self.lag = self.lag.saturating_sub(lag_before).saturating_add(entry.lag());
        self.settle(&key);
    }

    /// An idle store with something to deliver queues; one with nothing is forgotten.
    fn settle(&mut self, store_id: &Arc<str>) {
        let Some(entry) = self.entries.get_mut(store_id) else { return };
        if entry.state != State::Idle {
            return;
        }
        if entry.wants_delivery() {
            entry.state = State::Ready;
            self.ready.push_back(store_id.clone());
        } else {
            self.lag = self.lag.saturating_sub(entry.lag());
            self.entries.remove(store_id);
        }
    }

    /// The shared key of a tracked store, or a new one.
    fn key(&self, store_id: &str) -> Arc<str> {
        self.entries
            .get_key_value(store_id)
            .map_or_else(|| Arc::from(store_id), |(key, _)| key.clone())
    }
}

#[cfg(test)]
mod tests;
