//! Committed events out to `[hooks] events_url`, end to end: the real binary, real SQLite files or a real Postgres
//! database, raw protocol writers racing on several stores, and a webhook receiver served by the test on
//! 127.0.0.1 (`receiver`) that verifies signatures, dedups by `Idempotency-Key` and checks order.
//!
//! Every test ends with the same verdict ([`assert_delivered`]): per store, the events the receiver processed
//! (after de-duplication) are exactly the store's log as a pull serves it, byte for byte as JSON, in order; no
//! request was unsigned, carried a client's token, named the wrong batch, or overlapped another request for the
//! same store; a batch sent again was identical.

mod receiver;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use self::receiver::{Answer, Receiver};
use crate::resilient::{RawWriter, ws_url};
use crate::support::*;

/// Accepts `accepted` requests, then holds the next one open until released.
fn hold_after(accepted: usize) -> Vec<Answer> {
    let mut script = vec![Answer::Accept; accepted];
    script.push(Answer::Hold);
    script
}

const SECRET: &str = "events-out-test-secret-5f3a9c1e7b2d4f60";
const TOKEN: &str = "events-out-client-token-8e1f2a7c4b9d3e05";
/// How long all the events of a test may take to arrive.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(90);

/// The config of a node posting to `url`: static-token auth (so the test can check the token is never
/// forwarded), and short delivery timings so retries happen within the test.
fn config(url: &str) -> String {
    format!(
        "[auth]\ntokens = [\"{TOKEN}\"]\n\n[hooks]\nevents_url = \"{url}\"\nevents_timeout_ms = 1000\n\
         events_retry_max_ms = 1000\n"
    )
}

/// A node with `config`, the secret from `LIVESTORE_HOOKS_SECRET`, and `args`; the returned dir holds the config.
fn start_node(config: &str, args: &[&str]) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("livestore.toml");
    std::fs::write(&path, config).unwrap();
    let env = [("LIVESTORE_CONFIG", path.to_str().unwrap()), ("LIVESTORE_HOOKS_SECRET", SECRET)];
    (TestServer::start_with(&env, args), dir)
}

fn addr(server: &TestServer) -> String {
    format!("127.0.0.1:{}", server.port)
}

/// The sync URL of a store with the client token in the URL payload, as a JS client sends it.
fn authed_url(addr: &str, store: &str) -> String {
    format!("{}&payload={}", ws_url(addr, store), payload_param(TOKEN))
}

/// Writers: `per_store` racing writers on each store, all through `addr`, each creating `events` events; `tag`
/// keeps the names (and so the event ids) of different groups of writers apart.
fn writers(
    addr: &str,
    tag: &str,
    stores: &[&str],
    per_store: usize,
    events: u64,
) -> Vec<RawWriter> {
    let mut writers = Vec::new();
    for store in stores {
        for index in 0..per_store {
            let name = format!("{store}-{tag}{index}");
            let mut writer = RawWriter::new(&name, store, &authed_url(addr, store))
                .with_pipelining(1 + index * 3, 4);
            writer.create(events);
            writers.push(writer);
        }
    }
    writers
}

/// Runs the writers until every event they created is in a log.
async fn write_all(writers: &mut [RawWriter]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while writers.iter().any(|writer| writer.pending_count() > 0) {
        assert!(tokio::time::Instant::now() < deadline, "the writers did not finish");
        futures_util::future::join_all(writers.iter_mut().map(RawWriter::round)).await;
    }
}

/// Writers that keep creating and pushing events until `stop` is set (in the background); then they are returned,
/// possibly with events in doubt (the log is what the tests compare with).
fn write_until(
    mut writers: Vec<RawWriter>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<RawWriter>> {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            for writer in &mut writers {
                if writer.pending_count() < 20 {
                    writer.create(4);
                }
            }
            futures_util::future::join_all(writers.iter_mut().map(RawWriter::round)).await;
        }
        writers
    })
}

