//! `machine-limits`: the physical limits of this machine that our benchmarks should be read against.
//!
//! - SHA-256 throughput of one core (what content addressing and checksum verification cost);
//! - loopback TCP throughput between two threads (what any transfer over 127.0.0.1 can reach);
//! - loopback HTTP throughput: one streamed HTTP/1.1 response body from an axum server to a reqwest client in the
//!   same process, 1 MiB chunks, no hashing and no disk (what an object GET or PUT can reach before its own work);
//! - SQLite batched insert rate into a WAL database with `synchronous=FULL`, 1,000 rows per transaction, rows
//!   shaped like stored events (what an eventlog append can reach);
//! - sequential write + fsync rate of the data disk (256 MiB in 1 MiB writes, then one fsync: what a durable object
//!   PUT can reach once the page cache has to be flushed);
//! - fsync round trips per second on the data disk (what one-commit-per-event durability can reach);
//! - the loopback fan-out floor: the time for one task to write a 400-byte message to each of 1,000 sockets until
//!   the last receiver has read it, each receiver answering with a 40-byte ack as sync clients do. No JSON, no
//!   WebSocket framing: what fan-out to 1,000 subscribers costs on this machine before any server logic.
//!
//! Prints one JSON object. `--quick` shortens every measurement.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let scale = if quick { 1 } else { 4 };
    let result = json!({
        "sha256_mb_per_second_one_core": sha256_rate(256 * scale),
        "loopback_tcp_mb_per_second": loopback_rate(512 * scale as u64)?,
        "loopback_http_mb_per_second": loopback_http_rate(512 * scale as u64)?,
        "sqlite_wal_full_inserts_per_second_batched_1000": sqlite_insert_rate(100_000 * scale)?,
        "fsyncs_per_second": fsync_rate(Duration::from_millis(500 * scale as u64))?,
        "disk_write_fsync_mb_per_second": disk_write_rate(256)?,
        "loopback_fanout_1000_last_delivery_ms": fanout_floor(1000, 20 * scale)?,
    });
    println!("{result}");
    Ok(())
}

fn sha256_rate(megabytes: usize) -> f64 {
    let block = vec![0x5au8; 1024 * 1024];
    let started = Instant::now();
    let mut hasher = Sha256::new();
    for _ in 0..megabytes {
        hasher.update(&block);
    }
    std::hint::black_box(hasher.finalize());
    megabytes as f64 * 1.048_576 / started.elapsed().as_secs_f64()
}

fn loopback_rate(megabytes: u64) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut stream, _) = listener.accept()?;
        let mut buffer = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let read = stream.read(&mut buffer)?;
            if read == 0 {
                return Ok(total);
            }
            total += read as u64;
        }
    });
    let block = vec![1u8; 256 * 1024];
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr)?;
    for _ in 0..megabytes * 4 {
        stream.write_all(&block)?;
    }
    drop(stream);
    let total = reader.join().expect("reader thread does not panic")?;
    Ok(total as f64 / 1_000_000.0 / started.elapsed().as_secs_f64())
}

