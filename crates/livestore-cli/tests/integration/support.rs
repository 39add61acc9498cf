//! Test harness: a real `livestore serve` process on a free loopback port, and a raw protocol client.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expected frame may take.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `livestore serve`.
pub struct TestServer {
    pub port: u16,
    pub data_dir: PathBuf,
    env: Vec<(String, String)>,
    /// Extra `livestore serve` arguments (e.g. `--database-url`).
    args: Vec<String>,
    child: Option<Child>,
    log_path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

/// A free port below the kernel's ephemeral range (32768+), so that no outgoing client socket of a concurrent test
/// can hold it by the time the server binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 6_000) as u16 * 2,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 20_000 + (port - 20_000) % 12_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl TestServer {
    /// Starts a server with a fresh data dir and no auth.
    pub fn start() -> TestServer {
        Self::start_with_env(&[])
    }

    /// Starts a server with extra environment variables (e.g. auth tokens).
    pub fn start_with_env(env: &[(&str, &str)]) -> TestServer {
        Self::start_with(env, &[])
    }

    /// Starts a server with extra environment variables and extra `livestore serve` arguments.
    pub fn start_with(env: &[(&str, &str)], args: &[&str]) -> TestServer {
        let temp = tempfile::tempdir().unwrap();
        let data_dir = temp.path().join("data");
        let log_path = temp.path().join("server.log");
        let mut server = TestServer {
            port: free_port(),
            data_dir,
            env: env.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect(),
            args: args.iter().map(|arg| arg.to_string()).collect(),
            child: None,
            log_path,
            _temp: Some(temp),
        };
        server.spawn();
        server
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ws_url(&self, store_id: &str) -> String {
        format!("ws://127.0.0.1:{}/sync?storeId={store_id}&transport=ws", self.port)
    }

    /// Starts the process (again) on the same port and data dir and waits until it answers.
    pub fn spawn(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_livestore"));
        command
            .args(["serve", "--addr", &format!("127.0.0.1:{}", self.port), "--data-dir"])
            .arg(&self.data_dir)
            .args(&self.args)
            .env_remove("LIVESTORE_DATABASE_URL")
            .env_remove("LIVESTORE_AUTH_TOKENS")
            .env_remove("LIVESTORE_JWT_SECRET")
            .env_remove("LIVESTORE_JWKS_URL")
            .env_remove("LIVESTORE_JWT_ISSUER")
            .env_remove("LIVESTORE_JWT_AUDIENCE")
            .env_remove("LIVESTORE_HOOKS_SECRET")
            .env_remove("LIVESTORE_CONFIG")
            .env_remove("S3_ENDPOINT")
            .env("LIVESTORE_LOG", "info,livestore_server=debug")
            .stdout(Stdio::null())
            .stderr(log);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        self.child = Some(command.spawn().expect("the livestore binary starts"));
        wait_until_healthy(self.port, self.child.as_mut().unwrap(), &self.log_path);
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
            let status = wait_with_timeout(&mut child, Duration::from_secs(15))
                .expect("server exits after SIGTERM");
            assert!(status.success(), "server exited with {status}; log:\n{}", self.log());
        }
    }

    /// SIGKILL: nothing gets flushed that was not already durable.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The server process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory of the server process in KiB (`VmRSS` from `/proc`), while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// A server with a config file; the returned temp dir holds the config (and whatever else the test puts there).
pub fn server_with_config(config: &str, env: &[(&str, &str)]) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("livestore.toml");
    std::fs::write(&path, config).unwrap();
    let mut all_env = vec![("LIVESTORE_CONFIG", path.to_str().unwrap().to_owned())];
    all_env.extend(env.iter().map(|(key, value)| (*key, (*value).to_owned())));
    let all_env: Vec<(&str, &str)> =
        all_env.iter().map(|(key, value)| (*key, value.as_str())).collect();
    (TestServer::start_with_env(&all_env), dir)
}

/// The code block after `<!-- tested: {name} -->` in `file` (relative to the repository root): documentation whose
/// examples the tests run.
pub fn doc_snippet(file: &str, name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{file}: {error}"));
    let marker = format!("<!-- tested: {name} -->");
    let start = text.find(&marker).unwrap_or_else(|| panic!("{file} has no {marker}"));
    let mut lines =
        text[start + marker.len()..].lines().skip_while(|line| !line.starts_with("```"));
    lines.next();
    lines.take_while(|line| !line.starts_with("```")).collect::<Vec<_>>().join("\n")
}