/// A store's log as a (non-live) pull serves it: each event's `eventEncoded`.
async fn stored_events(addr: &str, store: &str) -> Vec<Value> {
    let mut client = WsClient::connect(&authed_url(addr, store)).await;
    client.send(&pull_request("log", store, false, None)).await;
    let mut events = Vec::new();
    loop {
        let frame = client.frame().await;
        if frame["_tag"] == "Exit" {
            assert_eq!(frame["exit"]["_tag"], "Success", "{frame}");
            return events;
        }
        for value in frame["values"].as_array().unwrap() {
            for item in value["batch"].as_array().unwrap() {
                events.push(item["eventEncoded"].clone());
            }
        }
    }
}

/// Waits until the receiver processed every store's log, then checks the verdict (module docs). Returns the logs.
async fn assert_delivered(
    receiver: &Receiver,
    addr: &str,
    stores: &[&str],
) -> BTreeMap<String, Vec<Value>> {
    let mut logs = BTreeMap::new();
    for store in stores {
        logs.insert(store.to_string(), stored_events(addr, store).await);
    }
    let heads: BTreeMap<String, u64> =
        logs.iter().map(|(store, log)| (store.clone(), log.len() as u64)).collect();
    receiver.wait_for("every store's log", DELIVERY_TIMEOUT, |record| record.has_all(&heads)).await;
    receiver.with(|record| {
        assert!(record.problems.is_empty(), "the receiver saw: {:#?}", record.problems);
        for (store, log) in &logs {
            assert!(!log.is_empty(), "{store} has no events");
            assert_eq!(
                record.events.get(store),
                Some(log),
                "{store}: processed events differ from the log"
            );
        }
        assert_eq!(record.redirected, 0, "a redirect was followed");
    });
    logs
}

/// A counter or gauge of a node's `/metrics`, 0 when absent.
async fn metric(server: &TestServer, series: &str) -> f64 {
    let text =
        reqwest::get(format!("{}/metrics", server.http_url())).await.unwrap().text().await.unwrap();
    metric_value(&text, series).unwrap_or(0.0)
}

