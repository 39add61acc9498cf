//! The connection machine driven by hand: an in-memory [`SyncStore`], virtual time, no sockets and no sleeps.

use std::sync::Arc;
use std::time::Duration;

use livestore_core::event::LocalEvent;
use livestore_core::seq_num::EventSeqNum;
use livestore_proto::encode;

use super::*;
use crate::error::StoreError;
use crate::store::{ApplyOutcome, UpstreamEvent};

const SECOND: Duration = Duration::from_secs(1);
const MILLI: Duration = Duration::from_millis(1);
const BACKEND: &str = "backend-a";
/// The machine numbers requests from 0: the live pull is "0", pushes follow.
const PULL: &str = "0";

/// A store that keeps only what the machine can observe: the upstream head, the backend id, the pending events
/// (global form, rebased naively on top of new upstream events), and a record of the calls.
#[derive(Default)]
struct FakeStore {
    head: u64,
    backend_id: Option<String>,
    pending: Vec<LocalEvent>,
    /// Every `apply_upstream` call: the global numbers and the backend id.
    applied: Vec<(Vec<u64>, String)>,
    resets: usize,
    shut_down: bool,
}

impl FakeStore {
    fn with_pending(count: u64) -> Self {
        let mut store = FakeStore::default();
        for _ in 0..count {
            store.commit();
        }
        store
    }

    fn commit(&mut self) {
        let seq = self.pending.last().map_or(self.head, |event| event.seq_num.global) + 1;
        self.pending.push(event(seq, "me"));
    }
}

impl SyncStore for FakeStore {
    fn store_id(&self) -> &str {
        "test-store"
    }

    fn upstream_cursor(&mut self) -> Result<(u64, Option<String>), StoreError> {
        Ok((self.head, self.backend_id.clone()))
    }

    fn apply_upstream(
        &mut self,
        events: &[UpstreamEvent],
        backend_id: &str,
    ) -> Result<ApplyOutcome, StoreError> {
        let numbers = events.iter().map(|item| item.event.seq_num.global).collect();
        self.applied.push((numbers, backend_id.to_owned()));
        match &self.backend_id {
            Some(known) if known != backend_id => {
                return Err(StoreError::BackendIdMismatch {
                    expected: known.clone(),
                    received: backend_id.to_owned(),
                });
            }
            _ => self.backend_id = Some(backend_id.to_owned()),
        }
        let mut outcome = ApplyOutcome::default();
        for item in events {
            if item.event.seq_num.global <= self.head {
                continue;
            }
            self.head = item.event.seq_num.global;
            if self.pending.first().is_some_and(|mine| *mine.client_id == *item.event.client_id) {
                self.pending.remove(0);
                outcome.confirmed += 1;
            } else {
                outcome.applied += 1;
                outcome.rebased = self.pending.len();
                let head = self.head;
                for (offset, mine) in self.pending.iter_mut().enumerate() {
                    *mine = event(head + 1 + offset as u64, &mine.client_id);
                }
            }
        }
        Ok(outcome)
    }

    fn push_candidates_after(
        &mut self,
        after: u64,
        max: usize,
    ) -> Result<Vec<LocalEvent>, StoreError> {
        Ok(self
            .pending
            .iter()
            .filter(|event| event.seq_num.global > after)
            .take(max)
            .cloned()
            .collect())
    }

    fn reset_local(&mut self) -> Result<(), StoreError> {
        self.resets += 1;
        *self = FakeStore {
            resets: self.resets,
            applied: std::mem::take(&mut self.applied),
            ..Default::default()
        };
        Ok(())
    }

    fn shutdown(&mut self) -> Result<(), StoreError> {
        self.shut_down = true;
        Ok(())
    }
}

