//! Network faults between real clients and the real server, injected by `livestore_testkit::FaultProxy`: cuts (now
//! and mid-frame), latency and jitter, stalls, blackholes, refusals and short connection lifetimes.
//!
//! What must hold through all of it: clients converge on one log; no acknowledged event is lost; nothing is
//! appended twice (a client whose reply was lost finds its event in the log instead of pushing it again); the
//! server's log stays `1..=n` with each parent the previous event.
//!
//! The fault schedule comes from a seeded RNG: `SEED=<n>` replays a run; a failing run prints its seed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use livestore_testkit::FaultProxy;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::js_driver::{JsDriver, created};
use crate::resilient::{LiveReader, RawWriter, assert_contiguous_and_unique, read_log, ws_url};
use crate::support::*;

/// The seed of this run: `SEED` from the environment, or a fresh one. Printed when the test fails.
pub struct Seed(pub u64);

impl Seed {
    pub fn from_env(test: &str) -> Seed {
        let seed = std::env::var("SEED")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(rand::random::<u64>);
        eprintln!("{test}: SEED={seed}");
        Seed(seed)
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "\n*** failed with SEED={} (rerun with SEED={} to replay the schedule) ***\n",
                self.0, self.0
            );
        }
    }
}

/// A number from the environment (long mode scales the tests with these), or the short-mode default.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// How long JS clients get to converge once the faults stop (the driver's own limit is 90 s per command).
pub const CONVERGE_MS: u64 = 75_000;

fn server_addr(server: &TestServer) -> std::net::SocketAddr {
    ([127, 0, 0, 1], server.port).into()
}

/// One randomly chosen fault, applied to `proxy`; returns its name for the summary.
pub async fn inject_random_fault(proxy: &FaultProxy, rng: &mut StdRng) -> &'static str {
    match rng.random_range(0..7) {
        0 => {
            proxy.cut_all();
            "cut"
        }
        1 => {
            proxy.cut_all_after_bytes(rng.random_range(1..4_000));
            "cut-mid-stream"
        }
        2 => {
            proxy.stall();
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..900))).await;
            proxy.resume();
            "stall"
        }
        3 => {
            proxy.set_delay(Duration::from_millis(rng.random_range(5..80)));
            proxy.set_jitter(Duration::from_millis(rng.random_range(0..60)));
            "delay"
        }
        4 => {
            proxy.set_blackhole(true);
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..700))).await;
            proxy.set_blackhole(false);
            // Connections caught in the blackhole would wait for their own timeouts; cut them like a client would.
            proxy.cut_all();
            "blackhole"
        }
        5 => {
            proxy.set_max_lifetime(Some(Duration::from_millis(rng.random_range(300..900))));
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            proxy.set_max_lifetime(None);
            "short-lifetimes"
        }
        _ => {
            proxy.set_refuse(true);
            proxy.cut_all();
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..600))).await;
            proxy.set_refuse(false);
            "refuse"
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_clients_lose_no_acknowledged_event_through_cuts_stalls_and_blackholes() {
    let seed = Seed::from_env("faults::raw");
    let server = TestServer::start();
    let proxy = Arc::new(FaultProxy::start_seeded(server_addr(&server), seed.0).await.unwrap());
    let store = "faults-raw";
    let url = ws_url(&proxy.addr().to_string(), store);
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));

    let mut writers = Vec::new();
    for index in 0..4 {
        let (url, stop) = (url.clone(), Arc::clone(&stop));
        let mut writer_rng = StdRng::seed_from_u64(seed.0.wrapping_add(index));
        writers.push(tokio::spawn(async move {
            let mut writer =
                RawWriter::new(&format!("w{index}"), store, &url).with_pipelining(3, 4);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
            while !stop.load(Ordering::SeqCst) || writer.pending_count() > 0 {
                assert!(tokio::time::Instant::now() < deadline, "{} did not finish", writer.name);
                if !stop.load(Ordering::SeqCst) && writer.pending_count() < 12 {
                    writer.create(writer_rng.random_range(1..6));
                }
                writer.round().await;
                tokio::time::sleep(Duration::from_millis(writer_rng.random_range(0..20))).await;
            }
            writer.close().await
        }));
    }
    let reader = {
        let (url, total) = (url.clone(), Arc::clone(&total));
        tokio::spawn(async move {
            let mut reader = LiveReader::new(store, &url);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            loop {
                let target = total.load(Ordering::SeqCst);
                if target > 0 && reader.last_seq >= target {
                    return reader;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the live reader stopped at {}",
                    reader.last_seq
                );
                reader.follow_once((target > 0).then_some(target)).await;
            }
        })
    };

    let mut rng = StdRng::seed_from_u64(seed.0);
    let mut injected: Vec<&str> = Vec::new();
    let fault_phase =
        tokio::time::Instant::now() + Duration::from_secs(env_number("FAULT_SECONDS", 10));
    while tokio::time::Instant::now() < fault_phase {
        injected.push(inject_random_fault(&proxy, &mut rng).await);
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..500))).await;
    }
    proxy.heal();
    stop.store(true, Ordering::SeqCst);

    let mut writers_done = Vec::new();
    for writer in writers {
        writers_done.push(writer.await.unwrap());
    }
    let (backend, log) = read_log(&server_addr(&server).to_string(), store).await;
    total.store(log.len() as u64, Ordering::SeqCst);
    let reader = reader.await.unwrap();

    assert_contiguous_and_unique(&log);
    let in_log: std::collections::HashSet<&str> =
        log.iter().map(|event| event.id.as_str()).collect();
    let mut acked = 0;
    let mut created = 0;
    for writer in &writers_done {
        for id in &writer.acked {
            assert!(
                in_log.contains(id.as_str()),
                "acknowledged event {id} is missing from the log"
            );
        }
        acked += writer.acked.len();
        created += writer.in_log.len();
        assert_eq!(writer.pending_count(), 0);
    }
    assert_eq!(created, log.len(), "every created event is in the log exactly once");
    assert_eq!(
        reader.ids,
        log.iter().map(|event| event.id.clone()).collect::<Vec<_>>(),
        "the live reader saw the log"
    );
    assert!(!backend.is_empty());

    let stats = proxy.stats();
    let reconnects: u64 = writers_done.iter().map(|writer| writer.stats.connections).sum();
    let landed_without_ack: u64 =
        writers_done.iter().map(|writer| writer.stats.landed_without_ack).sum();
    let server_ahead: u64 = writers_done.iter().map(|writer| writer.stats.server_ahead).sum();
    eprintln!(
        "reliability: faults.raw seed={} faults={} ({}) connections_cut={} events={} acked={} \
         landed_without_ack={} server_ahead={} writer_connections={} reader_connections={} bytes_up={} bytes_down={}",
        seed.0,
        stats.faults_injected,
        summarize(&injected),
        stats.connections_cut,
        log.len(),
        acked,
        landed_without_ack,
        server_ahead,
        reconnects,
        reader.stats.connections,
        stats.bytes_upstream,
        stats.bytes_downstream,
    );
    assert!(stats.connections_cut > 0, "the schedule cut nothing: {injected:?}");
}

