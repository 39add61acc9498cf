//! Composite event sequence numbers (spec §1.3–1.4).
//!
//! A local event is identified by `(global, client, rebaseGeneration)`. Synced events advance `global`;
//! client-only events advance `client` under the current global number; `rebaseGeneration` counts local rebases
//! and never goes on the wire. This module owns the numbering rule (`next_pair`), the two orderings LiveStore uses
//! and the `e3.1r2` text notation. It knows nothing about events themselves ([`crate::event`] does).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use crate::error::CoreError;

/// A composite sequence number `(global, client, rebaseGeneration)`.
///
/// The derived `Ord` is LiveStore's `compare` (global, then client, then generation) and is meant for sorting.
/// Sync decisions use [`EventSeqNum::is_greater_than`], which ignores the generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EventSeqNum {
    /// Position in the global log; assigned by push order to the backend (0 = before the first event).
    pub global: u64,
    /// Client-only sub-number under `global`; 0 for synced events.
    pub client: u32,
    /// How many rebases produced this number; purely local.
    pub rebase_generation: u32,
}

impl EventSeqNum {
    /// The parent of the first event: `e0`.
    pub const ROOT: EventSeqNum = EventSeqNum { global: 0, client: 0, rebase_generation: 0 };

    /// A sequence number with the given parts.
    pub const fn new(global: u64, client: u32, rebase_generation: u32) -> Self {
        EventSeqNum { global, client, rebase_generation }
    }

    /// A global sequence number as it comes from the wire (`fromGlobal`: client 0, generation 0).
    pub const fn from_global(global: u64) -> Self {
        EventSeqNum { global, client: 0, rebase_generation: 0 }
    }

    /// `nextPair`: the sequence number and parent of the event that follows `self` as head.
    ///
    /// A client-only event becomes `(global, client + 1)` with parent `self`. A synced event becomes
    /// `(global + 1, 0)` and its parent is `(global, 0)`: the parent of a global event always has client 0, so
    /// the synced events of one client form a contiguous chain on the wire even with client-only events between.
    /// The rebase generation is carried over unchanged.
    pub fn next_pair(self, client_only: bool) -> (EventSeqNum, EventSeqNum) {
        if client_only {
            let next = EventSeqNum { client: self.client + 1, ..self };
            (next, self)
        } else {
            let next = EventSeqNum {
                global: self.global + 1,
                client: 0,
                rebase_generation: self.rebase_generation,
            };
            let parent = EventSeqNum {
                global: self.global,
                client: 0,
                rebase_generation: self.rebase_generation,
            };
            (next, parent)
        }
    }

    /// Orders by global, then client, ignoring the rebase generation (`isGreaterThan` and friends).
    pub fn cmp_position(self, other: EventSeqNum) -> Ordering {
        (self.global, self.client).cmp(&(other.global, other.client))
    }

    /// `isGreaterThan`: strictly after `other` by global, then client.
    pub fn is_greater_than(self, other: EventSeqNum) -> bool {
        self.cmp_position(other) == Ordering::Greater
    }

    /// `isGreaterThanOrEqual`: not before `other` by global, then client.
    pub fn is_greater_or_equal(self, other: EventSeqNum) -> bool {
        self.cmp_position(other) != Ordering::Less
    }

    /// `max` by global, then client; on a tie `self` wins.
    pub fn max_position(self, other: EventSeqNum) -> EventSeqNum {
        if other.is_greater_than(self) { other } else { self }
    }

    /// Whether this number names a client-only event (a client sub-number under a global one).
    pub fn is_client_sub_number(self) -> bool {
        self.client > 0
    }
}

impl fmt::Display for EventSeqNum {
    /// Writes `e{global}[.{client}][r{generation}]`, omitting zero parts (e.g. `e3`, `e3.1`, `e4r1`).
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "e{}", self.global)?;
        if self.client > 0 {
            write!(formatter, ".{}", self.client)?;
        }
        if self.rebase_generation > 0 {
            write!(formatter, "r{}", self.rebase_generation)?;
        }
        Ok(())
    }
}