/// Waits until a metric reaches `at_least`.
async fn wait_for_metric(server: &TestServer, series: &str, at_least: f64) {
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    while metric(server, series).await < at_least {
        assert!(tokio::time::Instant::now() < deadline, "{series} never reached {at_least}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_event_arrives_once_in_order_with_concurrent_writers() {
    let receiver = Receiver::start(0, SECRET, Some(TOKEN), &[]).await;
    let (server, _config) = start_node(&config(&receiver.url("node-a")), &[]);
    let addr = addr(&server);
    let stores = ["orders", "people", "quiet", "busy"];
    // Two writers race on each of two stores (ServerAhead and rebase), one writer each on the others.
    let mut all = writers(&addr, "w", &stores[..2], 2, 120);
    all.extend(writers(&addr, "w", &stores[2..], 1, 150));
    write_all(&mut all).await;
    let logs = assert_delivered(&receiver, &addr, &stores).await;
    let total: usize = logs.values().map(Vec::len).sum();
    assert_eq!(total, 2 * 2 * 120 + 2 * 150);
    wait_for_metric(
        &server,
        "livestore_events_out_delivered_events_total{subscriber=\"webhook\"}",
        total as f64,
    )
    .await;
    assert_eq!(
        metric(&server, "livestore_events_out_lag_events{subscriber=\"webhook\"}").await,
        0.0
    );
    assert_eq!(metric(&server, "livestore_events_out_leader{subscriber=\"webhook\"}").await, 1.0);
    let batches =
        metric(&server, "livestore_events_out_delivered_batches_total{subscriber=\"webhook\"}")
            .await;
    println!(
        "reliability: events_out sqlite: {total} events in {batches} batches, {} requests",
        receiver.with(|r| r.requests.len())
    );
}

/// `kill -9` while a batch is at the receiver unanswered and writers are pushing: after the restart the same batch
/// comes again under the same key, and everything else follows in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_resumes_without_loss_or_reordering() {
    // A request is held open: the kill lands while that batch is received but unanswered.
    let receiver = Receiver::start(0, SECRET, Some(TOKEN), &hold_after(15)).await;
    receiver.set_delay(Duration::from_millis(20));
    let (mut server, _config) = start_node(&config(&receiver.url("node-a")), &[]);
    let addr = addr(&server);
    let stores = ["k9-a", "k9-b", "k9-c"];
    let stop = Arc::new(AtomicBool::new(false));
    let writing = write_until(writers(&addr, "w", &stores, 1, 0), stop.clone());
    receiver.wait_for("a held batch", DELIVERY_TIMEOUT, |record| record.held == 1).await;
    let held = receiver.with(|record| {
        record.requests.iter().rfind(|request| request.answer == Answer::Hold).unwrap().key.clone()
    });
    server.kill9();
    receiver.release_holds();
    tokio::time::sleep(Duration::from_millis(200)).await; // writers run into the dead server meanwhile
    server.spawn();
    stop.store(true, Ordering::SeqCst);
    let mut all = writing.await.unwrap();
    for writer in &mut all {
        writer.create(100);
    }
    write_all(&mut all).await;
    let logs = assert_delivered(&receiver, &addr, &stores).await;
    receiver.with(|record| {
        assert!(
            record.duplicates.contains(&held),
            "the batch held at the kill ({held}) was not resent"
        );
    });
    let total: usize = logs.values().map(Vec::len).sum();
    let losses: u64 = all.iter().map(|writer| writer.stats.connection_losses).sum();
    println!(
        "reliability: events_out kill -9: {total} events; {held} held at the kill and resent after the restart; \
         writers lost {losses} connections"
    );
}

/// The receiver is down, then answers 500 and 503, then redirects, then stalls past the timeout, then accepts:
/// every failure is retried with the same batch, and everything arrives in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_outage_delays_but_never_loses_or_reorders() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/node-a");
    let (server, _config) = start_node(&config(&url), &[]);
    let addr = addr(&server);
    let stores = ["outage-a", "outage-b"];
    let mut all = writers(&addr, "w", &stores, 1, 80);
    write_all(&mut all).await;
    wait_for_metric(
        &server,
        "livestore_events_out_failures_total{subscriber=\"webhook\",kind=\"unreachable\"}",
        2.0,
    )
    .await;

    // Back, but failing: 500, 503, two redirects (not followed), then a batch answered only after the timeout.
    let stall = Answer::Stall(Duration::from_millis(2_000));
    let script = [
        Answer::Status(500),
        Answer::Status(503),
        Answer::Redirect(307),
        Answer::Redirect(302),
        stall,
    ];
    let receiver = Receiver::start(port, SECRET, Some(TOKEN), &script).await;
    let mut more = writers(&addr, "more", &stores, 1, 40);
    write_all(&mut more).await;
    assert_delivered(&receiver, &addr, &stores).await;
    // A stalled batch is processed before the server gives up on it: wait for its resend and the failure count.
    let stalled = receiver.with(|record| {
        let stalled =
            record.requests.iter().find(|request| matches!(request.answer, Answer::Stall(_)));
        stalled.expect("the script was played to its end").key.clone()
    });
    receiver
        .wait_for("the timed-out batch again under its key", DELIVERY_TIMEOUT, |record| {
            record.duplicates.contains(&stalled)
        })
        .await;
    let failures = |kind: &str| {
        format!("livestore_events_out_failures_total{{subscriber=\"webhook\",kind=\"{kind}\"}}")
    };
    for (kind, count) in [("status", 2.0), ("redirect", 2.0), ("timeout", 1.0)] {
        wait_for_metric(&server, &failures(kind), count).await;
    }
    receiver.with(|record| assert!(record.problems.is_empty(), "{:#?}", record.problems));
}

