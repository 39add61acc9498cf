//! `machine-limits`: the physical limits of this machine that our benchmarks should be read against.
//!
//! - SHA-256 throughput of one core (what content addressing and checksum verification cost);
//! - loopback TCP throughput between two threads (what any transfer over 127.0.0.1 can reach);
//! - SQLite batched insert rate into a WAL database with `synchronous=FULL`, 1,000 rows per transaction, rows
//!   shaped like stored events (what an eventlog append can reach);
//! - fsync round trips per second on the data disk (what one-commit-per-event durability can reach).
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
        "sqlite_wal_full_inserts_per_second_batched_1000": sqlite_insert_rate(100_000 * scale)?,
        "fsyncs_per_second": fsync_rate(Duration::from_millis(500 * scale as u64))?,
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
                statement.execute(rusqlite::params![(batch * 1000 + row) as i64, "2026-01-01T00:00:00.000Z", encoded])?;
            }
        }
        transaction.commit()?;
    }
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    drop(connection);
    std::fs::remove_dir_all(&dir)?;
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
