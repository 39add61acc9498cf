//! The simulated network: connections made of two FIFO pipes, seeded latency, and the faults that break them.
//!
//! Each connection has one pipe per direction. A frame sent at `t` is delivered at
//! `max(t + min + exponential(mean) [+ slow-reader extra], the pipe's last delivery)`: FIFO within a connection
//! (as TCP is), free reordering across connections. The network never looks inside a frame; it only moves
//! [`PipeItem`]s and breaks connections:
//! - a *reset* loses every frame in flight, and both ends learn the connection is gone;
//! - a *cut* loses one frame mid-way, and the receiver then sees the connection fail where the frame should have
//!   arrived (a truncated WebSocket frame cannot be read);
//! - a *partition* black-holes a client: frames in flight and sent later vanish, connection attempts are never
//!   answered; when it heals, the black-holed connections reset;
//! - a *slow reader* adds latency to one connection's server-to-client pipe.
//!
//! Who reacts to a closed connection and how (the machine's `Closed` input, the server dropping a subscriber) is
//! the caller's business (`sim`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;

use crate::plan::NetworkProfile;

/// A connection's id, in the order connections were opened.
pub type ConnId = u64;

/// The direction of a pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    ToServer,
    /// Server to client.
    ToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ToServer => 0,
            Direction::ToClient => 1,
        }
    }
}

/// What travels in a pipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipeItem {
    /// A text frame; `ack` is set on a server's push acknowledgement (for the acked-is-durable check).
    Frame {
        /// The frame.
        text: String,
        /// The events the frame acknowledges.
        ack: Option<AckNote>,
    },
    /// The sender closed its end (the receiver sees the connection end after the frames before it).
    Close,
    /// A frame was cut here: the receiver sees the connection fail.
    Cut,
}

/// The events a push acknowledgement confirms, and the server log generation that confirmed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckNote {
    /// The server's log generation (bumped when the log is lost).
    pub generation: u64,
    /// The operation tags of the acknowledged events.
    pub ops: Vec<String>,
}

/// What happened to a sent item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// It will be delivered; wake the receiver at this time.
    Scheduled(Duration),
    /// It was lost (closed or black-holed connection).
    Dropped,
    /// It was cut: the receiver sees the connection fail at this time.
    Cut(Duration),
}

#[derive(Debug, Default)]
struct Pipe {
    last_delivery: Duration,
    queue: VecDeque<(Duration, PipeItem)>,
}

#[derive(Debug)]
struct Conn {
    client: usize,
    black_holed: bool,
    cut_armed: bool,
    slow_extra: Duration,
    pipes: [Pipe; 2],
}

/// Every connection and partition of a run.
#[derive(Debug)]
pub struct Network {
    profile: NetworkProfile,
    rng: StdRng,
    conns: BTreeMap<ConnId, Conn>,
    next_id: ConnId,
    partitioned: BTreeSet<usize>,
}

impl Network {
    /// A network with no connections.
    pub fn new(profile: NetworkProfile, rng: StdRng) -> Self {
        Network { profile, rng, conns: BTreeMap::new(), next_id: 1, partitioned: BTreeSet::new() }
    }

    /// Opens a connection for `client` (the caller decides whether the server ever answers).
    pub fn open(&mut self, client: usize) -> ConnId {
        let id = self.next_id;
        self.next_id += 1;
        let conn = Conn {
            client,
            black_holed: self.partitioned.contains(&client),
            cut_armed: false,
            slow_extra: Duration::ZERO,
            pipes: [Pipe::default(), Pipe::default()],
        };
        self.conns.insert(id, conn);
        id
    }

