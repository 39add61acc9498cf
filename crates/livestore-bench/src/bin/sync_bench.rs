//! `sync-bench`: drives a sync server (ours or the reference) with one workload and prints a JSON result.
//!
//! Scenarios:
//! - `ingest`: pushes batches into one or many stores and reports events/s and push round-trip latency;
//! - `fanout`: one push to N live subscribers, reports the latency of the last (and median) delivery per round;
//!   with `--subscriber-urls` the subscribers spread over other nodes (cross-node fan-out through a shared
//!   database) while the pusher stays on `--url`;
//! - `backlog`: fills a store, then times a fresh client pulling the whole log;
//! - `idle`: opens N live connections and reports the server's resident memory (needs `--server-pid`);
//! - `connect`: opens whole sessions (upgrade, `Ping`, `Pong`, close) one after another per worker and reports the
//!   rate, credential check included (give the credential with `--payload-token`);
//! - `events-out`: pushes at a fixed rate while serving the server's `events_url` webhook, and reports whether the
//!   delivery of committed events keeps up (lag, latency, rates; see `livestore_bench::events_out`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use livestore_bench::protocol::{self, ServerFrame};
use livestore_bench::stats::{millis, summarize};
use serde_json::json;
use tokio::sync::{Barrier, mpsc};

#[derive(Debug, Parser)]
struct Args {
    /// Base URL of the server, e.g. http://127.0.0.1:8787.
    #[arg(long)]
    url: String,
    /// A label copied into the output (e.g. "livestore-rs" or "sync-cf-reference").
    #[arg(long, default_value = "server")]
    label: String,
    /// Every connection carries this credential as `syncPayload.authToken` (in the URL, as LiveStore clients do).
    #[arg(long)]
    payload_token: Option<String>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    Ingest {
        #[arg(long, default_value_t = 1)]
        stores: u64,
        #[arg(long, default_value_t = 100)]
        batch: u64,
        /// Events per store.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Pushes in flight per connection (1 = wait for each ack).
        #[arg(long, default_value_t = 1)]
        pipeline: u64,
        #[arg(long, default_value_t = 40)]
        args_bytes: usize,
    },
    Fanout {
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value_t = 50)]
        rounds: u64,
        /// Multi-node only: comma-separated base URLs the subscribers connect to, round-robin (default: `--url`).
        #[arg(long, value_delimiter = ',')]
        subscriber_urls: Vec<String>,
    },
    Backlog {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long, default_value_t = 16)]
        fill_pipeline: u64,
    },
    Idle {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long)]
        server_pid: u32,
    },
    Connect {
        #[arg(long, default_value_t = 20_000)]
        connections: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: u64,
    },
    EventsOut {
        /// Where the webhook receiver listens: the host and port of the server's `hooks.events_url`.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// The server's `hooks.secret`, to check signatures.
        #[arg(long, env = "LIVESTORE_HOOKS_SECRET", hide_env_values = true)]
        secret: String,
        /// Events per second pushed, over all stores.
        #[arg(long, default_value_t = 50_000)]
        rate: u64,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        #[arg(long, default_value_t = 10)]
        stores: u64,
        #[arg(long, default_value_t = 100)]
        batch: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(token) = &args.payload_token {
        protocol::set_payload_token(token.clone());
    }
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(run(&args))?;
    println!("{}", json!({"label": args.label, "result": result}));
    Ok(())
}

async fn run(args: &Args) -> anyhow::Result<serde_json::Value> {
    let prefix = format!("bench{}", SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis());
    match &args.scenario {
        Scenario::Ingest { stores, batch, events, pipeline, args_bytes } => {
            ingest(&args.url, &prefix, *stores, *batch, *events, *pipeline, *args_bytes).await
        }
        Scenario::Fanout { subscribers, rounds, subscriber_urls } => {
            fanout(&args.url, subscriber_urls, &prefix, *subscribers, *rounds).await
        }
        Scenario::Backlog { events, fill_pipeline } => {
            backlog(&args.url, &prefix, *events, *fill_pipeline).await
        }
        Scenario::Idle { connections, server_pid } => {
            idle(&args.url, &prefix, *connections, *server_pid).await
        }
        Scenario::Connect { connections, concurrency } => {
            livestore_bench::connect::connect_rate(&args.url, &prefix, *connections, *concurrency)
                .await
        }
        Scenario::EventsOut { listen, secret, rate, seconds, stores, batch } => {
            let options = livestore_bench::events_out::Options {
                url: args.url.clone(),
                listen: *listen,
                secret: secret.clone(),
                rate: *rate,
                seconds: *seconds,
                stores: *stores,
                batch: *batch,
                prefix: prefix.clone(),
            };
            livestore_bench::events_out::run(&options).await
        }
    }
}

