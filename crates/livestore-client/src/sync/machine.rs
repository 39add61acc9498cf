//! The sync connection as a sans-IO state machine: every decision of one WebSocket connection, no I/O.
//!
//! [`ConnectionMachine`] owns what the connection knows (the live pull's id, the push in flight, whether a
//! `ServerAheadError` parked pushing, what the server accepted but has not echoed yet, when the last frame and
//! ping were) and turns [`Input`]s into [`Output`]s. It never touches a socket, a clock or a random number
//! generator: the caller passes the current time with every input (a [`Duration`] since an origin the caller
//! picks, so a simulator can run virtual time), performs the outputs, and wakes the machine with
//! [`Input::Tick`] at [`ConnectionMachine::next_deadline`]. The store stays the source of truth: the machine calls
//! it synchronously through the small [`SyncStore`] trait while it handles an input.
//!
//! The tokio adapter is `super::connection`; the decision to reconnect is [`super::reconnect`]. Submodules:
//! `frames` decodes server frames and applies pull pages, `push` builds push requests, `store` is the trait.
//!
//! Performance properties the adapter relies on: a batch of frames ([`Input::Frames`]) is handled as one unit,
//! consecutive pull pages in it reach the store in one [`SyncStore::apply_upstream`] call, and the acks for its
//! chunks come out together so the adapter can flush them at once.

mod frames;
mod push;
mod store;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Duration;

use livestore_proto::client as wire;
use serde_json::value::RawValue;

use super::BackendIdPolicy;
use super::reason::{
    ConnectionEnd, EndReason, ErrorSource, StallReason, StopReason, TransportFailure,
};
pub use store::SyncStore;

/// The timeouts and policies of one connection (see [`super::DriverOptions`] for what each means).
#[derive(Debug, Clone)]
pub struct Config {
    /// Keep-alive interval.
    pub ping_interval: Duration,
    /// End the connection when no frame arrived for this long.
    pub silence_timeout: Duration,
    /// End the connection when a push or an echo is overdue by this long.
    pub stall_timeout: Duration,
    /// Give up opening the connection after this long.
    pub connect_timeout: Duration,
    /// What to do on a `backendId` mismatch.
    pub backend_id_policy: BackendIdPolicy,
    /// The sync payload sent with every request.
    pub sync_payload: Option<Box<RawValue>>,
}

/// Everything that can happen to a connection.
#[derive(Debug)]
pub enum Input {
    /// The WebSocket is open.
    Opened,
    /// Text frames that arrived together, in order (binary frames as lossy UTF-8).
    Frames(Vec<String>),
    /// The transport failed or the server closed the connection. Queued frames are dropped.
    Closed(TransportFailure),
    /// Events were committed locally (there may be something to push).
    LocalCommit,
    /// Time passed; timers due at `now` fire.
    Tick,
    /// The application asked the driver to stop.
    Stop,
}

/// What the caller must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this text frame. Consecutive sends may be buffered and flushed together.
    Send {
        /// What the frame is (for logs, tests and simulators; the text is what goes on the wire).
        kind: FrameKind,
        /// The frame.
        text: String,
    },
    /// Close the WebSocket (after sending what came before).
    Close,
    /// The server answered for the first time on this connection.
    Connected,
    /// Caught up changed: the backlog was received (`NoMore`) and no push is unanswered, or no longer so.
    CaughtUp(bool),
    /// The connection is over; the machine ignores further input.
    Ended(ConnectionEnd),
}

/// The kinds of frame the client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Keep-alive.
    Ping,
    /// The live pull request.
    Pull,
    /// A push request.
    Push,
    /// Acknowledges one pull chunk.
    Ack,
    /// Cancels the live pull.
    Interrupt,
}

