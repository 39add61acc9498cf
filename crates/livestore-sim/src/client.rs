//! One simulated client: the real [`Store`] on disk, the real [`ConnectionMachine`] and [`Reconnect`], and the
//! little process state the simulator adds (offline, crashed, which connection is current, the armed tick).
//!
//! This module opens stores and turns plan operations into committed events; feeding the machine and performing
//! its outputs is `sim::drive`, which also owns the network and the server.

use std::path::PathBuf;
use std::time::Duration;

use livestore_client::store::StoreOptions;
use livestore_client::sync::BackendIdPolicy;
use livestore_client::sync::machine::{Config, ConnectionMachine};
use livestore_client::sync::reconnect::Reconnect;
use livestore_client::{NewEvent, Storage, Store, StoreError};
use rand::rngs::StdRng;

use crate::files::{FileEngine, LocalArea};
use crate::net::ConnId;
use crate::plan::Edit;
use crate::schema::{self, TodoCompleted, TodoCreated, TodoDeleted, TodoRenamed};

pub use crate::schema::STORE_ID;

/// The first reconnect delay and the longest (the driver's defaults).
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A client of the simulation.
#[derive(Debug)]
pub struct SimClient {
    /// Its index in the plan.
    pub index: usize,
    dir: PathBuf,
    /// The open store; `None` while the process is crashed.
    pub store: Option<Store>,
    /// The current connection's machine, if a connection is being made or is open.
    pub machine: Option<ConnectionMachine>,
    /// The current connection.
    pub conn: Option<ConnId>,
    /// The backoff between connections.
    pub reconnect: Reconnect,
    /// The client's own random stream (reconnect jitter).
    pub rng: StdRng,
    /// The application took the client offline.
    pub offline: bool,
    /// The process is down.
    pub crashed: bool,
    /// A reconnect is scheduled.
    pub reconnect_pending: bool,
    /// Bumped whenever a new tick is armed; a tick event carries the generation it was armed with.
    pub tick_generation: u64,
    /// The deadline the armed tick is for.
    pub armed_deadline: Option<Duration>,
    /// The machine reported `Connected` and the latest `CaughtUp` value.
    pub connected: bool,
    /// See `connected`.
    pub caught_up: bool,
    /// The local file area (survives crashes, like files on disk).
    pub local: LocalArea,
    /// The sim file engine's in-memory state (a crash drops it).
    pub files: FileEngine,
    /// The file engine's random stream (transfer latency, backoff jitter).
    pub file_rng: StdRng,
}

impl SimClient {
    /// Opens client `index`'s store under `root` (its own directory).
    pub fn open(
        index: usize,
        root: &std::path::Path,
        rng: StdRng,
        file_rng: StdRng,
    ) -> Result<Self, StoreError> {
        let dir = root.join(format!("client-{index}"));
        let mut client = SimClient {
            index,
            dir,
            store: None,
            machine: None,
            conn: None,
            reconnect: Reconnect::new(MIN_BACKOFF, MAX_BACKOFF),
            rng,
            offline: false,
            crashed: false,
            reconnect_pending: false,
            tick_generation: 0,
            armed_deadline: None,
            connected: false,
            caught_up: false,
            local: LocalArea::default(),
            files: FileEngine::default(),
            file_rng,
        };
        client.store = Some(client.open_store()?);
        Ok(client)
    }

    /// Reopens the store after a crash, from the same directory; the process starts with fresh backoff.
    pub fn restart(&mut self) -> Result<(), StoreError> {
        self.store = Some(self.open_store()?);
        self.reconnect = Reconnect::new(MIN_BACKOFF, MAX_BACKOFF);
        self.crashed = false;
        Ok(())
    }

    /// The process dies: store and machine dropped without shutdown (every committed transaction is on disk).
    pub fn crash(&mut self) {
        self.machine = None;
        self.conn = None;
        self.store = None;
        self.crashed = true;
        self.connected = false;
        self.caught_up = false;
        self.armed_deadline = None;
        self.tick_generation += 1;
        self.files = self.files.restarted();
    }

    fn open_store(&self) -> Result<Store, StoreError> {
        let mut options = StoreOptions::new(STORE_ID, Storage::Dir(self.dir.clone()));
        // Explicit ids: the generated one would come from the OS's RNG.
        options.client_id = Some(format!("client-{}", self.index));
        options.session_id = format!("session-{}", self.index);
        Store::open(options, schema::schema())
    }
}

/// The machine configuration of every connection: the driver's default timeouts and `backendId` policy.
pub fn machine_config() -> Config {
    Config {
        ping_interval: Duration::from_secs(10),
        silence_timeout: Duration::from_secs(25),
        stall_timeout: Duration::from_secs(15),
        connect_timeout: Duration::from_secs(10),
        backend_id_policy: BackendIdPolicy::default(),
        sync_payload: None,
    }
}

/// A new connection machine at `now`.
pub fn new_machine(now: Duration) -> ConnectionMachine {
    ConnectionMachine::new(machine_config(), now)
}

/// The events of one commit of operation `op_id`: `count` events doing `edit`, tagged `o<op>.<k>`.
pub fn events_for(op_id: usize, edit: Edit, count: usize) -> (Vec<NewEvent>, Vec<String>) {
    (0..count).map(|k| event_for(op_id, k, edit)).unzip()
}

/// Event `k` of operation `op_id`, and its tag.
pub fn event_for(op_id: usize, k: usize, edit: Edit) -> (NewEvent, String) {
    let op = format!("o{op_id}.{k}");
    // Edits target the first todo their creating operation made.
    let todo = |target: usize| format!("t{target}.0");
    let event = match edit {
        Edit::Create => schema::new_event(&TodoCreated {
            id: format!("t{op_id}.{k}"),
            text: format!("todo {op_id}.{k}"),
            op: op.clone(),
        }),
        Edit::Complete { target } => {
            schema::new_event(&TodoCompleted { id: todo(target), op: op.clone() })
        }
        Edit::Rename { target } => schema::new_event(&TodoRenamed {
            id: todo(target),
            text: format!("renamed by {op}"),
            op: op.clone(),
        }),
        Edit::Delete { target } => {
            schema::new_event(&TodoDeleted { id: todo(target), op: op.clone() })
        }
    };
    (event, op)
}
