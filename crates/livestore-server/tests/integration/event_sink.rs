//! Committed events in Rust: a program embeds the server with `Server::bind_with_sink` and the channel adapter,
//! pushes through real WebSockets, and consumes the stream of batches, acknowledging (or refusing) each one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use livestore_server::events_out::{Delivery, EventStream, event_channel};
use livestore_server::{Server, ServerConfig, ServerError};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::conformance::event;
use crate::nodes::{Ws, push_request};

/// A server embedded with a channel sink named `indexer`.
struct Embedded {
    port: u16,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
    events: EventStream,
    _files_dir: tempfile::TempDir,
}

impl Embedded {
    async fn start(config: ServerConfig) -> Embedded {
        let (sink, events) = event_channel(8);
        // Each node's embedded object store needs a directory of its own.
        let files_dir = tempfile::tempdir().unwrap();
        let files = livestore_objects::FilesConfig::embedded(files_dir.path().join("objects"));
        let config =
            ServerConfig { addr: "127.0.0.1:0".parse().unwrap(), files: Some(files), ..config };
        let server = Server::bind_with_sink(config, "indexer", Arc::new(sink)).await.unwrap();
        let port = server.local_addr().port();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(server.run_until(async move { stopped.cancelled().await }));
        Embedded { port, stop, task, events, _files_dir: files_dir }
    }

    async fn push(&self, store: &str, parent: u64, count: u64) {
        let url = format!("ws://127.0.0.1:{}/?storeId={store}&transport=ws", self.port);
        let mut client = Ws::connect(&url).await;
        let batch =
            (parent + 1..=parent + count).map(|seq| event(seq, json!({"n": seq}))).collect();
        client.send(&push_request("1", store, batch)).await;
        let reply = client.frame().await;
        assert_eq!(reply["exit"]["_tag"], "Success", "{reply}");
    }

    /// The next delivery, within 20 s.
    async fn next(&mut self) -> Delivery {
        tokio::time::timeout(Duration::from_secs(20), self.events.next())
            .await
            .expect("a delivery within 20 s")
            .expect("the stream is open")
    }

