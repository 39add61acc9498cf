//! Unit tests of the merge branches and property tests of the sync laws, driven by a simulated server.

use proptest::prelude::*;

use super::*;

fn synced(global: u64, generation: u32, name: &str, client: &str) -> LocalEvent {
    LocalEvent::new(
        EventSeqNum::new(global, 0, generation),
        EventSeqNum::new(global - 1, 0, generation),
        name,
        "{}",
        client,
        "static",
        false,
    )
}

fn upstream(global: u64, name: &str, client: &str) -> LocalEvent {
    LocalEvent::from_global(global, global - 1, name, "{}", client, "static")
}

fn push(state: &SyncState, events: Vec<LocalEvent>) -> SyncState {
    match merge(state, Payload::LocalPush(events), true).unwrap() {
        MergeResult::Advance(advance) => advance.new_state,
        other => panic!("expected advance, got {other:?}"),
    }
}

#[test]
fn local_push_advances_and_rejects_stale_events() {
    let state = push(&SyncState::new(EventSeqNum::ROOT), vec![synced(1, 0, "a", "c")]);
    assert_eq!(state.local_head().to_string(), "e1");
    assert_eq!(state.upstream_head(), EventSeqNum::ROOT);
    let result = merge(&state, Payload::LocalPush(vec![synced(1, 0, "b", "c")]), true).unwrap();
    assert_eq!(result, MergeResult::Reject { expected_minimum: EventSeqNum::new(1, 1, 0) });
}

#[test]
fn push_local_matches_merge_local_push() {
    let state = SyncState::new(EventSeqNum::ROOT);
    let events = vec![synced(1, 0, "a", "c"), synced(2, 0, "b", "c")];
    let mut in_place = state.clone();
    in_place.push_local(events.clone()).unwrap();
    assert_eq!(in_place, push(&state, events));
    let before = in_place.clone();
    assert_eq!(
        in_place.push_local(vec![synced(2, 0, "c", "c")]),
        Err(PushRejected { expected_minimum: EventSeqNum::new(2, 1, 0) })
    );
    assert_eq!(in_place, before);
}

#[test]
fn upstream_advance_confirms_a_prefix_of_pending() {
    let state = push(
        &SyncState::new(EventSeqNum::ROOT),
        vec![synced(1, 0, "a", "c"), synced(2, 0, "b", "c")],
    );
    let MergeResult::Advance(advance) =
        merge(&state, Payload::UpstreamAdvance(vec![upstream(1, "a", "c")]), true).unwrap()
    else {
        panic!("expected advance")
    };
    assert_eq!(advance.confirmed_events.len(), 1);
    assert!(advance.new_events.is_empty());
    assert_eq!(advance.new_state.pending().len(), 1);
    assert_eq!(advance.new_state.upstream_head().to_string(), "e1");
    assert_eq!(advance.new_state.local_head().to_string(), "e2");
}

#[test]
fn upstream_advance_without_pending_applies_everything() {
    let state = SyncState::new(EventSeqNum::ROOT);
    let incoming = vec![upstream(1, "a", "x"), upstream(2, "b", "x")];
    let MergeResult::Advance(advance) =
        merge(&state, Payload::UpstreamAdvance(incoming.clone()), true).unwrap()
    else {
        panic!("expected advance")
    };
    assert_eq!(advance.new_events, incoming);
    assert_eq!(advance.new_state.local_head().to_string(), "e2");
}