/// Pushes `events` events into `store_id` in batches; returns per-push round-trip latencies.
async fn push_all(
    url: &str,
    store_id: &str,
    batch: u64,
    events: u64,
    pipeline: u64,
    args_bytes: usize,
) -> anyhow::Result<Vec<Duration>> {
    let (mut sender, mut receiver) = protocol::connect(url, store_id).await?;
    let mut latencies = Vec::with_capacity((events / batch + 1) as usize);
    let mut sent_at = std::collections::VecDeque::new();
    let mut next_seq = 1;
    let mut request_id = 0;
    let mut acked = 0;
    let total_requests = events.div_ceil(batch);
    while acked < total_requests {
        while sent_at.len() < pipeline as usize && next_seq <= events {
            let size = batch.min(events - next_seq + 1);
            let frame = protocol::push_frame(
                request_id,
                store_id,
                &protocol::events(next_seq, size, args_bytes),
                None,
            );
            protocol::send(&mut sender, frame).await?;
            sent_at.push_back(Instant::now());
            request_id += 1;
            next_seq += size;
        }
        match protocol::next_frame(&mut receiver).await?.context("server closed the connection")? {
            ServerFrame::Exit { error: None, .. } => {
                latencies.push(sent_at.pop_front().expect("an ack answers a sent push").elapsed());
                acked += 1;
            }
            ServerFrame::Exit { error: Some(error), .. } => bail!("push failed: {error}"),
            _ => {}
        }
    }
    Ok(latencies)
}

async fn ingest(
    url: &str,
    prefix: &str,
    stores: u64,
    batch: u64,
    events: u64,
    pipeline: u64,
    args_bytes: usize,
) -> anyhow::Result<serde_json::Value> {
    let start_line = Arc::new(Barrier::new(stores as usize + 1));
    let mut tasks = Vec::new();
    for store in 0..stores {
        let (url, store_id, start_line) =
            (url.to_owned(), format!("{prefix}-ingest-{store}"), start_line.clone());
        tasks.push(tokio::spawn(async move {
            start_line.wait().await;
            push_all(&url, &store_id, batch, events, pipeline, args_bytes).await
        }));
    }
    start_line.wait().await;
    let started = Instant::now();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let total = stores * events;
    Ok(json!({
        "scenario": "ingest", "stores": stores, "batch": batch, "pipeline": pipeline, "events": total,
        "seconds": seconds, "events_per_sec": total as f64 / seconds, "push_round_trip": summarize(&mut latencies),
    }))
}

