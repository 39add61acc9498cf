//! Carrying out the plan: application operations (commits, bursts, offline, crashes) and faults.
//!
//! Operations on a crashed client are skipped (the process is not running); commits on an offline or
//! disconnected client go to the store as usual and are pushed later. Faults that find nothing to act on (a reset
//! with no connection) do nothing and are not counted as hits.

use livestore_client::NewEvent;
use livestore_client::sync::machine::Input;

use super::{Event, Failure, Phase, Sim};
use crate::client::{event_for, events_for};
use crate::error::Violation;
use crate::net::{Direction, PipeItem};
use crate::plan::{Edit, Fault, Op};
use crate::stats::Hit;
use crate::trace::Node;

/// Down time of the server after it lost its log.
const LOG_LOST_DOWN_FOR: std::time::Duration = std::time::Duration::from_millis(100);

impl Sim<'_> {
    pub(super) fn run_op(&mut self, index: usize) -> Result<(), Violation> {
        let op = &self.plan.ops[index];
        let (op_id, what) = (op.id, op.what.clone());
        let client = what.client();
        if self.clients[client].crashed {
            return Ok(());
        }
        match what {
            Op::Commit { edit, count, .. } => {
                if count >= 50 {
                    self.hits.count(Hit::LargeBatch);
                }
                let (events, tags) = events_for(op_id, edit, count);
                self.commit(client, events, tags)
            }
            Op::Burst { commits, .. } => {
                self.hits.count(Hit::Burst);
                for k in 0..commits {
                    let (event, tag) = event_for(op_id, k, Edit::Create);
                    self.commit(client, vec![event], vec![tag])?;
                }
                Ok(())
            }
            Op::Offline { duration, .. } => {
                if self.clients[client].offline {
                    return Ok(());
                }
                self.hits.count(Hit::Offline);
                self.clients[client].offline = true;
                // Airplane mode: the connection drops at once on the client's side.
                if let Some(conn) = self.clients[client].conn {
                    self.net.remove(conn);
                    self.server.drop_conn(conn);
                    self.feed(client, Input::Closed(Failure::Closed.transport()))?;
                }
                self.world.schedule_in(duration, Event::Online(client));
                Ok(())
            }
            Op::Crash { down_for, .. } => {
                self.hits.count(Hit::ClientCrash);
                if let Some(conn) = self.clients[client].conn {
                    // The kernel still sends what the process had written, then closes the socket.
                    self.net.clear_to_client(conn);
                    self.send(conn, Direction::ToServer, PipeItem::Close);
                }
                self.clients[client].crash();
                self.world.schedule_in(down_for, Event::Restart(client));
                Ok(())
            }
            Op::SaveFile { .. } | Op::ReplaceFile { .. } | Op::DeleteFile { .. } => {
                self.run_file_op(client, op_id, &what)
            }
        }
    }

    pub(super) fn commit(
        &mut self,
        client: usize,
        events: Vec<NewEvent>,
        tags: Vec<String>,
    ) -> Result<(), Violation> {
        let now = self.world.now();
        self.trace.step(now, Node::Client(client), "commit", tags.join(",").as_bytes());
        let store = self.clients[client].store.as_ref().expect("a running client has a store");
        store
            .commit_batch(events)
            .map_err(|error| Violation::store(client, now, "commit", &error))?;
        self.checker.on_commit(client, tags);
        if !self.clients[client].connected {
            self.hits.count(Hit::OfflineCommit);
        }
        self.feed(client, Input::LocalCommit)
    }

    pub(super) fn run_fault(&mut self, index: usize) -> Result<(), Violation> {
        if self.phase == Phase::Quiescence {
            return Ok(());
        }
        let fault = self.plan.faults[index].what.clone();
        let conn_of = |sim: &Self, client: usize| {
            sim.clients
                .get(client)
                .and_then(|state| state.conn)
                .filter(|conn| sim.net.exists(*conn))
        };
        match fault {
            Fault::Reset { client } => {
                if let Some(conn) = conn_of(self, client) {
                    self.hits.count(Hit::Reset);
                    self.reset_conn(conn, Failure::Closed);
                }
            }
            Fault::Cut { client } => {
                if let Some(conn) = conn_of(self, client) {
                    self.net.arm_cut(conn);
                }
            }
            Fault::Partition { client, duration } => {
                if !self.net.is_partitioned(client) {
                    self.hits.count(Hit::Partition);
                    self.net.partition(client);
                    self.world.schedule_in(duration, Event::Heal(client));
                }
            }
            Fault::SlowReader { client, extra } => {
                if let Some(conn) = conn_of(self, client) {
                    self.hits.count(Hit::SlowReader);
                    self.net.slow_down(conn, extra);
                }
            }
            Fault::ServerRestart { down_for } => {
                if self.server.is_up() {
                    self.hits.count(Hit::ServerRestart);
                    self.server_down();
                    self.world.schedule_in(down_for, Event::ServerUp);
                }
            }
            Fault::StorageError => self.server.arm_storage_error(),
            Fault::LogLost => {
                self.hits.count(Hit::LogLost);
                self.server_down();
                self.server.lose_log();
                self.checker.on_log_lost();
                self.world.schedule_in(LOG_LOST_DOWN_FOR, Event::ServerUp);
            }
        }
        Ok(())
    }

    /// The server process goes away: every connection resets.
    fn server_down(&mut self) {
        for conn in self.server.crash() {
            self.reset_conn(conn, Failure::Closed);
        }
        // Connections accepted by nobody yet (attempts in flight) are refused when they arrive.
    }

    pub(super) fn heal(&mut self, client: usize) -> Result<(), Violation> {
        self.trace.step(self.world.now(), Node::Network, "heal", &(client as u64).to_le_bytes());
        for conn in self.net.heal(client) {
            self.reset_conn(conn, Failure::Closed);
        }
        Ok(())
    }

    pub(super) fn online(&mut self, client: usize) -> Result<(), Violation> {
        if !self.clients[client].offline {
            return Ok(());
        }
        self.trace.step(self.world.now(), Node::Client(client), "online", &[]);
        self.clients[client].offline = false;
        if !self.clients[client].reconnect_pending {
            self.connect(client);
        }
        Ok(())
    }

    pub(super) fn restart(&mut self, client: usize) -> Result<(), Violation> {
        if !self.clients[client].crashed {
            return Ok(());
        }
        let now = self.world.now();
        self.trace.step(now, Node::Client(client), "restart", &[]);
        self.clients[client]
            .restart()
            .map_err(|error| Violation::store(client, now, "reopen", &error))?;
        self.clients[client].reconnect_pending = false;
        self.checker.after_client_step(now, &self.clients[client], &self.server)?;
        self.checker.synced_prefix(now, &self.clients[client], &self.server)?;
        self.connect(client);
        self.arm_file_tick(client, now);
        Ok(())
    }
}