impl FromStr for EventSeqNum {
    type Err = CoreError;

    /// Parses the notation written by [`fmt::Display`]; explicit zero parts (`e3.0r0`) are accepted too.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || CoreError::InvalidSeqNumNotation(text.chars().take(64).collect());
        let rest = text.strip_prefix('e').ok_or_else(error)?;
        let (rest, rebase_generation) = match rest.split_once('r') {
            Some((head, generation)) => (head, parse_digits::<u32>(generation).ok_or_else(error)?),
            None => (rest, 0),
        };
        let (global, client) = match rest.split_once('.') {
            Some((global, client)) => (
                parse_digits::<u64>(global).ok_or_else(error)?,
                parse_digits::<u32>(client).ok_or_else(error)?,
            ),
            None => (parse_digits::<u64>(rest).ok_or_else(error)?, 0),
        };
        Ok(EventSeqNum { global, client, rebase_generation })
    }
}

/// Parses a non-empty run of ASCII digits (no sign, no whitespace), unlike `str::parse` which accepts `+`.
fn parse_digits<T: FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn next_pair_follows_the_spec_example() {
        // e1 (synced), e1.1 (client doc set, parent e1), e2 (synced, parent e1, not e1.1).
        let (e1, parent_e1) = EventSeqNum::ROOT.next_pair(false);
        assert_eq!((e1.to_string(), parent_e1.to_string()), ("e1".into(), "e0".into()));
        let (e1_1, parent_e1_1) = e1.next_pair(true);
        assert_eq!((e1_1.to_string(), parent_e1_1.to_string()), ("e1.1".into(), "e1".into()));
        let (e2, parent_e2) = e1_1.next_pair(false);
        assert_eq!((e2.to_string(), parent_e2.to_string()), ("e2".into(), "e1".into()));
    }

    #[test]
    fn next_pair_keeps_the_rebase_generation() {
        let head = EventSeqNum::new(4, 0, 1);
        assert_eq!(head.next_pair(false).0.to_string(), "e5r1");
        assert_eq!(head.next_pair(true).0.to_string(), "e4.1r1");
        assert_eq!(EventSeqNum::new(4, 2, 1).next_pair(false).1.to_string(), "e4r1");
    }

    #[test]
    fn comparisons_ignore_the_generation_except_equality_and_sorting() {
        let a = EventSeqNum::new(3, 0, 0);
        let b = EventSeqNum::new(3, 0, 2);
        assert!(!b.is_greater_than(a));
        assert!(b.is_greater_or_equal(a));
        assert_ne!(a, b);
        assert!(a < b);
        assert_eq!(a.max_position(b), a);
        assert!(EventSeqNum::new(3, 1, 0).is_greater_than(b));
    }

    #[test]
    fn notation_rejects_garbage() {
        for bad in [
            "",
            "e",
            "3",
            "e-1",
            "e+1",
            "e1.",
            "e1r",
            "e1.x",
            "ex",
            "e1.1.1",
            "e99999999999999999999999",
        ] {
            assert!(bad.parse::<EventSeqNum>().is_err(), "{bad}");
        }
        assert_eq!("e3.0r0".parse::<EventSeqNum>().unwrap(), EventSeqNum::new(3, 0, 0));
    }

    proptest! {
        #[test]
        fn notation_round_trips(global in 0u64..u64::MAX, client in 0u32..10, generation in 0u32..10) {
            let seq_num = EventSeqNum::new(global, client, generation);
            prop_assert_eq!(seq_num.to_string().parse::<EventSeqNum>().unwrap(), seq_num);
        }

        #[test]
        fn next_pair_is_strictly_increasing(global in 0u64..1_000, client in 0u32..10, client_only: bool) {
            let head = EventSeqNum::new(global, client, 0);
            let (next, parent) = head.next_pair(client_only);
            prop_assert!(next.is_greater_than(head));
            prop_assert!(!parent.is_greater_than(head));
            if !client_only {
                prop_assert_eq!(parent.client, 0);
                prop_assert_eq!(next.global, parent.global + 1);
            }
        }
    }
}
