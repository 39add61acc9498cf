//! Unit tests of the proxy against small loopback targets: an echo server and a server that sends a fixed payload.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

use super::*;

const GENEROUS: Duration = Duration::from_secs(10);

/// An echo server; returns its address and a counter of accepted connections.
async fn echo_server() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 4096];
                loop {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(count) => {
                            if socket.write_all(&buffer[..count]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// A server that writes `size` bytes to every connection, then waits for the client to close.
async fn payload_server(size: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let _ = socket.write_all(&vec![7u8; size]).await;
                let mut sink = Vec::new();
                let _ = socket.read_to_end(&mut sink).await;
            });
        }
    });
    addr
}

async fn round_trip(client: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    client.write_all(message).await.unwrap();
    let mut echoed = vec![0u8; message.len()];
    timeout(GENEROUS, client.read_exact(&mut echoed)).await.expect("echo in time").unwrap();
    echoed
}

/// Reads until end of stream or error; returns the bytes and whether the stream ended with an error (a reset).
async fn read_until_closed(client: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 4096];
    loop {
        match timeout(GENEROUS, client.read(&mut buffer)).await.expect("connection ends in time") {
            Ok(0) => return (received, false),
            Ok(count) => received.extend_from_slice(&buffer[..count]),
            Err(_) => return (received, true),
        }
    }
}

async fn wait_for(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + GENEROUS;
    while !condition() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn forwards_both_ways_and_counts_bytes() {
    let (target, _) = echo_server().await;
    let proxy = FaultProxy::start(target).await.unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut client, b"hello").await, b"hello");
    let big = vec![42u8; 1 << 20];
    assert_eq!(round_trip(&mut client, &big).await, big);
    let stats = proxy.stats();
    assert_eq!(stats.connections_accepted, 1);
    assert_eq!(stats.bytes_upstream, 5 + (1 << 20));
    assert_eq!(stats.bytes_downstream, 5 + (1 << 20));
    assert_eq!(stats.faults_injected, 0);
    assert_eq!(stats.connections_cut, 0);
}

#[tokio::test]
async fn half_close_is_passed_on() {
    let target = payload_server(1000).await;
    let proxy = FaultProxy::start(target).await.unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client.shutdown().await.unwrap();
    let (received, reset) = read_until_closed(&mut client).await;
    assert_eq!(received.len(), 1000);
    assert!(!reset);
    assert_eq!(proxy.stats().connections_cut, 0);
}

#[tokio::test]
async fn delay_adds_latency_in_each_direction() {
    let (target, _) = echo_server().await;
    let proxy = FaultProxy::start(target).await.unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut client, b"warm").await;
    proxy.set_delay(Duration::from_millis(150));
    let started = Instant::now();
    round_trip(&mut client, b"slow").await;
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    proxy.set_delay(Duration::ZERO);
    assert_eq!(proxy.stats().faults_injected, 1);
}

#[tokio::test]
async fn stall_holds_bytes_without_closing_and_resume_delivers_them() {
    let (target, _) = echo_server().await;
    let proxy = FaultProxy::start(target).await.unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut client, b"before").await;
    proxy.stall();
    client.write_all(b"during").await.unwrap();
    let mut buffer = [0u8; 6];
    assert!(
        timeout(Duration::from_millis(300), client.read(&mut buffer)).await.is_err(),
        "nothing may arrive during a stall"
    );
    proxy.resume();
    timeout(GENEROUS, client.read_exact(&mut buffer)).await.unwrap().unwrap();
    assert_eq!(&buffer, b"during");
    assert_eq!(proxy.stats().connections_cut, 0);
}

#[tokio::test]
async fn cut_all_resets_live_connections_and_new_ones_work() {
    let (target, _) = echo_server().await;
    let proxy = FaultProxy::start(target).await.unwrap();
    let mut first = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut second = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut first, b"a").await;
    round_trip(&mut second, b"b").await;
    assert_eq!(proxy.cut_all(), 2);
    for client in [&mut first, &mut second] {
        let (received, _) = read_until_closed(client).await;
        assert!(received.is_empty());
    }
    wait_for(|| proxy.open_connections() == 0).await;
    assert_eq!(proxy.stats().connections_cut, 2);
    let mut third = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut third, b"c").await, b"c");
}

#[tokio::test]
async fn close_style_ends_streams_cleanly() {
    let (target, _) = echo_server().await;
    let proxy = FaultProxy::start(target).await.unwrap();
    proxy.set_cut_style(CutStyle::Close);
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut client, b"x").await;
    proxy.cut_all();
    let (received, reset) = read_until_closed(&mut client).await;
    assert!(received.is_empty());
    assert!(!reset, "a close-style cut is an orderly end of stream");
}

