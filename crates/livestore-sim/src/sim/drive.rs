//! Feeding the real connection machine and performing its outputs; moving frames between the ends.
//!
//! A connection attempt opens a network connection and a machine; the server accepts one latency later unless
//! it is down (refused) or the client is partitioned (never answered: the machine's connect timeout fires).
//! Deliveries hand the frames due on a pipe to the server one by one, or to the client's machine together as one
//! [`Input::Frames`] (as the tokio adapter coalesces frames that have already arrived). After every machine
//! input the outputs are performed in order and the machine's next deadline is armed as a tick.

use livestore_client::sync::machine::{Input, Output};
use livestore_client::sync::{ConnectionEnd, EndReason, StallReason};

use super::{Event, Failure, Sim};
use crate::client::new_machine;
use crate::error::{Invariant, Violation};
use crate::net::{ConnId, Direction, PipeItem, Sent};
use crate::server::{DEFERRED_APPEND_DELAY, Step};
use crate::stats::Hit;
use crate::trace::Node;

/// At most this many frames are handed to a machine at once (the adapter's `MAX_COALESCED_FRAMES`).
const MAX_COALESCED_FRAMES: usize = 32;

impl Sim<'_> {
    /// Starts a connection attempt for `client` unless it is down, offline, or already connecting.
    pub(super) fn connect(&mut self, client: usize) {
        let now = self.world.now();
        let state = &self.clients[client];
        if state.crashed || state.offline || state.machine.is_some() {
            return;
        }
        self.trace.step(now, Node::Client(client), "connect", &[]);
        let conn = self.net.open(client);
        let state = &mut self.clients[client];
        state.machine = Some(new_machine(now));
        state.conn = Some(conn);
        if !self.net.is_partitioned(client) {
            let latency = self.net.latency();
            self.world.schedule_in(latency, Event::Accept(conn));
        }
        self.arm_tick(client);
    }

    pub(super) fn accept(&mut self, conn: ConnId) -> Result<(), Violation> {
        let Some(client) = self.net.client_of(conn) else { return Ok(()) };
        if self.net.is_partitioned(client) {
            return Ok(());
        }
        let latency = self.net.latency();
        if !self.server.is_up() {
            self.hits.count(Hit::ConnectRefused);
            self.net.remove(conn);
            self.world
                .schedule_in(latency, Event::ClientClosed { conn, failure: Failure::Refused });
            return Ok(());
        }
        self.trace.step(self.world.now(), Node::Server, "accept", &conn.to_le_bytes());
        self.server.accept(conn);
        self.world.schedule_in(latency, Event::Opened(conn));
        Ok(())
    }

    pub(super) fn opened(&mut self, conn: ConnId) -> Result<(), Violation> {
        let Some(client) = self.current_client(conn) else { return Ok(()) };
        self.trace.step(self.world.now(), Node::Client(client), "opened", &conn.to_le_bytes());
        self.feed(client, Input::Opened)
    }

    pub(super) fn tick(&mut self, client: usize, generation: u64) -> Result<(), Violation> {
        let state = &mut self.clients[client];
        if state.tick_generation != generation || state.machine.is_none() {
            return Ok(());
        }
        state.armed_deadline = None;
        self.trace.step(self.world.now(), Node::Client(client), "tick", &[]);
        self.feed(client, Input::Tick)
    }

    pub(super) fn client_closed(
        &mut self,
        conn: ConnId,
        failure: Failure,
    ) -> Result<(), Violation> {
        let Some(client) = self.clients.iter().position(|state| state.conn == Some(conn)) else {
            return Ok(());
        };
        if self.clients[client].machine.is_none() {
            return Ok(());
        }
        self.trace.step(
            self.world.now(),
            Node::Client(client),
            "closed",
            format!("{failure:?}").as_bytes(),
        );
        self.feed(client, Input::Closed(failure.transport()))
    }

    /// Delivers what is due on a pipe.
    pub(super) fn wake(&mut self, conn: ConnId, direction: Direction) -> Result<(), Violation> {
        let now = self.world.now();
        let items = self.net.take_due(now, conn, direction, MAX_COALESCED_FRAMES);
        if items.is_empty() {
            return Ok(());
        }
        if self.net.next_due(conn, direction).is_some_and(|next| next <= now) {
            self.world.schedule(now, Event::Wake { conn, direction });
        }
        match direction {
            Direction::ToServer => self.deliver_to_server(conn, items),
            Direction::ToClient => self.deliver_to_client(conn, items),
        }
    }

    fn deliver_to_server(&mut self, conn: ConnId, items: Vec<PipeItem>) -> Result<(), Violation> {
        let now = self.world.now();
        for item in items {
            match item {
                PipeItem::Frame { text, .. } => {
                    self.trace.step(now, Node::Server, "frame", text.as_bytes());
                    let step = self.server.handle_frame(now, conn, &text);
                    self.apply_server_step(step)?;
                }
                PipeItem::Close => {
                    self.trace.step(now, Node::Server, "close", &conn.to_le_bytes());
                    self.server.drop_conn(conn);
                    self.net.remove(conn);
                    return Ok(());
                }
                PipeItem::Cut => {
                    self.trace.step(now, Node::Server, "cut", &conn.to_le_bytes());
                    self.reset_conn(conn, Failure::Cut);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn deliver_to_client(&mut self, conn: ConnId, items: Vec<PipeItem>) -> Result<(), Violation> {
        let now = self.world.now();
        let Some(client) = self.current_client(conn) else { return Ok(()) };
        let mut texts = Vec::new();
        let mut ended = None;
        for item in items {
            match item {
                PipeItem::Frame { text, ack } => {
                    if let Some(note) = &ack {
                        self.checker.on_ack_delivered(now, client, note, &self.server)?;
                    }
                    self.trace.step(now, Node::Client(client), "frame", text.as_bytes());
                    texts.push(text);
                }
                PipeItem::Close => {
                    ended = Some(Failure::Closed);
                    break;
                }
                PipeItem::Cut => {
                    ended = Some(Failure::Cut);
                    break;
                }
            }
        }
        if !texts.is_empty() {
            self.feed(client, Input::Frames(texts))?;
        }
        if let Some(failure) = ended {
            self.trace.step(now, Node::Client(client), "cut", &conn.to_le_bytes());
            self.net.remove(conn);
            self.server.drop_conn(conn);
            if self.clients[client].conn == Some(conn) && self.clients[client].machine.is_some() {
                self.feed(client, Input::Closed(failure.transport()))?;
            }
        }
        Ok(())
    }

    /// Sends the server's replies and checks its appends.
    pub(super) fn apply_server_step(&mut self, step: Step) -> Result<(), Violation> {
        let now = self.world.now();
        if !step.appended.is_empty() {
            self.checker.on_append(now, &self.server, step.appended.clone())?;
        }
        if step.server_ahead {
            self.hits.count(Hit::ServerAhead);
        }
        if step.storage_error {
            self.hits.count(Hit::StorageError);
        }
        if let Some(id) = step.deferred {
            self.world.schedule_in(DEFERRED_APPEND_DELAY, Event::Deferred(id));
        }
        for (conn, item) in step.replies {
            self.send(conn, Direction::ToClient, item);
        }
        Ok(())
    }

    /// Resets a connection: in-flight frames are lost, the server forgets it now, the client learns one latency
    /// later (a reset travels like a frame).
    pub(super) fn reset_conn(&mut self, conn: ConnId, failure: Failure) {
        self.net.remove(conn);
        self.server.drop_conn(conn);
        let latency = self.net.latency();
        self.world.schedule_in(latency, Event::ClientClosed { conn, failure });
    }

    /// Feeds one input to a client's machine, performs the outputs, re-arms its tick, runs the step checks.
    pub(super) fn feed(&mut self, client: usize, input: Input) -> Result<(), Violation> {
        let now = self.world.now();
        let state = &mut self.clients[client];
        let (Some(machine), Some(store)) = (state.machine.as_mut(), state.store.as_mut()) else {
            return Ok(());
        };
        machine.handle(now, input, store);
        self.perform(client)?;
        self.arm_tick(client);
        self.checker.after_client_step(now, &self.clients[client], &self.server)
    }

    fn perform(&mut self, client: usize) -> Result<(), Violation> {
        let now = self.world.now();
        loop {
            let state = &mut self.clients[client];
            let Some(output) = state.machine.as_mut().and_then(|machine| machine.poll_output())
            else {
                return Ok(());
            };
            let conn = state.conn;
            match output {
                Output::Send { kind, text } => {
                    self.trace.step(
                        now,
                        Node::Client(client),
                        &format!("send {kind:?}"),
                        text.as_bytes(),
                    );
                    if let Some(conn) = conn {
                        self.send(conn, Direction::ToServer, PipeItem::Frame { text, ack: None });
                    }
                }
                Output::Close => {
                    if let Some(conn) = conn {
                        self.send(conn, Direction::ToServer, PipeItem::Close);
                    }
                }
                Output::Connected => state.connected = true,
                Output::CaughtUp(caught_up) => state.caught_up = caught_up,
                Output::Ended(end) => return self.ended(client, end),
            }
        }
    }

    /// The connection is over: close our end, then reconnect after the backoff (or report a stop).
    fn ended(&mut self, client: usize, end: ConnectionEnd) -> Result<(), Violation> {
        let now = self.world.now();
        self.trace.step(now, Node::Client(client), "ended", format!("{end:?}").as_bytes());
        let state = &mut self.clients[client];
        state.machine = None;
        state.connected = false;
        state.caught_up = false;
        state.armed_deadline = None;
        if let Some(conn) = state.conn.take() {
            self.send(conn, Direction::ToServer, PipeItem::Close);
        }
        self.checker.synced_prefix(now, &self.clients[client], &self.server)?;
        let reason = match end {
            ConnectionEnd::Retry(reason) => reason,
            ConnectionEnd::Stop(reason) => {
                return Err(Violation::new(
                    Invariant::ClientHealthy,
                    now,
                    format!("client {client}: the sync driver stopped: {reason}"),
                ));
            }
        };
        match &reason {
            EndReason::BackendReset { .. } => {
                self.hits.count(Hit::BackendReset);
                self.checker.on_backend_reset(client);
                // The wipe drops rows (saved after the log loss, say) whose objects are stored: orphans by design.
                self.blob.excuse_all();
            }
            EndReason::Stalled(
                StallReason::PushUnanswered
                | StallReason::ServerAheadWithoutPage
                | StallReason::AcceptedNotEchoed,
            ) => self.hits.count(Hit::Stall),
            EndReason::ServerSilent => self.hits.count(Hit::Silence),
            EndReason::Transport(livestore_client::sync::TransportFailure::ConnectTimedOut) => {
                self.hits.count(Hit::ConnectTimeout)
            }
            // Recoverable by design, but with a well-behaved server none of these should happen.
            EndReason::ResetFailed(error)
            | EndReason::PullPageRefused(error)
            | EndReason::MalformedPullPage(error)
                if self.options.mutant.is_none() =>
            {
                return Err(Violation::new(
                    Invariant::ClientHealthy,
                    now,
                    format!("client {client}: connection ended: {reason} ({error:?})"),
                ));
            }
            _ => {}
        }
        let state = &mut self.clients[client];
        let delay = state.reconnect.delay_after(&reason, &mut state.rng);
        state.reconnect_pending = true;
        self.world.schedule_in(delay, Event::Connect(client));
        Ok(())
    }

    /// Schedules a tick at the machine's next deadline unless one is armed for it already.
    fn arm_tick(&mut self, client: usize) {
        let state = &mut self.clients[client];
        let deadline = state.machine.as_ref().and_then(|machine| machine.next_deadline());
        if deadline == state.armed_deadline {
            return;
        }
        state.tick_generation += 1;
        state.armed_deadline = deadline;
        if let Some(deadline) = deadline {
            let generation = state.tick_generation;
            self.world.schedule(deadline, Event::Tick { client, generation });
        }
    }

    /// Sends an item and schedules its delivery.
    pub(super) fn send(&mut self, conn: ConnId, direction: Direction, item: PipeItem) {
        let now = self.world.now();
        match self.net.send(now, conn, direction, item) {
            Sent::Scheduled(at) => self.world.schedule(at, Event::Wake { conn, direction }),
            Sent::Cut(at) => {
                self.hits.count(Hit::Cut);
                self.world.schedule(at, Event::Wake { conn, direction });
            }
            Sent::Dropped => {
                if self.net.client_of(conn).is_some_and(|client| self.net.is_partitioned(client)) {
                    self.hits.count(Hit::PartitionDroppedFrame);
                }
            }
        }
    }

    /// The client whose current connection is `conn`.
    fn current_client(&self, conn: ConnId) -> Option<usize> {
        let client = self.net.client_of(conn)?;
        (self.clients[client].conn == Some(conn)).then_some(client)
    }
}
