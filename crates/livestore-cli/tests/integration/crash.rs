//! `kill -9` of the server while several clients stream pipelined pushes at once, repeated with different (seeded)
//! kill timings on the same data directory. After every restart: each acknowledged event is in the log exactly
//! once, the log is contiguous, and each store keeps its `backendId`. (`lifecycle` has the sequential version.)

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::faults::{Seed, env_number};
use crate::resilient::{RawWriter, assert_contiguous_and_unique, read_log, ws_url};
use crate::support::*;

/// Stores and their writers: four writers race on one store, two more have a store each (no contention, long
/// pipelines), so both the conflict path and the group-commit path are in flight when the process dies.
const WRITERS: [(&str, &str); 6] = [
    ("shared-0", "crash-shared"),
    ("shared-1", "crash-shared"),
    ("shared-2", "crash-shared"),
    ("shared-3", "crash-shared"),
    ("solo-0", "crash-solo-0"),
    ("solo-1", "crash-solo-1"),
];

fn check_store(
    store: &str,
    log: &[crate::resilient::LoggedEvent],
    writers: &[RawWriter],
    cycle: u64,
) {
    assert_contiguous_and_unique(log);
    let ids: std::collections::HashSet<&str> = log.iter().map(|event| event.id.as_str()).collect();
    for writer in writers
        .iter()
        .filter(|writer| WRITERS.iter().any(|(name, s)| *name == writer.name && *s == store))
    {
        for id in &writer.acked {
            assert!(
                ids.contains(id.as_str()),
                "cycle {cycle}: acknowledged {id} lost from {store}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_concurrent_pipelined_pushes_loses_no_acknowledged_event() {
    let seed = Seed::from_env("crash::kill9");
    let mut rng = StdRng::seed_from_u64(seed.0);
    let mut server = TestServer::start();
    let addr = format!("127.0.0.1:{}", server.port);
    let mut writers: Vec<RawWriter> = WRITERS
        .iter()
        .map(|(name, store)| {
            let pipeline = if name.starts_with("solo") { 8 } else { 4 };
            RawWriter::new(name, store, &ws_url(&addr, store)).with_pipelining(5, pipeline)
        })
        .collect();
    let mut backends: HashMap<&str, String> = HashMap::new();
    let mut kill_delays = Vec::new();
    let cycles = env_number("CRASH_CYCLES", 6);

    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (index, mut writer) in writers.drain(..).enumerate() {
            let stop = Arc::clone(&stop);
            let mut writer_rng = StdRng::seed_from_u64(seed.0 ^ (cycle << 8) ^ index as u64);
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    if writer.pending_count() < 40 {
                        writer.create(writer_rng.random_range(1..10));
                    }
                    writer.round().await;
                }
                writer
            }));
        }
        // Different moments each cycle: right after the connects, and deep into the stream.
        let kill_after = Duration::from_millis(rng.random_range(30..1_500));
        kill_delays.push(kill_after.as_millis());
        tokio::time::sleep(kill_after).await;
        server.kill9();
        stop.store(true, Ordering::SeqCst);
        for task in tasks {
            writers.push(task.await.unwrap());
        }
        server.spawn();
        for store in ["crash-shared", "crash-solo-0", "crash-solo-1"] {
            let (backend, log) = read_log(&addr, store).await;
            check_store(store, &log, &writers, cycle);
            if !log.is_empty() {
                let known = backends.entry(store).or_insert_with(|| backend.clone());
                assert_eq!(
                    *known, backend,
                    "cycle {cycle}: {store} changed its backendId across kill -9"
                );
            }
        }
    }

    // The per-cycle checks above only mean something if some pushes were acknowledged before a kill.
    let acked_before_kills: usize = writers.iter().map(|writer| writer.acked.len()).sum();
    assert!(
        acked_before_kills > 0,
        "no push was acknowledged before any kill: nothing was checked"
    );

    // Let every writer settle what it still holds: events whose replies died with the process are found in the log
    // (not pushed twice), the rest are pushed now.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for writer in &mut writers {
        while writer.pending_count() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "{} cannot flush", writer.name);
            writer.round().await;
        }
    }
    let mut events = 0;
    for store in ["crash-shared", "crash-solo-0", "crash-solo-1"] {
        let (_, log) = read_log(&addr, store).await;
        check_store(store, &log, &writers, cycles);
        let created: usize = writers
            .iter()
            .filter(|writer| WRITERS.iter().any(|(name, s)| *name == writer.name && *s == store))
            .map(|writer| writer.in_log.len())
            .sum();
        assert_eq!(created, log.len(), "{store}: every event once, none twice");
        events += log.len();
    }
    let acked: usize = writers.iter().map(|writer| writer.acked.len()).sum();
    let landed_without_ack: u64 =
        writers.iter().map(|writer| writer.stats.landed_without_ack).sum();
    let lost_connections: u64 = writers.iter().map(|writer| writer.stats.connection_losses).sum();
    eprintln!(
        "reliability: crash.kill9 seed={} kills={cycles} kill_after_ms={kill_delays:?} events={events} acked={acked} \
         landed_without_ack={landed_without_ack} connections_lost={lost_connections}",
        seed.0
    );
    for writer in writers {
        writer.close().await;
    }
}
