//! The `SyncState` value and `merge` (spec §4.2): how pending local events meet upstream events.
//!
//! A node (our store plays LiveStore's leader role) keeps `pending` events not yet confirmed upstream, the
//! `upstream_head` it knows the upstream to have, and its `local_head`. `merge` takes one payload and returns what
//! to do, without doing it:
//! - `LocalPush`: new local events are appended to pending, or rejected when they are not after the local head;
//! - `UpstreamAdvance`: events from upstream either confirm a prefix of pending (advance) or diverge from it, in
//!   which case the divergent pending suffix is rolled back and renumbered on top of the new upstream head (rebase);
//! - `UpstreamRebase`: the upstream itself rebased; everything pending plus the given events is rolled back.
//!
//! The caller applies the result: materialize `new_events`, roll back `rollback_events` (newest first), forget
//! `confirmed_events`' undo data, and store `new_state`. Upstream input that breaks the ordering rules is an
//! [`CoreError`], never a panic, so a misbehaving server cannot crash a client.
//!
//! Two deliberate differences from the JavaScript reference:
//! - Upstream events must continue the chain (`parent == previous`); the reference silently accepts a gap, which
//!   corrupts the log. A gap is reported as [`CoreError::ChainGap`] and the driver re-pulls.
//! - The rebase generation is `max(local head, new upstream head) + 1`, so it only grows while events stay pending
//!   and a rebased event never reuses a key that existed locally before the rebase.

use crate::error::CoreError;
use crate::event::LocalEvent;
use crate::seq_num::EventSeqNum;

#[cfg(test)]
mod tests;

/// Pending events and the two heads of one sync node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncState {
    pending: Vec<LocalEvent>,
    upstream_head: EventSeqNum,
    local_head: EventSeqNum,
}

/// One input to [`merge`].
#[derive(Debug, Clone)]
pub enum Payload {
    /// Events committed locally, numbered with [`EventSeqNum::next_pair`] from the local head.
    LocalPush(Vec<LocalEvent>),
    /// Events the upstream accepted, ascending (from the wire: global events in `from_global` form).
    UpstreamAdvance(Vec<LocalEvent>),
    /// The upstream rebased: roll back `rollback_events` and everything pending, apply `new_events`.
    UpstreamRebase {
        /// Events the upstream rolled back.
        rollback_events: Vec<LocalEvent>,
        /// Events that replace them, already rebased by the upstream.
        new_events: Vec<LocalEvent>,
    },
}

/// A local push whose events are not after the local head (see [`SyncState::push_local`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushRejected {
    /// The smallest sequence number the rejected events should have started at.
    pub expected_minimum: EventSeqNum,
}

/// What [`merge`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeResult {
    /// Apply `new_events` on top of the current state.
    Advance(MergeAdvance),
    /// Roll back `rollback_events` (newest first), then apply `new_events`.
    Rebase(MergeRebase),
    /// A local push whose first event is not after the local head.
    Reject {
        /// The smallest sequence number the rejected events should have started at.
        expected_minimum: EventSeqNum,
    },
}

/// The advance branch of [`MergeResult`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeAdvance {
    /// The state after the merge.
    pub new_state: SyncState,
    /// Events to materialize, in order.
    pub new_events: Vec<LocalEvent>,
    /// Previously pending events the upstream confirmed.
    pub confirmed_events: Vec<LocalEvent>,
}

/// The rebase branch of [`MergeResult`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRebase {
    /// The state after the merge; its pending events are the rebased copies.
    pub new_state: SyncState,
    /// Events to materialize after the rollback: upstream events first, then the rebased pending events.
    pub new_events: Vec<LocalEvent>,
    /// Events to roll back, in ascending order (undo them newest first).
    pub rollback_events: Vec<LocalEvent>,
    /// Previously pending events that stay applied and leave pending (confirmed, or client-only before the
    /// divergence point).
    pub confirmed_events: Vec<LocalEvent>,
}

impl SyncState {
    /// A state with nothing pending and both heads at `head`.
    pub fn new(head: EventSeqNum) -> Self {
        SyncState { pending: Vec::new(), upstream_head: head, local_head: head }
    }

    /// Rebuilds a state from persisted parts, checking the invariants.
    pub fn from_parts(
        pending: Vec<LocalEvent>,
        upstream_head: EventSeqNum,
        local_head: EventSeqNum,
    ) -> Result<Self, CoreError> {
        // The first pending event chains from whatever preceded it locally (possibly a confirmed client-only
        // event above the upstream head), so only the links inside pending are checked.
        if let Some((first, rest)) = pending.split_first() {
            if !first.seq_num.is_greater_than(upstream_head) {
                return Err(CoreError::NotAfterUpstreamHead {
                    upstream_head: upstream_head.to_string(),
                    received: first.seq_num.to_string(),
                });
            }
            check_chain(first.seq_num, rest)?;
        }
        if upstream_head.is_greater_than(local_head) {
            return Err(CoreError::NotAfterUpstreamHead {
                upstream_head: upstream_head.to_string(),
                received: local_head.to_string(),
            });
        }
        Ok(SyncState { pending, upstream_head, local_head })
    }

