//! Deterministic simulation of LiveStore sync: real clients, a model server and a faulty network, in one
//! seeded, single-threaded, virtual-time run per seed.
//!
//! The clients are the real [`livestore_client::Store`] (SQLite on disk, in a per-seed directory) driven by the
//! real sans-IO [`livestore_client::sync::machine::ConnectionMachine`] and
//! [`livestore_client::sync::reconnect::Reconnect`]; the server answers with the real protocol pieces of
//! `livestore-proto`; the network, the clock and every random draw belong to the simulator. The same seed gives
//! the same trace hash, so any failure replays with `scripts/sim --seed S`.
//!
//! Modules, leaves first:
//! - [`rng`]: one root seed forked into independent streams; [`world`]: virtual time and the event queue;
//!   [`trace`]: the trace hash;
//! - [`plan`]: a seed's clients, operations and faults as data (config = f(seed)); [`schema`]: the todo schema
//!   whose events carry a unique operation tag;
//! - [`net`]: pipes, latency, resets, cuts, partitions, slow readers; [`server`]: the sync server model, with
//!   deliberate bugs from [`mutant`]; [`client`]: one client's store, machine and process state;
//! - [`files`]: the simulated object store, each client's local file area and file engine state (the file
//!   workload and engine steps are `sim::files`);
//! - [`check`]: the invariants; [`sim`]: one run; [`shrink`]: minimizing a failing plan; [`stats`]: fault-hit
//!   counters; [`error`]: [`SimError`] and [`Violation`].
//!
//! ```no_run
//! use livestore_sim::{RunOptions, run_seed};
//!
//! let report = run_seed(42, &RunOptions::default()).unwrap();
//! assert!(report.violation.is_none(), "{:?}", report.violation);
//! println!("trace {}", report.trace);
//! ```

pub mod check;
pub mod client;
pub mod error;
pub mod files;
pub mod mutant;
pub mod net;
pub mod plan;
pub mod rng;
pub mod schema;
pub mod server;
pub mod shrink;
pub mod sim;
pub mod stats;
pub mod trace;
pub mod world;

pub use error::{Invariant, SimError, Violation};
pub use mutant::Mutant;
pub use plan::{Plan, PlanSize};
pub use sim::{RunOptions, RunReport, run_plan};

/// Runs `seed` at the default plan size.
pub fn run_seed(seed: u64, options: &RunOptions) -> Result<RunReport, SimError> {
    run_plan(seed, &Plan::generate(seed, PlanSize::default()), options)
}
