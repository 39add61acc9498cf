//! Workloads that need no server: commit latency, durable commit throughput, full rebuild and cold start.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, ensure};
use livestore_client::schema::Query;
use livestore_client::store::UpstreamEvent;
use livestore_client::todo::{self, TodoCompleted, TodoCreated, TodoUncompleted};
use livestore_client::{Durability, LocalEvent, NewEvent, Storage, Store, StoreOptions};

use crate::stats::Report;

pub(crate) fn open(dir: &Path, store_id: &str, durability: Durability) -> anyhow::Result<Store> {
    let mut options = StoreOptions::new(store_id, Storage::Dir(dir.to_owned()));
    options.durability = durability;
    Store::open(options, todo::schema()).with_context(|| format!("cannot open store {store_id}"))
}

/// Commit + materialize + a subscriber notified, in memory: the cost of one interactive commit.
pub(crate) fn commit_memory(commits: usize) -> anyhow::Result<Report> {
    let store = Store::open(StoreOptions::new("bench", Storage::InMemory), todo::schema())?;
    store.commit(&TodoCreated { id: "t".into(), text: "x".into() })?;
    let notified = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&notified);
    let _subscription = store.subscribe(
        Query::select("todos").columns(["completed"]).where_eq("id", "t"),
        move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        },
    )?;
    let mut samples = Vec::with_capacity(commits);
    for iteration in 0..commits {
        let before = notified.load(Ordering::Relaxed);
        let start = Instant::now();
        if iteration % 2 == 0 {
            store.commit(&TodoCompleted { id: "t".into() })?;
        } else {
            store.commit(&TodoUncompleted { id: "t".into() })?;
        }
        let elapsed = start.elapsed();
        ensure!(notified.load(Ordering::Relaxed) == before + 1, "subscriber was not notified");
        samples.push(elapsed);
    }
    Ok(Report::latency(
        "commit_memory",
        "commit one event + materialize + subscriber notified (in-memory store)",
        commits as u64,
        &mut samples,
        "us",
    ))
}

fn durability_name(durability: Durability) -> &'static str {
    match durability {
        Durability::Normal => "normal",
        Durability::Full => "full",
    }
}

/// Durable commits of `batch` events each, `commits` times, on a fresh on-disk store.
pub(crate) fn durable(
    dir: &Path,
    durability: Durability,
    batch: usize,
    commits: usize,
) -> anyhow::Result<Report> {
    let name = durability_name(durability);
    let store_id = format!("durable-{name}-{batch}");
    let store = open(dir, &store_id, durability)?;
    let mut next = 0u64;
    let mut make_batch = || -> Vec<TodoCreated> {
        (0..batch)
            .map(|_| {
                next += 1;
                TodoCreated { id: format!("d{next:09}"), text: "durable".into() }
            })
            .collect()
    };
    let encode = |events: &[TodoCreated]| -> anyhow::Result<Vec<NewEvent>> {
        Ok(events.iter().map(NewEvent::new).collect::<Result<_, _>>()?)
    };
    // One warm-up commit so file creation is not measured.
    store.commit_batch(encode(&make_batch())?)?;
    // Timed: encoding the typed events and the commit call (as `store.commit` in the JavaScript benchmark);
    // not timed: making up ids and texts.
    let mut samples = Vec::with_capacity(commits);
    let cpu = crate::stats::cpu_time();
    for _ in 0..commits {
        let events = make_batch();
        let one = Instant::now();
        store.commit_batch(encode(&events)?)?;
        samples.push(one.elapsed());
    }
    let elapsed = samples.iter().sum();
    store.shutdown()?;
    let _ = std::fs::remove_dir_all(dir.join(&store_id));
    let (workload, description) = match (batch, durability) {
        (1, Durability::Normal) => {
            ("durable_single_normal", "durable commits of one event (WAL, synchronous=NORMAL)")
        }
        (1, Durability::Full) => {
            ("durable_single_full", "durable commits of one event (WAL, fsync per commit)")
        }
        (_, Durability::Normal) => (
            "durable_batched_normal",
            "durable commits of 1,000 events each (WAL, synchronous=NORMAL)",
        ),
        (_, Durability::Full) => {
            ("durable_batched_full", "durable commits of 1,000 events each (WAL, fsync per commit)")
        }
    };
    let unit = if batch == 1 { "us" } else { "ms" };
    Ok(Report::throughput(
        workload,
        description,
        (batch * commits) as u64,
        elapsed,
        &mut samples,
        unit,
    )
    .with_cpu_since(cpu))
}

/// Fills a local store with `events` upstream events (as if pulled) when no server is available.
pub(crate) fn fill_locally(dir: &Path, store_id: &str, events: u64) -> anyhow::Result<()> {
    let store = open(dir, store_id, Durability::Normal)?;
    let mut seq = 0u64;
    while seq < events {
        let page: Vec<UpstreamEvent> = (0..1000.min(events - seq))
            .map(|_| {
                seq += 1;
                let args = format!(r#"{{"id":"todo-{seq}","text":"{}"}}"#, "x".repeat(40));
                UpstreamEvent {
                    event: LocalEvent::from_global(
                        seq,
                        seq - 1,
                        "v1.TodoCreated",
                        args,
                        "bench",
                        "static",
                    ),
                    metadata_json: None,
                }
            })
            .collect();
        store.apply_upstream(&page, "local-fill")?;
    }
    store.shutdown()?;
    Ok(())
}

/// Drops and re-materializes all state from an eventlog of `events` events.
pub(crate) fn rebuild(
    dir: &Path,
    store_id: &str,
    events: u64,
    reps: usize,
) -> anyhow::Result<Report> {
    let store = open(dir, store_id, Durability::Normal)?;
    let mut samples = Vec::with_capacity(reps);
    let cpu = crate::stats::cpu_time();
    for _ in 0..reps {
        let start = Instant::now();
        store.rebuild()?;
        samples.push(start.elapsed());
    }
    let cpu_per_rep = crate::stats::cpu_time()
        .zip(cpu)
        .map(|(now, start)| now.saturating_sub(start) / reps.max(1) as u32);
    store.shutdown()?;
    let median = crate::stats::quantile(&mut samples, 0.5);
    let mut report = Report::throughput(
        "rebuild",
        "full rebuild of the state from the eventlog (median of repetitions)",
        events,
        median,
        &mut samples,
        "ms",
    );
    report.cpu_seconds = cpu_per_rep.map(|cpu| cpu.as_secs_f64());
    Ok(report)
}

/// Opens a store of `events` events and runs its first query, `reps` times.
pub(crate) fn cold_start(
    dir: &Path,
    store_id: &str,
    events: u64,
    reps: usize,
) -> anyhow::Result<Report> {
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        let store = open(dir, store_id, Durability::Normal)?;
        let rows = store.query_rows(&Query::select("todos").order_by("id").limit(10))?;
        samples.push(start.elapsed());
        ensure!(rows.len() == 10.min(events as usize), "cold start found {} rows", rows.len());
        store.shutdown()?;
    }
    Ok(Report::latency(
        "cold_start",
        "open a synced store and run the first query (no rebuild)",
        events,
        &mut samples,
        "ms",
    ))
}
