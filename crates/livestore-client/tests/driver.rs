//! The sync driver against a scripted fake server (a real tokio-tungstenite server on 127.0.0.1:0).
//!
//! Each connection the driver makes gets the next behaviour from a script: garbage frames of many kinds, a push
//! that is never answered, accepted events that are never echoed, a `ServerAheadError` with no page behind it.
//! When the script runs out the server behaves. The driver must survive all of it without corrupting its log,
//! detect every stall, and end in sync.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use livestore_client::schema::Query;
use livestore_client::sync::{self, DriverOptions, EndReason, StallReason, TransportFailure};
use livestore_client::todo::{self, Todo, TodoCreated};
use livestore_client::{Storage, Store, StoreOptions};
use livestore_proto::encode;
use livestore_proto::frame::{ClientMessage, decode_client_message};
use livestore_proto::rpc::{EffectOption, RpcCall};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// What the server does on one connection.
#[derive(Debug, Clone)]
enum Behavior {
    /// Answers the pull with these frames (`{pull}` becomes the pull's request id); ignores pushes.
    Garbage(Vec<Frame>),
    /// Serves pulls but never answers a push.
    NoPushAnswer,
    /// Accepts pushes but never sends new events on the live pull.
    NoEcho,
    /// Sends no pull page at all and answers every push with `ServerAheadError`.
    AheadWithoutPage,
    /// A correct server.
    Healthy,
}

#[derive(Debug, Clone)]
enum Frame {
    Text(String),
    Binary(Vec<u8>),
    /// Drops the TCP connection without a close frame.
    Drop,
}

const BACKEND: &str = "fake-backend";

#[derive(Default)]
struct ServerState {
    /// Encoded events, global number = index + 1.
    log: Vec<String>,
    script: VecDeque<Behavior>,
    connections: usize,
    live_pulls: Vec<(mpsc::UnboundedSender<Message>, String)>,
}

struct FakeServer {
    url: String,
    state: Arc<Mutex<ServerState>>,
}

impl FakeServer {
    async fn start(log: Vec<String>, script: Vec<Behavior>) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let state =
            Arc::new(Mutex::new(ServerState { log, script: script.into(), ..Default::default() }));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(tcp, Arc::clone(&shared)));
            }
        });
        FakeServer { url: format!("ws://{addr}"), state }
    }

    fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    fn log(&self) -> Vec<serde_json::Value> {
        self.state
            .lock()
            .unwrap()
            .log
            .iter()
            .map(|json| serde_json::from_str(json).unwrap())
            .collect()
    }
}

fn event_json(seq: u64, parent: u64, name: &str, args: &str, client: &str) -> String {
    format!(
        r#"{{"name":"{name}","args":{args},"seqNum":{seq},"parentSeqNum":{parent},"clientId":"{client}","sessionId":"static"}}"#
    )
}

