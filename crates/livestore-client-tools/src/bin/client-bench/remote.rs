//! Workloads against a running `livestore serve`: filling a server store, catch-up, and A→B sync latency.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use livestore_client::schema::Query;
use livestore_client::sync::{self, DriverOptions};
use livestore_client::todo::{TodoCompleted, TodoCreated, TodoUncompleted};
use livestore_client::{Durability, Store};
use livestore_proto::client::{self as wire, ServerMessage};
use livestore_proto::event::{EncodedEvent, SeqNum};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

use crate::local::open;
use crate::stats::Report;

/// Pushes `events` `v1.TodoCreated` events into a new server store, 100 per push, 16 pushes in flight.
pub(crate) async fn fill(url: &str, store_id: &str, events: u64) -> anyhow::Result<()> {
    const BATCH: u64 = 100;
    const IN_FLIGHT: usize = 16;
    let (mut socket, _) = tokio_tungstenite::connect_async(wire::sync_url(url, store_id, None))
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    let filler = "x".repeat(40);
    let mut next_seq = 1u64;
    let mut request = 0u64;
    let mut in_flight = 0usize;
    let mut acknowledged = 0u64;
    let requests = events.div_ceil(BATCH);
    while acknowledged < requests {
        while in_flight < IN_FLIGHT && next_seq <= events {
            let count = BATCH.min(events - next_seq + 1);
            let batch: Vec<EncodedEvent> = (next_seq..next_seq + count)
                .map(|seq| EncodedEvent {
                    name: "v1.TodoCreated".to_owned(),
                    args: RawValue::from_string(format!(
                        r#"{{"id":"todo-{seq}","text":"{filler}"}}"#
                    ))
                    .ok(),
                    seq_num: SeqNum(seq),
                    parent_seq_num: SeqNum(seq - 1),
                    client_id: "bench-filler".to_owned(),
                    session_id: "static".to_owned(),
                })
                .collect();
            let frame = wire::push_request(&request.to_string(), store_id, None, &batch, None);
            socket.send(Message::Text(frame.into())).await?;
            request += 1;
            in_flight += 1;
            next_seq += count;
        }
        let Some(message) = socket.next().await else {
            bail!("server closed the connection while filling")
        };
        let Message::Text(text) = message? else { continue };
        match wire::decode_server_message(text.as_str())? {
            ServerMessage::Exit { result: Ok(()), .. } => {
                acknowledged += 1;
                in_flight -= 1;
            }
            ServerMessage::Exit { result: Err(failure), .. } => {
                bail!("push refused while filling: {failure:?}")
            }
            _ => {}
        }
    }
    let _ = socket.close(None).await;
    Ok(())
}

/// A fresh on-disk client pulls `events` events from the server and materializes them.
pub(crate) fn catchup(
    runtime: &tokio::runtime::Runtime,
    url: &str,
    dir: &Path,
    store_id: &str,
    events: u64,
) -> anyhow::Result<Report> {
    let store = open(dir, store_id, Durability::Normal)?;
    let _context = runtime.enter();
    let cpu = crate::stats::cpu_time();
    let start = Instant::now();
    let handle = sync::start(store.clone(), DriverOptions::new(url));
    let deadline = start + Duration::from_secs(900);
    loop {
        let (head, _) = store.upstream_cursor()?;
        if head >= events {
            break;
        }
        ensure!(Instant::now() < deadline, "catch-up did not finish (head {head} of {events})");
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = start.elapsed();
    let cpu_now = crate::stats::cpu_time();
    runtime.block_on(handle.stop());
    store.shutdown()?;
    let mut samples = [elapsed];
    let mut report = Report::throughput(
        "catchup",
        "fresh client pulls the whole log from livestore serve over loopback and materializes it",
        events,
        elapsed,
        &mut samples,
        "ms",
    );
    report.cpu_seconds =
        cpu_now.zip(cpu).map(|(now, start)| now.saturating_sub(start).as_secs_f64());
    Ok(report)
}

/// Client A commits, client B (same store, same server) sees it in a subscription; `rounds` times.
pub(crate) fn sync_latency(
    runtime: &tokio::runtime::Runtime,
    url: &str,
    dir: &Path,
    rounds: usize,
) -> anyhow::Result<Report> {
    let store_id = format!("clientbench-latency-{}", std::process::id());
    let a = open(&dir.join("a"), &store_id, Durability::Normal)?;
    let b = open(&dir.join("b"), &store_id, Durability::Normal)?;
    let _context = runtime.enter();
    let a_sync = sync::start(a.clone(), DriverOptions::new(url));
    let b_sync = sync::start(b.clone(), DriverOptions::new(url));
    let (sender, receiver) = mpsc::channel::<(Instant, Option<bool>)>();
    let _subscription = b.subscribe(
        Query::select("todos").columns(["completed"]).where_eq("id", "latency"),
        move |rows| {
            let completed =
                rows.first().and_then(|row| row.get("completed")).and_then(|value| value.as_bool());
            let _ = sender.send((Instant::now(), completed));
        },
    )?;
    let wait_for = |expected: Option<bool>| -> anyhow::Result<Instant> {
        loop {
            let (at, completed) =
                receiver.recv_timeout(Duration::from_secs(10)).context("B was not notified")?;
            if completed == expected {
                return Ok(at);
            }
        }
    };
    wait_for(None)?;
    a.commit(&TodoCreated { id: "latency".into(), text: "ping".into() })?;
    wait_for(Some(false))?;
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        settle(&a)?;
        let completed = round % 2 == 0;
        let start = Instant::now();
        if completed {
            a.commit(&TodoCompleted { id: "latency".into() })?;
        } else {
            a.commit(&TodoUncompleted { id: "latency".into() })?;
        }
        let seen = wait_for(Some(completed))?;
        samples.push(seen.duration_since(start));
    }
    runtime.block_on(async {
        a_sync.stop().await;
        b_sync.stop().await;
    });
    a.shutdown()?;
    b.shutdown()?;
    Ok(Report::latency(
        "sync_latency",
        "commit on client A until a subscription fires on client B (two clients through livestore serve)",
        rounds as u64,
        &mut samples,
        "ms",
    ))
}

/// Waits until A's previous push was confirmed, so every round starts from a quiet connection.
fn settle(store: &Store) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.sync_status()?.pending_count > 0 {
        ensure!(Instant::now() < deadline, "A's events were not confirmed");
        std::thread::sleep(Duration::from_micros(200));
    }
    std::thread::sleep(Duration::from_millis(1));
    Ok(())
}