fn loopback_http_rate(megabytes: u64) -> anyhow::Result<f64> {
    use futures_util::StreamExt;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let chunk = bytes::Bytes::from(vec![3u8; 1024 * 1024]);
        let app = axum::Router::new().route(
            "/blob",
            axum::routing::get(move || {
                let chunk = chunk.clone();
                async move {
                    let body = futures_util::stream::iter(
                        (0..megabytes).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
                    );
                    axum::body::Body::from_stream(body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
        let started = Instant::now();
        let mut body = client.get(format!("http://{addr}/blob")).send().await?.bytes_stream();
        let mut total = 0u64;
        while let Some(chunk) = body.next().await {
            total += chunk?.len() as u64;
        }
        let rate = total as f64 / 1_000_000.0 / started.elapsed().as_secs_f64();
        server.abort();
        anyhow::ensure!(total == megabytes * 1024 * 1024, "short body: {total} bytes");
        Ok(rate)
    })
}

fn sqlite_insert_rate(rows: usize) -> anyhow::Result<f64> {
    let dir = std::env::temp_dir().join(format!("machine-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("limits.sqlite3");
    let connection = rusqlite::Connection::open(&path)?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.execute_batch(
        "CREATE TABLE events (store_key INTEGER NOT NULL, seq_num INTEGER NOT NULL, created_at TEXT NOT NULL,
         encoded TEXT NOT NULL, PRIMARY KEY (store_key, seq_num)) STRICT, WITHOUT ROWID",
    )?;
    let encoded = r#"{"name":"v1.TodoCreated","args":{"id":"todo-000000","text":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},"seqNum":1,"parentSeqNum":0,"clientId":"bench","sessionId":"static"}"#;
    let started = Instant::now();
    let mut connection = connection;
    for batch in 0..rows / 1000 {
        let transaction = connection.transaction()?;
        {
            let mut statement = transaction
                .prepare_cached("INSERT INTO events (store_key, seq_num, created_at, encoded) VALUES (1, ?1, ?2, ?3)")?;
            for row in 0..1000 {
                statement.execute(rusqlite::params![
                    (batch * 1000 + row) as i64,
                    "2026-01-01T00:00:00.000Z",
                    encoded
                ])?;
            }
        }
        transaction.commit()?;
    }
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    drop(connection);
    std::fs::remove_dir_all(&dir)?;
    Ok(rate)
}

fn disk_write_rate(megabytes: usize) -> anyhow::Result<f64> {
    let path = std::env::temp_dir().join(format!("machine-limits-write-{}", std::process::id()));
    let block = vec![0xa5u8; 1024 * 1024];
    let started = Instant::now();
    let mut file = std::fs::File::create(&path)?;
    for _ in 0..megabytes {
        file.write_all(&block)?;
    }
    file.sync_all()?;
    let rate = megabytes as f64 * 1.048_576 / started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(rate)
}

fn fsync_rate(duration: Duration) -> anyhow::Result<f64> {
    let path = std::env::temp_dir().join(format!("machine-limits-fsync-{}", std::process::id()));
    let mut file = std::fs::File::create(&path)?;
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < duration {
        file.write_all(b"x")?;
        file.sync_data()?;
        count += 1;
    }
    std::fs::remove_file(&path)?;
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Median and p99 over `rounds` of the time until the last of `sockets` receivers has read a 400-byte message.
fn fanout_floor(sockets: usize, rounds: usize) -> anyhow::Result<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (delivered, mut deliveries) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        let mut senders = Vec::with_capacity(sockets);
        for _ in 0..sockets {
            let mut receiver = tokio::net::TcpStream::connect(addr).await?;
            let (sender, _) = listener.accept().await?;
            receiver.set_nodelay(true)?;
            sender.set_nodelay(true)?;
            let delivered = delivered.clone();
            tokio::spawn(async move {
                let mut message = [0u8; 400];
                while receiver.read_exact(&mut message).await.is_ok() {
                    let _ = delivered.send(Instant::now());
                    if receiver.write_all(&[7u8; 40]).await.is_err() {
                        break;
                    }
                }
            });
            senders.push(sender);
        }
        // Each sender socket gets its own writer task, as each WebSocket connection has one in the server.
        let mut writers = Vec::with_capacity(sockets);
        for mut sender in senders {
            let (trigger, mut triggered) = tokio::sync::mpsc::unbounded_channel::<()>();
            tokio::spawn(async move {
                let mut ack = [0u8; 40];
                while triggered.recv().await.is_some() {
                    if sender.write_all(&[1u8; 400]).await.is_err()
                        || sender.read_exact(&mut ack).await.is_err()
                    {
                        break;
                    }
                }
            });
            writers.push(trigger);
        }
        let mut samples = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let started = Instant::now();
            for writer in &writers {
                let _ = writer.send(());
            }
            let mut last = started;
            for _ in 0..sockets {
                last = deliveries.recv().await.expect("receivers run until the end");
            }
            samples.push(last.duration_since(started));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(livestore_bench::stats::summarize(&mut samples))
    })
}
