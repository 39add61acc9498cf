//! `client-bench`: the Rust client's benchmark workloads, one JSON object per workload on stdout.
//!
//! ```text
//! client-bench [--quick] [--url http://127.0.0.1:8787] [--events N] [--catchup-store ID] [--only a,b]
//! client-bench --url URL fill --store ID --events N
//! ```
//!
//! Workloads (ids shared with `bench/js-client`): `commit_memory`, `durable_batched_normal`,
//! `durable_batched_full`, `durable_single_normal`, `durable_single_full`, `catchup`, `rebuild`, `cold_start`,
//! `sync_latency`. `catchup` and `sync_latency` need `--url` (a running `livestore serve`); without it they are
//! skipped and `rebuild`/`cold_start` use a store filled locally. Progress goes to stderr.

mod local;
mod remote;
mod stats;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand};
use livestore_client::Durability;

use crate::stats::Report;

const WORKLOADS: [&str; 9] = [
    "commit_memory",
    "durable_batched_normal",
    "durable_batched_full",
    "durable_single_normal",
    "durable_single_full",
    "catchup",
    "rebuild",
    "cold_start",
    "sync_latency",
];

#[derive(Debug, Parser)]
#[command(about = "Benchmarks of the Rust LiveStore client; prints one JSON object per workload")]
struct Args {
    /// Smaller workloads (about a minute).
    #[arg(long)]
    quick: bool,
    /// A running `livestore serve` (http:// or ws://) for `catchup` and `sync_latency`.
    #[arg(long)]
    url: Option<String>,
    /// Events in the store used by `catchup`, `rebuild` and `cold_start` (default 1,000,000; quick 100,000).
    #[arg(long)]
    events: Option<u64>,
    /// A server store already holding exactly `--events` events (otherwise the bench fills one first).
    #[arg(long)]
    catchup_store: Option<String>,
    /// Comma-separated workload ids to run (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where the client databases go (default: a fresh directory under the system temp dir, removed at exit).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fills a server store with `v1.TodoCreated` events (needs `--url`).
    Fill {
        #[arg(long)]
        store: String,
        #[arg(long)]
        events: u64,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LIVESTORE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    if let Some(Command::Fill { store, events }) = &args.command {
        let url = args.url.as_deref().context("fill needs --url")?;
        return runtime.block_on(remote::fill(url, store, *events));
    }
    for name in &args.only {
        anyhow::ensure!(
            WORKLOADS.contains(&name.as_str()),
            "unknown workload {name:?}; known: {WORKLOADS:?}"
        );
    }
    let selected = |name: &str| args.only.is_empty() || args.only.iter().any(|only| only == name);
    let quick = args.quick;
    let events = args.events.unwrap_or(if quick { 100_000 } else { 1_000_000 });
    let millis = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let (dir, remove_dir) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("client-bench-{}-{millis}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = run(&args, &runtime, &dir, events, quick, &selected);
    if remove_dir {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn run(
    args: &Args,
    runtime: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    events: u64,
    quick: bool,
    selected: &dyn Fn(&str) -> bool,
) -> anyhow::Result<()> {
    let emit = |report: Report| println!("{}", report.to_json());
    let pick = |full: usize, small: usize| if quick { small } else { full };
    if selected("commit_memory") {
        progress("commit_memory");
        emit(local::commit_memory(pick(20_000, 5_000))?);
    }
    for (name, durability, batch, commits) in [
        ("durable_batched_normal", Durability::Normal, 1000, pick(200, 50)),
        ("durable_batched_full", Durability::Full, 1000, pick(100, 20)),
        ("durable_single_normal", Durability::Normal, 1, pick(20_000, 5_000)),
        ("durable_single_full", Durability::Full, 1, pick(2_000, 500)),
    ] {
        if selected(name) {
            progress(name);
            emit(local::durable(dir, durability, batch, commits)?);
        }
    }

    // One store of `events` events serves catch-up, rebuild and cold start.
    let big_store = "big";
    let needs_big = ["catchup", "rebuild", "cold_start"].iter().any(|name| selected(name));
    let mut big_filled = false;
    if let Some(url) = &args.url
        && needs_big
    {
        let server_store = match &args.catchup_store {
            Some(store) => store.clone(),
            None => {
                let store = format!("clientbench-{}-{}", std::process::id(), events);
                progress(&format!("filling server store {store} with {events} events"));
                runtime.block_on(remote::fill(url, &store, events))?;
                store
            }
        };
        progress("catchup");
        let report = remote::catchup(runtime, url, dir, &server_store, events)?;
        if selected("catchup") {
            emit(report);
        }
        // The client store is named after the server store; make it the one the next workloads use.
        std::fs::rename(dir.join(&server_store), dir.join(big_store))?;
        big_filled = true;
    }
    // A store left in `--dir` by an earlier run is reused as it is.
    let reuse = dir.join(big_store).join("eventlog.db").exists();
    if needs_big && !big_filled && !reuse && (selected("rebuild") || selected("cold_start")) {
        progress(&format!("filling a local store with {events} events (no --url)"));
        local::fill_locally(dir, big_store, events)?;
    }
    if selected("rebuild") {
        progress("rebuild");
        emit(local::rebuild(dir, big_store, events, pick(3, 1))?);
    }
    if selected("cold_start") {
        progress("cold_start");
        emit(local::cold_start(dir, big_store, events, pick(7, 3))?);
    }
    if selected("sync_latency") {
        if let Some(url) = &args.url {
            progress("sync_latency");
            emit(remote::sync_latency(runtime, url, &dir.join("latency"), pick(1000, 200))?);
        } else {
            progress("sync_latency skipped: no --url");
        }
    }
    Ok(())
}

fn progress(what: &str) {
    eprintln!("client-bench: {what}");
}
