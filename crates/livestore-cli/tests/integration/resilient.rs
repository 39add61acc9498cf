//! Raw protocol clients that survive faults, for the fault, crash and chaos tests.
//!
//! Unlike `support::WsClient`, nothing here panics on a lost connection: a timeout or a reset is an outcome, and the
//! client reconnects. What these clients remember is what the assertions need:
//! - [`RawWriter`] pushes uniquely named events (`args.id = "<name>-<n>"`), pipelining batches. It records which
//!   events the server acknowledged; after a reconnect it reads the log to learn which unacknowledged pushes landed
//!   anyway, so it never pushes an event twice. Events it creates are `v1.TodoCreated`, so JS clients on the same
//!   store materialize them.
//! - [`LiveReader`] keeps a live pull open, resuming from its cursor after every reconnect, and checks that each
//!   connection delivers exactly the next sequence numbers (no gap, no duplicate).
//! - [`read_log`] reads a store's whole log.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::{pull_request, push_request};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long one connect or one expected frame may take before the connection counts as dead.
pub const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// Why an exchange with the server ended early.
#[derive(Debug)]
pub enum Lost {
    /// Connect failed, the socket closed or reset, or a frame did not come in time.
    Connection(String),
}

fn lost(message: impl Into<String>) -> Lost {
    Lost::Connection(message.into())
}

/// `ws://<addr>/sync?storeId=<store>&transport=ws`.
pub fn ws_url(addr: &str, store: &str) -> String {
    format!("ws://{addr}/sync?storeId={store}&transport=ws")
}

async fn connect(url: &str) -> Result<Socket, Lost> {
    match tokio::time::timeout(IO_TIMEOUT, tokio_tungstenite::connect_async(url)).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(error)) => Err(lost(format!("connect: {error}"))),
        Err(_) => Err(lost("connect timed out")),
    }
}

async fn send(socket: &mut Socket, value: &Value) -> Result<(), Lost> {
    match tokio::time::timeout(IO_TIMEOUT, socket.send(Message::Text(value.to_string().into())))
        .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(lost(format!("send: {error}"))),
        Err(_) => Err(lost("send timed out")),
    }
}

/// The next JSON frame other than `Pong`.
async fn next_frame(socket: &mut Socket, timeout: Duration) -> Result<Value, Lost> {
    loop {
        let message = tokio::time::timeout(timeout, socket.next())
            .await
            .map_err(|_| lost("no frame in time"))?;
        match message {
            None => return Err(lost("closed")),
            Some(Err(error)) => return Err(lost(format!("read: {error}"))),
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text)
                    .map_err(|error| lost(format!("server sent non-JSON {text}: {error}")))?;
                if value["_tag"] != "Pong" {
                    return Ok(value);
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(lost(format!("closed with {:?}", frame.map(|frame| frame.code))));
            }
            Some(Ok(_)) => {}
        }
    }
}

/// One event of a log as the tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    pub seq: u64,
    pub parent: u64,
    pub id: String,
    pub client_id: String,
    pub name: String,
    pub args: Value,
}

fn logged_events(chunk: &Value) -> Vec<LoggedEvent> {
    let mut events = Vec::new();
    for value in chunk["values"].as_array().into_iter().flatten() {
        for item in value["batch"].as_array().into_iter().flatten() {
            let event = &item["eventEncoded"];
            events.push(LoggedEvent {
                seq: event["seqNum"].as_u64().unwrap_or(0),
                parent: event["parentSeqNum"].as_u64().unwrap_or(0),
                id: event["args"]["id"].as_str().unwrap_or_default().to_owned(),
                client_id: event["clientId"].as_str().unwrap_or_default().to_owned(),
                name: event["name"].as_str().unwrap_or_default().to_owned(),
                args: event["args"].clone(),
            });
        }
    }
    events
}

