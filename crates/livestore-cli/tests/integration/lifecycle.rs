//! Process lifecycle: restarts keep the log and backendId, a lost log gets a new backendId, SIGTERM closes sockets
//! with 1012 and exits even while a client holds a request half sent, a second process cannot take the same data
//! directory, and unsafe configs refuse to start.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::support::*;

async fn backend_and_seqs(server: &TestServer, store: &str) -> (String, Vec<u64>) {
    let mut client = WsClient::connect(&server.ws_url(store)).await;
    client.send(&pull_request("0", store, false, None)).await;
    let mut seqs = Vec::new();
    let mut backend = String::new();
    loop {
        let frame = client.frame().await;
        if frame["_tag"] == "Exit" {
            return (backend, seqs);
        }
        backend = backend_id_of(&frame);
        seqs.extend(chunk_seq_nums(&frame).0);
    }
}

#[tokio::test]
async fn restart_keeps_events_and_backend_id_and_sigterm_closes_with_1012() {
    let mut server = TestServer::start();
    let mut client = WsClient::connect(&server.ws_url("keep")).await;
    push_events(&mut client, "keep", 0, 10, 4).await;
    let (backend_before, _) = backend_and_seqs(&server, "keep").await;
    let mut listener = WsClient::connect(&server.ws_url("keep")).await;
    listener.send(&pull_request("0", "keep", true, None)).await;
    listener.frame().await;
    server.stop();
    assert_eq!(listener.close_code().await, Some(1012));
    server.spawn();
    let (backend_after, seqs) = backend_and_seqs(&server, "keep").await;
    assert_eq!(backend_before, backend_after);
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
}

/// Found by the chaos test (a server that never exited after SIGTERM): graceful shutdown waited for every open
/// request, so a client that stopped in the middle of a request body kept the process alive indefinitely.
#[tokio::test]
async fn sigterm_exits_while_a_client_holds_a_request_body_half_sent() {
    use std::io::{Read, Write};
    let mut server = TestServer::start();
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stalled
        .write_all(
            b"POST /api/v1/head HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"key\":",
        )
        .unwrap();
    // The request is being served (its body reserved and read) before the signal arrives.
    let serving = |text: &str| metric_value(text, "livestore_memory_reserved_bytes") >= Some(100.0);
    wait_for_metrics(&server, "the half-sent body in flight", Duration::from_secs(10), serving)
        .await;
    let started = std::time::Instant::now();
    server.stop();
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(10), "SIGTERM took {took:?}");
    stalled.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    drop(stalled);
    server.spawn();
}

#[tokio::test]
async fn acknowledged_pushes_survive_kill_9() {
    let mut server = TestServer::start();
    let mut client = WsClient::connect(&server.ws_url("crash")).await;
    push_events(&mut client, "crash", 0, 500, 50).await;
    server.kill9();
    server.spawn();
    let (_, seqs) = backend_and_seqs(&server, "crash").await;
    assert_eq!(seqs, (1..=500).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_lost_log_gets_a_new_backend_id() {
    let mut server = TestServer::start();
    let mut client = WsClient::connect(&server.ws_url("lost")).await;
    push_events(&mut client, "lost", 0, 3, 3).await;
    let (before, _) = backend_and_seqs(&server, "lost").await;
    server.stop();
    std::fs::remove_dir_all(server.data_dir()).unwrap();
    server.spawn();
    let (after, seqs) = backend_and_seqs(&server, "lost").await;
    assert_ne!(before, after);
    assert!(seqs.is_empty());
    let mut client = WsClient::connect(&server.ws_url("lost")).await;
    client.send(&pull_request("0", "lost", true, Some((&before, 3)))).await;
    let reply = client.frame().await;
    assert_eq!(reply["exit"]["cause"]["error"]["_tag"], "BackendIdMismatchError");
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let server = TestServer::start();
    let output = Command::new(env!("CARGO_BIN_EXE_livestore"))
        .args(["serve", "--addr", &format!("127.0.0.1:{}", free_port()), "--data-dir"])
        .arg(server.data_dir())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another livestore process"), "{stderr}");
}

#[test]
fn public_bind_without_auth_and_foreign_databases_are_refused() {
    let temp = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_livestore"))
        .args(["serve", "--addr", "0.0.0.0:0", "--data-dir"])
        .arg(temp.path())
        .env_remove("LIVESTORE_AUTH_TOKENS")
        .env_remove("LIVESTORE_JWT_SECRET")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("without authentication"));

    std::fs::write(
        temp.path().join("sync.sqlite3"),
        b"this is not a database, just some bytes.....",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_livestore"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(temp.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot be used") || stderr.contains("not a database"), "{stderr}");
    // Nothing was overwritten.
    assert_eq!(
        std::fs::read(temp.path().join("sync.sqlite3")).unwrap(),
        b"this is not a database, just some bytes....."
    );

    let bad_config = temp.path().join("config.toml");
    std::fs::write(&bad_config, "adress = \"127.0.0.1:1\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_livestore"))
        .args(["serve", "--config"])
        .arg(&bad_config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("unknown field"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = json!(null);
}