async fn fanout(
    url: &str,
    subscriber_urls: &[String],
    prefix: &str,
    subscribers: usize,
    rounds: u64,
) -> anyhow::Result<serde_json::Value> {
    let store_id = format!("{prefix}-fanout");
    let (receipts, mut receipt_stream) = mpsc::unbounded_channel::<(u64, Instant)>();
    let ready = Arc::new(Barrier::new(subscribers + 1));
    for index in 0..subscribers {
        let url = subscriber_url(url, subscriber_urls, index);
        let (url, store_id, receipts, ready) =
            (url.to_owned(), store_id.clone(), receipts.clone(), ready.clone());
        tokio::spawn(async move {
            let result: anyhow::Result<()> = async {
                let (mut sender, mut receiver) = protocol::connect(&url, &store_id).await?;
                // Request ids must be decimal: the reference server parses them as BigInt.
                let request_id = (1_000_000 + index).to_string();
                protocol::send(&mut sender, protocol::pull_frame(&request_id, &store_id, true))
                    .await?;
                let mut waiting = Some(ready);
                while let Some(frame) = protocol::next_frame(&mut receiver).await? {
                    if let ServerFrame::Chunk { last_seq_num, event_count, .. } = frame {
                        let received_at = Instant::now();
                        protocol::send(&mut sender, protocol::ack_frame(&request_id)).await?;
                        if let Some(ready) = waiting.take() {
                            ready.wait().await;
                        }
                        if event_count > 0 {
                            let _ = receipts.send((last_seq_num, received_at));
                        }
                    }
                }
                Ok(())
            }
            .await;
            if let Err(error) = result {
                eprintln!("subscriber {index}: {error:#}");
            }
        });
    }
    drop(receipts);
    ready.wait().await;
    let (mut sender, mut receiver) = protocol::connect(url, &store_id).await?;
    let mut last_delivery = Vec::new();
    let mut median_delivery = Vec::new();
    for round in 1..=rounds {
        let frame = protocol::push_frame(round, &store_id, &protocol::events(round, 1, 40), None);
        let pushed_at = Instant::now();
        protocol::send(&mut sender, frame).await?;
        let mut deliveries = Vec::with_capacity(subscribers);
        while deliveries.len() < subscribers {
            let (seq, received_at) =
                tokio::time::timeout(Duration::from_secs(30), receipt_stream.recv())
                    .await
                    .context("deliveries stalled for 30 s")?
                    .context("all subscribers ended")?;
            if seq == round {
                deliveries.push(received_at.duration_since(pushed_at));
            }
        }
        loop {
            match protocol::next_frame(&mut receiver).await?.context("pusher connection closed")? {
                ServerFrame::Exit { error: None, .. } => break,
                ServerFrame::Exit { error: Some(error), .. } => bail!("push failed: {error}"),
                _ => {}
            }
        }
        deliveries.sort_unstable();
        median_delivery.push(deliveries[deliveries.len() / 2]);
        last_delivery.push(*deliveries.last().expect("at least one subscriber"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(json!({
        "scenario": "fanout", "subscribers": subscribers, "rounds": rounds, "subscriber_urls": subscriber_urls,
        "last_delivery": summarize(&mut last_delivery), "median_delivery": summarize(&mut median_delivery),
    }))
}

/// Multi-node fan-out: where the `index`th subscriber connects. Without `--subscriber-urls`, the pusher's node.
fn subscriber_url<'a>(pusher_url: &'a str, subscriber_urls: &'a [String], index: usize) -> &'a str {
    if subscriber_urls.is_empty() {
        pusher_url
    } else {
        &subscriber_urls[index % subscriber_urls.len()]
    }
}

async fn backlog(
    url: &str,
    prefix: &str,
    events: u64,
    fill_pipeline: u64,
) -> anyhow::Result<serde_json::Value> {
    let store_id = format!("{prefix}-backlog");
    let fill_started = Instant::now();
    push_all(url, &store_id, 100, events, fill_pipeline, 40).await?;
    let fill_seconds = fill_started.elapsed().as_secs_f64();
    let (mut sender, mut receiver) = protocol::connect(url, &store_id).await?;
    let started = Instant::now();
    let (count, last) = protocol::drain_pull(&mut sender, &mut receiver, &store_id).await?;
    let seconds = started.elapsed().as_secs_f64();
    if count as u64 != events || last != events {
        bail!("pulled {count} events up to {last}, expected {events}");
    }
    Ok(json!({
        "scenario": "backlog", "events": events, "pull_seconds": seconds, "events_per_sec": events as f64 / seconds,
        "fill_seconds": fill_seconds, "time_to_last_page_ms": millis(started.elapsed()),
    }))
}

fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("cannot read server status")?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("bad VmRSS")?.parse()?)
}

async fn idle(
    url: &str,
    prefix: &str,
    connections: usize,
    server_pid: u32,
) -> anyhow::Result<serde_json::Value> {
    let before_kib = resident_kib(server_pid)?;
    let mut held = Vec::with_capacity(connections);
    let started = Instant::now();
    for index in 0..connections {
        let store_id = format!("{prefix}-idle-{}", index % 100);
        let (mut sender, mut receiver) = protocol::connect(url, &store_id).await?;
        protocol::send(&mut sender, protocol::pull_frame("1", &store_id, true)).await?;
        match protocol::next_frame(&mut receiver).await? {
            Some(ServerFrame::Chunk { .. }) => {}
            other => bail!("connection {index}: expected the first page, got {other:?}"),
        }
        held.push((sender, receiver));
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_kib = resident_kib(server_pid)?;
    Ok(json!({
        "scenario": "idle", "connections": connections, "connect_seconds": connect_seconds,
        "server_rss_before_mib": before_kib as f64 / 1024.0, "server_rss_after_mib": after_kib as f64 / 1024.0,
        "server_rss_per_connection_kib": (after_kib.saturating_sub(before_kib)) as f64 / connections as f64,
    }))
}
