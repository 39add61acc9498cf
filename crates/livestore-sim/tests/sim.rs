//! The simulator's own tests: fixed seeds pass, a seed replays to the same trace, and every deliberate server bug
//! is caught within a bounded number of seeds (so a green run means something).

use std::sync::{Mutex, MutexGuard};

use livestore_sim::{Invariant, Mutant, Plan, PlanSize, RunOptions, run_plan, run_seed};

/// SQLite's PRNG is process-wide, so two seeds must never run as concurrent threads of one process: the test
/// harness runs tests on threads, so every test holds this lock.
static ONE_SEED_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    ONE_SEED_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Seeds that must pass (the first of the default run).
const FIXED_SEEDS: std::ops::Range<u64> = 0..40;

/// Every mutant must be caught within this many seeds.
const MUTANT_SEED_BUDGET: u64 = 40;

#[test]
fn fixed_seeds_pass() {
    let _serial = serial();
    let options = RunOptions::default();
    for seed in FIXED_SEEDS {
        let report = run_seed(seed, &options).expect("the run starts");
        assert!(report.violation.is_none(), "seed {seed}: {}", report.violation.unwrap());
        assert!(report.steps > 0);
    }
}

/// Seeds that once failed, each with what it found. They run on every `cargo test`.
const REGRESSION_SEEDS: [(u64, &str); 1] = [(
    6589,
    "the simulator's own liveness bug: two slowed connections always had a ping or pong in flight, so quiescence \
     was never seen; slow readers now end when the faults stop",
)];

#[test]
fn regression_seeds_pass() {
    let _serial = serial();
    let options = RunOptions::default();
    for (seed, found) in REGRESSION_SEEDS {
        let report = run_seed(seed, &options).expect("the run starts");
        assert!(report.violation.is_none(), "seed {seed} ({found}): {}", report.violation.unwrap());
    }
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let _serial = serial();
    let options = RunOptions::default();
    for seed in [3, 17, 101, 4242] {
        let first = run_seed(seed, &options).expect("the run starts");
        let second = run_seed(seed, &options).expect("the run starts");
        assert_eq!(first.trace, second.trace, "seed {seed} diverged between two runs");
        assert_eq!(first.steps, second.steps);
        assert_eq!(first.hits, second.hits);
    }
    let a = run_seed(3, &options).expect("the run starts");
    let b = run_seed(4, &options).expect("the run starts");
    assert_ne!(a.trace, b.trace, "different seeds should not collide");
}

#[test]
fn plans_are_a_function_of_the_seed() {
    let _serial = serial();
    assert_eq!(Plan::generate(9, PlanSize::default()), Plan::generate(9, PlanSize::default()));
    assert_ne!(Plan::generate(9, PlanSize::default()), Plan::generate(10, PlanSize::default()));
}

/// The first seed under `budget` at which the mutant is caught, and by which invariant.
fn caught(mutant: Mutant, budget: u64) -> Option<(u64, Invariant)> {
    caught_with(&RunOptions { mutant: Some(mutant), ..RunOptions::default() }, budget)
}

/// [`caught`] with strict file checks (the default run only counts the two open findings' symptoms, which the
/// file mutants produce too).
fn caught_strict(mutant: Mutant, budget: u64) -> Option<(u64, Invariant)> {
    caught_with(
        &RunOptions { mutant: Some(mutant), strict_files: true, ..RunOptions::default() },
        budget,
    )
}

fn caught_with(options: &RunOptions, budget: u64) -> Option<(u64, Invariant)> {
    (0..budget).find_map(|seed| {
        let plan = Plan::generate(seed, PlanSize::default());
        let report = run_plan(seed, &plan, options).expect("the run starts");
        report.violation.map(|violation| (seed, violation.invariant))
    })
}

