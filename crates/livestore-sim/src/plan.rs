//! The plan of one seed: clients, network profile, timed operations and timed faults, as plain data.
//!
//! A plan is a pure function of the seed ([`Plan::generate`]), drawn from the workload and fault streams only, so
//! the run itself is `f(plan, seed)`: the shrinker (`shrink`) edits a plan (fewer clients, operations, faults,
//! smaller batches) and replays it with the same seed for the network and client streams. Plans print as one
//! line per step, which is the "minimized trace" a failing seed reports.

use std::fmt;
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;

use crate::rng::{Stream, fork};

/// How big the generated plans are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanSize {
    /// At most this many clients (at least one).
    pub max_clients: usize,
    /// Operations per client, at most.
    pub max_ops_per_client: usize,
    /// Faults per seed, at most.
    pub max_faults: usize,
    /// How long operations and faults are spread over before the quiescence phase.
    pub fault_phase: Duration,
}

impl Default for PlanSize {
    fn default() -> Self {
        PlanSize {
            max_clients: 4,
            max_ops_per_client: 8,
            max_faults: 6,
            fault_phase: Duration::from_secs(60),
        }
    }
}

/// One seed's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Clients `0..clients`.
    pub clients: usize,
    /// Latency of every pipe.
    pub network: NetworkProfile,
    /// Operations, by time.
    pub ops: Vec<Timed<Op>>,
    /// Faults, by time.
    pub faults: Vec<Timed<Fault>>,
    /// When faults stop and the quiescence phase starts.
    pub fault_phase: Duration,
    /// File sync against the simulated blob store, if this seed has it.
    pub files: Option<FileProfile>,
}

/// How a seed's file sync behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileProfile {
    /// Percent of blob store calls that fail (5xx, timeout after success, cut upload, corrupt read) while the
    /// faults run.
    pub fault_percent: u32,
}

/// Latency of the network: `min + exponential(mean)` per frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkProfile {
    /// The least one-way latency.
    pub min_latency: Duration,
    /// The mean of the exponential part.
    pub jitter_mean: Duration,
}

/// Something that happens at a virtual time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timed<T> {
    /// A stable id, kept when the shrinker removes other steps: events and todos are named after it.
    pub id: usize,
    /// When.
    pub at: Duration,
    /// What.
    pub what: T,
}

/// An application operation of one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Commits `count` events in one transaction (a large batch when `count` is large).
    Commit {
        /// The client.
        client: usize,
        /// What the events do.
        edit: Edit,
        /// How many events in the one commit.
        count: usize,
    },
    /// Commits `commits` single-event transactions back to back.
    Burst {
        /// The client.
        client: usize,
        /// How many commits.
        commits: usize,
    },
    /// The client stops connecting (and drops its connection) for a while; it keeps committing.
    Offline {
        /// The client.
        client: usize,
        /// For how long.
        duration: Duration,
    },
    /// The client's process crashes (store and machine dropped, no shutdown) and restarts later.
    Crash {
        /// The client.
        client: usize,
        /// How long it stays down.
        down_for: Duration,
    },
    /// Saves a new file (`v1.FileCreated`, id `f<op id>`) with content number `content` (few numbers, so clients
    /// share content).
    SaveFile {
        /// The client.
        client: usize,
        /// Which content (`files::content`).
        content: u8,
    },
    /// Replaces the content of the file saved by operation `target` (`v1.FileUpdated`), if this client sees it.
    ReplaceFile {
        /// The client.
        client: usize,
        /// The saving operation's id.
        target: usize,
        /// The new content.
        content: u8,
    },
    /// Deletes the file saved by operation `target` (`v1.FileDeleted`), if this client sees it active.
    DeleteFile {
        /// The client.
        client: usize,
        /// The saving operation's id.
        target: usize,
    },
}

/// What a committed event does to the `todos` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    /// Creates new todos (ids from the operation's id).
    Create,
    /// Completes the todo created by the operation with id `target`.
    Complete {
        /// The creating operation's id.
        target: usize,
    },
    /// Renames that todo (concurrent renames resolve by log order).
    Rename {
        /// The creating operation's id.
        target: usize,
    },
    /// Deletes that todo.
    Delete {
        /// The creating operation's id.
        target: usize,
    },
}