/// Two nodes on one Postgres database, each posting to its own path: one node delivers; `kill -9` it with a batch
/// held at the receiver, and the other takes over from the committed cursors, resending that batch first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_one_node_delivers_at_a_time_and_the_other_takes_over() {
    let Some(database) = FreshDatabase::create().await else { return };
    let receiver = Receiver::start(0, SECRET, Some(TOKEN), &hold_after(15)).await;
    receiver.set_delay(Duration::from_millis(10));
    let args = ["--database-url", database.url.as_str()];
    let (node_a, _config_a) = start_node(&config(&receiver.url("node-a")), &args);
    let (node_b, _config_b) = start_node(&config(&receiver.url("node-b")), &args);
    let mut nodes = BTreeMap::from([("node-a".to_owned(), node_a), ("node-b".to_owned(), node_b)]);
    let stores = ["pg-a", "pg-b", "pg-c"];
    // Writers on both nodes race on every store.
    let mut racing = writers(&addr(&nodes["node-a"]), "a", &stores, 1, 0);
    racing.extend(writers(&addr(&nodes["node-b"]), "b", &stores, 1, 0));
    let stop = Arc::new(AtomicBool::new(false));
    let writing = write_until(racing, stop.clone());
    receiver.wait_for("a held batch", DELIVERY_TIMEOUT, |record| record.held == 1).await;
    let (leader, held) = receiver.with(|record| {
        let held = record.requests.iter().rfind(|request| request.answer == Answer::Hold).unwrap();
        (record.requests[0].node.clone(), held.key.clone())
    });
    let mut killed = nodes.remove(&leader).unwrap();
    // Until the kill only the leader sends (its other stores carry on while one is held).
    let at_kill = receiver.with(|record| record.requests.len());
    killed.kill9();
    receiver.release_holds();
    stop.store(true, Ordering::SeqCst);
    drop(writing.await.unwrap());
    let (survivor_name, survivor) = nodes.iter().next().unwrap();
    let mut after = writers(&addr(survivor), "after", &stores, 1, 60);
    write_all(&mut after).await;
    let logs = assert_delivered(&receiver, &addr(survivor), &stores).await;
    receiver.with(|record| {
        let senders: Vec<&str> =
            record.requests.iter().map(|request| request.node.as_str()).collect();
        assert!(
            senders[..at_kill].iter().all(|node| *node == leader),
            "both nodes delivered: {senders:?}"
        );
        // Requests the leader sent just before it died may be handled after the kill; once the other node
        // sends, the leader never appears again.
        let takeover =
            senders.iter().position(|node| node == survivor_name).expect("the survivor delivered");
        assert!(takeover >= at_kill, "the standby delivered while the leader lived: {senders:?}");
        assert!(
            senders[takeover..].iter().all(|node| node == survivor_name),
            "the nodes interleaved: {senders:?}"
        );
        let resent = record.requests[takeover..].iter().find(|request| request.key == held);
        assert!(
            resent.is_some(),
            "the batch held at the kill ({held}) was not resent by the survivor"
        );
        assert!(record.duplicates.contains(&held));
    });
    assert_eq!(metric(survivor, "livestore_events_out_leader{subscriber=\"webhook\"}").await, 1.0);
    let total: usize = logs.values().map(Vec::len).sum();
    println!(
        "reliability: events_out postgres: {total} events; {leader} delivered and was killed with {held} held; \
         {survivor_name} took over and resent it"
    );
    drop(nodes);
    database.drop_database().await;
}

/// A database of this test's own in the cluster of `LIVESTORE_TEST_DATABASE_URL` (cursors and the delivery lease
/// are per database).
struct FreshDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl FreshDatabase {
    async fn create() -> Option<FreshDatabase> {
        let admin_url = crate::multinode::database_url()?;
        let name = format!("livestore_events_out_{}_{}", std::process::id(), rand::random::<u32>());
        admin(&admin_url).await.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        let url = with_database(&admin_url, &name);
        Some(FreshDatabase { admin_url, name, url })
    }

    async fn drop_database(self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = admin(&self.admin_url).await.batch_execute(&sql).await;
    }
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// `postgres://…/old?query` → `postgres://…/database?query`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) =
        url.split_once('?').map_or((url, None), |(base, query)| (base, Some(query)));
    let authority = base.find("://").map_or(0, |index| index + 3);
    let base = base[authority..].find('/').map_or(base, |slash| &base[..authority + slash]);
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}