#[test]
fn mutant_no_parent_check_is_caught() {
    let _serial = serial();
    let (_, invariant) = caught(Mutant::NoParentCheck, MUTANT_SEED_BUDGET).expect("caught");
    assert!(
        matches!(invariant, Invariant::ServerLogChained | Invariant::ExactlyOnce),
        "{invariant:?}"
    );
}

#[test]
fn mutant_ack_before_append_is_caught() {
    let _serial = serial();
    let (_, invariant) = caught(Mutant::AckBeforeAppend, MUTANT_SEED_BUDGET).expect("caught");
    assert_eq!(invariant, Invariant::AckedIsDurable);
}

#[test]
fn mutant_fanout_before_append_is_caught() {
    let _serial = serial();
    caught(Mutant::FanoutBeforeAppend, MUTANT_SEED_BUDGET).expect("caught");
}

#[test]
fn mutant_backlog_skips_event_is_caught() {
    let _serial = serial();
    caught(Mutant::BacklogSkipsEvent, MUTANT_SEED_BUDGET).expect("caught");
}

#[test]
fn mutant_upload_done_before_put_is_caught() {
    let _serial = serial();
    let (_, invariant) =
        caught_strict(Mutant::UploadDoneBeforePut, MUTANT_SEED_BUDGET).expect("caught");
    assert!(matches!(invariant, Invariant::FilesReachable | Invariant::Liveness), "{invariant:?}");
}

#[test]
fn mutant_delete_referenced_object_is_caught() {
    let _serial = serial();
    let (_, invariant) =
        caught_strict(Mutant::DeleteReferencedObject, MUTANT_SEED_BUDGET).expect("caught");
    assert!(matches!(invariant, Invariant::FilesReachable | Invariant::Liveness), "{invariant:?}");
}

#[test]
fn shrinking_keeps_the_invariant_and_makes_the_plan_smaller() {
    let _serial = serial();
    let options = RunOptions { mutant: Some(Mutant::AckBeforeAppend), ..RunOptions::default() };
    let (seed, _) = caught(Mutant::AckBeforeAppend, MUTANT_SEED_BUDGET).expect("caught");
    let plan = Plan::generate(seed, PlanSize::default());
    let violation = run_plan(seed, &plan, &options).unwrap().violation.unwrap();
    let shrunk = livestore_sim::shrink::shrink(seed, &plan, &violation, &options, 60);
    assert_eq!(shrunk.violation.invariant, Invariant::AckedIsDurable);
    assert!(shrunk.plan.ops.len() + shrunk.plan.faults.len() <= plan.ops.len() + plan.faults.len());
    assert!(shrunk.plan.ops.len() <= 2, "an early ack needs one commit: {}", shrunk.plan);
}

/// Open findings in the file sync planners (RELIABILITY.md, "Deterministic simulation"): these seeds fail with
/// strict file checks. The default run only counts their symptoms (`files_orphaned_object`,
/// `files_unreachable_after_delete`). Run with `cargo test -p livestore-sim -- --ignored` once fixed.
const OPEN_FILE_FINDINGS: [(u64, &str); 2] = [
    (
        78,
        "orphaned object: client 1 replaces a file while client 0's upload of its first content is in flight; \
         the upload's remoteKey lands on a row that no longer has that content, nobody queues its delete",
    ),
    (
        898,
        "unreachable file: client 2 deletes the last row using content C and deletes its object while client 0 \
         saves C again and its upload finds the object still there; the object goes, client 0's row keeps the key",
    ),
];

#[test]
#[ignore = "open findings in the file sync planners; see OPEN_FILE_FINDINGS"]
fn open_file_findings_pass_with_strict_file_checks() {
    let _serial = serial();
    let options = RunOptions { strict_files: true, ..RunOptions::default() };
    for (seed, found) in OPEN_FILE_FINDINGS {
        let report = run_seed(seed, &options).expect("the run starts");
        assert!(report.violation.is_none(), "seed {seed} ({found}): {}", report.violation.unwrap());
    }
}