/// One connection's state machine; see the module docs.
#[derive(Debug)]
pub struct ConnectionMachine {
    config: Config,
    phase: Phase,
    next_request_id: u64,
    pull_id: String,
    push_in_flight: Option<PushInFlight>,
    /// Pull pages applied on this connection, and how many had been applied when the in-flight push was sent.
    pages_applied: u64,
    pages_at_push: u64,
    /// Events up to this global number were accepted by the server but not yet echoed.
    accepted_through: u64,
    accepted_at: Option<Duration>,
    /// A `ServerAheadError` came back; wait for the next pulled page before pushing again.
    parked_since: Option<Duration>,
    /// When the connection attempt started (`Connecting`) or the last frame arrived (`Open`).
    last_frame: Duration,
    last_ping: Duration,
    backlog_done: bool,
    connected: bool,
    caught_up: bool,
    outputs: VecDeque<Output>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Open,
    Ended,
}

/// The unanswered push.
#[derive(Debug)]
struct PushInFlight {
    request_id: String,
    /// The last global number in it.
    last_global: u64,
    sent_at: Duration,
}

impl ConnectionMachine {
    /// A machine for a connection attempt that starts at `now`.
    pub fn new(config: Config, now: Duration) -> Self {
        ConnectionMachine {
            config,
            phase: Phase::Connecting,
            next_request_id: 0,
            pull_id: String::new(),
            push_in_flight: None,
            pages_applied: 0,
            pages_at_push: 0,
            accepted_through: 0,
            accepted_at: None,
            parked_since: None,
            last_frame: now,
            last_ping: now,
            backlog_done: false,
            connected: false,
            caught_up: false,
            outputs: VecDeque::new(),
        }
    }

    /// Handles one input at time `now`; the resulting outputs wait in [`ConnectionMachine::poll_output`].
    pub fn handle(&mut self, now: Duration, input: Input, store: &mut impl SyncStore) {
        match (self.phase, input) {
            (Phase::Ended, _) => {}
            (_, Input::Stop) => self.stop(),
            (_, Input::Closed(failure)) => {
                // Nothing queued can reach a closed socket.
                self.outputs.retain(|output| !matches!(output, Output::Send { .. }));
                self.end(ConnectionEnd::Retry(EndReason::Transport(failure)));
            }
            (Phase::Connecting, Input::Opened) => self.open(now, store),
            (Phase::Connecting, Input::Tick) => {
                if now >= self.last_frame + self.config.connect_timeout {
                    self.end(ConnectionEnd::Retry(TransportFailure::ConnectTimedOut.into()));
                }
            }
            (Phase::Connecting, _) => {}
            (Phase::Open, Input::Opened) => {}
            (Phase::Open, Input::Frames(texts)) => {
                self.last_frame = now;
                if !texts.is_empty() && !self.connected {
                    self.connected = true;
                    self.outputs.push_back(Output::Connected);
                }
                if let Err(end) = self.handle_frames(now, texts, store) {
                    return self.end(end);
                }
                self.after_input(now, store);
            }
            (Phase::Open, Input::LocalCommit) => self.after_input(now, store),
            (Phase::Open, Input::Tick) => {
                if let Err(end) = self.fire_timers(now) {
                    return self.end(end);
                }
                self.after_input(now, store);
            }
        }
    }

    /// The next output to perform, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the machine next wants an [`Input::Tick`] (`None` once the connection ended).
    ///
    /// After a tick at `now` every timer it fired is re-armed past `now`, so the deadline is then later than
    /// `now`; after other inputs it may already have passed (the caller then ticks at once).
    pub fn next_deadline(&self) -> Option<Duration> {
        match self.phase {
            Phase::Ended => None,
            Phase::Connecting => Some(self.last_frame + self.config.connect_timeout),
            Phase::Open => {
                let stall = self.config.stall_timeout;
                let watchdog = [
                    self.push_in_flight.as_ref().map(|push| push.sent_at),
                    self.parked_since,
                    self.accepted_at,
                ];
                let deadlines = [
                    Some(self.last_frame + self.config.silence_timeout),
                    Some(self.last_ping + self.config.ping_interval),
                ]
                .into_iter()
                .chain(watchdog.into_iter().map(|since| since.map(|since| since + stall)));
                deadlines.flatten().min()
            }
        }
    }