/// A `PullResponse` with the given encoded events.
fn page(events: &[String], no_more: bool) -> String {
    let items: Vec<String> = events
        .iter()
        .map(|event| format!(r#"{{"eventEncoded":{event},"metadata":{{"_tag":"Some","value":{{"createdAt":"2024-01-01T00:00:00.000Z"}}}}}}"#))
        .collect();
    let info = if no_more { r#"{"_tag":"NoMore"}"# } else { r#"{"_tag":"MoreUnknown"}"# };
    format!(r#"{{"batch":[{}],"pageInfo":{info},"backendId":"{BACKEND}"}}"#, items.join(","))
}

async fn serve(tcp: tokio::net::TcpStream, state: Arc<Mutex<ServerState>>) {
    let Ok(socket) = tokio_tungstenite::accept_async(tcp).await else { return };
    let behavior = {
        let mut state = state.lock().unwrap();
        state.connections += 1;
        state.script.pop_front().unwrap_or(Behavior::Healthy)
    };
    let (mut sink, mut stream) = socket.split();
    let (outgoing, mut queue) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(message) = queue.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else { continue };
        let Ok(message) = decode_client_message(text.as_str()) else { continue };
        let (id, call) = match message {
            ClientMessage::Ping => {
                let _ = outgoing.send(Message::Text(encode::PONG.into()));
                continue;
            }
            ClientMessage::Request { id, call: Ok(call) } => (id.as_str().to_owned(), call),
            _ => continue,
        };
        match (call, &behavior) {
            (RpcCall::WsPull(_), Behavior::Garbage(frames)) => {
                for frame in frames {
                    match frame {
                        Frame::Text(text) => {
                            let _ =
                                outgoing.send(Message::Text(text.replace("{pull}", &id).into()));
                        }
                        Frame::Binary(bytes) => {
                            let _ = outgoing.send(Message::Binary(bytes.clone().into()));
                        }
                        Frame::Drop => {
                            // Give the writer a moment to flush what came before, then vanish.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            writer.abort();
                            return;
                        }
                    }
                }
            }
            (RpcCall::WsPull(_), Behavior::AheadWithoutPage) => {}
            (RpcCall::WsPull(args), _) => {
                let after = match args.cursor {
                    EffectOption::Some { value } => value.event_sequence_number.0 as usize,
                    EffectOption::None => 0,
                };
                let mut state = state.lock().unwrap();
                let backlog = state.log.get(after..).unwrap_or_default().to_vec();
                let _ = outgoing
                    .send(Message::Text(encode::chunk(&id, &[page(&backlog, true)]).into()));
                if !matches!(behavior, Behavior::NoEcho) {
                    state.live_pulls.push((outgoing.clone(), id));
                }
            }
            (RpcCall::WsPush(_), Behavior::Garbage(_) | Behavior::NoPushAnswer) => {}
            (RpcCall::WsPush(args), Behavior::AheadWithoutPage) => {
                let head = state.lock().unwrap().log.len() as u64;
                let provided = args.batch.first().map_or(0, |event| event.parent_seq_num.0);
                let error = encode::server_ahead_error(head, provided);
                let _ = outgoing.send(Message::Text(encode::exit_fail(&id, &error).into()));
            }
            (RpcCall::WsPush(args), _) => {
                let mut state = state.lock().unwrap();
                let head = state.log.len() as u64;
                let provided = args.batch.first().map_or(0, |event| event.parent_seq_num.0);
                if provided != head {
                    let error = encode::server_ahead_error(head, provided);
                    let _ = outgoing.send(Message::Text(encode::exit_fail(&id, &error).into()));
                    continue;
                }
                let new: Vec<String> = args.batch.iter().map(|event| event.to_json()).collect();
                state.log.extend(new.iter().cloned());
                let _ = outgoing.send(Message::Text(
                    encode::exit_success_value(&id, encode::PUSH_ACK_VALUE).into(),
                ));
                let frame_page = page(&new, true);
                state.live_pulls.retain(|(pull, pull_id)| {
                    pull.send(Message::Text(
                        encode::chunk(pull_id, std::slice::from_ref(&frame_page)).into(),
                    ))
                    .is_ok()
                });
            }
            _ => {}
        }
    }
    writer.abort();
}

fn fast_options(url: &str) -> DriverOptions {
    let mut options = DriverOptions::new(url);
    options.min_backoff = Duration::from_millis(20);
    options.max_backoff = Duration::from_millis(100);
    options.stall_timeout = Duration::from_millis(400);
    options.connect_timeout = Duration::from_secs(2);
    options
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn created(id: &str) -> TodoCreated {
    TodoCreated { id: id.into(), text: id.into() }
}

fn synced_log(store: &Store) -> Vec<(u64, String, String)> {
    store
        .events()
        .unwrap()
        .into_iter()
        .filter(|event| !event.client_only)
        .map(|event| (event.seq_num.global, event.name.to_string(), event.client_id.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_neither_crash_nor_corrupt_and_sync_resumes_when_the_server_is_fixed() {
    let foreign: Vec<String> = (1..=3)
        .map(|seq| {
            event_json(
                seq,
                seq - 1,
                "v1.TodoCreated",
                &format!(r#"{{"id":"f{seq}","text":"x"}}"#),
                "other",
            )
        })
        .collect();
    let gap =
        page(&[event_json(5, 4, "v1.TodoCreated", r#"{"id":"g","text":"x"}"#, "other")], true);
    let huge = page(
        &[event_json(
            9_007_199_254_740_993,
            0,
            "v1.TodoCreated",
            r#"{"id":"h","text":"x"}"#,
            "other",
        )],
        true,
    );
    let script = vec![
        Behavior::Garbage(vec![
            Frame::Text("not json at all".into()),
            Frame::Text(r#"{"_tag":"Nope","requestId":"1"}"#.into()),
            Frame::Binary(vec![0xff, 0xfe, 0x00, 0x01]),
            Frame::Text(r#"{"_tag":"Exit","requestId":"999","exit":{"_tag":"Success"}}"#.into()),
            Frame::Text(r#"{"_tag":"Chunk","requestId":"{pull}"}"#.into()),
            Frame::Text(
                r#"{"_tag":"Chunk","requestId":"{pull}","values":[{"batch":"oops"}]}"#.into(),
            ),
        ]),
        Behavior::Garbage(vec![Frame::Text(encode::chunk("{pull}", &[gap]))]),
        Behavior::Garbage(vec![Frame::Text(encode::chunk("{pull}", &[huge]))]),
        Behavior::Garbage(vec![Frame::Text(r#"{"_tag":"Defect","defect":"boom"}"#.into())]),
        Behavior::Garbage(vec![Frame::Text(
            r#"{"_tag":"Chunk","requestId":"{pull}","values":[{"batch":[{"eventEnc"#.into(),
        )]),
        Behavior::Garbage(vec![Frame::Drop]),
    ];
    let server = FakeServer::start(foreign, script).await;
    let store =
        Store::open(StoreOptions::new("driver-test", Storage::InMemory), todo::schema()).unwrap();
    store.commit(&created("mine-1")).unwrap();
    store.commit(&created("mine-2")).unwrap();
    let handle = sync::start(store.clone(), fast_options(&server.url));

    // Every broken connection is used up, and nothing from them reached the log.
    wait_until("the broken connections", Duration::from_secs(20), || server.connections() >= 7)
        .await;
    let state = handle.state().borrow().clone();
    assert!(!state.stopped, "the driver gave up: {state:?}");

    wait_until("the sync to finish", Duration::from_secs(20), || {
        store.sync_status().unwrap().pending_count == 0 && server.log().len() == 5
    })
    .await;
    let expected: Vec<(u64, String, String)> = server
        .log()
        .iter()
        .map(|event| {
            (
                event["seqNum"].as_u64().unwrap(),
                event["name"].as_str().unwrap().to_owned(),
                event["clientId"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(synced_log(&store), expected, "the client's log is exactly the server's");
    let ids: Vec<String> = store
        .query::<Todo>(&Query::select("todos").order_by("id"))
        .unwrap()
        .into_iter()
        .map(|todo| todo.id)
        .collect();
    assert_eq!(ids, ["f1", "f2", "f3", "mine-1", "mine-2"]);

    // And it keeps working.
    store.commit(&created("mine-3")).unwrap();
    wait_until("the next commit to sync", Duration::from_secs(10), || {
        store.sync_status().unwrap().pending_count == 0 && server.log().len() == 6
    })
    .await;
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_detects_stalled_pushes_missing_echoes_and_empty_server_ahead_and_heals() {
    let foreign = vec![event_json(1, 0, "v1.TodoCreated", r#"{"id":"f1","text":"x"}"#, "other")];
    let script = vec![Behavior::AheadWithoutPage, Behavior::NoPushAnswer, Behavior::NoEcho];
    let server = FakeServer::start(foreign, script).await;
    let store =
        Store::open(StoreOptions::new("watchdog-test", Storage::InMemory), todo::schema()).unwrap();
    store.commit(&created("mine")).unwrap();
    let handle = sync::start(store.clone(), fast_options(&server.url));

    let errors = Arc::new(Mutex::new(Vec::new()));
    let mut states = handle.state();
    let seen = Arc::clone(&errors);
    let watcher = tokio::spawn(async move {
        while states.changed().await.is_ok() {
            if let Some(EndReason::Stalled(reason)) = states.borrow_and_update().last_error.clone()
            {
                let mut seen = seen.lock().unwrap();
                if seen.last() != Some(&reason) {
                    seen.push(reason);
                }
            }
        }
    });

    wait_until("the sync to heal", Duration::from_secs(20), || {
        store.sync_status().unwrap().pending_count == 0 && server.connections() >= 4
    })
    .await;
    assert_eq!(synced_log(&store).len(), 2);
    assert_eq!(server.log().len(), 2, "our event was appended exactly once");
    let errors = errors.lock().unwrap().clone();
    for reason in [
        StallReason::ServerAheadWithoutPage,
        StallReason::PushUnanswered,
        StallReason::AcceptedNotEchoed,
    ] {
        assert!(errors.contains(&reason), "watchdog never reported {reason:?}: {errors:?}");
    }
    handle.stop().await;
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_urls_attempt_tls() {
    // A plain TCP server that answers a TLS hello with garbage: the driver must get as far as a TLS handshake
    // (so `wss://` support is compiled in and a crypto provider is available) and report the failure.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (first_bytes, mut received) = mpsc::unbounded_channel::<u8>();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut first = [0u8; 1];
            if tcp.read_exact(&mut first).await.is_ok() {
                let _ = first_bytes.send(first[0]);
            }
            let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let store =
        Store::open(StoreOptions::new("wss-test", Storage::InMemory), todo::schema()).unwrap();
    let handle = sync::start(store, fast_options(&format!("wss://localhost:{}", addr.port())));
    let mut state = handle.state();
    let error = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(error) = state.borrow_and_update().last_error.clone() {
                return error;
            }
            state.changed().await.unwrap();
        }
    })
    .await
    .expect("the driver reports the failed connection");
    assert!(matches!(error, EndReason::Transport(TransportFailure::ConnectFailed(_))), "{error:?}");
    let error = error.to_string();
    assert!(error.starts_with("connect failed"), "{error}");
    assert!(!error.contains("TLS support not compiled"), "{error}");
    // The connect failed in the handshake, not before it (a refused connection fails the same way): the first
    // byte the server got opens a TLS handshake record (0x16), where a plain `ws://` request starts with `G`.
    assert_eq!(received.try_recv().ok(), Some(0x16), "the driver sent no TLS ClientHello");
    handle.stop().await;
}
