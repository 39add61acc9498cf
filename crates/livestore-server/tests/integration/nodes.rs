//! Several Postgres-backed instances ("nodes") on one database.

use std::time::Duration;

use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use livestore_proto::admission::Admission;
use livestore_server::storage::AppendOutcome;
use livestore_server::{Server, ServerConfig, ServerError};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::conformance::{all_seq_nums, event, push};

#[tokio::test]
async fn pushes_through_two_nodes_are_serialized_per_store() {
    let Some(backend) = Backend::postgres().await else { return };
    let (node_a, node_b) = (backend.open().await, backend.open().await);
    let mut head = 0;
    for round in 0..15 {
        let tasks: Vec<_> = (0..8)
            .map(|index| {
                let node = if index % 2 == 0 { node_a.clone() } else { node_b.clone() };
                tokio::spawn(async move {
                    node.append("contended", push("contended", head, 2, None)).await.unwrap()
                })
            })
            .collect();
        let outcomes: Vec<AppendOutcome> =
            join_all(tasks).await.into_iter().map(Result::unwrap).collect();
        let wins = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, AppendOutcome::Appended { .. }))
            .count();
        let refusals = outcomes
            .iter()
            .filter(|outcome| {
                **outcome
                    == AppendOutcome::Unchanged(Admission::ServerAhead {
                        head: head + 2,
                        provided_parent: head,
                    })
            })
            .count();
        assert_eq!((wins, refusals), (1, 7), "round {round}: {outcomes:?}");
        head += 2;
    }
    assert_eq!(all_seq_nums(&node_a, "contended").await, (1..=head).collect::<Vec<u64>>());
    assert_eq!(all_seq_nums(&node_b, "contended").await, (1..=head).collect::<Vec<u64>>());
    let (log_a, log_b) = (
        node_a.open_store("contended").await.unwrap(),
        node_b.open_store("contended").await.unwrap(),
    );
    assert_eq!((log_a.backend_id.clone(), log_a.head), (log_b.backend_id, head));
    node_a.shutdown().await;
    node_b.shutdown().await;
    backend.cleanup().await;
}

#[tokio::test]
async fn nodes_starting_together_migrate_once_and_share_store_identities() {
    let Some(backend) = Backend::postgres().await else { return };
    let nodes = join_all((0..3).map(|_| backend.open())).await;
    let logs = join_all(nodes.iter().map(|node| node.open_store("shared-identity"))).await;
    let backend_ids: Vec<String> =
        logs.into_iter().map(|log| log.unwrap().backend_id.to_string()).collect();
    assert!(backend_ids.iter().all(|id| *id == backend_ids[0]), "{backend_ids:?}");
    let sql = backend.sql().await;
    let versions =
        sql.query_one("SELECT count(*) FROM livestore_schema_migrations", &[]).await.unwrap();
    // Version 1 (stores and events) and 2 (delivery cursors), each recorded once.
    assert_eq!(versions.get::<_, i64>(0), 2);
    for node in nodes {
        node.shutdown().await;
    }
    backend.cleanup().await;
}

#[tokio::test]
async fn foreign_and_newer_schemas_are_refused_untouched() {
    let Some(foreign) = Backend::postgres().await else { return };
    foreign.sql().await.batch_execute("CREATE TABLE livestore_stores (id int)").await.unwrap();
    let error = livestore_server::storage::open(&foreign.config()).await.err().expect("refused");
    assert!(matches!(error, ServerError::IncompatibleDatabase { .. }), "{error:?}");
    assert!(error.to_string().contains("did not create"), "{error}");
    foreign.cleanup().await;

    let Some(newer) = Backend::postgres().await else { return };
    newer.open().await.shutdown().await;
    newer
        .sql()
        .await
        .batch_execute(
            "INSERT INTO livestore_schema_migrations (version, description) VALUES (99, 'future')",
        )
        .await
        .unwrap();
    let error = livestore_server::storage::open(&newer.config()).await.err().expect("refused");
    assert!(error.to_string().contains("newer than this build"), "{error}");
    newer.cleanup().await;
}

