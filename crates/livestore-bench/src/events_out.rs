//! The `events-out` scenario: does the delivery of committed events to `[hooks] events_url` keep up with ingest?
//!
//! The benchmark serves the webhook receiver itself (on `--listen`, which the server's `events_url` must point
//! at), checks every request's signature, and counts each store's events once (by sequence number, so a resent
//! batch is not counted twice). Meanwhile it pushes at a fixed rate into several stores with raw protocol clients,
//! each push acknowledged before it counts as committed. It samples, every 100 ms, the lag: events committed
//! (acknowledged pushes) but not yet received by the webhook. For every received batch it takes the latency from
//! the acknowledgement of the push that committed its last event to its arrival. When ingest stops it waits for
//! the webhook to catch up and reports rates, the lag over time and the latencies.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::protocol::{self, ServerFrame};
use crate::stats::{millis, summarize};

/// What the scenario does.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server's base URL.
    pub url: String,
    /// Where the receiver listens (the server's `events_url` host and port).
    pub listen: SocketAddr,
    /// `hooks.secret`, to check signatures.
    pub secret: String,
    /// Events per second pushed, over all stores.
    pub rate: u64,
    /// How long to push.
    pub seconds: u64,
    /// Stores written at once.
    pub stores: u64,
    /// Events per push.
    pub batch: u64,
    /// Store id prefix (unique per run).
    pub prefix: String,
}

/// What the receiver counted.
#[derive(Debug, Default)]
struct Received {
    /// Per store, the highest sequence number received.
    heads: HashMap<String, u64>,
    events: u64,
    requests: u64,
    resent: u64,
    /// Per store, the arrival time of each batch's last sequence number.
    arrivals: Vec<(String, u64, Instant)>,
}

struct Receiver {
    signer: Hmac<Sha256>,
    received: Mutex<Received>,
}

/// Runs the scenario and returns its JSON result.
pub async fn run(options: &Options) -> anyhow::Result<Value> {
    let receiver = Arc::new(Receiver {
        signer: Hmac::<Sha256>::new_from_slice(options.secret.as_bytes()).context("HMAC key")?,
        received: Mutex::new(Received::default()),
    });
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let router = axum::Router::new()
        .route("/{*path}", axum::routing::post(receive))
        .with_state(receiver.clone());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let committed = Arc::new(Mutex::new(Committed::default()));
    let measured = measure(options, &committed, &receiver).await;
    server.abort();
    let measured = measured?;
    let received = receiver.received.lock().expect("lock");
    let mut latencies = latencies(&committed.lock().expect("lock"), &received.arrivals);
    let total_committed = committed.lock().expect("lock").total;
    Ok(json!({
        "scenario": "events-out", "stores": options.stores, "batch": options.batch, "target_rate": options.rate,
        "ingest_seconds": measured.ingest_seconds, "events": total_committed,
        "ingest_events_per_sec": total_committed as f64 / measured.ingest_seconds,
        "delivered_events": received.events, "webhook_requests": received.requests,
        "resent_batches": received.resent,
        "delivery_events_per_sec": received.events as f64 / measured.total_seconds,
        "catch_up_after_ingest_ms": millis(measured.catch_up),
        "lag_events": lag_summary(&measured.lag_samples, measured.ingest_seconds),
        "lag_events_max_per_second": lag_per_second(&measured.lag_samples),
        "commit_to_webhook_latency": summarize(&mut latencies),
    }))
}

/// Timings of one run; the lag sampled every 100 ms as (seconds since the start, events).
struct Measured {
    ingest_seconds: f64,
    total_seconds: f64,
    catch_up: Duration,
    lag_samples: Vec<(f64, u64)>,
}

/// Pushes for the configured time while sampling the lag, then waits for the webhook to catch up.
async fn measure(
    options: &Options,
    committed: &Arc<Mutex<Committed>>,
    receiver: &Receiver,
) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let per_store_rate = options.rate as f64 / options.stores as f64;
    let mut pushers = Vec::new();
    for index in 0..options.stores {
        let store_id = format!("{}-events-out-{index}", options.prefix);
        let (url, committed) = (options.url.clone(), committed.clone());
        let (batch, seconds) = (options.batch, options.seconds);
        pushers.push(tokio::spawn(async move {
            push_at_rate(&url, &store_id, batch, per_store_rate, seconds, &committed).await
        }));
    }
    let mut lag_samples: Vec<(f64, u64)> = Vec::new();
    let mut sampler = tokio::time::interval(Duration::from_millis(100));
    while !pushers.iter().all(tokio::task::JoinHandle::is_finished) {
        sampler.tick().await;
        lag_samples.push((started.elapsed().as_secs_f64(), lag(committed, receiver)));
    }
    for pusher in pushers {
        pusher.await??;
    }
    let ingest_seconds = started.elapsed().as_secs_f64();
    let catch_up_started = Instant::now();
    while lag(committed, receiver) > 0 {
        if catch_up_started.elapsed() > Duration::from_secs(300) {
            bail!("the webhook did not catch up within 300 s");
        }
        sampler.tick().await;
        lag_samples.push((started.elapsed().as_secs_f64(), lag(committed, receiver)));
    }
    Ok(Measured {
        ingest_seconds,
        total_seconds: started.elapsed().as_secs_f64(),
        catch_up: catch_up_started.elapsed(),
        lag_samples,
    })
}