#[tokio::test]
async fn cut_after_bytes_forwards_exactly_that_many() {
    let target = payload_server(100_000).await;
    let proxy = FaultProxy::start(target).await.unwrap();
    proxy.stall();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    wait_for(|| proxy.open_connections() == 1).await;
    assert_eq!(proxy.cut_all_after_bytes(12_345), 1);
    proxy.resume();
    let (received, _) = read_until_closed(&mut client).await;
    assert_eq!(received.len(), 12_345);
    wait_for(|| proxy.stats().connections_cut == 1).await;
}

#[tokio::test]
async fn new_connection_byte_limit_cuts_every_new_connection() {
    let target = payload_server(50_000).await;
    let proxy = FaultProxy::start(target).await.unwrap();
    proxy.set_new_connection_byte_limit(Some(1_000));
    for _ in 0..3 {
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        let (received, _) = read_until_closed(&mut client).await;
        assert_eq!(received.len(), 1_000);
    }
    proxy.set_new_connection_byte_limit(None);
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut all = vec![0u8; 50_000];
    timeout(GENEROUS, client.read_exact(&mut all)).await.unwrap().unwrap();
    wait_for(|| proxy.stats().connections_cut == 3).await;
}

#[tokio::test]
async fn blackhole_accepts_but_never_answers_or_connects_upstream() {
    let (target, upstream_accepted) = echo_server().await;
    let proxy = FaultProxy::start(target).await.unwrap();
    proxy.set_blackhole(true);
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client.write_all(b"anyone?").await.unwrap();
    let mut buffer = [0u8; 7];
    assert!(timeout(Duration::from_millis(300), client.read(&mut buffer)).await.is_err());
    assert_eq!(upstream_accepted.load(Ordering::SeqCst), 0);
    assert_eq!(proxy.stats().connections_blackholed, 1);
    // Lifting the blackhole does not revive the held connection; new ones work.
    proxy.set_blackhole(false);
    let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut fresh, b"hi").await, b"hi");
    proxy.cut_all();
    let (received, _) = read_until_closed(&mut client).await;
    assert!(received.is_empty());
}

#[tokio::test]
async fn refuse_resets_new_connections() {
    let (target, upstream_accepted) = echo_server().await;
    let proxy = FaultProxy::start(target).await.unwrap();
    proxy.set_refuse(true);
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    let (received, _) = read_until_closed(&mut client).await;
    assert!(received.is_empty());
    assert_eq!(upstream_accepted.load(Ordering::SeqCst), 0);
    assert_eq!(proxy.stats().connections_refused, 1);
}

#[tokio::test]
async fn max_lifetime_recycles_connections() {
    let (target, _) = echo_server().await;
    let proxy = FaultProxy::start(target).await.unwrap();
    proxy.set_max_lifetime(Some(Duration::from_millis(200)));
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut client, b"young").await;
    let started = Instant::now();
    let (_, _) = read_until_closed(&mut client).await;
    assert!(started.elapsed() < GENEROUS);
    wait_for(|| proxy.stats().connections_cut == 1).await;
    // Lifting the limit lets connections live.
    proxy.set_max_lifetime(None);
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(round_trip(&mut client, b"old").await, b"old");
}

#[tokio::test]
async fn an_unreachable_target_resets_clients_and_is_counted() {
    let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = unused.local_addr().unwrap();
    drop(unused);
    let proxy = FaultProxy::start(target).await.unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    let (received, _) = read_until_closed(&mut client).await;
    assert!(received.is_empty());
    wait_for(|| proxy.stats().upstream_connect_failures == 1).await;
}

#[tokio::test]
async fn jitter_is_fixed_per_connection_and_reproducible_by_seed() {
    let (target, _) = echo_server().await;
    let mut latencies = Vec::new();
    for _ in 0..2 {
        let proxy = FaultProxy::start_seeded(target, 42).await.unwrap();
        proxy.set_jitter(Duration::from_millis(500));
        let mut run = Vec::new();
        for _ in 0..3 {
            let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
            let started = Instant::now();
            round_trip(&mut client, b"j").await;
            run.push(started.elapsed());
        }
        latencies.push(run);
    }
    // Same seed, same per-connection jitter: latencies agree within scheduling noise.
    for (first, second) in latencies[0].iter().zip(&latencies[1]) {
        let difference = first.abs_diff(*second);
        assert!(difference < Duration::from_millis(150), "{latencies:?}");
    }
}

#[tokio::test]
async fn heal_removes_faults_and_dropping_the_proxy_closes_everything() {
    let (target, _) = echo_server().await;
    let proxy = FaultProxy::start(target).await.unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut client, b"1").await;
    proxy.set_delay(Duration::from_secs(30));
    proxy.stall();
    proxy.heal();
    assert_eq!(round_trip(&mut client, b"2").await, b"2");
    drop(proxy);
    let (received, _) = read_until_closed(&mut client).await;
    assert!(received.is_empty());
}