/// A commit that fails inside the database (here a row planted where the next event goes) leaves nothing behind:
/// the group's pushes get an error, the head stays, and the writer carries on with the next group.
#[tokio::test]
async fn a_failed_commit_leaves_no_trace_and_the_writer_carries_on() {
    let Some(backend) = Backend::postgres().await else { return };
    let node = backend.open().await;
    node.append("planted", push("planted", 0, 2, None)).await.unwrap();
    let sql = backend.sql().await;
    sql.batch_execute(
        "INSERT INTO livestore_events (store_key, seq_num, parent_seq_num, created_at, encoded)
         SELECT store_key, 4, 3, 'x', '{}' FROM livestore_stores WHERE store_id = 'planted'",
    )
    .await
    .unwrap();
    let error = node.append("planted", push("planted", 2, 3, None)).await.unwrap_err();
    assert!(matches!(error, ServerError::Postgres(_)), "{error:?}");
    assert_eq!(node.open_store("planted").await.unwrap().head, 2);
    assert_eq!(
        all_seq_nums(&node, "planted").await,
        [1, 2, 4],
        "only the planted row beyond the head"
    );
    sql.batch_execute("DELETE FROM livestore_events WHERE seq_num = 4").await.unwrap();
    assert_eq!(
        node.append("planted", push("planted", 2, 3, None)).await.unwrap(),
        AppendOutcome::Appended { head: 5 }
    );
    assert_eq!(all_seq_nums(&node, "planted").await, [1, 2, 3, 4, 5]);
    node.shutdown().await;
    backend.cleanup().await;
}

/// Three servers on one database; live pulls on two of them from the start, pushers on both racing for the head,
/// and late live pulls joining on all three while the pushes run (the third node opens the store mid-stream). Every
/// subscriber must see exactly 1..=N, ascending, once, whichever node accepted each event.
#[tokio::test]
async fn live_pulls_on_every_node_see_every_commit_once_in_order() {
    let Some(backend) = Backend::postgres().await else { return };
    let nodes = [
        TestNode::start(&backend).await,
        TestNode::start(&backend).await,
        TestNode::start(&backend).await,
    ];
    const TOTAL: u64 = 240;
    let mut subscribers = Vec::new();
    for (index, node) in nodes.iter().enumerate().take(2) {
        for _ in 0..3 {
            let mut client = Ws::connect(&node.url("fanout")).await;
            client.send(&pull_request("live", "fanout", None)).await;
            subscribers.push((index, client));
        }
    }
    let late: Vec<_> = (0..6)
        .map(|index| {
            let url = nodes[index % 3].url("fanout");
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(40 * index as u64 + 20)).await;
                let mut client = Ws::connect(&url).await;
                client.send(&pull_request("late", "fanout", None)).await;
                (index % 3, client.live_seq_nums_until(TOTAL).await)
            })
        })
        .collect();
    let pushers: Vec<_> = (0..4)
        .map(|pusher| {
            let url = nodes[pusher % 2].url("fanout");
            tokio::spawn(async move { push_until(&url, pusher, TOTAL).await })
        })
        .collect();
    for pusher in join_all(pushers).await {
        pusher.unwrap();
    }
    for (node, mut subscriber) in subscribers {
        let seen = subscriber.live_seq_nums_until(TOTAL).await;
        assert_eq!(seen, (1..=TOTAL).collect::<Vec<u64>>(), "subscriber on node {node}");
    }
    for late in join_all(late).await {
        let (node, seen) = late.unwrap();
        assert_eq!(seen, (1..=TOTAL).collect::<Vec<u64>>(), "late subscriber on node {node}");
    }
    for node in nodes {
        node.stop().await;
    }
    backend.cleanup().await;
}

/// The node's listening connection dies (as when the database restarts): it closes its live pulls rather than risk
/// missing commits, refuses sync requests while it cannot listen, then serves the complete log again.
#[tokio::test]
async fn a_node_that_loses_its_listener_closes_live_pulls_and_recovers() {
    let Some(backend) = Backend::postgres().await else { return };
    let node = TestNode::start(&backend).await;
    let other = TestNode::start(&backend).await;
    let mut subscriber = Ws::connect(&node.url("outage")).await;
    subscriber.send(&pull_request("live", "outage", None)).await;
    assert_eq!(subscriber.live_seq_nums_until(0).await, Vec::<u64>::new());

    let sql = backend.sql().await;
    let terminated = sql
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'livestore-listener'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(terminated.get::<_, i64>(0), 2, "both nodes were listening");
    assert_eq!(subscriber.close_code().await, Some(1013));

    // Events committed while the node could not listen are served once it is back.
    let mut pusher = Ws::connect_when_available(&other.url("outage")).await;
    pusher
        .send(&push_request("p1", "outage", (1..=5).map(|seq| event(seq, json!({}))).collect()))
        .await;
    assert_eq!(pusher.frame().await["exit"]["_tag"], "Success");
    let mut again = Ws::connect_when_available(&node.url("outage")).await;
    again.send(&pull_request("live", "outage", None)).await;
    assert_eq!(again.live_seq_nums_until(5).await, (1..=5).collect::<Vec<u64>>());
    pusher.send(&push_request("p2", "outage", vec![event(6, json!({}))])).await;
    assert_eq!(again.live_seq_nums_until(6).await, [6]);
    node.stop().await;
    other.stop().await;
    backend.cleanup().await;
}