    /// Whether the connection is over.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Sends the ping and the live pull from the store's cursor, then whatever is pending.
    fn open(&mut self, now: Duration, store: &mut impl SyncStore) {
        self.phase = Phase::Open;
        self.last_frame = now;
        self.last_ping = now;
        let (cursor_head, backend_id) = match store.upstream_cursor() {
            Ok(cursor) => cursor,
            Err(error) => return self.end(store_stop(error)),
        };
        self.pull_id = self.next_id();
        let cursor = match (&backend_id, cursor_head) {
            (Some(backend_id), head) if head > 0 => Some((backend_id.as_str(), head)),
            _ => None,
        };
        let pull = wire::pull_request(
            &self.pull_id,
            store.store_id(),
            self.config.sync_payload.as_deref(),
            true,
            cursor,
        );
        self.send(FrameKind::Ping, wire::PING.to_owned());
        self.send(FrameKind::Pull, pull);
        self.after_input(now, store);
    }

    /// Interrupts the live pull (if it was sent) and closes.
    fn stop(&mut self) {
        if self.phase == Phase::Open {
            let interrupt = wire::interrupt(&self.pull_id);
            self.send(FrameKind::Interrupt, interrupt);
            self.outputs.push_back(Output::Close);
        }
        self.end(ConnectionEnd::Stop(StopReason::Requested));
    }

    /// Silence, pings and the watchdog, in that order.
    fn fire_timers(&mut self, now: Duration) -> Result<(), ConnectionEnd> {
        if now >= self.last_frame + self.config.silence_timeout {
            return Err(ConnectionEnd::Retry(EndReason::ServerSilent));
        }
        if now >= self.last_ping + self.config.ping_interval {
            self.last_ping = now;
            self.send(FrameKind::Ping, wire::PING.to_owned());
        }
        if let Some(reason) = self.stall(now) {
            tracing::warn!(target: "livestore_client::_events::watchdog", %reason, "sync stalled; reconnecting");
            return Err(ConnectionEnd::Retry(EndReason::Stalled(reason)));
        }
        Ok(())
    }

    /// A push or pull that stopped making progress for the stall timeout.
    fn stall(&self, now: Duration) -> Option<StallReason> {
        let overdue = |since: Option<Duration>| {
            since.is_some_and(|since| now >= since + self.config.stall_timeout)
        };
        if overdue(self.push_in_flight.as_ref().map(|push| push.sent_at)) {
            Some(StallReason::PushUnanswered)
        } else if overdue(self.parked_since) {
            Some(StallReason::ServerAheadWithoutPage)
        } else if overdue(self.accepted_at) {
            Some(StallReason::AcceptedNotEchoed)
        } else {
            None
        }
    }

    /// After every input of an open connection: push what is pending, report a change of caught-up.
    fn after_input(&mut self, now: Duration, store: &mut impl SyncStore) {
        if let Err(end) = self.try_push(now, store) {
            return self.end(end);
        }
        let caught_up = self.backlog_done && self.push_in_flight.is_none();
        if caught_up != self.caught_up {
            self.caught_up = caught_up;
            self.outputs.push_back(Output::CaughtUp(caught_up));
        }
    }

    fn end(&mut self, end: ConnectionEnd) {
        self.phase = Phase::Ended;
        self.outputs.push_back(Output::Ended(end));
    }

    fn send(&mut self, kind: FrameKind, text: String) {
        self.outputs.push_back(Output::Send { kind, text });
    }

    fn next_id(&mut self) -> String {
        let id = self.next_request_id.to_string();
        self.next_request_id += 1;
        id
    }
}

/// The store failed or was shut down under the connection: stop syncing.
fn store_stop(error: crate::StoreError) -> ConnectionEnd {
    ConnectionEnd::Stop(StopReason::Store(ErrorSource::new(error)))
}