/// The largest lag, and its median and p99 while ingest ran (after the first second).
fn lag_summary(samples: &[(f64, u64)], ingest_seconds: f64) -> Value {
    let mut steady: Vec<u64> = samples
        .iter()
        .filter(|(at, _)| *at > 1.0 && *at < ingest_seconds)
        .map(|(_, lag)| *lag)
        .collect();
    steady.sort_unstable();
    let percentile = |quantile: f64| {
        steady
            .get(((steady.len() as f64 * quantile) as usize).min(steady.len().saturating_sub(1)))
            .copied()
    };
    json!({
        "max": samples.iter().map(|(_, lag)| *lag).max().unwrap_or(0),
        "p50_while_ingesting": percentile(0.5),
        "p99_while_ingesting": percentile(0.99),
    })
}

/// The largest lag of each second, to tell a steady backlog from short stalls.
fn lag_per_second(samples: &[(f64, u64)]) -> Vec<u64> {
    let mut per_second: Vec<u64> = Vec::new();
    for (at, lag) in samples {
        let second = *at as usize;
        if per_second.len() <= second {
            per_second.resize(second + 1, 0);
        }
        per_second[second] = per_second[second].max(*lag);
    }
    per_second
}

/// Pushes acknowledged so far, per store: (last seqNum of the push, acknowledged at).
#[derive(Debug, Default)]
struct Committed {
    acks: HashMap<String, Vec<(u64, Instant)>>,
    total: u64,
}

fn lag(committed: &Mutex<Committed>, receiver: &Receiver) -> u64 {
    let committed = committed.lock().expect("lock");
    let received = receiver.received.lock().expect("lock");
    committed
        .acks
        .iter()
        .map(|(store, acks)| {
            let head = acks.last().map_or(0, |(seq, _)| *seq);
            head.saturating_sub(received.heads.get(store).copied().unwrap_or(0))
        })
        .sum()
}

/// For each received batch: from the acknowledgement of the push that committed its last event to its arrival.
fn latencies(committed: &Committed, arrivals: &[(String, u64, Instant)]) -> Vec<Duration> {
    arrivals
        .iter()
        .filter_map(|(store, last, arrived)| {
            let acks = committed.acks.get(store)?;
            let index = acks.partition_point(|(seq, _)| seq < last);
            let (_, acked) = acks.get(index)?;
            Some(arrived.saturating_duration_since(*acked))
        })
        .collect()
}

/// Pushes `rate` events per second into one store for `seconds`, up to 16 pushes in flight.
async fn push_at_rate(
    url: &str,
    store_id: &str,
    batch: u64,
    rate: f64,
    seconds: u64,
    committed: &Mutex<Committed>,
) -> anyhow::Result<()> {
    let (mut sender, mut receiver) = protocol::connect(url, store_id).await?;
    let period = Duration::from_secs_f64(batch as f64 / rate);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut in_flight: VecDeque<u64> = VecDeque::new();
    let mut next_seq = 1;
    let mut request_id = 0;
    loop {
        let sending = Instant::now() < deadline;
        if !sending && in_flight.is_empty() {
            return Ok(());
        }
        tokio::select! {
            _ = ticker.tick(), if sending && in_flight.len() < 16 => {
                let frame = protocol::push_frame(request_id, store_id, &protocol::events(next_seq, batch, 40), None);
                protocol::send(&mut sender, frame).await?;
                request_id += 1;
                next_seq += batch;
                in_flight.push_back(next_seq - 1);
            }
            frame = protocol::next_frame(&mut receiver) => match frame?.context("server closed the connection")? {
                ServerFrame::Exit { error: None, .. } => {
                    let last = in_flight.pop_front().context("an ack without a push")?;
                    let mut committed = committed.lock().expect("lock");
                    committed.acks.entry(store_id.to_owned()).or_default().push((last, Instant::now()));
                    committed.total += batch;
                }
                ServerFrame::Exit { error: Some(error), .. } => bail!("push failed: {error}"),
                _ => {}
            }
        }
    }
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let arrived = Instant::now();
    let signed = headers
        .get("x-livestore-signature")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("sha256="))
        .and_then(|hex| hex::decode(hex).ok());
    let mut mac = receiver.signer.clone();
    mac.update(&body);
    if signed.is_none_or(|signature| mac.verify_slice(&signature).is_err()) {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let (Some(store), Some(events)) = (payload["storeId"].as_str(), payload["events"].as_array())
    else {
        return StatusCode::BAD_REQUEST;
    };
    let last = events.last().and_then(|event| event["seqNum"].as_u64()).unwrap_or(0);
    let mut received = receiver.received.lock().expect("lock");
    received.requests += 1;
    let head = received.heads.entry(store.to_owned()).or_insert(0);
    if last <= *head {
        received.resent += 1;
    } else {
        let new = last - *head;
        *head = last;
        received.events += new;
        received.arrivals.push((store.to_owned(), last, arrived));
    }
    StatusCode::OK
}