/// A fault injected by the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The client's connection resets: in-flight frames are lost, both ends see it closed.
    Reset {
        /// The client.
        client: usize,
    },
    /// The next frame on the client's connection is cut mid-frame: lost, and the connection resets.
    Cut {
        /// The client.
        client: usize,
    },
    /// The client is cut off: frames are dropped and connection attempts time out.
    Partition {
        /// The client.
        client: usize,
        /// For how long.
        duration: Duration,
    },
    /// The client's current connection reads slowly: its server-to-client latency goes up by `extra`.
    SlowReader {
        /// The client.
        client: usize,
        /// The added latency.
        extra: Duration,
    },
    /// The server restarts: every connection resets, the log is kept (acknowledged means durable).
    ServerRestart {
        /// How long it is down.
        down_for: Duration,
    },
    /// The server's next push fails with a storage error (`UnknownError`) and nothing is appended.
    StorageError,
    /// The server loses its log: a new `backendId`, an empty log, every connection reset.
    LogLost,
}

impl Plan {
    /// The plan of `seed` at `size`.
    pub fn generate(seed: u64, size: PlanSize) -> Plan {
        let mut workload = fork(seed, Stream::Workload);
        let mut faults_rng = fork(seed, Stream::Faults);
        let clients = workload.random_range(1..=size.max_clients.max(1));
        let network = NetworkProfile {
            min_latency: Duration::from_micros(workload.random_range(500..20_000)),
            jitter_mean: Duration::from_micros(workload.random_range(200..40_000)),
        };
        let phase_micros = size.fault_phase.as_micros().max(1) as u64;
        let op_count = clients * workload.random_range(2..=size.max_ops_per_client.max(2));
        let mut times: Vec<u64> =
            (0..op_count).map(|_| workload.random_range(0..phase_micros)).collect();
        times.sort_unstable();
        let mut ops = Vec::with_capacity(op_count);
        let mut creates = Vec::new();
        for at in times {
            let op = random_op(&mut workload, clients, &creates);
            let id = ops.len();
            if matches!(op, Op::Commit { edit: Edit::Create, .. }) {
                creates.push(id);
            }
            ops.push(Timed { id, at: Duration::from_micros(at), what: op });
        }
        let fault_count = faults_rng.random_range(0..=size.max_faults);
        let mut faults: Vec<Timed<Fault>> = (0..fault_count)
            .map(|id| Timed {
                id,
                at: Duration::from_micros(faults_rng.random_range(0..phase_micros)),
                what: random_fault(&mut faults_rng, clients),
            })
            .collect();
        faults.sort_by_key(|fault| fault.at);
        let files = file_ops(seed, clients, phase_micros, &mut ops);
        Plan { clients, network, ops, faults, fault_phase: size.fault_phase, files }
    }

    /// The client an operation or fault concerns, if one.
    pub fn client_of_fault(fault: &Fault) -> Option<usize> {
        match fault {
            Fault::Reset { client }
            | Fault::Cut { client }
            | Fault::Partition { client, .. }
            | Fault::SlowReader { client, .. } => Some(*client),
            Fault::ServerRestart { .. } | Fault::StorageError | Fault::LogLost => None,
        }
    }
}

impl Op {
    /// The client the operation runs on.
    pub fn client(&self) -> usize {
        match self {
            Op::Commit { client, .. }
            | Op::Burst { client, .. }
            | Op::Offline { client, .. }
            | Op::Crash { client, .. }
            | Op::SaveFile { client, .. }
            | Op::ReplaceFile { client, .. }
            | Op::DeleteFile { client, .. } => *client,
        }
    }
}

/// Most distinct contents a plan saves: few, so clients often save the same bytes.
pub const FILE_CONTENTS: u8 = 6;