fn event(seq: u64, client: &str) -> LocalEvent {
    LocalEvent {
        seq_num: EventSeqNum::from_global(seq),
        parent_seq_num: EventSeqNum::from_global(seq - 1),
        name: Arc::from("v1.TodoCreated"),
        args_json: Arc::from(format!(r#"{{"id":"t{seq}","text":"x"}}"#)),
        client_id: Arc::from(client),
        session_id: Arc::from("s"),
        client_only: false,
    }
}

/// A pull page JSON with events `seqs` by `client`.
fn page(seqs: &[u64], client: &str, backend: &str, no_more: bool) -> String {
    let items: Vec<String> = seqs
        .iter()
        .map(|seq| {
            let event = format!(
                r#"{{"name":"v1.TodoCreated","args":{{"id":"t{seq}","text":"x"}},"seqNum":{seq},"parentSeqNum":{},"clientId":"{client}","sessionId":"s"}}"#,
                seq - 1
            );
            format!(r#"{{"eventEncoded":{event},"metadata":{{"_tag":"None"}}}}"#)
        })
        .collect();
    let info = if no_more { r#"{"_tag":"NoMore"}"# } else { r#"{"_tag":"MoreUnknown"}"# };
    format!(r#"{{"batch":[{}],"pageInfo":{info},"backendId":"{backend}"}}"#, items.join(","))
}

fn chunk(pages: &[String]) -> String {
    encode::chunk(PULL, pages)
}

fn push_ok(request_id: &str) -> String {
    encode::exit_success_value(request_id, encode::PUSH_ACK_VALUE)
}

fn server_ahead(request_id: &str) -> String {
    encode::exit_fail(request_id, &encode::server_ahead_error(1, 0))
}

fn config(policy: BackendIdPolicy) -> Config {
    Config {
        ping_interval: 10 * SECOND,
        silence_timeout: 25 * SECOND,
        stall_timeout: 15 * SECOND,
        connect_timeout: 10 * SECOND,
        backend_id_policy: policy,
        sync_payload: None,
    }
}

/// A machine, its store and the virtual clock.
struct Harness {
    machine: ConnectionMachine,
    store: FakeStore,
    now: Duration,
}

impl Harness {
    /// A connection opened at time 0 (its opening outputs are returned too).
    fn open(store: FakeStore, policy: BackendIdPolicy) -> (Harness, Vec<Output>) {
        let mut harness = Harness {
            machine: ConnectionMachine::new(config(policy), Duration::ZERO),
            store,
            now: Duration::ZERO,
        };
        let outputs = harness.input(Input::Opened);
        (harness, outputs)
    }

    fn input(&mut self, input: Input) -> Vec<Output> {
        self.machine.handle(self.now, input, &mut self.store);
        std::iter::from_fn(|| self.machine.poll_output()).collect()
    }

    fn frames(&mut self, frames: &[String]) -> Vec<Output> {
        self.input(Input::Frames(frames.to_vec()))
    }

    /// Ticks at time `at`.
    fn tick_at(&mut self, at: Duration) -> Vec<Output> {
        self.now = at;
        self.input(Input::Tick)
    }
}

fn sent(outputs: &[Output]) -> Vec<FrameKind> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Send { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect()
}

/// The pushed events' global numbers, per push frame.
fn pushed(outputs: &[Output]) -> Vec<Vec<u64>> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Send { kind: FrameKind::Push, text } => {
                let json: serde_json::Value = serde_json::from_str(text).unwrap();
                let batch = json["payload"]["batch"].as_array().unwrap();
                Some(batch.iter().map(|event| event["seqNum"].as_u64().unwrap()).collect())
            }
            _ => None,
        })
        .collect()
}

fn ended(outputs: &[Output]) -> Option<&ConnectionEnd> {
    outputs.iter().find_map(|output| match output {
        Output::Ended(end) => Some(end),
        _ => None,
    })
}

fn stalled(outputs: &[Output]) -> Option<StallReason> {
    match ended(outputs) {
        Some(ConnectionEnd::Retry(EndReason::Stalled(reason))) => Some(*reason),
        _ => None,
    }
}

#[test]
fn opening_pings_pulls_and_pushes_what_is_pending() {
    let (_, outputs) = Harness::open(FakeStore::with_pending(2), BackendIdPolicy::Reset);
    assert_eq!(sent(&outputs), [FrameKind::Ping, FrameKind::Pull, FrameKind::Push]);
    assert_eq!(pushed(&outputs), [vec![1, 2]]);
}

#[test]
fn a_push_is_accepted_then_echoed() {
    let (mut harness, _) = Harness::open(FakeStore::with_pending(1), BackendIdPolicy::Reset);
    let outputs = harness.frames(&[chunk(&[page(&[], "", BACKEND, true)])]);
    assert_eq!(outputs[0], Output::Connected);
    assert_eq!(
        sent(&outputs),
        [FrameKind::Ack],
        "the push is still in flight: nothing else goes out"
    );
    assert!(!outputs.contains(&Output::CaughtUp(true)), "not caught up while a push is unanswered");

    let outputs = harness.frames(&[push_ok("1")]);
    assert!(outputs.contains(&Output::CaughtUp(true)));
    // A new commit pushes only what the server has not accepted yet, chained after the accepted event.
    harness.store.commit();
    let outputs = harness.input(Input::LocalCommit);
    assert_eq!(pushed(&outputs), [vec![2]]);
    assert!(outputs.contains(&Output::CaughtUp(false)));

    let outputs = harness.frames(&[push_ok("2"), chunk(&[page(&[1, 2], "me", BACKEND, true)])]);
    assert_eq!(sent(&outputs), [FrameKind::Ack]);
    assert!(harness.store.pending.is_empty(), "the echo confirmed both events");
    // Echoed: the watchdog has nothing to wait for, so the stall timeout passes quietly.
    let outputs = harness.tick_at(16 * SECOND);
    assert_eq!(ended(&outputs), None);
}

#[test]
fn server_ahead_parks_pushing_until_the_next_page() {
    let (mut harness, _) = Harness::open(FakeStore::with_pending(1), BackendIdPolicy::Reset);
    harness.now = SECOND;
    let outputs = harness.frames(&[server_ahead("1")]);
    assert!(pushed(&outputs).is_empty(), "parked: the same batch would be refused again");
    harness.store.commit();
    assert!(pushed(&harness.input(Input::LocalCommit)).is_empty(), "still parked");
    assert_eq!(ended(&harness.tick_at(15 * SECOND)), None);

    // The page with what we were behind on rebases our events on top; they go out at once.
    harness.now = 15 * SECOND;
    let outputs = harness.frames(&[chunk(&[page(&[1], "other", BACKEND, true)])]);
    assert_eq!(pushed(&outputs), [vec![2, 3]]);
}

#[test]
fn server_ahead_does_not_park_when_a_page_arrived_during_the_push() {
    let (mut harness, _) = Harness::open(FakeStore::with_pending(1), BackendIdPolicy::Reset);
    let outputs = harness.frames(&[chunk(&[page(&[1], "other", BACKEND, true)])]);
    assert!(pushed(&outputs).is_empty(), "one push at a time");
    let outputs = harness.frames(&[server_ahead("1")]);
    assert_eq!(pushed(&outputs), [vec![2]], "the page already rebased the event; no need to wait");
}

#[test]
fn an_unanswered_push_stalls_at_the_stall_timeout_and_not_before() {
    let (mut harness, _) = Harness::open(FakeStore::with_pending(1), BackendIdPolicy::Reset);
    assert_eq!(
        harness.tick_at(10 * SECOND).iter().filter(|o| matches!(o, Output::Send { .. })).count(),
        1
    );
    assert_eq!(harness.machine.next_deadline(), Some(15 * SECOND));
    assert_eq!(ended(&harness.tick_at(15 * SECOND - MILLI)), None);
    assert_eq!(stalled(&harness.tick_at(15 * SECOND)), Some(StallReason::PushUnanswered));
    assert!(harness.machine.is_ended());
    assert!(harness.input(Input::Tick).is_empty(), "an ended machine ignores input");
}

#[test]
fn server_ahead_without_a_page_stalls_at_the_stall_timeout() {
    let (mut harness, _) = Harness::open(FakeStore::with_pending(1), BackendIdPolicy::Reset);
    harness.now = 2 * SECOND;
    harness.frames(&[server_ahead("1")]);
    assert_eq!(ended(&harness.tick_at(17 * SECOND - MILLI)), None);
    assert_eq!(stalled(&harness.tick_at(17 * SECOND)), Some(StallReason::ServerAheadWithoutPage));
}

#[test]
fn accepted_events_that_are_never_echoed_stall_at_the_stall_timeout() {
    let (mut harness, _) = Harness::open(FakeStore::with_pending(1), BackendIdPolicy::Reset);
    harness.now = 3 * SECOND;
    harness.frames(&[push_ok("1")]);
    // Pings and pongs are not the echo, so they do not count as progress.
    assert_eq!(sent(&harness.tick_at(10 * SECOND)), [FrameKind::Ping]);
    harness.frames(&[encode::PONG.to_owned()]);
    assert_eq!(harness.machine.next_deadline(), Some(18 * SECOND));
    assert_eq!(ended(&harness.tick_at(18 * SECOND - MILLI)), None);
    assert_eq!(stalled(&harness.tick_at(18 * SECOND)), Some(StallReason::AcceptedNotEchoed));
}

#[test]
fn pings_go_out_at_the_interval() {
    let (mut harness, _) = Harness::open(FakeStore::default(), BackendIdPolicy::Reset);
    assert_eq!(harness.machine.next_deadline(), Some(10 * SECOND));
    assert!(sent(&harness.tick_at(10 * SECOND - MILLI)).is_empty());
    assert_eq!(sent(&harness.tick_at(10 * SECOND)), [FrameKind::Ping]);
    harness.now = 12 * SECOND;
    harness.frames(&[encode::PONG.to_owned()]);
    assert_eq!(harness.machine.next_deadline(), Some(20 * SECOND));
    assert_eq!(sent(&harness.tick_at(20 * SECOND)), [FrameKind::Ping]);
}

#[test]
fn a_silent_server_ends_the_connection_at_the_silence_timeout() {
    let (mut harness, _) = Harness::open(FakeStore::default(), BackendIdPolicy::Reset);
    harness.now = 5 * SECOND;
    harness.frames(&[encode::PONG.to_owned()]);
    for ping_at in [10, 20] {
        assert_eq!(ended(&harness.tick_at(ping_at * SECOND)), None);
    }
    assert_eq!(ended(&harness.tick_at(30 * SECOND - MILLI)), None);
    assert_eq!(
        ended(&harness.tick_at(30 * SECOND)),
        Some(&ConnectionEnd::Retry(EndReason::ServerSilent))
    );
}

#[test]
fn a_connection_attempt_times_out() {
    let mut harness = Harness {
        machine: ConnectionMachine::new(config(BackendIdPolicy::Reset), Duration::ZERO),
        store: FakeStore::default(),
        now: Duration::ZERO,
    };
    assert_eq!(harness.machine.next_deadline(), Some(10 * SECOND));
    assert_eq!(ended(&harness.tick_at(10 * SECOND - MILLI)), None);
    let timed_out = ConnectionEnd::Retry(TransportFailure::ConnectTimedOut.into());
    assert_eq!(ended(&harness.tick_at(10 * SECOND)), Some(&timed_out));
}

/// The store synced with `BACKEND`; the server now reports another backend, in a page or in the pull's exit.
fn mismatch(policy: BackendIdPolicy, in_page: bool) -> (FakeStore, ConnectionEnd) {
    let store = FakeStore { head: 1, backend_id: Some(BACKEND.to_owned()), ..Default::default() };
    let (mut harness, _) = Harness::open(store, policy);
    let frame = if in_page {
        chunk(&[page(&[1, 2], "other", "backend-b", true)])
    } else {
        encode::exit_fail(PULL, &encode::backend_id_mismatch_error("backend-b", BACKEND))
    };
    let outputs = harness.frames(&[frame]);
    assert!(sent(&outputs).is_empty(), "no ack for a refused chunk");
    (harness.store, ended(&outputs).expect("a mismatch ends the connection").clone())
}

#[test]
fn a_backend_id_mismatch_follows_the_policy() {
    for in_page in [true, false] {
        let (store, end) = mismatch(BackendIdPolicy::Reset, in_page);
        assert_eq!(store.resets, 1);
        assert!(!store.shut_down);
        assert!(matches!(end, ConnectionEnd::Retry(EndReason::BackendReset { .. })), "{end:?}");

        let (store, end) = mismatch(BackendIdPolicy::Shutdown, in_page);
        assert_eq!((store.resets, store.shut_down), (0, true));
        let ConnectionEnd::Stop(StopReason::BackendIdMismatch { policy, expected, received }) = end
        else {
            panic!("{end:?}")
        };
        assert_eq!((policy, expected.as_str()), (BackendIdPolicy::Shutdown, BACKEND));
        assert_eq!(received, "backend-b");

        let (store, end) = mismatch(BackendIdPolicy::Ignore, in_page);
        assert_eq!((store.resets, store.shut_down), (0, false));
        assert!(
            matches!(
                end,
                ConnectionEnd::Stop(StopReason::BackendIdMismatch {
                    policy: BackendIdPolicy::Ignore,
                    ..
                })
            ),
            "{end:?}"
        );
    }
}

#[test]
fn consecutive_pages_go_to_the_store_together_and_a_new_backend_splits_them() {
    let (mut harness, _) = Harness::open(FakeStore::default(), BackendIdPolicy::Ignore);
    let outputs = harness.frames(&[
        chunk(&[page(&[1], "other", BACKEND, false), page(&[2], "other", BACKEND, false)]),
        chunk(&[page(&[3], "other", BACKEND, true)]),
    ]);
    assert_eq!(sent(&outputs), [FrameKind::Ack, FrameKind::Ack], "one ack per chunk");
    assert_eq!(
        harness.store.applied,
        [(vec![1, 2, 3], BACKEND.to_owned())],
        "three pages, one store call"
    );

    let outputs = harness.frames(&[
        chunk(&[page(&[4], "other", BACKEND, false)]),
        chunk(&[page(&[1], "other", "backend-b", true)]),
    ]);
    assert_eq!(
        harness.store.applied[1..],
        [(vec![4], BACKEND.to_owned()), (vec![1], "backend-b".to_owned())],
        "pages of different backends are never applied together"
    );
    assert!(matches!(
        ended(&outputs),
        Some(ConnectionEnd::Stop(StopReason::BackendIdMismatch { .. }))
    ));
}

#[test]
fn a_non_page_frame_between_pages_applies_the_pages_before_it_first() {
    let (mut harness, _) = Harness::open(FakeStore::default(), BackendIdPolicy::Reset);
    harness.frames(&[
        chunk(&[page(&[1], "other", BACKEND, false)]),
        encode::PONG.to_owned(),
        chunk(&[page(&[2], "other", BACKEND, true)]),
    ]);
    let calls: Vec<_> = harness.store.applied.iter().map(|(numbers, _)| numbers.clone()).collect();
    assert_eq!(calls, [vec![1], vec![2]]);
}

#[test]
fn malformed_frames_are_skipped() {
    let (mut harness, _) = Harness::open(FakeStore::default(), BackendIdPolicy::Reset);
    let outputs = harness.frames(&[
        "not json".to_owned(),
        r#"{"_tag":"Unheard-of"}"#.to_owned(),
        r#"{"_tag":"Exit","requestId":"0"#.to_owned(),
        encode::chunk("some-other-request", &[page(&[9], "other", BACKEND, true)]),
        chunk(&[page(&[1], "other", BACKEND, true)]),
    ]);
    assert_eq!(ended(&outputs), None);
    assert_eq!(sent(&outputs), [FrameKind::Ack], "only our pull's chunk is acked");
    assert_eq!(harness.store.applied, [(vec![1], BACKEND.to_owned())]);
    assert!(outputs.contains(&Output::CaughtUp(true)));
}

#[test]
fn a_malformed_page_in_our_pull_forces_a_fresh_pull() {
    let (mut harness, _) = Harness::open(FakeStore::default(), BackendIdPolicy::Reset);
    let outputs = harness.frames(&[chunk(&[r#"{"batch":"nope"}"#.to_owned()])]);
    let end = ended(&outputs).expect("the connection ends");
    assert!(
        matches!(end, ConnectionEnd::Retry(reason @ EndReason::MalformedPullPage(_)) if reason.resets_backoff())
    );
}

#[test]
fn stop_interrupts_the_live_pull_and_closes() {
    let (mut harness, _) = Harness::open(FakeStore::default(), BackendIdPolicy::Reset);
    let outputs = harness.input(Input::Stop);
    assert_eq!(
        outputs,
        [
            Output::Send {
                kind: FrameKind::Interrupt,
                text: livestore_proto::client::interrupt(PULL)
            },
            Output::Close,
            Output::Ended(ConnectionEnd::Stop(StopReason::Requested)),
        ]
    );
    // Before the socket is open there is nothing to interrupt.
    let mut machine = ConnectionMachine::new(config(BackendIdPolicy::Reset), Duration::ZERO);
    machine.handle(Duration::ZERO, Input::Stop, &mut FakeStore::default());
    assert_eq!(
        machine.poll_output(),
        Some(Output::Ended(ConnectionEnd::Stop(StopReason::Requested)))
    );
}

#[test]
fn a_closed_connection_drops_queued_frames_and_ends() {
    let (mut harness, _) = Harness::open(FakeStore::with_pending(1), BackendIdPolicy::Reset);
    harness.machine.handle(
        harness.now,
        Input::Frames(vec![chunk(&[page(&[1], "other", BACKEND, true)]), server_ahead("1")]),
        &mut harness.store,
    );
    harness.machine.handle(
        harness.now,
        Input::Closed(TransportFailure::Closed),
        &mut harness.store,
    );
    let outputs: Vec<_> = std::iter::from_fn(|| harness.machine.poll_output()).collect();
    assert!(sent(&outputs).is_empty(), "{outputs:?}");
    assert_eq!(ended(&outputs), Some(&ConnectionEnd::Retry(TransportFailure::Closed.into())));
    assert_eq!(harness.store.applied.len(), 1, "the page read before the close was applied");
}

#[test]
fn a_failed_push_reconnects_after_backoff() {
    let (mut harness, _) = Harness::open(FakeStore::with_pending(1), BackendIdPolicy::Reset);
    let outputs = harness.frames(&[encode::exit_fail("1", &encode::unknown_error("disk full"))]);
    let end = ended(&outputs).expect("the connection ends");
    assert!(
        matches!(end, ConnectionEnd::Retry(reason @ EndReason::PushFailed(_)) if !reason.resets_backoff())
    );
}