    /// Events not yet confirmed by the upstream, ascending.
    pub fn pending(&self) -> &[LocalEvent] {
        &self.pending
    }

    /// What this node knows the upstream to have.
    pub fn upstream_head(&self) -> EventSeqNum {
        self.upstream_head
    }

    /// The last local event (the last pending one if any).
    pub fn local_head(&self) -> EventSeqNum {
        self.local_head
    }

    /// Pending events that go to the sync backend: the synced ones, in order.
    pub fn pending_synced(&self) -> impl Iterator<Item = &LocalEvent> {
        self.pending.iter().filter(|event| !event.client_only)
    }

    /// `merge(LocalPush)` applied in place: appends to pending without copying it (the commit hot path).
    ///
    /// On rejection nothing changes and the error carries the smallest acceptable sequence number.
    pub fn push_local(&mut self, new_events: Vec<LocalEvent>) -> Result<(), PushRejected> {
        let Some(first) = new_events.first() else { return Ok(()) };
        let ascending =
            new_events.windows(2).all(|pair| pair[1].seq_num.is_greater_than(pair[0].seq_num));
        if !ascending || !first.seq_num.is_greater_than(self.local_head) {
            return Err(PushRejected { expected_minimum: self.local_head.next_pair(true).0 });
        }
        if let Some(last) = new_events.last() {
            self.local_head = last.seq_num;
        }
        self.pending.extend(new_events);
        Ok(())
    }

    /// Drops leading upstream events this node already has (at or below the upstream head).
    ///
    /// Servers may re-send events after a reconnect; skipping them makes replaying a page idempotent instead of
    /// an ordering error.
    pub fn skip_known<'a>(&self, events: &'a [LocalEvent]) -> &'a [LocalEvent] {
        let known = events
            .iter()
            .take_while(|event| !event.seq_num.is_greater_than(self.upstream_head))
            .count();
        &events[known..]
    }
}

/// Merges one payload into `state`; see the module docs. `ignore_client_events` is the leader mode: client-only
/// pending events are skipped when matching upstream events (they never travel upstream).
pub fn merge(
    state: &SyncState,
    payload: Payload,
    ignore_client_events: bool,
) -> Result<MergeResult, CoreError> {
    match payload {
        Payload::LocalPush(new_events) => local_push(state, new_events),
        Payload::UpstreamAdvance(new_events) => {
            upstream_advance(state, &new_events, ignore_client_events)
        }
        Payload::UpstreamRebase { rollback_events, new_events } => {
            upstream_rebase(state, rollback_events, new_events)
        }
    }
}

fn local_push(state: &SyncState, new_events: Vec<LocalEvent>) -> Result<MergeResult, CoreError> {
    let Some(first) = new_events.first() else {
        return Ok(MergeResult::Advance(MergeAdvance {
            new_state: state.clone(),
            new_events: Vec::new(),
            confirmed_events: Vec::new(),
        }));
    };
    check_ascending(&new_events)?;
    if !first.seq_num.is_greater_than(state.local_head) {
        return Ok(MergeResult::Reject { expected_minimum: state.local_head.next_pair(true).0 });
    }
    let local_head = new_events.last().map_or(state.local_head, |event| event.seq_num);
    let mut pending = state.pending.clone();
    pending.extend(new_events.iter().cloned());
    Ok(MergeResult::Advance(MergeAdvance {
        new_state: SyncState { pending, upstream_head: state.upstream_head, local_head },
        new_events,
        confirmed_events: Vec::new(),
    }))
}