    /// Acknowledges deliveries until every store in `heads` reached its head; returns the sequence numbers each
    /// store received, in order.
    async fn ack_until(&mut self, heads: &BTreeMap<&str, u64>) -> BTreeMap<String, Vec<u64>> {
        let mut received: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        while heads.iter().any(|(store, head)| {
            received.get(*store).and_then(|seq_nums| seq_nums.last()).copied().unwrap_or(0) < *head
        }) {
            let delivery = self.next().await;
            let batch = delivery.batch();
            received
                .entry(batch.store_id().to_owned())
                .or_default()
                .extend(batch.events().iter().map(|event| event.seq_num));
            delivery.ack();
        }
        received
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn an_embedded_sink_gets_every_commit_in_order_and_resumes_after_a_restart() {
    let backend = Backend::sqlite();
    let mut server = Embedded::start(backend.config()).await;
    server.push("left", 0, 3).await;
    server.push("right", 0, 2).await;
    server.push("left", 3, 2).await;

    // A refused batch comes back unchanged, and nothing after it comes first.
    let refused = server.next().await;
    let (key, store) = (refused.batch().idempotency_key(), refused.batch().store_id().to_owned());
    let stored: Vec<String> =
        refused.batch().events().iter().map(|event| event.encoded_json.clone()).collect();
    refused.reject("not yet");
    let mut received: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    loop {
        let delivery = server.next().await;
        let batch = delivery.batch();
        if batch.store_id() == store {
            assert_eq!(
                batch.idempotency_key(),
                key,
                "the refused batch is resent first, unchanged"
            );
            let again: Vec<&str> =
                batch.events().iter().map(|event| event.encoded_json.as_str()).collect();
            assert_eq!(again, stored);
            received
                .entry(store.clone())
                .or_default()
                .extend(batch.events().iter().map(|e| e.seq_num));
            delivery.ack();
            break;
        }
        received
            .entry(batch.store_id().to_owned())
            .or_default()
            .extend(batch.events().iter().map(|event| event.seq_num));
        delivery.ack();
    }
    let heads = BTreeMap::from([("left", 5), ("right", 2)]);
    let missing: BTreeMap<&str, u64> = heads
        .iter()
        .filter(|(name, head)| {
            received.get(**name).and_then(|seq| seq.last()).copied().unwrap_or(0) < **head
        })
        .map(|(name, head)| (*name, *head))
        .collect();
    for (store, seq_nums) in server.ack_until(&missing).await {
        received.entry(store).or_default().extend(seq_nums);
    }
    assert_eq!(received["left"], [1, 2, 3, 4, 5]);
    assert_eq!(received["right"], [1, 2]);
    // The events are the stored JSON, as a pull serves them.
    server.stop().await;

    // After a restart, the acknowledged batches are not delivered again; new commits are.
    let mut server = Embedded::start(backend.config()).await;
    server.push("right", 2, 1).await;
    let delivery = server.next().await;
    assert_eq!(delivery.batch().idempotency_key(), "right:3-3");
    let event: serde_json::Value =
        serde_json::from_str(&delivery.batch().events()[0].encoded_json).unwrap();
    assert_eq!((event["seqNum"].as_u64(), event["args"]["n"].as_u64()), (Some(3), Some(3)));
    delivery.ack();
    server.stop().await;
}

/// Two embedded servers on one Postgres database: one delivers; when it stops, the other takes over where the
/// acknowledged cursor stands.
#[tokio::test]
async fn on_postgres_one_node_delivers_and_the_other_takes_over() {
    let Some(backend) = Backend::postgres().await else { return };
    let mut node_a = Embedded::start(backend.config()).await;
    let mut node_b = Embedded::start(backend.config()).await;
    node_a.push("shared", 0, 3).await;
    node_b.push("shared", 3, 3).await;
    // Whichever node took the lease delivers everything; the other's stream stays silent.
    let first = tokio::select! {
        delivery = node_a.next() => ("a", delivery),
        delivery = node_b.next() => ("b", delivery),
    };
    let (leader, delivery) = first;
    let mut received: Vec<u64> =
        delivery.batch().events().iter().map(|event| event.seq_num).collect();
    delivery.ack();
    let (mut leading, mut standing_by) =
        if leader == "a" { (node_a, node_b) } else { (node_b, node_a) };
    while received.last().copied() < Some(6) {
        let delivery = leading.next().await;
        received.extend(delivery.batch().events().iter().map(|event| event.seq_num));
        delivery.ack();
    }
    assert_eq!(received, [1, 2, 3, 4, 5, 6]);
    let quiet = tokio::time::timeout(Duration::from_millis(500), standing_by.events.next()).await;
    assert!(quiet.is_err(), "the standby node delivered too");

    leading.stop().await;
    standing_by.push("shared", 6, 2).await;
    let delivery = standing_by.next().await;
    assert_eq!(
        delivery.batch().idempotency_key(),
        "shared:7-8",
        "resumed after the acknowledged cursor"
    );
    delivery.ack();
    standing_by.stop().await;
    backend.cleanup().await;
}

#[tokio::test]
async fn sink_names_are_checked_before_anything_starts() {
    let backend = Backend::sqlite();
    for (name, problem) in [
        ("webhook", "belongs to [hooks] events_url"),
        ("Indexer", "is not 1 to 64 of"),
        ("", "is not 1 to 64 of"),
        (&"x".repeat(65), "is not 1 to 64 of"),
    ] {
        let (sink, _events) = event_channel(1);
        let refused = Server::bind_with_sink(backend.config(), name, Arc::new(sink)).await;
        match refused {
            Err(ServerError::InvalidConfig(message)) => {
                assert!(message.contains(problem), "{message}")
            }
            other => panic!("{name:?} was not refused: {:?}", other.map(|_| "a server")),
        }
    }
}
