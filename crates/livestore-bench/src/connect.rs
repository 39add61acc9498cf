//! The `connect` workload: how many sync connections a server admits per second, credential check included.
//!
//! Workers open WebSockets one after another (each: upgrade with the process's payload token, one `Ping`, its
//! `Pong`, close), and the rate and the per-connection latency are reported. The time counts everything a real
//! client's connect costs the server: the TCP handshake, the upgrade request, the credential check, the session.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::{Value, json};

use crate::protocol::{self, ServerFrame};
use crate::stats::summarize;

/// Opens `connections` sessions with `concurrency` workers; returns the rate and latency summary.
pub async fn connect_rate(
    url: &str,
    prefix: &str,
    connections: u64,
    concurrency: u64,
) -> anyhow::Result<Value> {
    // A warm-up: the first connections pay for the JWKS fetch and for lazy work in the server.
    for index in 0..concurrency.min(8) {
        one_session(url, &format!("{prefix}-warm{index}")).await?;
    }
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let (url, prefix, next) = (url.to_owned(), prefix.to_owned(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < connections {
                let began = Instant::now();
                one_session(&url, &format!("{prefix}-{worker}")).await?;
                latencies.push(began.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let elapsed = started.elapsed();
    Ok(json!({
        "scenario": "connect",
        "connections": latencies.len(),
        "concurrency": concurrency,
        "seconds": elapsed.as_secs_f64(),
        "connections_per_second": latencies.len() as f64 / elapsed.as_secs_f64(),
        "latency": summarize(&mut latencies),
    }))
}

/// One whole session: upgrade, `Ping`, `Pong`, close.
async fn one_session(url: &str, store_id: &str) -> anyhow::Result<()> {
    let (mut sender, mut receiver) = protocol::connect(url, store_id).await?;
    protocol::send(&mut sender, r#"{"_tag":"Ping"}"#.to_owned()).await?;
    loop {
        match protocol::next_frame(&mut receiver).await? {
            // `Other` is the `Pong`: the session is up.
            Some(ServerFrame::Other) => break,
            Some(_) => {}
            None => anyhow::bail!("the server closed a connection before its Pong"),
        }
    }
    let _ = sender.close().await;
    Ok(())
}
