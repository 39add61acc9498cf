//! One run: the plan's clients, the server model and the network, stepped event by event in virtual time.
//!
//! [`run_plan`] builds the world from a [`Plan`] and a seed, then pops events until quiescence or a violation.
//! Events are the plan's operations and faults, the network's deliveries, the machines' timers and the
//! reconnect timers. Two phases: while the plan runs, faults fire; at `plan.fault_phase` they stop, partitions
//! heal, the server comes up, crashed and offline clients come back, and the run goes on until every client is
//! connected, caught up and has nothing pending and no frame is in flight (then the quiescence checks run), or
//! until [`RunOptions::quiescence_limit`] passes (a liveness violation).
//!
//! Submodules: `drive` feeds a client's machine and performs its outputs, and delivers frames; `plan_steps`
//! carries out operations and faults.

mod drive;
mod files;
mod plan_steps;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use livestore_client::sync::TransportFailure;

use crate::check::Checker;
use crate::client::SimClient;
use crate::error::{Invariant, SimError, Violation};
use crate::files::BlobStore;
use crate::mutant::Mutant;
use crate::net::{ConnId, Direction, Network};
use crate::plan::Plan;
use crate::rng::{Stream, fork};
use crate::server::Server;
use crate::stats::Hits;
use crate::trace::{Node, TraceHash};
use crate::world::World;

/// How a run is set up besides its plan.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// A deliberate server bug, if any.
    pub mutant: Option<Mutant>,
    /// How long after the faults stop quiescence may take.
    pub quiescence_limit: Duration,
    /// Where per-seed directories go (`/dev/shm` when it exists, else the system temp dir).
    pub temp_root: Option<PathBuf>,
    /// Fail on an orphaned object at quiescence ([`crate::Invariant::FilesNoOrphans`]); off by default because
    /// of an open finding (seed 78, see `sim::files::check_files`), when orphans are only counted.
    pub strict_files: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            mutant: None,
            quiescence_limit: Duration::from_secs(300),
            temp_root: None,
            strict_files: false,
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct RunReport {
    /// The trace hash (hex SHA-256 of every step).
    pub trace: String,
    /// Steps folded into the trace.
    pub steps: u64,
    /// Virtual time simulated.
    pub virtual_time: Duration,
    /// Fault and workload hit counters.
    pub hits: Hits,
    /// Events in the server log at the end.
    pub server_events: usize,
    /// The first violation, if any.
    pub violation: Option<Violation>,
}

/// Everything that can be scheduled.
#[derive(Debug, Clone, Copy)]
enum Event {
    Op(usize),
    Fault(usize),
    Heal(usize),
    Online(usize),
    Restart(usize),
    ServerUp,
    Connect(usize),
    Tick {
        client: usize,
        generation: u64,
    },
    Accept(ConnId),
    Opened(ConnId),
    Wake {
        conn: ConnId,
        direction: Direction,
    },
    ClientClosed {
        conn: ConnId,
        failure: Failure,
    },
    Deferred(u64),
    Quiesce,
    /// A client's file engine turn (`number`: the armed one; stale ones are ignored).
    FileTick {
        client: usize,
        number: u64,
    },
    /// A file transfer of a client's engine `generation` finished.
    FileDone {
        client: usize,
        generation: u64,
        id: u64,
    },
}

/// How a client learns its connection is gone (turned into a [`TransportFailure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Closed,
    Refused,
    Cut,
}