/// Counts of each fault kind, e.g. `cut×3 stall×2`.
pub fn summarize(injected: &[&str]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for name in injected {
        match counts.iter_mut().find(|(known, _)| known == name) {
            Some((_, count)) => *count += 1,
            None => counts.push((name, 1)),
        }
    }
    counts.iter().map(|(name, count)| format!("{name}×{count}")).collect::<Vec<_>>().join(" ")
}

fn todo_ids(todos: &Value) -> Vec<String> {
    let mut ids: Vec<String> = todos
        .as_array()
        .unwrap()
        .iter()
        .map(|todo| todo["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_clients_converge_through_cuts_delays_stalls_and_blackholes() {
    let seed = Seed::from_env("faults::js");
    let server = TestServer::start();
    let store = "faults-js";
    let mut proxies = Vec::new();
    for index in 0..3u64 {
        proxies.push(FaultProxy::start_seeded(server_addr(&server), seed.0 + index).await.unwrap());
    }
    let mut driver = JsDriver::start().await;
    let names = ["a", "b", "c"];
    for (name, proxy) in names.iter().zip(&proxies) {
        driver.open(name, store, &proxy.http_url(), json!({})).await;
    }
    let mut rng = StdRng::seed_from_u64(seed.0);
    let mut expected = Vec::new();
    let mut injected = Vec::new();
    for round in 0..env_number("FAULT_ROUNDS", 8) {
        for name in names {
            let id = format!("{name}{round}");
            driver.commit(name, json!([created(&id, &format!("round {round}"))])).await;
            expected.push(id);
        }
        let target = rng.random_range(0..proxies.len());
        injected.push(inject_random_fault(&proxies[target], &mut rng).await);
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..400))).await;
    }
    for proxy in &proxies {
        proxy.heal();
    }
    expected.sort();
    let total = expected.len() as u64;
    // Generous waits: after several failed attempts a sync-cf client backs off exponentially (1 s, 2 s, 4 s, ...).
    for name in names {
        driver
            .call(json!({"cmd": "waitHead", "name": name, "head": total, "timeoutMs": CONVERGE_MS}))
            .await;
    }
    for name in names {
        driver.call(json!({"cmd": "waitSynced", "name": name, "timeoutMs": CONVERGE_MS})).await;
    }
    let log_a = driver.eventlog("a").await;
    for name in &names[1..] {
        assert_eq!(driver.eventlog(name).await, log_a, "{name} and a disagree on the log");
    }
    for name in names {
        let todos = driver
            .wait_todos(name, Duration::from_millis(CONVERGE_MS), |todos| {
                todos.as_array().unwrap().len() == expected.len()
            })
            .await;
        assert_eq!(todo_ids(&todos), expected, "{name}'s todos");
    }
    let (_, log) = read_log(&server_addr(&server).to_string(), store).await;
    assert_contiguous_and_unique(&log);
    assert_eq!(log.len() as u64, total, "nothing appended twice, nothing lost");
    let client_ids: Vec<String> = log_a
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["args"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(client_ids, log.iter().map(|event| event.id.clone()).collect::<Vec<_>>());
    let faults: u64 = proxies.iter().map(|proxy| proxy.stats().faults_injected).sum();
    let cuts: u64 = proxies.iter().map(|proxy| proxy.stats().connections_cut).sum();
    let connections: u64 = proxies.iter().map(|proxy| proxy.stats().connections_accepted).sum();
    eprintln!(
        "reliability: faults.js seed={} faults={faults} ({}) connections_cut={cuts} client_connections={connections} events={}",
        seed.0,
        summarize(&injected),
        log.len()
    );
    driver.exit().await;
}