/// Pushes single events with this pusher's id until the log holds `total`, rebasing on every `ServerAheadError`.
async fn push_until(url: &str, pusher: usize, total: u64) {
    let mut client = Ws::connect(url).await;
    let mut parent = 0;
    let mut request = 0;
    while parent < total {
        request += 1;
        let batch = vec![event(parent + 1, json!({"pusher": pusher}))];
        client.send(&push_request(&format!("{request}"), "fanout", batch)).await;
        let reply = client.frame().await;
        let exit = &reply["exit"];
        if exit["_tag"] == "Success" {
            parent += 1;
        } else {
            let error = &exit["cause"]["error"];
            assert_eq!(error["_tag"], "ServerAheadError", "{reply}");
            parent = error["minimumExpectedNum"].as_u64().unwrap();
        }
    }
}

struct TestNode {
    port: u16,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
    _data_dir: tempfile::TempDir,
}

impl TestNode {
    async fn start(backend: &Backend) -> TestNode {
        let data_dir = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.path().to_owned(),
            ..backend.config()
        };
        let server = Server::bind(config).await.unwrap();
        let port = server.local_addr().port();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(server.run_until(async move { stopped.cancelled().await }));
        TestNode { port, stop, task, _data_dir: data_dir }
    }

    fn url(&self, store: &str) -> String {
        format!("ws://127.0.0.1:{}/?storeId={store}&transport=ws", self.port)
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

pub struct Ws {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub async fn connect(url: &str) -> Ws {
        let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("WebSocket connects");
        Ws { socket }
    }

    /// Retries while the node answers 503 (it has not reconnected to the database yet).
    async fn connect_when_available(url: &str) -> Ws {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match tokio_tungstenite::connect_async(url).await {
                Ok((socket, _)) => return Ws { socket },
                Err(error) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "node never came back: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    pub async fn send(&mut self, value: &Value) {
        self.socket.send(Message::Text(value.to_string().into())).await.unwrap();
    }

    /// The next JSON frame; panics on close or after 20 s.
    pub async fn frame(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(20), self.socket.next())
                .await
                .expect("a frame within 20 s")
                .expect("socket open")
                .expect("socket healthy");
            if let Message::Text(text) = message {
                return serde_json::from_str(&text).unwrap();
            }
        }
    }

    async fn close_code(&mut self) -> Option<u16> {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(20), self.socket.next())
                .await
                .expect("closed within 20 s");
            match message {
                Some(Ok(Message::Close(frame))) => return frame.map(|frame| u16::from(frame.code)),
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => return None,
            }
        }
    }

    /// Sequence numbers of `Chunk` frames until the last one reaches `until` (the first, possibly empty, page
    /// counts when `until` is 0).
    async fn live_seq_nums_until(&mut self, until: u64) -> Vec<u64> {
        let mut seen = Vec::new();
        loop {
            let frame = self.frame().await;
            assert_eq!(frame["_tag"], "Chunk", "{frame}");
            for value in frame["values"].as_array().unwrap() {
                for item in value["batch"].as_array().unwrap() {
                    seen.push(item["eventEncoded"]["seqNum"].as_u64().unwrap());
                }
            }
            if seen.last().copied().unwrap_or(0) >= until {
                return seen;
            }
        }
    }
}

fn pull_request(id: &str, store: &str, cursor: Option<(&str, u64)>) -> Value {
    let cursor = match cursor {
        Some((backend, seq)) => {
            json!({"_tag": "Some", "value": {"backendId": backend, "eventSequenceNumber": seq}})
        }
        None => json!({"_tag": "None"}),
    };
    json!({"_tag": "Request", "id": id, "tag": "SyncWsRpc.Pull",
           "payload": {"storeId": store, "live": true, "cursor": cursor}, "headers": []})
}

pub fn push_request(id: &str, store: &str, batch: Vec<Value>) -> Value {
    json!({"_tag": "Request", "id": id, "tag": "SyncWsRpc.Push",
           "payload": {"storeId": store, "batch": batch, "backendId": {"_tag": "None"}}, "headers": []})
}