/// The sync URL's `payload` parameter for a token (JSON, encodeURIComponent'ed, then query-encoded).
pub fn payload_param(token: &str) -> String {
    let escape = |text: &str| -> String {
        text.bytes()
            .map(|byte| match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (byte as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect()
    };
    escape(&escape(&json!({ "authToken": token }).to_string()))
}

/// The value of a metric line (`name{labels} value`) in a `/metrics` text; `None` when absent.
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.split_whitespace().next() == Some(series))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
}

/// The server's `/metrics` text.
pub async fn scrape(server: &TestServer) -> String {
    let url = format!("{}/metrics", server.http_url());
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// Polls `/metrics` until `condition` holds and returns that text; fails naming `what` after `timeout`.
pub async fn wait_for_metrics(
    server: &TestServer,
    what: &str,
    timeout: Duration,
    condition: impl Fn(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let text = scrape(server).await;
        if condition(&text) {
            return text;
        }
        assert!(std::time::Instant::now() < deadline, "no {what} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            // The temp dir goes away with the server: keep its log for the failure report.
            let dir = Path::new(env!("CARGO_BIN_EXE_livestore"))
                .ancestors()
                .nth(2)
                .map_or_else(std::env::temp_dir, Path::to_path_buf)
                .join("test-artifacts/server-logs");
            let kept = dir.join(format!("server-{}-{}.log", self.port, std::process::id()));
            if std::fs::create_dir_all(&dir).is_ok() && std::fs::copy(&self.log_path, &kept).is_ok()
            {
                eprintln!("server log kept in {}", kept.display());
            }
        }
    }
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

fn wait_until_healthy(port: u16, child: &mut Child, log_path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "server exited early with {status}:\n{}",
                std::fs::read_to_string(log_path).unwrap_or_default()
            );
        }
        if healthz_ok(port) {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("server did not start listening on {port}");
}

fn healthz_ok(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

/// A raw protocol client over one WebSocket.
pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the server did to the connection instead of sending a frame.
#[derive(Debug, PartialEq)]
pub enum Received {
    Frame(Value),
    Closed(Option<u16>),
}

impl WsClient {
    pub async fn connect(url: &str) -> WsClient {
        let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("WebSocket connects");
        WsClient { socket }
    }

    /// Connects with a prepared request (e.g. extra headers); a refused upgrade is its status and body.
    pub async fn try_connect(
        request: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
    ) -> Result<WsClient, (u16, String)> {
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(WsClient { socket }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body = response.body().as_deref().unwrap_or_default();
                Err((response.status().as_u16(), String::from_utf8_lossy(body).into_owned()))
            }
            Err(other) => panic!("WebSocket connect failed: {other}"),
        }
    }

    /// Connects with a larger outgoing frame allowance (tungstenite's default is 16 MiB, which is enough).
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.socket.send(Message::Text(text.into().into())).await.expect("frame sent");
    }

    pub async fn send(&mut self, value: &Value) {
        self.send_text(value.to_string()).await;
    }

    /// The next frame or close, skipping `Pong`s; panics after [`FRAME_TIMEOUT`].
    pub async fn receive(&mut self) -> Received {
        loop {
            let message = tokio::time::timeout(FRAME_TIMEOUT, self.socket.next())
                .await
                .expect("a frame within the timeout");
            match message {
                None => return Received::Closed(None),
                Some(Err(_)) => return Received::Closed(None),
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).expect("server frames are JSON");
                    if value["_tag"] == "Pong" {
                        continue;
                    }
                    return Received::Frame(value);
                }
                Some(Ok(Message::Close(frame))) => {
                    return Received::Closed(frame.map(|frame| u16::from(frame.code)));
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Waits for the next `Pong`; any other frame before it fails the test. Frames are handled in order, so the
    /// `Pong` proves everything sent before its `Ping` was handled.
    pub async fn pong(&mut self) {
        let text = tokio::time::timeout(FRAME_TIMEOUT, self.socket.next())
            .await
            .expect("a Pong within the timeout");
        match text {
            Some(Ok(Message::Text(text))) => {
                assert!(text.contains(r#""_tag":"Pong""#), "expected a Pong, got {text}")
            }
            other => panic!("expected a Pong, got {other:?}"),
        }
    }

    pub async fn frame(&mut self) -> Value {
        match self.receive().await {
            Received::Frame(value) => value,
            Received::Closed(code) => panic!("expected a frame, connection closed with {code:?}"),
        }
    }

    /// Asserts nothing arrives for `quiet` and the connection stays open: a close or a reset is not silence (it
    /// would hide a server that dropped the socket instead of, say, stopping a pull).
    pub async fn expect_silence(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(text)))) => {
                    assert!(text.contains(r#""_tag":"Pong""#), "expected silence, got {text}");
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                Ok(other) => panic!("expected silence on an open connection, got {other:?}"),
            }
        }
    }

    pub async fn close_code(&mut self) -> Option<u16> {
        match self.receive().await {
            Received::Closed(code) => code,
            Received::Frame(value) => panic!("expected close, got {value}"),
        }
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }

    /// Sends without asserting success: the server may already have dropped the connection.
    pub async fn try_send_text(&mut self, text: String) -> bool {
        self.socket.send(Message::Text(text.into())).await.is_ok()
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.socket.send(message).await.expect("frame sent");
    }
}

#[allow(dead_code)]
pub const NORMAL_CLOSE: CloseCode = CloseCode::Normal;

pub fn event(seq: u64, name: &str, args: Value) -> Value {
    json!({"name": name, "args": args, "seqNum": seq, "parentSeqNum": seq - 1, "clientId": "client-test", "sessionId": "static"})
}

pub fn events(first: u64, count: u64) -> Vec<Value> {
    (first..first + count)
        .map(|seq| event(seq, "v1.TodoCreated", json!({"id": format!("t{seq}"), "text": "x"})))
        .collect()
}

pub fn push_request(id: &str, store: &str, batch: Vec<Value>, backend_id: Option<&str>) -> Value {
    let backend = match backend_id {
        Some(value) => json!({"_tag": "Some", "value": value}),
        None => json!({"_tag": "None"}),
    };
    json!({"_tag": "Request", "id": id, "tag": "SyncWsRpc.Push", "payload": {"storeId": store, "batch": batch, "backendId": backend}, "headers": []})
}

pub fn pull_request(id: &str, store: &str, live: bool, cursor: Option<(&str, u64)>) -> Value {
    let cursor = match cursor {
        Some((backend, seq)) => {
            json!({"_tag": "Some", "value": {"backendId": backend, "eventSequenceNumber": seq}})
        }
        None => json!({"_tag": "None"}),
    };
    json!({"_tag": "Request", "id": id, "tag": "SyncWsRpc.Pull", "payload": {"storeId": store, "live": live, "cursor": cursor}, "headers": []})
}

/// Sequence numbers in one `Chunk` frame, in order, with its pageInfo tag.
pub fn chunk_seq_nums(frame: &Value) -> (Vec<u64>, String) {
    assert_eq!(frame["_tag"], "Chunk", "expected a Chunk, got {frame}");
    let mut seqs = Vec::new();
    let mut page_info = String::new();
    for value in frame["values"].as_array().unwrap() {
        for item in value["batch"].as_array().unwrap() {
            seqs.push(item["eventEncoded"]["seqNum"].as_u64().unwrap());
        }
        page_info = value["pageInfo"]["_tag"].as_str().unwrap().to_owned();
    }
    (seqs, page_info)
}

pub fn backend_id_of(frame: &Value) -> String {
    frame["values"][0]["backendId"].as_str().unwrap().to_owned()
}

/// Pushes `count` events in batches of `batch_size` starting after `head`, awaiting each ack.
pub async fn push_events(
    client: &mut WsClient,
    store: &str,
    head: u64,
    count: u64,
    batch_size: u64,
) -> u64 {
    let mut next = head + 1;
    let mut request = 0;
    while next <= head + count {
        let size = batch_size.min(head + count - next + 1);
        request += 1;
        client.send(&push_request(&format!("p{request}"), store, events(next, size), None)).await;
        let reply = loop {
            let frame = client.frame().await;
            // Echoes to this connection's own live pull may arrive before the ack.
            if frame["_tag"] != "Chunk" {
                break frame;
            }
        };
        assert_eq!(reply["exit"]["_tag"], "Success", "{reply}");
        next += size;
    }
    head + count
}

pub async fn http_post(url: &str, body: impl Into<String>) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.into())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}