#[test]
fn foreign_upstream_event_rebases_pending_with_a_new_generation() {
    // The observed conflict: our e1 loses against three foreign events and becomes e4r1.
    let state = push(&SyncState::new(EventSeqNum::ROOT), vec![synced(1, 0, "mine", "c")]);
    let incoming =
        vec![upstream(1, "x", "other"), upstream(2, "y", "other"), upstream(3, "z", "other")];
    let MergeResult::Rebase(rebase) =
        merge(&state, Payload::UpstreamAdvance(incoming), true).unwrap()
    else {
        panic!("expected rebase")
    };
    assert_eq!(rebase.rollback_events.len(), 1);
    let names: Vec<_> = rebase.new_events.iter().map(|event| event.name.to_string()).collect();
    assert_eq!(names, ["x", "y", "z", "mine"]);
    assert_eq!(rebase.new_state.local_head().to_string(), "e4r1");
    assert_eq!(rebase.new_state.pending()[0].parent_seq_num.to_string(), "e3r1");
}

#[test]
fn client_only_events_are_stepped_over_and_confirmed_with_their_neighbours() {
    let (e1, p1) = EventSeqNum::ROOT.next_pair(false);
    let (e1_1, p1_1) = e1.next_pair(true);
    let state = push(
        &SyncState::new(EventSeqNum::ROOT),
        vec![
            LocalEvent::new(e1, p1, "a", "{}", "c", "s", false),
            LocalEvent::new(e1_1, p1_1, "uiStateSet", "{}", "c", "s", true),
        ],
    );
    assert_eq!(state.pending_synced().count(), 1);
    let incoming = vec![LocalEvent::from_global(1, 0, "a", "{}", "c", "s"), upstream(2, "b", "x")];
    let MergeResult::Advance(advance) =
        merge(&state, Payload::UpstreamAdvance(incoming), true).unwrap()
    else {
        panic!("expected advance")
    };
    assert!(advance.new_state.pending().is_empty());
    assert_eq!(advance.confirmed_events.len(), 2);
    assert_eq!(advance.new_events.len(), 1);
    assert_eq!(advance.new_state.local_head().to_string(), "e2");
}

#[test]
fn bad_upstream_input_is_an_error_not_a_panic() {
    let state = SyncState::new(EventSeqNum::from_global(2));
    // Each page is refused for its own defect, not for some other check that happens to fail first.
    let kind = |error: &CoreError| match error {
        CoreError::NotAfterUpstreamHead { .. } => "not after the head",
        CoreError::ChainGap { .. } => "gap",
        CoreError::NotAscending { .. } => "not ascending",
        CoreError::InvalidSeqNumNotation(_) => "notation",
    };
    let cases = [
        (vec![upstream(2, "a", "x")], "not after the head"),
        (vec![upstream(4, "a", "x")], "gap"),
        (vec![upstream(3, "a", "x"), upstream(3, "b", "x")], "not ascending"),
        (vec![upstream(3, "a", "x"), upstream(5, "b", "x")], "gap"), // inside the page
    ];
    for (incoming, expected) in cases {
        let result = merge(&state, Payload::UpstreamAdvance(incoming.clone()), true);
        assert_eq!(result.as_ref().err().map(kind), Some(expected), "{incoming:?}: {result:?}");
    }
}

#[test]
fn upstream_rebase_rolls_back_everything_pending() {
    let state = push(&SyncState::new(EventSeqNum::from_global(1)), vec![synced(2, 0, "mine", "c")]);
    let MergeResult::Rebase(rebase) = merge(
        &state,
        Payload::UpstreamRebase {
            rollback_events: vec![],
            new_events: vec![upstream(2, "x", "o")],
        },
        true,
    )
    .unwrap() else {
        panic!("expected rebase")
    };
    assert_eq!(rebase.rollback_events.len(), 1);
    assert_eq!(rebase.new_state.local_head().to_string(), "e3r1");
}

// ---------------------------------------------------------------------------------------------------------------
// A simulated world: one server log, several clients, each with a sync state and an "applied" list that plays the
// role of the materialized database (apply appends, rollback must remove exactly the newest entries).
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Commit { client: usize, client_only: bool },
    Push { client: usize },
    Pull { client: usize, max_events: usize },
}

