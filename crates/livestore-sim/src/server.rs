//! The sync server model: one store's log in memory, answering frames with the real protocol pieces.
//!
//! It decodes client frames with `livestore_proto::frame`, admits pushes with `livestore_proto::admission`, cuts
//! backlogs with `livestore_proto::page` and writes replies with `livestore_proto::encode`, so only the
//! transport, the storage and the concurrency of `livestore-server` are modelled, and they are simple here:
//! handling a frame is one synchronous step. The promises of the real server it keeps (`ws.rs`, `pull.rs`):
//! - a live pull gets its backlog `(cursor, head]` as pages, then every batch appended afterwards;
//! - a push is admitted against the head; an accepted batch is appended *before* anything is sent about it;
//! - the pusher's acknowledgement goes out before the live chunk carrying the same events.
//!
//! A restart drops every connection and keeps the log (acknowledged means durable); a lost log gets a new
//! `backendId`. The [`Mutant`]s break these promises on purpose. Invariants are checked by the caller (`check`),
//! which sees every append through [`Step::appended`].

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use livestore_proto::admission::{Admission, admit, validate_batch};
use livestore_proto::encode;
use livestore_proto::event::EncodedEvent;
use livestore_proto::frame::{ClientMessage, decode_client_message};
use livestore_proto::page::{PageBuilder, StoredEventRef, empty_page, paginate};
use livestore_proto::rpc::{PullArgs, PushArgs, RpcCall};

use crate::mutant::Mutant;
use crate::net::{AckNote, ConnId, PipeItem};
use crate::schema::op_tag;

/// How long a mutant's deferred append takes to land.
pub const DEFERRED_APPEND_DELAY: Duration = Duration::from_millis(250);

/// One event of the log.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    /// The event as pushed.
    pub encoded: EncodedEvent,
    /// Its compact JSON, as pages carry it.
    pub json: String,
    /// When it was appended (ISO-8601 of virtual time).
    pub created_at: String,
    /// Its operation tag.
    pub op: Option<String>,
}

/// What handling one input produced.
#[derive(Debug, Default)]
pub struct Step {
    /// Frames to send, in order.
    pub replies: Vec<(ConnId, PipeItem)>,
    /// The log indices appended by this step.
    pub appended: Range<usize>,
    /// A deferred append (mutants only) to run after [`DEFERRED_APPEND_DELAY`].
    pub deferred: Option<u64>,
    /// Whether a push was refused with `ServerAheadError`.
    pub server_ahead: bool,
    /// Whether a push failed with the armed storage error.
    pub storage_error: bool,
}

/// A push whose append a mutant put off.
#[derive(Debug)]
struct Deferred {
    events: Vec<EncodedEvent>,
    /// The pusher's connection and request, when the ack waits for the append.
    ack_after: Option<(ConnId, String)>,
    /// Whether the fan-out already went out.
    fanned_out: bool,
}

/// The server.
#[derive(Debug)]
pub struct Server {
    up: bool,
    generation: u64,
    backend_id: String,
    log: Vec<LoggedEvent>,
    /// Open connections and the request id of their live pull.
    conns: BTreeMap<ConnId, Option<String>>,
    storage_error_armed: bool,
    mutant: Option<Mutant>,
    deferred: BTreeMap<u64, Deferred>,
    next_deferred: u64,
}

impl Server {
    /// A running server with an empty log.
    pub fn new(mutant: Option<Mutant>) -> Self {
        Server {
            up: true,
            generation: 0,
            backend_id: backend_id(0),
            log: Vec::new(),
            conns: BTreeMap::new(),
            storage_error_armed: false,
            mutant,
            deferred: BTreeMap::new(),
            next_deferred: 0,
        }
    }

    /// Whether the server accepts connections.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// The log.
    pub fn log(&self) -> &[LoggedEvent] {
        &self.log
    }

    /// The log's identity.
    pub fn backend_id(&self) -> &str {
        &self.backend_id
    }

    /// The log generation (bumped when the log is lost).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Accepts a connection.
    pub fn accept(&mut self, conn: ConnId) {
        self.conns.insert(conn, None);
    }

    /// Forgets a connection (closed by the client, or reset).
    pub fn drop_conn(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
    }

    /// Goes down: every connection is gone and mutants' deferred appends are lost. Returns the connections.
    pub fn crash(&mut self) -> Vec<ConnId> {
        self.up = false;
        self.deferred.clear();
        std::mem::take(&mut self.conns).into_keys().collect()
    }

    /// Comes back up.
    pub fn start(&mut self) {
        self.up = true;
    }

    /// Loses the log: a new `backendId` and generation, an empty log.
    pub fn lose_log(&mut self) {
        self.generation += 1;
        self.backend_id = backend_id(self.generation);
        self.log.clear();
    }

    /// Makes the next push fail with a storage error.
    pub fn arm_storage_error(&mut self) {
        self.storage_error_armed = true;
    }

    /// Forgets an armed storage error (faults stop at quiescence).
    pub fn disarm_storage_error(&mut self) {
        self.storage_error_armed = false;
    }

