//! The delivery end to end inside the crate, on real SQLite files (and Postgres when a test cluster is given):
//! ordering, batching, retries with the same batch, cursors that move only after an acknowledgement, resuming
//! after a restart, and the cursor table itself.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use livestore_proto::rpc::PushArgs;
use serde_json::json;
use tokio::sync::Notify;

use super::{DeliveryError, DeliverySettings, Deps, EventBatch, EventSink, EventsOut, Subscriber};
use crate::config::ServerConfig;
use crate::hub::Hubs;
use crate::metrics::Metrics;
use crate::storage::cursors::{Cursor, CursorStore};
use crate::storage::{self, AppendOutcome, EventStorage};

mod cursor_table;

/// One call of the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attempt {
    key: String,
    seq_nums: Vec<u64>,
    acked: bool,
}

/// A sink that records every call and acknowledges unless told to fail.
#[derive(Debug, Default)]
struct Recorder {
    attempts: Mutex<Vec<Attempt>>,
    failing: AtomicBool,
    changed: Notify,
}

#[async_trait::async_trait]
impl EventSink for Recorder {
    async fn deliver(&self, batch: &EventBatch) -> Result<(), DeliveryError> {
        let acked = !self.failing.load(Ordering::SeqCst);
        let seq_nums = batch.events().iter().map(|event| event.seq_num).collect();
        self.attempts.lock().unwrap().push(Attempt {
            key: batch.idempotency_key(),
            seq_nums,
            acked,
        });
        self.changed.notify_waiters();
        if acked { Ok(()) } else { Err(DeliveryError::Status { status: 503 }) }
    }
}

impl Recorder {
    fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap().clone()
    }

    /// Acknowledged sequence numbers of `store`, in delivery order.
    fn acked(&self, store: &str) -> Vec<u64> {
        let prefix = format!("{store}:");
        self.attempts()
            .into_iter()
            .filter(|attempt| attempt.acked && attempt.key.starts_with(&prefix))
            .flat_map(|attempt| attempt.seq_nums)
            .collect()
    }

    /// Waits (up to 20 s) until `done` holds for what was recorded.
    async fn wait_for(&self, what: &str, done: impl Fn(&Recorder) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let changed = self.changed.notified();
            if done(self) {
                return;
            }
            let waited = tokio::time::timeout_at(deadline, changed).await;
            assert!(
                waited.is_ok() || done(self),
                "timed out waiting for {what}: {:?}",
                self.attempts()
            );
        }
    }
}

/// A server's storage and delivery without the server around them.
struct Node {
    log: Arc<dyn EventStorage>,
    cursors: Arc<dyn CursorStore>,
    events_out: EventsOut,
}

impl Node {
    async fn start(config: &ServerConfig, sink: Arc<dyn EventSink>) -> Node {
        let metrics = Arc::new(Metrics::new());
        let hubs = Arc::new(Hubs::standalone());
        let opened = storage::open_with(config, hubs.clone(), metrics.clone()).await.unwrap();
        let deps = Deps {
            log: opened.log.clone(),
            cursors: opened.cursors.clone(),
            feed: hubs.commits().clone(),
            metrics,
            settings: DeliverySettings::for_tests(),
        };
        let events_out = EventsOut::new(deps, vec![Subscriber::new("test-sink", sink).unwrap()]);
        events_out.start();
        Node { log: opened.log, cursors: opened.cursors, events_out }
    }

    async fn stop(self) {
        self.events_out.shutdown().await;
        self.log.shutdown().await;
    }

    /// Appends `count` events after `head` in pushes of `per_push`.
    async fn append(&self, store: &str, head: u64, count: u64, per_push: u64) {
        let mut next = head + 1;
        while next <= head + count {
            let size = per_push.min(head + count + 1 - next);
            let outcome = self.log.append(store, push(store, next - 1, size)).await.unwrap();
            assert_eq!(outcome, AppendOutcome::Appended { head: next + size - 1 });
            next += size;
        }
    }
}

fn sqlite(dir: &Path) -> ServerConfig {
    ServerConfig { data_dir: dir.to_owned(), ..ServerConfig::default() }
}

fn push(store: &str, parent: u64, count: u64) -> PushArgs {
    let batch: Vec<serde_json::Value> = (parent + 1..=parent + count)
        .map(|seq| {
            json!({"name": "v1.TodoCreated", "args": {"id": format!("t{seq}"), "text": "x"}, "seqNum": seq,
                   "parentSeqNum": seq - 1, "clientId": "c", "sessionId": "s"})
        })
        .collect();
    serde_json::from_value(json!({"storeId": store, "batch": batch, "backendId": {"_tag": "None"}}))
        .unwrap()
}

#[tokio::test]
async fn every_committed_event_arrives_once_in_order_per_store_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let node = Node::start(&sqlite(dir.path()), recorder.clone()).await;
    // Concurrent writers on three stores; the delivery runs meanwhile.
    let stores = ["alpha", "beta", "gamma"];
    futures_util::future::join_all(
        stores.iter().enumerate().map(|(index, store)| node.append(store, 0, 40, index as u64 + 3)),
    )
    .await;
    recorder
        .wait_for("40 events per store", |recorder| {
            stores.iter().all(|store| recorder.acked(store).len() >= 40)
        })
        .await;
    for store in stores {
        assert_eq!(recorder.acked(store), (1..=40).collect::<Vec<u64>>(), "{store}");
    }
    node.stop().await;

    // After a restart only what was committed since is delivered: the cursors were durable.
    let before = recorder.attempts().len();
    let node = Node::start(&sqlite(dir.path()), recorder.clone()).await;
    node.append("beta", 40, 5, 5).await;
    recorder.wait_for("the new events", |recorder| recorder.acked("beta").len() >= 45).await;
    let after: Vec<Attempt> = recorder.attempts()[before..].to_vec();
    assert_eq!(
        after,
        [Attempt { key: "beta:41-45".into(), seq_nums: (41..=45).collect(), acked: true }]
    );
    node.stop().await;
}