fn op_strategy(clients: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..clients, prop::bool::weighted(0.2)).prop_map(|(client, client_only)| Op::Commit { client, client_only }),
        2 => (0..clients).prop_map(|client| Op::Push { client }),
        3 => (0..clients, 1usize..5).prop_map(|(client, max_events)| Op::Pull { client, max_events }),
    ]
}

#[derive(Debug)]
struct SimClient {
    id: String,
    state: SyncState,
    applied: Vec<LocalEvent>,
    commits: usize,
}

impl SimClient {
    fn apply(&mut self, result: MergeResult) {
        match result {
            MergeResult::Advance(advance) => {
                self.applied.extend(advance.new_events);
                self.state = advance.new_state;
            }
            MergeResult::Rebase(rebase) => {
                // Rollback must undo exactly the newest applied events, newest first.
                for rolled_back in rebase.rollback_events.iter().rev() {
                    let undone = self.applied.pop().expect("rollback of an event that was applied");
                    assert_eq!(&undone, rolled_back, "rollback must undo the newest applied event");
                }
                self.applied.extend(rebase.new_events);
                self.state = rebase.new_state;
            }
            MergeResult::Reject { .. } => {
                panic!("local commits chained from the local head are never rejected")
            }
        }
    }

    fn commit(&mut self, client_only: bool) {
        let (seq_num, parent) = self.state.local_head().next_pair(client_only);
        let args = format!(r#"{{"n":{}}}"#, self.commits);
        self.commits += 1;
        let name = if client_only { "local" } else { "synced" };
        let event =
            LocalEvent::new(seq_num, parent, name, args, self.id.as_str(), "static", client_only);
        let result = merge(&self.state, Payload::LocalPush(vec![event]), true).unwrap();
        self.apply(result);
    }

    /// What the client would push: its synced pending events in global form.
    fn push_batch(&self) -> Vec<LocalEvent> {
        self.state.pending_synced().map(LocalEvent::to_global_form).collect()
    }

    fn pull(&mut self, server: &[LocalEvent], max_events: usize) {
        let cursor = self.state.upstream_head().global as usize;
        let page: Vec<_> = server.iter().skip(cursor).take(max_events).cloned().collect();
        let result = merge(&self.state, Payload::UpstreamAdvance(page), true).unwrap();
        self.apply(result);
    }

    fn synced_applied(&self) -> Vec<LocalEvent> {
        self.applied
            .iter()
            .filter(|event| !event.client_only)
            .map(LocalEvent::to_global_form)
            .collect()
    }
}

/// The server's admission rule: a batch is appended only when its first parent is the head.
fn server_push(server: &mut Vec<LocalEvent>, batch: Vec<LocalEvent>) -> bool {
    match batch.first() {
        Some(first) if first.parent_seq_num.global == server.len() as u64 => {
            server.extend(batch);
            true
        }
        _ => false,
    }
}

/// `clients` fresh simulated clients, none of which has seen anything.
fn new_sims(clients: usize) -> Vec<SimClient> {
    (0..clients)
        .map(|idx| SimClient {
            id: format!("client-{idx}"),
            state: SyncState::new(EventSeqNum::ROOT),
            applied: vec![],
            commits: 0,
        })
        .collect()
}

fn run_world(clients: usize, ops: &[Op]) -> (Vec<LocalEvent>, Vec<SimClient>) {
    let mut server = Vec::new();
    let mut sims = new_sims(clients);
    for op in ops {
        match *op {
            Op::Commit { client, client_only } => sims[client].commit(client_only),
            Op::Push { client } => {
                let batch = sims[client].push_batch();
                server_push(&mut server, batch);
            }
            Op::Pull { client, max_events } => sims[client].pull(&server, max_events),
        }
    }
    // Quiesce: every client pulls everything and pushes until nothing synced is pending anywhere.
    for _round in 0..(clients * 4 + 4) {
        for sim in &mut sims {
            sim.pull(&server, usize::MAX);
            let batch = sim.push_batch();
            server_push(&mut server, batch);
        }
    }
    for sim in &mut sims {
        sim.pull(&server, usize::MAX);
    }
    (server, sims)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Convergence: whatever the interleaving, all clients end with the server's log applied, in the server's order,
    /// and every synced event any client committed is in that log exactly once.
    #[test]
    fn clients_converge_through_a_server(ops in prop::collection::vec(op_strategy(3), 0..60)) {
        let (server, sims) = run_world(3, &ops);
        for sim in &sims {
            prop_assert_eq!(sim.state.pending_synced().count(), 0, "{} still has synced events pending", sim.id);
            prop_assert_eq!(&sim.synced_applied(), &server, "{} diverged from the server", sim.id);
            prop_assert_eq!(sim.state.upstream_head().global, server.len() as u64);
            let committed = ops.iter().filter(|op| matches!(op, Op::Commit { client, client_only: false } if format!("client-{client}") == sim.id)).count();
            let in_server = server.iter().filter(|event| *event.client_id == *sim.id).count();
            prop_assert_eq!(committed, in_server, "every synced commit of {} reaches the server exactly once", sim.id);
        }
        for (idx, event) in server.iter().enumerate() {
            prop_assert_eq!(event.seq_num.global, idx as u64 + 1);
            prop_assert_eq!(event.parent_seq_num.global, idx as u64);
        }
    }

    /// Idempotent replay: delivering a page again (after `skip_known`) changes nothing, and a re-sent page with
    /// newer events behind it leaves exactly those. Checked after every pull of a run, while clients still have
    /// events pending and the server more to send (after a quiesced run every page is known and the check is empty).
    #[test]
    fn replaying_a_page_is_a_no_op(ops in prop::collection::vec(op_strategy(2), 0..40)) {
        let mut server = Vec::new();
        let mut sims = new_sims(2);
        for op in &ops {
            match *op {
                Op::Commit { client, client_only } => sims[client].commit(client_only),
                Op::Push { client } => { let batch = sims[client].push_batch(); server_push(&mut server, batch); }
                Op::Pull { client, max_events } => {
                    let sim = &mut sims[client];
                    let cursor = sim.state.upstream_head().global as usize;
                    sim.pull(&server, max_events);
                    let head = sim.state.upstream_head().global as usize;
                    prop_assert_eq!(sim.state.skip_known(&server[cursor..]), &server[head..]);
                    let before = (sim.state.clone(), sim.applied.clone());
                    let replay = sim.state.skip_known(&server[cursor..head]).to_vec();
                    prop_assert!(replay.is_empty());
                    let result = merge(&sim.state, Payload::UpstreamAdvance(replay), true).unwrap();
                    sim.apply(result);
                    prop_assert_eq!((sim.state.clone(), sim.applied.clone()), before);
                }
            }
        }
    }

    /// Local heads never move backwards and upstream heads never pass local heads, across any merge.
    #[test]
    fn heads_are_monotone(ops in prop::collection::vec(op_strategy(2), 0..60)) {
        let mut server = Vec::new();
        let mut sims = new_sims(2);
        for op in &ops {
            let client = match *op { Op::Commit { client, .. } | Op::Push { client } | Op::Pull { client, .. } => client };
            let before = sims[client].state.clone();
            match *op {
                Op::Commit { client, client_only } => sims[client].commit(client_only),
                Op::Push { client } => { let batch = sims[client].push_batch(); server_push(&mut server, batch); }
                Op::Pull { client, max_events } => sims[client].pull(&server, max_events),
            }
            let after = &sims[client].state;
            prop_assert!(after.local_head().is_greater_or_equal(before.local_head()));
            prop_assert!(after.upstream_head().is_greater_or_equal(before.upstream_head()));
            prop_assert!(after.local_head().is_greater_or_equal(after.upstream_head()));
            prop_assert!(SyncState::from_parts(after.pending().to_vec(), after.upstream_head(), after.local_head()).is_ok());
        }
    }
}