impl Failure {
    fn transport(self) -> TransportFailure {
        let io =
            |kind, text| livestore_client::sync::ErrorSource::new(std::io::Error::new(kind, text));
        match self {
            Failure::Closed => TransportFailure::Closed,
            Failure::Refused => TransportFailure::ConnectFailed(io(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused",
            )),
            Failure::Cut => {
                TransportFailure::Read(io(std::io::ErrorKind::UnexpectedEof, "frame cut mid-way"))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Faults,
    Quiescence,
}

/// The state of one run.
#[derive(Debug)]
struct Sim<'a> {
    plan: &'a Plan,
    options: &'a RunOptions,
    world: World<Event>,
    trace: TraceHash,
    net: Network,
    server: Server,
    clients: Vec<SimClient>,
    checker: Checker,
    hits: Hits,
    phase: Phase,
    /// The simulated object store.
    blob: BlobStore,
    /// Its fault decisions.
    blob_rng: rand::rngs::StdRng,
    /// The `Instant` virtual time 0 maps to (the planners take `Instant`s; only differences matter).
    base: Instant,
}

/// Runs `plan` with the network and client streams of `seed`.
pub fn run_plan(seed: u64, plan: &Plan, options: &RunOptions) -> Result<RunReport, SimError> {
    let root = options.temp_root.clone().unwrap_or_else(default_temp_root);
    let dir = tempfile::Builder::new()
        .prefix("livestore-sim-")
        .tempdir_in(root)
        .map_err(SimError::TempDir)?;
    let mut sim = Sim {
        plan,
        options,
        world: World::default(),
        trace: TraceHash::default(),
        net: Network::new(plan.network, fork(seed, Stream::Network)),
        server: Server::new(options.mutant),
        clients: Vec::with_capacity(plan.clients),
        checker: Checker::new(plan.clients),
        hits: Hits::default(),
        phase: Phase::Faults,
        blob: BlobStore::default(),
        blob_rng: fork(seed, Stream::Blob),
        base: base_instant(),
    };
    let result = sim.start(dir.path(), seed).and_then(|()| sim.run());
    // Stores close before their directory goes.
    sim.clients.clear();
    drop(dir);
    Ok(RunReport {
        steps: sim.trace.steps(),
        virtual_time: sim.world.now(),
        trace: sim.trace.finish(),
        hits: sim.hits,
        server_events: sim.server.log().len(),
        violation: result.err(),
    })
}

/// Any fixed `Instant`: the planners only compare instants, all of them `base + virtual time`, so which one it
/// is never changes a decision.
#[allow(clippy::disallowed_methods, reason = "an origin only; no decision reads the wall clock")]
fn base_instant() -> Instant {
    Instant::now()
}

/// `/dev/shm` when present (SQLite on tmpfs: no disk flushes), else the system temp dir.
pub fn default_temp_root() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() { shm } else { std::env::temp_dir() }
}

impl Sim<'_> {
    fn start(&mut self, root: &std::path::Path, seed: u64) -> Result<(), Violation> {
        for index in 0..self.plan.clients {
            let client = SimClient::open(
                index,
                root,
                fork(seed, Stream::Client(index)),
                fork(seed, Stream::FileEngine(index)),
            )
            .map_err(|error| Violation::store(index, Duration::ZERO, "open", &error))?;
            self.clients.push(client);
        }
        for (index, op) in self.plan.ops.iter().enumerate() {
            self.world.schedule(op.at, Event::Op(index));
        }
        for (index, fault) in self.plan.faults.iter().enumerate() {
            self.world.schedule(fault.at, Event::Fault(index));
        }
        self.world.schedule(self.plan.fault_phase, Event::Quiesce);
        for index in 0..self.plan.clients {
            self.connect(index);
            self.arm_file_tick(index, Duration::ZERO);
        }
        Ok(())
    }

    fn run(&mut self) -> Result<(), Violation> {
        let deadline = self.plan.fault_phase + self.options.quiescence_limit;
        loop {
            if self.phase == Phase::Quiescence && self.quiescent()? && self.files_settled()? {
                self.checker.at_quiescence(self.world.now(), &self.clients, &self.server)?;
                return self.check_files().map(drop);
            }
            if self.world.next_time().is_none_or(|next| next > deadline) {
                // Sync settled but files never did: a file check usually says why better than "stuck".
                if self.quiescent()? && self.check_files()? > 0 {
                    // Only the open finding keeps the files from settling (counted, not failed; see
                    // `sim::files::check_files`): the sync checks still apply.
                    return self.checker.at_quiescence(
                        self.world.now(),
                        &self.clients,
                        &self.server,
                    );
                }
                return Err(Violation::new(
                    Invariant::Liveness,
                    self.world.now(),
                    self.stuck_report(),
                ));
            }
            let event = self.world.pop().expect("next_time was Some");
            self.dispatch(event)?;
        }
    }