#[tokio::test]
async fn batches_are_bounded_in_events() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    recorder.failing.store(true, Ordering::SeqCst);
    let node = Node::start(&sqlite(dir.path()), recorder.clone()).await;
    node.append("big", 0, 2_500, 100).await;
    // Failing first, so the whole backlog is committed before the first batch is formed.
    recorder.wait_for("a first attempt", |recorder| !recorder.attempts().is_empty()).await;
    node.stop().await;
    recorder.failing.store(false, Ordering::SeqCst);
    let before = recorder.attempts().len();
    let node = Node::start(&sqlite(dir.path()), recorder.clone()).await;
    recorder.wait_for("2,500 events", |recorder| recorder.acked("big").len() >= 2_500).await;
    let keys: Vec<String> =
        recorder.attempts()[before..].iter().map(|attempt| attempt.key.clone()).collect();
    let first_key = recorder.attempts()[0].key.clone();
    assert_eq!(keys[0], first_key, "the pending batch is resent as it was");
    let sizes: Vec<usize> =
        recorder.attempts()[before..].iter().map(|attempt| attempt.seq_nums.len()).collect();
    assert!(sizes.iter().all(|size| *size <= super::BATCH_MAX_EVENTS), "{sizes:?}");
    assert_eq!(recorder.acked("big"), (1..=2_500).collect::<Vec<u64>>());
    node.stop().await;
}

#[tokio::test]
async fn a_failing_batch_is_retried_unchanged_and_the_cursor_waits_for_the_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    recorder.failing.store(true, Ordering::SeqCst);
    let node = Node::start(&sqlite(dir.path()), recorder.clone()).await;
    node.append("s", 0, 3, 3).await;
    recorder.wait_for("three failed attempts", |recorder| recorder.attempts().len() >= 3).await;
    // More commits meanwhile do not change the batch being retried.
    node.append("s", 3, 4, 2).await;
    recorder.wait_for("two more failed attempts", |recorder| recorder.attempts().len() >= 5).await;
    let lease = node.cursors.acquire("test-sink").await.unwrap().unwrap();
    assert_eq!(
        lease.load("s").await.unwrap(),
        Cursor { delivered: 0, pending: Some(3) },
        "nothing acknowledged: the cursor has not moved, the batch's end is committed"
    );
    assert!(recorder.attempts().iter().all(|attempt| attempt.key == "s:1-3" && !attempt.acked));

    recorder.failing.store(false, Ordering::SeqCst);
    recorder.wait_for("everything", |recorder| recorder.acked("s").len() >= 7).await;
    assert_eq!(recorder.acked("s"), (1..=7).collect::<Vec<u64>>());
    // The cursor commits right after the acknowledgement.
    wait_for_cursor(&node, "s", 7).await;
    assert_eq!(lease.load("s").await.unwrap(), Cursor { delivered: 7, pending: None });
    node.stop().await;
}

#[tokio::test]
async fn cursor_writes_are_compare_and_set() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&sqlite(dir.path()), Arc::new(Recorder::default())).await;
    cursor_table::compare_and_set(&node).await;
    node.stop().await;
}

/// Waits until the cursor of `store` is `delivered`.
async fn wait_for_cursor(node: &Node, store: &str, delivered: u64) {
    let lease = node.cursors.acquire("test-sink").await.unwrap().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while lease.load(store).await.unwrap().delivered != delivered {
        assert!(tokio::time::Instant::now() < deadline, "the cursor did not reach {delivered}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn stores_behind_at_start_are_found_by_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    // Events committed while no delivery ran (the storage alone, as an older build would) are only found by the
    // scan: nothing announces them.
    let log = storage::open(&sqlite(dir.path())).await.unwrap();
    for (store, count) in [("quiet", 12), ("other", 2)] {
        log.append(store, push(store, 0, count)).await.unwrap();
    }
    log.shutdown().await;
    drop(log);
    let recorder = Arc::new(Recorder::default());
    let node = Node::start(&sqlite(dir.path()), recorder.clone()).await;
    wait_for_cursor(&node, "quiet", 12).await;
    wait_for_cursor(&node, "other", 2).await;
    assert_eq!(recorder.acked("quiet"), (1..=12).collect::<Vec<u64>>());
    assert_eq!(recorder.acked("other"), [1, 2]);
    node.stop().await;
}

#[tokio::test]
async fn scan_pages_cover_every_store() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&sqlite(dir.path()), Arc::new(Recorder::default())).await;
    cursor_table::scan_pages(&node).await;
    node.stop().await;
}

#[tokio::test]
async fn postgres_leases_are_exclusive_and_cursors_compare_and_set() {
    let Some(database) = cursor_table::PostgresDatabase::create().await else { return };
    let node_a = Node::start(&database.config(), Arc::new(Recorder::default())).await;
    let node_b = Node::start(&database.config(), Arc::new(Recorder::default())).await;
    cursor_table::compare_and_set(&node_a).await;
    cursor_table::scan_pages(&node_a).await;
    cursor_table::one_lease_at_a_time(&node_a, &node_b).await;
    node_a.stop().await;
    node_b.stop().await;
    database.drop_database().await;
}
