//! Minimizing a failing plan: greedy cuts, each kept only while the *same* invariant still fails.
//!
//! The cuts, tried in rounds until a round changes nothing or the attempt budget is spent: drop everything
//! planned after the failure, drop a client (its operations and faults go with it), drop one fault, drop one
//! operation, halve a batch or a duration. Each candidate is replayed with the same seed, so the network and
//! client streams are the same; only the plan is smaller (turso's simulator shrinks the same way). The result is
//! printed as the "minimized trace" of a failing seed.

use std::time::Duration;

use crate::error::{Invariant, Violation};
use crate::plan::{Fault, Op, Plan, Timed};
use crate::sim::{RunOptions, run_plan};

/// A minimized plan and the violation it still produces.
#[derive(Debug, Clone)]
pub struct Shrunk {
    /// The smallest plan found.
    pub plan: Plan,
    /// Its violation (same invariant as the original).
    pub violation: Violation,
    /// Replays tried.
    pub attempts: usize,
}

/// Shrinks `plan` (which fails with `violation` under `seed`) within `max_attempts` replays.
pub fn shrink(
    seed: u64,
    plan: &Plan,
    violation: &Violation,
    options: &RunOptions,
    max_attempts: usize,
) -> Shrunk {
    let mut best = Shrunk { plan: plan.clone(), violation: violation.clone(), attempts: 0 };
    let target = violation.invariant;
    loop {
        let mut improved = false;
        for candidate in candidates(&best.plan, &best.violation) {
            if best.attempts >= max_attempts {
                return best;
            }
            best.attempts += 1;
            if let Some(found) = still_fails(seed, &candidate, options, target) {
                best.plan = candidate;
                best.violation = found;
                improved = true;
                break;
            }
        }
        if !improved {
            return best;
        }
    }
}

fn still_fails(
    seed: u64,
    plan: &Plan,
    options: &RunOptions,
    target: Invariant,
) -> Option<Violation> {
    let report = run_plan(seed, plan, options).ok()?;
    report.violation.filter(|violation| violation.invariant == target)
}

/// Smaller plans, biggest cuts first.
fn candidates(plan: &Plan, violation: &Violation) -> Vec<Plan> {
    let mut out = Vec::new();
    let after_failure = |at: Duration| at > violation.at;
    if plan.ops.iter().any(|op| after_failure(op.at))
        || plan.faults.iter().any(|fault| after_failure(fault.at))
    {
        let mut cut = plan.clone();
        cut.ops.retain(|op| !after_failure(op.at));
        cut.faults.retain(|fault| !after_failure(fault.at));
        out.push(cut);
    }
    for client in (1..plan.clients).rev() {
        out.push(without_client(plan, client));
    }
    if let Some(files) = plan.files
        && files.fault_percent > 0
    {
        // Blob store faults off (they are drawn at run time, at this rate).
        let mut cut = plan.clone();
        cut.files = Some(crate::plan::FileProfile { fault_percent: 0 });
        out.push(cut);
    }
    for index in (0..plan.faults.len()).rev() {
        let mut cut = plan.clone();
        cut.faults.remove(index);
        out.push(cut);
    }
    for index in (0..plan.ops.len()).rev() {
        let mut cut = plan.clone();
        cut.ops.remove(index);
        out.push(cut);
    }
    for index in 0..plan.ops.len() {
        if let Some(op) = halved_op(&plan.ops[index].what) {
            let mut cut = plan.clone();
            cut.ops[index].what = op;
            out.push(cut);
        }
    }
    for index in 0..plan.faults.len() {
        if let Some(fault) = halved_fault(&plan.faults[index].what) {
            let mut cut = plan.clone();
            cut.faults[index].what = fault;
            out.push(cut);
        }
    }
    out
}

/// The plan without client `removed`; higher clients move down by one.
fn without_client(plan: &Plan, removed: usize) -> Plan {
    let renumber = |client: usize| if client > removed { client - 1 } else { client };
    let ops = plan
        .ops
        .iter()
        .filter(|op| op.what.client() != removed)
        .map(|op| Timed {
            id: op.id,
            at: op.at,
            what: with_client(&op.what, renumber(op.what.client())),
        })
        .collect();
    let faults = plan
        .faults
        .iter()
        .filter(|fault| Plan::client_of_fault(&fault.what) != Some(removed))
        .map(|fault| Timed {
            id: fault.id,
            at: fault.at,
            what: fault_with_client(&fault.what, renumber),
        })
        .collect();
    Plan { clients: plan.clients - 1, ops, faults, ..plan.clone() }
}

fn with_client(op: &Op, client: usize) -> Op {
    let mut op = op.clone();
    match &mut op {
        Op::Commit { client: c, .. }
        | Op::Burst { client: c, .. }
        | Op::Offline { client: c, .. }
        | Op::Crash { client: c, .. }
        | Op::SaveFile { client: c, .. }
        | Op::ReplaceFile { client: c, .. }
        | Op::DeleteFile { client: c, .. } => *c = client,
    }
    op
}

fn fault_with_client(fault: &Fault, renumber: impl Fn(usize) -> usize) -> Fault {
    let mut fault = fault.clone();
    match &mut fault {
        Fault::Reset { client }
        | Fault::Cut { client }
        | Fault::Partition { client, .. }
        | Fault::SlowReader { client, .. } => *client = renumber(*client),
        Fault::ServerRestart { .. } | Fault::StorageError | Fault::LogLost => {}
    }
    fault
}

fn halved_op(op: &Op) -> Option<Op> {
    let mut op = op.clone();
    match &mut op {
        Op::Commit { count, .. } if *count > 1 => *count /= 2,
        Op::Burst { commits, .. } if *commits > 1 => *commits /= 2,
        Op::Offline { duration, .. } if *duration > Duration::from_millis(100) => *duration /= 2,
        Op::Crash { down_for, .. } if *down_for > Duration::from_millis(100) => *down_for /= 2,
        _ => return None,
    }
    Some(op)
}

fn halved_fault(fault: &Fault) -> Option<Fault> {
    let mut fault = fault.clone();
    match &mut fault {
        Fault::Partition { duration, .. } if *duration > Duration::from_millis(100) => {
            *duration /= 2
        }
        Fault::SlowReader { extra, .. } if *extra > Duration::from_millis(100) => *extra /= 2,
        Fault::ServerRestart { down_for } if *down_for > Duration::from_millis(100) => {
            *down_for /= 2
        }
        _ => return None,
    }
    Some(fault)
}
