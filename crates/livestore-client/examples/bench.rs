//! Store benchmarks, printed as a table of medians and p99s or throughputs.
//!
//! Run: `cargo run --release -p livestore-client --example bench [EVENTS]` (EVENTS defaults to 1,000,000 for the
//! cold-start, rebuild and catch-up rows).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use livestore_client::schema::Query;
use livestore_client::store::UpstreamEvent;
use livestore_client::todo::{self, TodoCompleted, TodoCreated, TodoUncompleted};
use livestore_client::{LocalEvent, NewEvent, Storage, Store, StoreOptions};

fn percentile(samples: &mut [Duration], fraction: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * fraction) as usize]
}

fn main() {
    let events: u64 = std::env::args().nth(1).and_then(|arg| arg.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile_dir();

    // 1. Commit + materialize + subscriber notified, in-memory.
    let store = Store::open(StoreOptions::new("bench", Storage::InMemory), todo::schema()).unwrap();
    store.commit(&TodoCreated { id: "t".into(), text: "x".into() }).unwrap();
    let notified = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&notified);
    let _subscription = store
        .subscribe(Query::select("todos").columns(["completed"]).where_eq("id", "t"), move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    let mut samples = Vec::new();
    for iteration in 0..20_000 {
        let before = notified.load(Ordering::Relaxed);
        let start = Instant::now();
        if iteration % 2 == 0 {
            store.commit(&TodoCompleted { id: "t".into() }).unwrap();
        } else {
            store.commit(&TodoUncompleted { id: "t".into() }).unwrap();
        }
        let elapsed = start.elapsed();
        assert_eq!(notified.load(Ordering::Relaxed), before + 1);
        samples.push(elapsed);
    }
    let p50 = percentile(&mut samples, 0.5);
    let p99 = percentile(&mut samples, 0.99);
    println!(
        "commit+materialize+notify (memory)     p50 {:>8.1} µs   p99 {:>8.1} µs",
        micros(p50),
        micros(p99)
    );

    // 2./3. Durable commits (WAL, synchronous=NORMAL).
    let durable =
        Store::open(StoreOptions::new("durable", Storage::Dir(dir.clone())), todo::schema())
            .unwrap();
    let start = Instant::now();
    let mut next = 0u64;
    for _ in 0..100 {
        let batch: Vec<NewEvent> = (0..1000)
            .map(|_| {
                next += 1;
                NewEvent::new(&TodoCreated { id: format!("b{next:09}"), text: "batched".into() })
                    .unwrap()
            })
            .collect();
        durable.commit_batch(batch).unwrap();
    }
    println!(
        "durable batched commits (1000/commit)  {:>10.0} events/s",
        100_000.0 / start.elapsed().as_secs_f64()
    );
    let mut samples = Vec::new();
    let start = Instant::now();
    for index in 0..10_000 {
        let one = Instant::now();
        durable.commit(&TodoCreated { id: format!("s{index:09}"), text: "single".into() }).unwrap();
        samples.push(one.elapsed());
    }
    let rate = 10_000.0 / start.elapsed().as_secs_f64();
    println!(
        "durable single-event commits           {rate:>10.0} events/s (p50 {:.1} µs, p99 {:.1} µs)",
        micros(percentile(&mut samples, 0.5)),
        micros(percentile(&mut samples, 0.99))
    );
    durable.shutdown().unwrap();

    // 6. Catch-up: pulled pages of 100 events applied (eventlog insert + materialize).
    let big =
        Store::open(StoreOptions::new("big", Storage::Dir(dir.clone())), todo::schema()).unwrap();
    let start = Instant::now();
    let mut seq = 0u64;
    while seq < events {
        let page: Vec<UpstreamEvent> = (0..100.min(events - seq))
            .map(|_| {
                seq += 1;
                let args = format!(r#"{{"id":"u{seq:09}","text":"pulled"}}"#);
                UpstreamEvent {
                    event: LocalEvent::from_global(
                        seq,
                        seq - 1,
                        "v1.TodoCreated",
                        args,
                        "other",
                        "static",
                    ),
                    metadata_json: None,
                }
            })
            .collect();
        big.apply_upstream(&page, "bench-backend").unwrap();
    }
    println!(
        "catch-up pull+materialize (pages of 100) {:>8.0} events/s",
        events as f64 / start.elapsed().as_secs_f64()
    );

    // 5. Full rebuild.
    let start = Instant::now();
    big.rebuild().unwrap();
    println!(
        "full rebuild                           {:>10.0} events/s",
        events as f64 / start.elapsed().as_secs_f64()
    );
    big.shutdown().unwrap();

    // 4. Cold start to first query.
    let start = Instant::now();
    let reopened =
        Store::open(StoreOptions::new("big", Storage::Dir(dir.clone())), todo::schema()).unwrap();
    let rows = reopened.query_rows(&Query::select("todos").where_eq("id", "u000000001")).unwrap();
    assert_eq!(rows.len(), 1);
    println!(
        "cold start to first query ({events} events) {:>8.1} ms",
        start.elapsed().as_secs_f64() * 1000.0
    );
    reopened.shutdown().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("livestore-client-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