fn upstream_advance(
    state: &SyncState,
    incoming: &[LocalEvent],
    ignore_client_events: bool,
) -> Result<MergeResult, CoreError> {
    let (Some(first), Some(last)) = (incoming.first(), incoming.last()) else {
        return Ok(MergeResult::Advance(MergeAdvance {
            new_state: state.clone(),
            new_events: Vec::new(),
            confirmed_events: Vec::new(),
        }));
    };
    check_ascending(incoming)?;
    if !first.seq_num.is_greater_than(state.upstream_head) {
        return Err(CoreError::NotAfterUpstreamHead {
            upstream_head: state.upstream_head.to_string(),
            received: first.seq_num.to_string(),
        });
    }
    check_chain(state.upstream_head, incoming)?;
    let new_upstream_head = last.seq_num;

    // Walk pending and incoming side by side. Pending events that never travel upstream are stepped over in
    // leader mode; `matched` counts incoming events that equal a pending one.
    let comparable = |event: &LocalEvent| !(ignore_client_events && event.client_only);
    let mut matched = 0;
    let mut divergence = None;
    for (pending_idx, pending_event) in state.pending.iter().enumerate() {
        if !comparable(pending_event) {
            continue;
        }
        let Some(incoming_event) = incoming.get(matched) else { break };
        if !pending_event.is_same_event(incoming_event) {
            divergence = Some(pending_idx);
            break;
        }
        matched += 1;
    }

    match divergence {
        None => {
            // Everything pending up to the first comparable event without an incoming counterpart is confirmed.
            let mut comparable_seen = 0;
            let split = state
                .pending
                .iter()
                .position(|event| {
                    if !comparable(event) {
                        return false;
                    }
                    comparable_seen += 1;
                    comparable_seen > matched
                })
                .unwrap_or(state.pending.len());
            let confirmed_events = state.pending[..split].to_vec();
            let remaining = state.pending[split..].to_vec();
            let local_head = remaining
                .last()
                .map_or(state.local_head.max_position(new_upstream_head), |event| event.seq_num);
            Ok(MergeResult::Advance(MergeAdvance {
                new_state: SyncState {
                    pending: remaining,
                    upstream_head: new_upstream_head,
                    local_head,
                },
                new_events: incoming[matched..].to_vec(),
                confirmed_events,
            }))
        }
        Some(pending_idx) => {
            let rollback_events = state.pending[pending_idx..].to_vec();
            let generation = next_generation(state.local_head, new_upstream_head);
            let rebased = rebase_all(&rollback_events, new_upstream_head, generation);
            let local_head = rebased.last().map_or(new_upstream_head, |event| event.seq_num);
            let mut new_events = incoming[matched..].to_vec();
            new_events.extend(rebased.iter().cloned());
            Ok(MergeResult::Rebase(MergeRebase {
                new_state: SyncState {
                    pending: rebased,
                    upstream_head: new_upstream_head,
                    local_head,
                },
                new_events,
                rollback_events,
                confirmed_events: state.pending[..pending_idx].to_vec(),
            }))
        }
    }
}

fn upstream_rebase(
    state: &SyncState,
    upstream_rollback: Vec<LocalEvent>,
    new_events: Vec<LocalEvent>,
) -> Result<MergeResult, CoreError> {
    check_ascending(&new_events)?;
    let new_upstream_head = new_events.last().map_or(state.upstream_head, |event| event.seq_num);
    let generation = next_generation(state.local_head, new_upstream_head);
    let rebased = rebase_all(&state.pending, new_upstream_head, generation);
    let local_head = rebased.last().map_or(new_upstream_head, |event| event.seq_num);
    let mut rollback_events = upstream_rollback;
    rollback_events.extend(state.pending.iter().cloned());
    let mut all_new = new_events;
    all_new.extend(rebased.iter().cloned());
    Ok(MergeResult::Rebase(MergeRebase {
        new_state: SyncState { pending: rebased, upstream_head: new_upstream_head, local_head },
        new_events: all_new,
        rollback_events,
        confirmed_events: Vec::new(),
    }))
}

fn next_generation(local_head: EventSeqNum, new_upstream_head: EventSeqNum) -> u32 {
    local_head.rebase_generation.max(new_upstream_head.rebase_generation).saturating_add(1)
}

fn rebase_all(events: &[LocalEvent], base: EventSeqNum, generation: u32) -> Vec<LocalEvent> {
    let mut parent = EventSeqNum { rebase_generation: generation, ..base };
    events
        .iter()
        .map(|event| {
            let rebased = event.rebased(parent, generation);
            parent = rebased.seq_num;
            rebased
        })
        .collect()
}

fn check_ascending(events: &[LocalEvent]) -> Result<(), CoreError> {
    for pair in events.windows(2) {
        if !pair[1].seq_num.is_greater_than(pair[0].seq_num) {
            return Err(CoreError::NotAscending {
                previous: pair[0].seq_num.to_string(),
                next: pair[1].seq_num.to_string(),
            });
        }
    }
    Ok(())
}

/// Checks that `events` continue the chain after `head`: a global event's parent is the previous global number
/// (client 0), a client-only event's parent is the previous event.
fn check_chain(head: EventSeqNum, events: &[LocalEvent]) -> Result<(), CoreError> {
    let mut previous = head;
    for event in events {
        let expected_parent = if event.seq_num.client == 0 {
            EventSeqNum { client: 0, ..previous }
        } else {
            previous
        };
        let continues = event.parent_seq_num.global == expected_parent.global
            && event.parent_seq_num.client == expected_parent.client
            && event.seq_num.is_greater_than(previous)
            && (event.seq_num.client > 0 || event.seq_num.global == expected_parent.global + 1);
        if !continues {
            return Err(CoreError::ChainGap {
                received: event.seq_num.to_string(),
                parent: event.parent_seq_num.to_string(),
                expected_parent: expected_parent.to_string(),
            });
        }
        previous = event.seq_num;
    }
    Ok(())
}