    fn dispatch(&mut self, event: Event) -> Result<(), Violation> {
        let now = self.world.now();
        match event {
            Event::Op(index) => {
                self.trace.step(now, Node::Plan, "op", &(index as u64).to_le_bytes());
                self.run_op(index)
            }
            Event::Fault(index) => {
                self.trace.step(now, Node::Plan, "fault", &(index as u64).to_le_bytes());
                self.run_fault(index)
            }
            Event::Heal(client) => self.heal(client),
            Event::Online(client) => self.online(client),
            Event::Restart(client) => self.restart(client),
            Event::ServerUp => {
                self.trace.step(now, Node::Server, "up", &[]);
                self.server.start();
                Ok(())
            }
            Event::Connect(client) => {
                self.clients[client].reconnect_pending = false;
                self.connect(client);
                Ok(())
            }
            Event::Tick { client, generation } => self.tick(client, generation),
            Event::Accept(conn) => self.accept(conn),
            Event::Opened(conn) => self.opened(conn),
            Event::Wake { conn, direction } => self.wake(conn, direction),
            Event::ClientClosed { conn, failure } => self.client_closed(conn, failure),
            Event::Deferred(id) => {
                self.trace.step(now, Node::Server, "deferred", &id.to_le_bytes());
                let step = self.server.land_deferred(now, id);
                self.apply_server_step(step)
            }
            Event::Quiesce => self.quiesce(),
            Event::FileTick { client, number } => self.file_tick(client, number),
            Event::FileDone { client, generation, id } => self.file_done(client, generation, id),
        }
    }

    /// Whether every client is connected, caught up, with nothing pending, and nothing is in flight.
    fn quiescent(&self) -> Result<bool, Violation> {
        if !self.net.idle() || !self.server.is_up() || self.server.has_deferred() {
            return Ok(false);
        }
        let head = self.server.log().len() as u64;
        for client in &self.clients {
            let Some(store) = &client.store else { return Ok(false) };
            if client.offline || client.machine.is_none() || !client.connected || !client.caught_up
            {
                return Ok(false);
            }
            let (upstream, _) = store.upstream_cursor().map_err(|error| {
                Violation::store(client.index, self.world.now(), "upstream_cursor", &error)
            })?;
            let status = store.sync_status().map_err(|error| {
                Violation::store(client.index, self.world.now(), "sync_status", &error)
            })?;
            if upstream != head || status.pending_synced_count > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Why quiescence was not reached: every client's state.
    fn stuck_report(&self) -> String {
        let mut report = format!(
            "no quiescence within {:?} after the faults stopped; server head e{}",
            self.options.quiescence_limit,
            self.server.log().len()
        );
        for client in &self.clients {
            let status = client.store.as_ref().and_then(|store| store.sync_status().ok());
            report.push_str(&format!(
                "\n  client {}: connected {} caught up {} machine {} status {:?}",
                client.index,
                client.connected,
                client.caught_up,
                client.machine.is_some(),
                status
            ));
            if self.plan.files.is_some() {
                report.push_str(&format!("\n    files: {}", self.files_report(client.index)));
            }
        }
        report
    }

    /// Faults stop: heal, restart, bring everyone online.
    fn quiesce(&mut self) -> Result<(), Violation> {
        self.trace.step(self.world.now(), Node::Plan, "quiesce", &[]);
        self.phase = Phase::Quiescence;
        if !self.server.is_up() {
            self.server.start();
        }
        self.server.disarm_storage_error();
        // Two slow readers whose pings overlap would otherwise keep a frame in flight forever.
        self.net.clear_slowness();
        for client in 0..self.clients.len() {
            if self.net.is_partitioned(client) {
                self.heal(client)?;
            }
            if self.clients[client].crashed {
                self.restart(client)?;
            }
            if self.clients[client].offline {
                self.online(client)?;
            }
        }
        Ok(())
    }
}
