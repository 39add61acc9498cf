//! Several `livestore serve` processes on one Postgres database, as behind a load balancer: JS and Rust clients on
//! different nodes converge, concurrent pushes through both nodes are serialized, the clients of a killed node
//! carry on through the other, a node that loses its database closes its sockets, and files go to one external S3.
//!
//! The cluster comes from `LIVESTORE_TEST_DATABASE_URL` (`scripts/with-postgres`, which `scripts/test` runs); the
//! outage test starts a private one, since it stops it. Without the variable these tests print a note and pass,
//! unless `LIVESTORE_REQUIRE_POSTGRES` is set.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

use crate::js_driver::{JsDriver, created};
use crate::support::*;

const CONVERGE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn js_and_rust_clients_on_different_nodes_converge() {
    let Some(url) = database_url() else { return };
    let (node_a, node_b) = (start_node(&url), start_node(&url));
    let store = unique_store("converge");
    let mut driver = JsDriver::start().await;
    driver.open("on-a", &store, &node_a.http_url(), json!({})).await;
    driver.open("on-b", &store, &node_b.http_url(), json!({})).await;
    // The Rust client (livestore-client's store and sync driver) on node B commits at the same time.
    let rust_dir = tempfile::tempdir().unwrap();
    let rust = livestore_client::Store::open(
        livestore_client::StoreOptions::new(
            &store,
            livestore_client::Storage::Dir(rust_dir.path().into()),
        ),
        livestore_client::todo::schema(),
    )
    .unwrap();
    let mut options = livestore_client::sync::DriverOptions::new(node_b.http_url());
    options.min_backoff = Duration::from_millis(100);
    let rust_sync = livestore_client::sync::start(rust.clone(), options);
    driver.commit("on-a", json!([created("a1", "from a")])).await;
    driver.commit("on-b", json!([created("b1", "from b")])).await;
    rust.commit(&livestore_client::todo::TodoCreated { id: "r1".into(), text: "from rust".into() })
        .unwrap();
    let three = |todos: &Value| todos.as_array().unwrap().len() == 3;
    driver.wait_todos("on-a", CONVERGE, three).await;
    driver.wait_todos("on-b", CONVERGE, three).await;
    driver.wait_synced("on-a").await;
    driver.wait_synced("on-b").await;

    // A raw protocol client on node B appends on top of what it pulls; a live pull on node A sees everything.
    let mut watcher = WsClient::connect(&node_a.ws_url(&store)).await;
    watcher.send(&pull_request("live", &store, true, None)).await;
    let (head, backend_id) = pull_head(&node_b, &store).await;
    assert_eq!(head, 3);
    let mut raw = WsClient::connect(&node_b.ws_url(&store)).await;
    let mut event =
        event(4, "v1.TodoCreated", json!({"id": "p1", "text": "from a protocol client"}));
    event["clientId"] = json!("raw-client");
    raw.send(&push_request("1", &store, vec![event], Some(&backend_id))).await;
    assert_eq!(raw.frame().await["exit"]["_tag"], "Success");
    assert_eq!(live_seq_nums_until(&mut watcher, 4).await, [1, 2, 3, 4]);

    let four = |todos: &Value| todos.as_array().unwrap().len() == 4;
    let on_a = driver.wait_todos("on-a", CONVERGE, four).await;
    let on_b = driver.wait_todos("on-b", CONVERGE, four).await;
    assert_eq!(on_a, on_b);
    assert!(on_a.as_array().unwrap().iter().any(|todo| todo["text"] == "from rust"), "{on_a}");
    let js_log = driver.eventlog("on-a").await;
    assert_eq!(js_log, driver.eventlog("on-b").await);

    // The Rust store holds the same log and the same rows.
    let deadline = Instant::now() + CONVERGE;
    loop {
        let status = rust.sync_status().unwrap();
        if status.upstream_head == "e4" && status.pending_count == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the Rust client did not converge: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rust_log: Vec<Value> = rust
        .events()
        .unwrap()
        .iter()
        .filter(|event| !event.client_only)
        .map(|event| {
            json!({"seqNum": event.seq_num.global, "name": &*event.name,
                   "args": serde_json::from_str::<Value>(&event.args_json).unwrap()})
        })
        .collect();
    let js_log: Vec<Value> = js_log
        .as_array()
        .unwrap()
        .iter()
        .map(|event| json!({"seqNum": event["seqNum"], "name": event["name"], "args": event["args"]}))
        .collect();
    assert_eq!(rust_log, js_log, "the Rust client holds the JS clients' log");
    let rust_todos: Vec<livestore_client::todo::Todo> =
        rust.query(&livestore_client::schema::Query::select("todos").order_by("id")).unwrap();
    let js_todos: Vec<livestore_client::todo::Todo> = serde_json::from_value(on_a).unwrap();
    assert_eq!(rust_todos, js_todos);
    rust_sync.stop().await;
    rust.shutdown().unwrap();
    driver.exit().await;
}

#[tokio::test]
async fn eight_concurrent_pushes_with_one_parent_through_two_nodes_one_wins() {
    let Some(url) = database_url() else { return };
    let nodes = [start_node(&url), start_node(&url)];
    let store = unique_store("race");
    let mut seeder = WsClient::connect(&nodes[0].ws_url(&store)).await;
    push_events(&mut seeder, &store, 0, 3, 3).await;
    for round in 0..3u64 {
        let head = 3 + round;
        let mut clients = Vec::new();
        for index in 0..8 {
            clients.push(WsClient::connect(&nodes[index % 2].ws_url(&store)).await);
        }
        // Every push is on the wire before any reply is read.
        for (index, client) in clients.iter_mut().enumerate() {
            let batch = vec![event(
                head + 1,
                "v1.TodoCreated",
                json!({"id": format!("c{index}"), "text": "x"}),
            )];
            client.send(&push_request("race", &store, batch, None)).await;
        }
        let mut successes = 0;
        let mut server_ahead = 0;
        for client in &mut clients {
            let reply = client.frame().await;
            match reply["exit"]["_tag"].as_str() {
                Some("Success") => successes += 1,
                _ => {
                    let error = &reply["exit"]["cause"]["error"];
                    assert_eq!(error["_tag"], "ServerAheadError", "{reply}");
                    assert_eq!(error["minimumExpectedNum"], json!(head + 1), "{reply}");
                    assert_eq!(error["providedNum"], json!(head), "{reply}");
                    server_ahead += 1;
                }
            }
        }
        assert_eq!((successes, server_ahead), (1, 7), "round {round}");
    }
    for node in &nodes {
        assert_eq!(pull_head(node, &store).await.0, 6);
    }
}

/// Node A dies with clients attached. The JS client reaches the nodes through a failover forwarder (what nginx
/// does with two upstreams; a JS client takes one URL), so it reconnects to node B by itself and nothing it
/// committed, before or during the failover, is lost.
#[tokio::test]
async fn clients_of_a_killed_node_carry_on_through_the_other() {
    let Some(url) = database_url() else { return };
    let mut node_a = start_node(&url);
    let node_b = start_node(&url);
    let front = Forwarder::start(vec![node_a.port, node_b.port]).await;
    let store = unique_store("failover");
    let mut driver = JsDriver::start().await;
    driver.open("front", &store, &front.http_url(), json!({})).await;
    driver.open("direct-b", &store, &node_b.http_url(), json!({})).await;
    for index in 0..5 {
        driver.commit("front", json!([created(&format!("f{index}"), "before")])).await;
    }
    driver.wait_synced("front").await;
    let mut rust = WsClient::connect(&front.ws_url(&store)).await;
    rust.send(&pull_request("live", &store, true, None)).await;
    assert_eq!(live_seq_nums_until(&mut rust, 5).await, [1, 2, 3, 4, 5]);
    assert!(front.connections_to(0) >= 2, "both clients went to node A");

    node_a.kill9();
    assert_eq!(
        rust.receive().await,
        Received::Closed(None),
        "the Rust client's socket died with node A"
    );
    for index in 5..10 {
        driver.commit("front", json!([created(&format!("f{index}"), "during failover")])).await;
    }
    driver.commit("direct-b", json!([created("b0", "on b")])).await;
    let all = |todos: &Value| todos.as_array().unwrap().len() == 11;
    let front_todos = driver.wait_todos("front", CONVERGE, all).await;
    let b_todos = driver.wait_todos("direct-b", CONVERGE, all).await;
    assert_eq!(front_todos, b_todos);
    driver.wait_synced("front").await;
    driver.wait_synced("direct-b").await;
    assert_eq!(driver.eventlog("front").await, driver.eventlog("direct-b").await);
    assert!(front.connections_to(1) >= 1, "the JS client reconnected through node B");

    // The Rust client resumes from its cursor through the forwarder, now on node B.
    let (_, backend_id) = pull_head(&node_b, &store).await;
    let mut resumed = WsClient::connect(&front.ws_url(&store)).await;
    resumed.send(&pull_request("live", &store, true, Some((&backend_id, 5)))).await;
    assert_eq!(live_seq_nums_until(&mut resumed, 11).await, (6..=11).collect::<Vec<u64>>());
    driver.exit().await;
}

/// The database stops under a node: its live pulls are closed (1013, so clients retry elsewhere), `/healthz` and
/// new sync connections get 503 instead of a stale log; when the database is back, the node serves again.
#[tokio::test]
async fn a_node_whose_database_goes_away_closes_its_sockets_instead_of_serving() {
    let Some(_) = database_url() else { return };
    let cluster = PrivateCluster::start();
    // The cluster trusts local connections, so a password in the URL is accepted and must never be logged.
    let url = cluster.url.replacen("postgres@", "postgres:never-logged-pw@", 1);
    let node = start_node(&url);
    let store = unique_store("outage");
    let mut pusher = WsClient::connect(&node.ws_url(&store)).await;
    push_events(&mut pusher, &store, 0, 4, 2).await;
    let mut watcher = WsClient::connect(&node.ws_url(&store)).await;
    watcher.send(&pull_request("live", &store, true, None)).await;
    assert_eq!(live_seq_nums_until(&mut watcher, 4).await, [1, 2, 3, 4]);

    cluster.halt();
    assert_eq!(watcher.close_code().await, Some(1013), "live pulls are closed, not left stale");
    wait_for_status(node.port, 503, Duration::from_secs(15)).await;
    let refused = tokio_tungstenite::connect_async(node.ws_url(&store)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("expected a 503 refusal, got {:?}", other.map(|_| "a connection")),
    }
    assert!(node.log().contains("lost the database"), "{}", node.log());

    cluster.resume();
    wait_for_status(node.port, 200, Duration::from_secs(30)).await;
    let mut again = WsClient::connect(&node.ws_url(&store)).await;
    again.send(&pull_request("live", &store, true, None)).await;
    assert_eq!(live_seq_nums_until(&mut again, 4).await, [1, 2, 3, 4]);
    let mut pusher = WsClient::connect(&node.ws_url(&store)).await;
    push_events(&mut pusher, &store, 4, 1, 1).await;
    assert_eq!(live_seq_nums_until(&mut again, 5).await, [5]);
    assert!(!node.log().contains("never-logged-pw"), "the database password is never logged");
}

/// Both nodes sign for one external S3 (s3s-fs): a file uploaded through node A downloads through node B.
#[tokio::test]
async fn files_uploaded_through_one_node_download_through_the_other() {
    let Some(url) = database_url() else { return };
    let Some(s3) = ExternalS3::start() else { return };
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(key, value)| (*key, value.as_str())).collect();
    let args = ["--database-url", url.as_str()];
    let node_a = TestServer::start_with(&env, &args);
    let node_b = TestServer::start_with(&env, &args);
    let http = reqwest::Client::new();
    let sign = |node: &TestServer, path: &str, body: Value| {
        http.post(format!("{}/api/v1/{path}", node.http_url())).json(&body).send()
    };
    let bytes = b"one object store behind every node".to_vec();
    let upload: Value = sign(
        &node_a,
        "sign/upload",
        json!({"key": "shared/file", "contentType": "text/plain", "contentLength": bytes.len()}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let upload_url = upload["url"].as_str().unwrap();
    assert!(upload_url.starts_with(&s3.endpoint), "{upload_url}");
    let put = http
        .put(upload_url)
        .header("content-type", "text/plain")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let download: Value = sign(&node_b, "sign/download", json!({"key": "shared/file"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fetched = reqwest::get(download["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(fetched.bytes().await.unwrap().to_vec(), bytes);
    assert!(!node_a.data_dir().join("objects").exists(), "no local object store on a node");
}

/// The shared cluster's URL, or a loud note and `None` (a failure when `LIVESTORE_REQUIRE_POSTGRES` is set).
pub fn database_url() -> Option<String> {
    match std::env::var("LIVESTORE_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("LIVESTORE_REQUIRE_POSTGRES").is_none(),
                "LIVESTORE_REQUIRE_POSTGRES is set but LIVESTORE_TEST_DATABASE_URL is not (scripts/with-postgres)"
            );
            static NOTED: std::sync::Once = std::sync::Once::new();
            NOTED.call_once(|| {
                use std::io::Write;
                let _ = std::io::stderr().write_all(
                    b"\n!!! NOTE: LIVESTORE_TEST_DATABASE_URL is not set: the multi-node Postgres tests did NOT run \
                      and pass trivially.\n!!! Run them with `scripts/with-postgres -- cargo test -p livestore-cli \
                      --test integration multinode` (scripts/test does).\n\n",
                );
            });
            None
        }
    }
}

fn start_node(url: &str) -> TestServer {
    TestServer::start_with(&[], &["--database-url", url])
}

fn unique_store(name: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{name}-{}-{}-{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst))
}

/// The head and backendId of a store as one node serves it (a non-live pull).
async fn pull_head(node: &TestServer, store: &str) -> (u64, String) {
    let mut client = WsClient::connect(&node.ws_url(store)).await;
    client.send(&pull_request("head", store, false, None)).await;
    let mut head = 0;
    let mut backend_id = String::new();
    loop {
        let frame = client.frame().await;
        if frame["_tag"] == "Exit" {
            return (head, backend_id);
        }
        backend_id = backend_id_of(&frame);
        head = chunk_seq_nums(&frame).0.last().copied().unwrap_or(head);
    }
}

/// Collects live `Chunk` sequence numbers until `until` arrived, checking they ascend without gaps.
async fn live_seq_nums_until(client: &mut WsClient, until: u64) -> Vec<u64> {
    let mut seen: Vec<u64> = Vec::new();
    while seen.last().copied().unwrap_or(0) < until {
        let frame = client.frame().await;
        if frame["_tag"] != "Chunk" {
            continue;
        }
        seen.extend(chunk_seq_nums(&frame).0);
    }
    assert!(seen.windows(2).all(|pair| pair[1] == pair[0] + 1), "{seen:?}");
    seen
}

async fn wait_for_status(port: u16, status: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let url = format!("http://127.0.0.1:{port}/healthz");
    loop {
        if let Ok(response) = reqwest::get(&url).await
            && response.status().as_u16() == status
        {
            return;
        }
        assert!(Instant::now() < deadline, "/healthz never answered {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TCP front for several nodes: each connection goes to the first node that accepts it, as a load balancer
/// with health checks would send it.
struct Forwarder {
    port: u16,
    counts: Arc<Vec<AtomicUsize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn start(backends: Vec<u16>) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts: Arc<Vec<AtomicUsize>> =
            Arc::new(backends.iter().map(|_| AtomicUsize::new(0)).collect());
        let task_counts = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let backends = backends.clone();
                let counts = task_counts.clone();
                tokio::spawn(async move {
                    for (index, backend) in backends.iter().enumerate() {
                        if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", *backend)).await
                        {
                            counts[index].fetch_add(1, Ordering::SeqCst);
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Forwarder { port, counts, task }
    }

    fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn ws_url(&self, store: &str) -> String {
        format!("ws://127.0.0.1:{}/sync?storeId={store}&transport=ws", self.port)
    }

    /// Connections forwarded to the `index`th node, HTTP health checks of the JS client included.
    fn connections_to(&self, index: usize) -> usize {
        self.counts[index].load(Ordering::SeqCst)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn with_postgres_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/with-postgres")
}

/// A cluster of this test's own, which it may stop and start.
struct PrivateCluster {
    dir: tempfile::TempDir,
    url: String,
}

impl PrivateCluster {
    fn start() -> PrivateCluster {
        let dir = tempfile::tempdir().unwrap();
        let output =
            Command::new(with_postgres_script()).arg("--start").arg(dir.path()).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let exports = String::from_utf8(output.stdout).unwrap();
        let url = exports
            .lines()
            .find_map(|line| line.strip_prefix("export LIVESTORE_TEST_DATABASE_URL="))
            .expect("with-postgres prints the URL")
            .to_owned();
        PrivateCluster { dir, url }
    }

    fn run(&self, action: &str) {
        let status =
            Command::new(with_postgres_script()).arg(action).arg(self.dir.path()).status().unwrap();
        assert!(status.success(), "with-postgres {action}");
    }

    fn halt(&self) {
        self.run("--halt");
    }

    fn resume(&self) {
        self.run("--resume");
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = Command::new(with_postgres_script()).arg("--stop").arg(self.dir.path()).status();
    }
}

/// The external S3 the nodes share: Garage when `GARAGE_BIN` is set (`scripts/install-garage`), s3s-fs from
/// `S3S_FS_BIN` (`scripts/install-s3s-fs`) otherwise, with one bucket.
struct ExternalS3 {
    endpoint: String,
    region: &'static str,
    access_key: &'static str,
    secret_key: &'static str,
    child: std::process::Child,
    _root: tempfile::TempDir,
}

const S3_BUCKET: &str = "livestore-files";
const S3_ACCESS_KEY: &str = "AKIDMULTINODE";
const S3_SECRET_KEY: &str = "multinode-secret-0123456789";
/// Garage's key ids are "GK" + 24 hex digits and its secrets 64 hex digits.
const GARAGE_ACCESS_KEY: &str = "GK00000000000000000000abcd";
const GARAGE_SECRET_KEY: &str = "00000000000000000000000000000000000000000000000000000000000000cd";

impl ExternalS3 {
    fn start() -> Option<ExternalS3> {
        if let Some(garage) =
            std::env::var_os("GARAGE_BIN").map(PathBuf::from).filter(|path| path.is_file())
        {
            return Some(Self::garage(&garage));
        }
        let Some(binary) =
            std::env::var_os("S3S_FS_BIN").map(PathBuf::from).filter(|path| path.is_file())
        else {
            assert!(
                std::env::var("LIVESTORE_REQUIRE_S3S_FS").map_or(true, |value| value != "1"),
                "LIVESTORE_REQUIRE_S3S_FS=1 but S3S_FS_BIN is not set (scripts/install-s3s-fs prints it)"
            );
            use std::io::Write;
            let _ = std::io::stderr().write_all(
                b"\n!!! NOTE: S3S_FS_BIN is not set: the multi-node files test did NOT run.\n\n",
            );
            return None;
        };
        let root = tempfile::tempdir().unwrap();
        // s3s-fs serves each directory of its root as a bucket.
        std::fs::create_dir(root.path().join(S3_BUCKET)).unwrap();
        let port = free_port();
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(root.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for_listener(port, "s3s-fs");
        Some(ExternalS3 {
            endpoint: format!("http://127.0.0.1:{port}"),
            region: "us-east-1",
            access_key: S3_ACCESS_KEY,
            secret_key: S3_SECRET_KEY,
            child,
            _root: root,
        })
    }

    /// A single-node Garage that creates its key and bucket itself (`server --single-node --default-bucket`).
    fn garage(binary: &std::path::Path) -> ExternalS3 {
        let root = tempfile::tempdir().unwrap();
        let (s3_port, rpc_port) = (free_port(), free_port());
        let config = format!(
            "metadata_dir = \"{dir}/meta\"\ndata_dir = \"{dir}/data\"\ndb_engine = \"sqlite\"\n\
             replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{secret}\"\n\n[s3_api]\n\
             s3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
             root_domain = \".s3.garage.localhost\"\n",
            dir = root.path().display(),
            secret = "cd".repeat(32),
        );
        let config_path = root.path().join("garage.toml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config_path)
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", GARAGE_ACCESS_KEY)
            .env("GARAGE_DEFAULT_SECRET_KEY", GARAGE_SECRET_KEY)
            .env("GARAGE_DEFAULT_BUCKET", S3_BUCKET)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for_listener(s3_port, "garage");
        // The bucket and key appear right after the listener; a node's first signed request would race them.
        std::thread::sleep(Duration::from_millis(500));
        ExternalS3 {
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            region: "garage",
            access_key: GARAGE_ACCESS_KEY,
            secret_key: GARAGE_SECRET_KEY,
            child,
            _root: root,
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("S3_ENDPOINT", self.endpoint.clone()),
            ("S3_REGION", self.region.to_owned()),
            ("S3_BUCKET", S3_BUCKET.to_owned()),
            ("S3_ACCESS_KEY_ID", self.access_key.to_owned()),
            ("S3_SECRET_ACCESS_KEY", self.secret_key.to_owned()),
            ("S3_FORCE_PATH_STYLE", "true".to_owned()),
        ]
    }
}

fn wait_for_listener(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for ExternalS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