/// Reads the events after `cursor` with a non-live pull on an open socket; returns them and the backend id.
async fn pull_after(
    socket: &mut Socket,
    store: &str,
    request_id: &str,
    cursor: Option<(&str, u64)>,
) -> Result<(Vec<LoggedEvent>, Option<String>), Lost> {
    send(socket, &pull_request(request_id, store, false, cursor)).await?;
    let mut events = Vec::new();
    let mut backend = None;
    loop {
        let frame = next_frame(socket, IO_TIMEOUT * 4).await?;
        if frame["requestId"] != request_id {
            continue;
        }
        match frame["_tag"].as_str() {
            Some("Chunk") => {
                if let Some(id) = frame["values"][0]["backendId"].as_str() {
                    backend = Some(id.to_owned());
                }
                events.extend(logged_events(&frame));
            }
            Some("Exit") if frame["exit"]["_tag"] == "Success" => return Ok((events, backend)),
            _ => return Err(lost(format!("pull failed: {frame}"))),
        }
    }
}

/// Reads a store's whole log (through `addr`, which may be a proxy); retries until `deadline_after` passes.
pub async fn read_log(addr: &str, store: &str) -> (String, Vec<LoggedEvent>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = async {
            let mut socket = connect(&ws_url(addr, store)).await?;
            let (events, backend) = pull_after(&mut socket, store, "log", None).await?;
            let _ = socket.close(None).await;
            Ok::<_, Lost>((backend.unwrap_or_default(), events))
        };
        match attempt.await {
            Ok(log) => return log,
            Err(error) => {
                assert!(tokio::time::Instant::now() < deadline, "cannot read the log: {error:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Events that create something: their `args.id` names it, so it must be unique in a log. (Other events, like
/// `v1.TodoCompleted`, carry the id of what they change and repeat it.)
const CREATIONS: [&str; 2] = ["v1.TodoCreated", "v1.FileCreated"];

/// Asserts the log is `1..=n` with each parent the previous event, and no creation's id appears twice.
pub fn assert_contiguous_and_unique(events: &[LoggedEvent]) {
    let mut ids = HashSet::new();
    for (index, event) in events.iter().enumerate() {
        let expected = index as u64 + 1;
        assert_eq!(
            event.seq, expected,
            "the log has a gap or is out of order at {index}: {event:?}"
        );
        assert_eq!(event.parent, expected - 1, "broken parent chain at {event:?}");
        if !event.id.is_empty() && CREATIONS.contains(&event.name.as_str()) {
            assert!(ids.insert(event.id.clone()), "event {} is in the log twice", event.id);
        }
    }
}

/// Counters of one [`RawWriter`].
#[derive(Debug, Default, Clone, Copy)]
pub struct WriterStats {
    pub connections: u64,
    pub connection_losses: u64,
    pub pushes_sent: u64,
    pub pushes_acked: u64,
    pub server_ahead: u64,
    /// Events whose push reply was lost but which the log showed to have landed.
    pub landed_without_ack: u64,
}

/// A pushing client that survives connection loss; see the module docs.
pub struct RawWriter {
    pub name: String,
    store: String,
    url: String,
    socket: Option<Socket>,
    created: u64,
    /// Events not yet known to be in the log, oldest first.
    pending: Vec<String>,
    /// Events the server acknowledged.
    pub acked: HashSet<String>,
    /// Events known to be in the log (acknowledged or found there after a lost reply).
    pub in_log: HashSet<String>,
    head: u64,
    backend: Option<String>,
    /// Events sent in pushes whose replies never came: unknown until the next sync.
    in_doubt: bool,
    request_counter: u64,
    pub stats: WriterStats,
    /// Events per push and pushes in flight.
    batch_size: usize,
    pipeline: usize,
}

impl RawWriter {
    pub fn new(name: &str, store: &str, url: &str) -> RawWriter {
        RawWriter {
            name: name.to_owned(),
            store: store.to_owned(),
            url: url.to_owned(),
            socket: None,
            created: 0,
            pending: Vec::new(),
            acked: HashSet::new(),
            in_log: HashSet::new(),
            head: 0,
            backend: None,
            in_doubt: true,
            request_counter: 0,
            stats: WriterStats::default(),
            batch_size: 3,
            pipeline: 4,
        }
    }

    /// Events per push and pushes in flight at once.
    pub fn with_pipelining(mut self, batch_size: usize, pipeline: usize) -> RawWriter {
        self.batch_size = batch_size.max(1);
        self.pipeline = pipeline.max(1);
        self
    }

    /// Creates `count` new events to push.
    pub fn create(&mut self, count: u64) {
        for _ in 0..count {
            self.created += 1;
            self.pending.push(format!("{}-{}", self.name, self.created));
        }
    }

    /// Events created and not yet known to be in the log.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    fn next_request_id(&mut self) -> String {
        self.request_counter += 1;
        format!("{}", self.request_counter)
    }

    /// One round: (re)connect if needed, learn the head (and what landed), pipeline pushes, await their replies.
    /// A lost connection is not an error: the next round reconnects.
    pub async fn round(&mut self) {
        if let Err(error) = self.round_impl().await {
            if self.socket.take().is_some() {
                self.stats.connection_losses += 1;
            }
            self.in_doubt = true;
            tracing_lite(&self.name, &format!("{error:?}"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn round_impl(&mut self) -> Result<(), Lost> {
        if self.socket.is_none() {
            self.socket = Some(connect(&self.url).await?);
            self.stats.connections += 1;
            self.in_doubt = true;
        }
        if self.in_doubt {
            self.sync().await?;
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        // Pipeline: every push extends the previous one, all on top of the head we know.
        let chunks: Vec<Vec<String>> = self
            .pending
            .chunks(self.batch_size)
            .take(self.pipeline)
            .map(<[String]>::to_vec)
            .collect();
        let mut sent: Vec<(String, Vec<String>, u64)> = Vec::new();
        let mut next_seq = self.head + 1;
        for ids in chunks {
            let batch: Vec<Value> = ids
                .iter()
                .map(|id| {
                    let seq = next_seq;
                    next_seq += 1;
                    json!({"name": "v1.TodoCreated", "args": {"id": id, "text": format!("from {}", self.name)},
                           "seqNum": seq, "parentSeqNum": seq - 1, "clientId": self.name, "sessionId": "static"})
                })
                .collect();
            let request_id = self.next_request_id();
            let request = push_request(&request_id, &self.store, batch, self.backend.as_deref());
            // From here on, a lost connection leaves these events in doubt.
            self.in_doubt = true;
            send(self.socket.as_mut().expect("connected above"), &request).await?;
            self.stats.pushes_sent += 1;
            sent.push((request_id, ids, next_seq - 1));
        }
        let socket = self.socket.as_mut().expect("connected above");
        let mut replies: HashMap<String, Value> = HashMap::new();
        while replies.len() < sent.len() {
            let frame = next_frame(socket, IO_TIMEOUT * 4).await?;
            if frame["_tag"] == "Exit"
                && let Some(id) = frame["requestId"].as_str()
            {
                replies.insert(id.to_owned(), frame);
            }
        }
        let mut ahead = false;
        for (request_id, ids, last_seq) in &sent {
            let reply = &replies[request_id];
            if reply["exit"]["_tag"] == "Success" {
                self.stats.pushes_acked += 1;
                // A later push can win after an earlier one lost the race: its own last event is the head now.
                self.head = self.head.max(*last_seq);
                for id in ids {
                    self.acked.insert(id.clone());
                    self.in_log.insert(id.clone());
                }
                self.pending.retain(|pending| !ids.contains(pending));
            } else if reply["exit"]["cause"]["error"]["_tag"] == "ServerAheadError" {
                ahead = true;
            } else {
                panic!("{}: push failed unexpectedly: {reply}", self.name);
            }
        }
        if ahead {
            self.stats.server_ahead += 1;
        }
        // Every reply came: nothing is in doubt. After a ServerAhead the head moved: read what is new.
        self.in_doubt = ahead;
        Ok(())
    }

    /// Reads the log after the known head: moves the head, and marks pending events that landed anyway.
    async fn sync(&mut self) -> Result<(), Lost> {
        let request_id = format!("s{}", self.next_request_id());
        let cursor =
            self.backend.clone().filter(|_| self.head > 0).map(|backend| (backend, self.head));
        let socket = self.socket.as_mut().expect("connected before sync");
        let (events, backend) = pull_after(
            socket,
            &self.store,
            &request_id,
            cursor.as_ref().map(|(backend, seq)| (backend.as_str(), *seq)),
        )
        .await?;
        if let Some(backend) = backend {
            self.backend = Some(backend);
        }
        for event in events {
            if event.seq != self.head + 1 {
                panic!("{}: the log skipped from {} to {}", self.name, self.head, event.seq);
            }
            self.head = event.seq;
            if event.client_id == self.name
                && let Some(position) = self.pending.iter().position(|id| *id == event.id)
            {
                self.pending.remove(position);
                self.in_log.insert(event.id.clone());
                self.stats.landed_without_ack += 1;
            }
        }
        self.in_doubt = false;
        Ok(())
    }

    pub async fn close(mut self) -> RawWriter {
        if let Some(mut socket) = self.socket.take() {
            let _ = socket.close(None).await;
        }
        self
    }
}

/// Counters of one [`LiveReader`].
#[derive(Debug, Default, Clone, Copy)]
pub struct ReaderStats {
    pub connections: u64,
    pub events_received: u64,
}

/// A live subscriber that resumes from its cursor after every reconnect; see the module docs.
pub struct LiveReader {
    store: String,
    url: String,
    pub last_seq: u64,
    backend: Option<String>,
    pub ids: Vec<String>,
    pub stats: ReaderStats,
}

impl LiveReader {
    pub fn new(store: &str, url: &str) -> LiveReader {
        LiveReader {
            store: store.to_owned(),
            url: url.to_owned(),
            last_seq: 0,
            backend: None,
            ids: Vec::new(),
            stats: ReaderStats::default(),
        }
    }

    /// Runs one connection: a live pull from the cursor, checked event by event, until the connection is lost
    /// (or a frame does not come within [`IO_TIMEOUT`]) or `until_seq` is reached.
    pub async fn follow_once(&mut self, until_seq: Option<u64>) {
        let Ok(mut socket) = connect(&self.url).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        };
        self.stats.connections += 1;
        let cursor = self.backend.clone().filter(|_| self.last_seq > 0);
        let request = pull_request(
            "live",
            &self.store,
            true,
            cursor.as_deref().map(|backend| (backend, self.last_seq)),
        );
        if send(&mut socket, &request).await.is_err() {
            return;
        }
        loop {
            if until_seq.is_some_and(|target| self.last_seq >= target) {
                let _ = socket.close(None).await;
                return;
            }
            let Ok(frame) = next_frame(&mut socket, IO_TIMEOUT).await else { return };
            assert_eq!(frame["_tag"], "Chunk", "a live pull only sends chunks: {frame}");
            if let Some(id) = frame["values"][0]["backendId"].as_str() {
                if let Some(known) = &self.backend {
                    assert_eq!(known, id, "backendId changed under a live reader");
                }
                self.backend = Some(id.to_owned());
            }
            for event in logged_events(&frame) {
                assert_eq!(
                    event.seq,
                    self.last_seq + 1,
                    "live reader expected {} got {}",
                    self.last_seq + 1,
                    event.seq
                );
                self.last_seq = event.seq;
                self.ids.push(event.id);
                self.stats.events_received += 1;
            }
        }
    }
}

/// Progress notes, visible with `--nocapture` and in failure output.
fn tracing_lite(name: &str, message: &str) {
    if std::env::var_os("LIVESTORE_TEST_VERBOSE").is_some() {
        eprintln!("[{name}] {message}");
    }
}