/// Adds the file operations of `seed` (from their own stream) to `ops`, keeping them ordered by time, and draws
/// the file profile; a quarter of the seeds have no files.
fn file_ops(
    seed: u64,
    clients: usize,
    phase_micros: u64,
    ops: &mut Vec<Timed<Op>>,
) -> Option<FileProfile> {
    let mut rng = fork(seed, Stream::FileWorkload);
    if rng.random_range(0..4) == 0 {
        return None;
    }
    let profile = FileProfile { fault_percent: rng.random_range(0..=25) };
    let count = rng.random_range(2..=3 * clients + 3);
    let mut times: Vec<u64> = (0..count).map(|_| rng.random_range(0..phase_micros)).collect();
    times.sort_unstable();
    let mut saves: Vec<usize> = Vec::new();
    for at in times {
        let client = rng.random_range(0..clients);
        let content = rng.random_range(0..FILE_CONTENTS);
        let id = ops.len();
        let roll = rng.random_range(0..100);
        let what = match (roll, saves.is_empty()) {
            (0..55, _) | (_, true) => Op::SaveFile { client, content },
            (55..75, false) => {
                Op::ReplaceFile { client, target: saves[rng.random_range(0..saves.len())], content }
            }
            _ => Op::DeleteFile { client, target: saves[rng.random_range(0..saves.len())] },
        };
        if matches!(what, Op::SaveFile { .. }) {
            saves.push(id);
        }
        ops.push(Timed { id, at: Duration::from_micros(at), what });
    }
    // Stable: ties keep the todo operation first, and ids stay as drawn.
    ops.sort_by_key(|op| op.at);
    Some(profile)
}

fn random_op(rng: &mut StdRng, clients: usize, creates: &[usize]) -> Op {
    let client = rng.random_range(0..clients);
    let roll = rng.random_range(0..100);
    let target = (!creates.is_empty()).then(|| creates[rng.random_range(0..creates.len())]);
    match (roll, target) {
        (0..35, _) | (35..65, None) => Op::Commit { client, edit: Edit::Create, count: 1 },
        (35..45, Some(target)) => Op::Commit { client, edit: Edit::Complete { target }, count: 1 },
        (45..55, Some(target)) => Op::Commit { client, edit: Edit::Rename { target }, count: 1 },
        (55..65, Some(target)) => Op::Commit { client, edit: Edit::Delete { target }, count: 1 },
        (65..70, _) => {
            // Large batches cross the push limit (100 events) and the page limit.
            Op::Commit { client, edit: Edit::Create, count: rng.random_range(50..=250) }
        }
        (70..80, _) => Op::Burst { client, commits: rng.random_range(5..=30) },
        (80..90, _) => {
            Op::Offline { client, duration: Duration::from_millis(rng.random_range(1_000..20_000)) }
        }
        _ => Op::Crash { client, down_for: Duration::from_millis(rng.random_range(100..5_000)) },
    }
}

fn random_fault(rng: &mut StdRng, clients: usize) -> Fault {
    let client = rng.random_range(0..clients);
    match rng.random_range(0..100) {
        0..30 => Fault::Reset { client },
        30..50 => Fault::Cut { client },
        50..65 => Fault::Partition {
            client,
            duration: Duration::from_millis(rng.random_range(500..30_000)),
        },
        65..78 => {
            Fault::SlowReader { client, extra: Duration::from_millis(rng.random_range(500..8_000)) }
        }
        78..90 => {
            Fault::ServerRestart { down_for: Duration::from_millis(rng.random_range(50..3_000)) }
        }
        90..97 => Fault::StorageError,
        _ => Fault::LogLost,
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            formatter,
            "plan: {} client(s), latency {:?} + exp({:?}), faults until {:?}, files {:?}",
            self.clients,
            self.network.min_latency,
            self.network.jitter_mean,
            self.fault_phase,
            self.files
        )?;
        let mut lines: Vec<(Duration, String)> = Vec::new();
        for op in &self.ops {
            lines.push((op.at, format!("op {}: {:?}", op.id, op.what)));
        }
        for fault in &self.faults {
            lines.push((fault.at, format!("fault: {:?}", fault.what)));
        }
        lines.sort_by_key(|(at, _)| *at);
        for (at, line) in lines {
            writeln!(formatter, "  {:>10.3}s  {line}", at.as_secs_f64())?;
        }
        Ok(())
    }
}