    /// Whether the connection still exists (neither end saw it end).
    pub fn exists(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// The client of a connection.
    pub fn client_of(&self, conn: ConnId) -> Option<usize> {
        self.conns.get(&conn).map(|conn| conn.client)
    }

    /// Whether `client` is partitioned away.
    pub fn is_partitioned(&self, client: usize) -> bool {
        self.partitioned.contains(&client)
    }

    /// One latency draw: `min + exponential(mean)`, the tail capped at 20 means.
    pub fn latency(&mut self) -> Duration {
        let uniform: f64 = self.rng.random_range(0.0..1.0);
        let exponential = (-(1.0 - uniform).ln()).min(20.0);
        self.profile.min_latency + self.profile.jitter_mean.mul_f64(exponential)
    }

    /// Sends an item on a connection's pipe at `now`.
    pub fn send(
        &mut self,
        now: Duration,
        conn_id: ConnId,
        direction: Direction,
        item: PipeItem,
    ) -> Sent {
        let latency = self.latency();
        let Some(conn) = self.conns.get_mut(&conn_id) else { return Sent::Dropped };
        if conn.black_holed {
            return Sent::Dropped;
        }
        let extra = if direction == Direction::ToClient { conn.slow_extra } else { Duration::ZERO };
        let pipe = &mut conn.pipes[direction.index()];
        let at = (now + latency + extra).max(pipe.last_delivery);
        pipe.last_delivery = at;
        if conn.cut_armed && matches!(item, PipeItem::Frame { .. }) {
            conn.cut_armed = false;
            pipe.queue.push_back((at, PipeItem::Cut));
            return Sent::Cut(at);
        }
        pipe.queue.push_back((at, item));
        Sent::Scheduled(at)
    }

    /// The items of a pipe due by `now`, in order (at most `max`; the rest wait for the next wake).
    pub fn take_due(
        &mut self,
        now: Duration,
        conn: ConnId,
        direction: Direction,
        max: usize,
    ) -> Vec<PipeItem> {
        let Some(conn) = self.conns.get_mut(&conn) else { return Vec::new() };
        let queue = &mut conn.pipes[direction.index()].queue;
        let mut items = Vec::new();
        while items.len() < max && queue.front().is_some_and(|(at, _)| *at <= now) {
            let (_, item) = queue.pop_front().expect("front was checked");
            items.push(item);
        }
        items
    }

    /// When the next item of a pipe is due, if any.
    pub fn next_due(&self, conn: ConnId, direction: Direction) -> Option<Duration> {
        self.conns.get(&conn)?.pipes[direction.index()].queue.front().map(|(at, _)| *at)
    }

    /// Removes a connection: whatever is in flight is lost. Returns its client if it existed.
    pub fn remove(&mut self, conn: ConnId) -> Option<usize> {
        self.conns.remove(&conn).map(|conn| conn.client)
    }

    /// Loses what is in flight towards the client (the client process died; its own sends still leave).
    pub fn clear_to_client(&mut self, conn: ConnId) {
        if let Some(conn) = self.conns.get_mut(&conn) {
            conn.pipes[Direction::ToClient.index()].queue.clear();
        }
    }

    /// Arms a cut on the connection: its next frame (either direction) is cut. Returns whether it existed.
    pub fn arm_cut(&mut self, conn: ConnId) -> bool {
        self.conns.get_mut(&conn).map(|conn| conn.cut_armed = true).is_some()
    }

    /// Raises the connection's server-to-client latency. Returns whether it existed.
    pub fn slow_down(&mut self, conn: ConnId, extra: Duration) -> bool {
        self.conns.get_mut(&conn).map(|conn| conn.slow_extra = extra).is_some()
    }

    /// Partitions `client` away: its connections go black (in-flight frames lost) until [`Network::heal`].
    pub fn partition(&mut self, client: usize) {
        self.partitioned.insert(client);
        for conn in self.conns.values_mut().filter(|conn| conn.client == client) {
            conn.black_holed = true;
            for pipe in &mut conn.pipes {
                pipe.queue.clear();
            }
        }
    }

    /// Ends `client`'s partition; returns its black-holed connections, which the caller resets.
    pub fn heal(&mut self, client: usize) -> Vec<ConnId> {
        self.partitioned.remove(&client);
        self.conns
            .iter()
            .filter(|(_, conn)| conn.client == client && conn.black_holed)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Slow readers catch up (the faults stopped): no connection has extra latency any more.
    pub fn clear_slowness(&mut self) {
        for conn in self.conns.values_mut() {
            conn.slow_extra = Duration::ZERO;
        }
    }

    /// Whether any frame is in flight anywhere.
    pub fn idle(&self) -> bool {
        self.conns.values().all(|conn| conn.pipes.iter().all(|pipe| pipe.queue.is_empty()))
    }

    /// Every connection id, in order.
    pub fn conn_ids(&self) -> Vec<ConnId> {
        self.conns.keys().copied().collect()
    }
}