    /// Whether a mutant's append is still pending.
    pub fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// Handles one frame from `conn`.
    pub fn handle_frame(&mut self, now: Duration, conn: ConnId, text: &str) -> Step {
        let mut step = Step { appended: self.log.len()..self.log.len(), ..Step::default() };
        if !self.conns.contains_key(&conn) {
            return step;
        }
        let message = match decode_client_message(text) {
            Ok(message) => message,
            Err(error) => {
                // The real server closes the connection; the client's frames are always well-formed, so this
                // would be a client bug the convergence checks catch later.
                let reply = encode::exit_die("0", &error.to_string());
                step.replies.push((conn, frame(reply)));
                return step;
            }
        };
        match message {
            ClientMessage::Ping => step.replies.push((conn, frame(encode::PONG.to_owned()))),
            ClientMessage::Ack { .. } | ClientMessage::Eof => {}
            ClientMessage::Interrupt { request_id } => {
                if let Some(pull) = self.conns.get_mut(&conn)
                    && pull.as_deref() == Some(request_id.as_str())
                {
                    *pull = None;
                }
            }
            ClientMessage::Request { id, call: Err(error) } => {
                step.replies.push((conn, frame(encode::exit_die(id.as_str(), &error.to_string()))));
            }
            ClientMessage::Request { id, call: Ok(RpcCall::WsPull(args)) } => {
                self.pull(conn, id.as_str(), &args, &mut step);
            }
            ClientMessage::Request { id, call: Ok(RpcCall::WsPush(args)) } => {
                self.push(now, conn, id.as_str(), args, &mut step);
            }
            ClientMessage::Request { id, call: Ok(other) } => {
                let message = format!("{} is only available over HTTP", other.tag());
                step.replies.push((conn, frame(encode::exit_die(id.as_str(), &message))));
            }
        }
        step
    }

    /// Lands a deferred append (mutants only).
    pub fn land_deferred(&mut self, now: Duration, id: u64) -> Step {
        let mut step = Step { appended: self.log.len()..self.log.len(), ..Step::default() };
        let Some(deferred) = self.deferred.remove(&id) else { return step };
        let start = self.append(now, deferred.events);
        step.appended = start..self.log.len();
        if let Some((conn, request_id)) = deferred.ack_after {
            step.replies.push((conn, self.ack(&request_id, start)));
        }
        if !deferred.fanned_out {
            self.fan_out(start, &mut step);
        }
        step
    }

    fn pull(&mut self, conn: ConnId, request_id: &str, args: &PullArgs, step: &mut Step) {
        let cursor = args.cursor.as_option();
        if let Some(cursor) = cursor
            && cursor.backend_id != self.backend_id
        {
            let error = encode::backend_id_mismatch_error(&self.backend_id, &cursor.backend_id);
            step.replies.push((conn, frame(encode::exit_fail(request_id, &error))));
            return;
        }
        let mut after = cursor.map_or(0, |cursor| cursor.event_sequence_number.0) as usize;
        let head = self.log.len();
        if self.mutant == Some(Mutant::BacklogSkipsEvent) && after > 0 && after < head {
            after += 1;
        }
        if after >= head {
            let page = encode::chunk(request_id, &[empty_page(&self.backend_id).json]);
            step.replies.push((conn, frame(page)));
        } else {
            let mut builder = PageBuilder::new(&self.backend_id, head as u64);
            for event in &self.log[after..head] {
                if let Some(page) = builder.add(stored_ref(event)) {
                    step.replies.push((conn, frame(encode::chunk_of_page(request_id, page.json))));
                }
            }
            if let Some(page) = builder.finish() {
                step.replies.push((conn, frame(encode::chunk_of_page(request_id, page.json))));
            }
        }
        if args.live {
            self.conns.insert(conn, Some(request_id.to_owned()));
        } else {
            step.replies.push((conn, frame(encode::exit_stream_done(request_id))));
        }
    }

    fn push(
        &mut self,
        now: Duration,
        conn: ConnId,
        request_id: &str,
        args: PushArgs,
        step: &mut Step,
    ) {
        if let Err(error) = validate_batch(&args.batch) {
            step.replies.push((conn, frame(encode::exit_die(request_id, &error.to_string()))));
            return;
        }
        if std::mem::take(&mut self.storage_error_armed) && !args.batch.is_empty() {
            step.storage_error = true;
            let error = encode::unknown_error("storage unavailable");
            step.replies.push((conn, frame(encode::exit_fail(request_id, &error))));
            return;
        }
        let head = self.log.len() as u64;
        let admission = match (admit(head, &self.backend_id, &args), self.mutant) {
            (Admission::ServerAhead { .. }, Some(Mutant::NoParentCheck)) => Admission::Accept,
            (admission, _) => admission,
        };
        match admission {
            Admission::Empty => step.replies.push((conn, self.ack(request_id, self.log.len()))),
            Admission::ServerAhead { head, provided_parent } => {
                step.server_ahead = true;
                let error = encode::server_ahead_error(head, provided_parent);
                step.replies.push((conn, frame(encode::exit_fail(request_id, &error))));
            }
            Admission::BackendIdMismatch { expected, received } => {
                let error = encode::backend_id_mismatch_error(&expected, &received);
                step.replies.push((conn, frame(encode::exit_fail(request_id, &error))));
            }
            Admission::Accept => self.accept_push(now, conn, request_id, args.batch, step),
        }
    }

