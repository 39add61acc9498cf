//! The schedule's rules, step by step: one step per store at a time, fair order, backoff, lag, forgetting.

use std::time::Duration;

use tokio::time::Instant;

use super::{Finished, Schedule};
use crate::storage::cursors::{Cursor, ScannedStore};

fn at(delivered: u64) -> Cursor {
    Cursor { delivered, pending: None }
}

fn no_backoff(_: u32) -> Duration {
    panic!("no failure expected")
}

#[test]
fn an_announced_store_is_delivered_one_step_at_a_time() {
    let mut schedule = Schedule::default();
    let now = Instant::now();
    schedule.announce("a", 5);
    let (store, cursor) = schedule.next_ready().expect("ready");
    assert_eq!((&*store, cursor), ("a", None), "the step loads an unknown cursor");
    schedule.announce("a", 9);
    assert!(schedule.next_ready().is_none(), "never two steps of one store at once");
    schedule.finished("a", Finished::Delivered(at(5)), now, no_backoff);
    assert_eq!(schedule.lag(), 4);
    let (_, cursor) = schedule.next_ready().expect("more was announced");
    assert_eq!(cursor, Some(at(5)));
    schedule.finished("a", Finished::Delivered(at(9)), now, no_backoff);
    assert_eq!((schedule.len(), schedule.lag()), (0, 0), "caught up stores are forgotten");
    assert!(schedule.next_ready().is_none());
}

#[test]
fn a_busy_store_queues_behind_the_others() {
    let mut schedule = Schedule::default();
    let now = Instant::now();
    for store in ["a", "b", "c"] {
        schedule.announce(store, 100);
    }
    let mut order = Vec::new();
    for round in 1..=2 {
        for _ in 0..3 {
            let (store, _) = schedule.next_ready().unwrap();
            order.push(store.to_string());
            schedule.finished(&store, Finished::Delivered(at(round * 10)), now, no_backoff);
        }
    }
    assert_eq!(order, ["a", "b", "c", "a", "b", "c"]);
    assert_eq!(schedule.lag(), 3 * 80);
}

#[test]
fn failures_back_off_and_keep_the_pending_end() {
    let mut schedule = Schedule::default();
    let now = Instant::now();
    schedule.announce("a", 3);
    schedule.next_ready().unwrap();
    let pending = Cursor { delivered: 0, pending: Some(3) };
    let mut failures_seen = Vec::new();
    schedule.finished("a", Finished::Failed(Some(pending)), now, |failures| {
        failures_seen.push(failures);
        Duration::from_secs(2)
    });
    assert!(schedule.next_ready().is_none(), "waiting");
    assert_eq!(schedule.next_retry(), Some(now + Duration::from_secs(2)));
    schedule.release_due(now + Duration::from_secs(1));
    assert!(schedule.next_ready().is_none(), "not yet");
    schedule.release_due(now + Duration::from_secs(2));
    let (_, cursor) = schedule.next_ready().expect("retried");
    assert_eq!(cursor, Some(pending), "the retry resends the same batch");
    schedule.finished("a", Finished::Failed(None), now, |failures| {
        failures_seen.push(failures);
        Duration::from_secs(4)
    });
    assert_eq!(failures_seen, [1, 2], "failures in a row grow the backoff");
    schedule.release_due(now + Duration::from_secs(4));
    let (_, cursor) = schedule.next_ready().unwrap();
    assert_eq!(cursor, Some(pending), "a failure that learned nothing keeps what was known");
    schedule.finished("a", Finished::Delivered(at(3)), now, no_backoff);
    assert_eq!(schedule.len(), 0);
    schedule.announce("a", 4);
    schedule.next_ready().unwrap();
    schedule.finished("a", Finished::Failed(None), now, |failures| {
        assert_eq!(failures, 1, "a delivery resets the count");
        Duration::ZERO
    });
}

#[test]
fn a_moved_cursor_is_reloaded() {
    let mut schedule = Schedule::default();
    let now = Instant::now();
    schedule.scanned(&ScannedStore { store_id: "a".into(), head: 10, cursor: at(2) });
    assert_eq!(schedule.lag(), 8);
    let (_, cursor) = schedule.next_ready().unwrap();
    assert_eq!(cursor, Some(at(2)));
    schedule.finished("a", Finished::Moved, now, |_| Duration::ZERO);
    schedule.release_due(now);
    assert_eq!(schedule.next_ready().unwrap().1, None);
    assert_eq!(schedule.lag(), 0, "an unknown cursor counts no lag");
}

#[test]
fn caught_up_trusts_the_read_unless_a_commit_was_announced_meanwhile() {
    let mut schedule = Schedule::default();
    let now = Instant::now();
    schedule.scanned(&ScannedStore { store_id: "a".into(), head: 5, cursor: at(5) });
    assert_eq!(schedule.len(), 0, "a caught-up store is not tracked");
    schedule.announce("a", 6);
    schedule.next_ready().unwrap();
    schedule.finished("a", Finished::CaughtUp(at(5)), now, no_backoff);
    assert_eq!(schedule.len(), 0, "the read is newer than the announcement");

    schedule.announce("b", 6);
    schedule.next_ready().unwrap();
    schedule.announce("b", 7);
    schedule.finished("b", Finished::CaughtUp(at(5)), now, no_backoff);
    assert_eq!(schedule.next_ready().map(|(store, _)| store.to_string()), Some("b".into()));
}

#[test]
fn a_scan_does_not_overwrite_a_newer_cursor() {
    let mut schedule = Schedule::default();
    let now = Instant::now();
    schedule.announce("a", 10);
    schedule.next_ready().unwrap();
    schedule.scanned(&ScannedStore { store_id: "a".into(), head: 12, cursor: at(0) });
    schedule.finished("a", Finished::Delivered(at(10)), now, no_backoff);
    assert_eq!(schedule.next_ready().unwrap().1, Some(at(10)));
    schedule.scanned(&ScannedStore { store_id: "a".into(), head: 12, cursor: at(0) });
    schedule.finished("a", Finished::Delivered(at(12)), now, no_backoff);
    assert_eq!((schedule.len(), schedule.lag()), (0, 0));
}