    fn accept_push(
        &mut self,
        now: Duration,
        conn: ConnId,
        request_id: &str,
        batch: Vec<EncodedEvent>,
        step: &mut Step,
    ) {
        match self.mutant {
            Some(Mutant::AckBeforeAppend) => {
                let ops = batch.iter().filter_map(tag_of).collect();
                let ack = AckNote { generation: self.generation, ops };
                let text = encode::exit_success_value(request_id, encode::PUSH_ACK_VALUE);
                step.replies.push((conn, PipeItem::Frame { text, ack: Some(ack) }));
                step.deferred = Some(self.defer(batch, None, false));
            }
            Some(Mutant::FanoutBeforeAppend) => {
                // The fan-out of events that are not in the log yet, numbered as if they were.
                let events: Vec<LoggedEvent> =
                    batch.iter().map(|event| logged(now, event.clone())).collect();
                let pages = paginate(&self.backend_id, events.iter().map(stored_ref));
                self.send_pages(&pages, Some(conn), step);
                step.deferred = Some(self.defer(batch, Some((conn, request_id.to_owned())), true));
            }
            _ => {
                let start = self.append(now, batch);
                step.appended = start..self.log.len();
                // The ack first: the client must not see its own events echoed before their ack.
                step.replies.push((conn, self.ack(request_id, start)));
                self.fan_out(start, step);
            }
        }
    }

    fn defer(
        &mut self,
        events: Vec<EncodedEvent>,
        ack_after: Option<(ConnId, String)>,
        fanned_out: bool,
    ) -> u64 {
        let id = self.next_deferred;
        self.next_deferred += 1;
        self.deferred.insert(id, Deferred { events, ack_after, fanned_out });
        id
    }

    /// Appends events as they are (admission happened before); returns the first new index.
    fn append(&mut self, now: Duration, events: Vec<EncodedEvent>) -> usize {
        let start = self.log.len();
        self.log.extend(events.into_iter().map(|event| logged(now, event)));
        start
    }

    /// The acknowledgement of a push whose events start at log index `start`.
    fn ack(&self, request_id: &str, start: usize) -> PipeItem {
        let ops = self.log[start..].iter().filter_map(|event| event.op.clone()).collect();
        let text = encode::exit_success_value(request_id, encode::PUSH_ACK_VALUE);
        PipeItem::Frame { text, ack: Some(AckNote { generation: self.generation, ops }) }
    }

    /// Sends the log from `start` to every live pull.
    fn fan_out(&self, start: usize, step: &mut Step) {
        let pages = paginate(&self.backend_id, self.log[start..].iter().map(stored_ref));
        self.send_pages(&pages, None, step);
    }

    fn send_pages(
        &self,
        pages: &[livestore_proto::page::Page],
        except: Option<ConnId>,
        step: &mut Step,
    ) {
        for (conn, pull) in &self.conns {
            let Some(pull) = pull else { continue };
            if Some(*conn) == except {
                continue;
            }
            for page in pages {
                step.replies.push((*conn, frame(encode::chunk_of_page(pull, page.json.clone()))));
            }
        }
    }
}

fn frame(text: String) -> PipeItem {
    PipeItem::Frame { text, ack: None }
}

fn backend_id(generation: u64) -> String {
    format!("sim-backend-{generation}")
}

fn tag_of(event: &EncodedEvent) -> Option<String> {
    event.args.as_ref().and_then(|args| op_tag(args.get()))
}

fn logged(now: Duration, encoded: EncodedEvent) -> LoggedEvent {
    LoggedEvent {
        json: encoded.to_json(),
        created_at: iso_time(now),
        op: tag_of(&encoded),
        encoded,
    }
}

fn stored_ref(event: &LoggedEvent) -> StoredEventRef<'_> {
    StoredEventRef {
        seq_num: event.encoded.seq_num.0,
        encoded_json: &event.json,
        created_at: &event.created_at,
    }
}

/// Virtual time as an ISO-8601 instant on 2026-01-01 (runs are far shorter than a month).
fn iso_time(now: Duration) -> String {
    let millis = now.as_millis() as u64;
    let (seconds, millis) = (millis / 1000, millis % 1000);
    let (minutes, seconds) = (seconds / 60, seconds % 60);
    let (hours, minutes) = (minutes / 60, minutes % 60);
    let (days, hours) = (hours / 24, hours % 24);
    format!("2026-01-{:02}T{hours:02}:{minutes:02}:{seconds:02}.{millis:03}Z", days + 1)
}
