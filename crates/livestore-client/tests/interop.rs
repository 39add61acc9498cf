//! End-to-end tests against real sync servers: our `livestore serve` binary and the reference
//! `@livestore/sync-cf` 0.4.0 Cloudflare worker (`bench/reference-server`, `wrangler dev --local`), with the
//! `todo` CLI and a real JavaScript LiveStore 0.4.0 client (tests/js/driver.mjs): concurrent and offline commits,
//! server restarts and a backend reset.
//!
//! The server and `todo` binaries are built on demand (`cargo build -p livestore-cli -p livestore-client-tools`;
//! `todo` lives in another package, so cargo does not build it for this crate's tests); the reference worker
//! installs its pinned npm packages on first use. The JavaScript client needs `tests/js/node_modules` (`npm ci` in
//! tests/js, which `scripts/test` runs); without it a test fails, unless `LIVESTORE_ALLOW_MISSING_JS=1` lets it
//! check the Rust clients alone.

use std::io::{BufRead, BufReader, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use livestore_client::schema::Query;
use livestore_client::todo::{self, Todo};
use livestore_client::{Storage, Store, StoreOptions};
use serde_json::{Value, json};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Builds the `livestore` server and the `todo` CLI once per test process.
fn build_binaries() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "livestore-cli", "--bin", "livestore"])
            .args(["-p", "livestore-client-tools", "--bin", "todo"])
            .current_dir(workspace_root())
            .status()
            .unwrap();
        assert!(status.success(), "building livestore-cli and livestore-client-tools failed");
    });
}

fn server_binary() -> PathBuf {
    build_binaries();
    target_dir().join("debug/livestore")
}

fn todo_binary() -> PathBuf {
    build_binaries();
    target_dir().join("debug/todo")
}

/// Cargo's target directory for this workspace.
fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"))
}

struct Server {
    child: Child,
    port: u16,
    data_dir: PathBuf,
    binary: PathBuf,
}

impl Server {
    fn start(binary: &Path, data_dir: &Path, port: Option<u16>) -> Server {
        let port = port.unwrap_or_else(|| {
            TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
        });
        let child = Command::new(binary)
            .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, port, data_dir: data_dir.to_owned(), binary: binary.to_owned() }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.stop();
        *self = Server::start(&self.binary.clone(), &self.data_dir.clone(), Some(self.port));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs the `todo` binary; returns (exit success, stdout).
fn todo_cli(data_dir: &Path, store: &str, url: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(todo_binary())
        .args(["--store", store, "--server", url, "--data-dir"])
        .arg(data_dir)
        // A default timeout unless the caller gives one (clap refuses the flag twice).
        .args(if args.contains(&"--timeout") { &[][..] } else { &["--timeout", "30"][..] })
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stderr.trim().is_empty() {
        // Shown with the test's output when it fails: why a command failed is on stderr.
        eprintln!("todo {args:?} ({}): {}", output.status, stderr.trim());
    }
    (output.status.success(), String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn rust_state(data_dir: &Path, store: &str) -> (Vec<Todo>, Vec<Value>) {
    let store =
        Store::open(StoreOptions::new(store, Storage::Dir(data_dir.to_owned())), todo::schema())
            .unwrap();
    let todos: Vec<Todo> = store.query(&Query::select("todos").order_by("id")).unwrap();
    let events = store
        .events()
        .unwrap()
        .into_iter()
        .filter(|event| !event.client_only)
        .map(|event| {
            json!({
                "seqNum": event.seq_num.global, "parentSeqNum": event.parent_seq_num.global, "name": &*event.name,
                "args": serde_json::from_str::<Value>(&event.args_json).unwrap(),
                "clientId": &*event.client_id, "sessionId": &*event.session_id,
            })
        })
        .collect();
    store.shutdown().unwrap();
    (todos, events)
}

struct JsDriver {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl JsDriver {
    fn start() -> Option<JsDriver> {
        let js_dir = workspace_root().join("tests/js");
        if !js_dir.join("node_modules").exists() {
            // A half-run test must not pass silently: only an explicit opt-out allows it.
            assert!(
                std::env::var("LIVESTORE_ALLOW_MISSING_JS").as_deref() == Ok("1"),
                "tests/js/node_modules is missing: run `npm ci` in tests/js (or scripts/test), or set \
                 LIVESTORE_ALLOW_MISSING_JS=1 to check the Rust clients alone"
            );
            eprintln!("NOTE: tests/js/node_modules missing: checking the Rust clients alone");
            return None;
        }
        // With node_modules present, a driver that cannot start is a failure, not the opt-out above: `None` here
        // would check the Rust clients alone and pass.
        let mut child = Command::new("node")
            .arg("driver.mjs")
            .current_dir(&js_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // `LIVESTORE_JS_LOG=FILE` keeps the JS client's own log (with `LS_DRIVER_LOG_LEVEL=Debug` for more).
            .stderr(match std::env::var_os("LIVESTORE_JS_LOG") {
                Some(path) => {
                    Stdio::from(std::fs::File::create(path).expect("LIVESTORE_JS_LOG file"))
                }
                None => Stdio::null(),
            })
            .spawn()
            .expect("node runs tests/js/driver.mjs (node 20 or newer must be on PATH)");
        let stdin = child.stdin.take().expect("driver stdin");
        let stdout = BufReader::new(child.stdout.take().expect("driver stdout"));
        Some(JsDriver { child, stdin, stdout, next_id: 1 })
    }

    fn call(&mut self, command: Value) -> Value {
        let text = command.to_string();
        match self.try_call(command) {
            Ok(result) => result,
            Err(error) => panic!("driver command {text} failed: {error}"),
        }
    }

    /// Runs a command; `Err` carries the driver's error message.
    fn try_call(&mut self, mut command: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        writeln!(self.stdin, "{command}").unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            assert!(self.stdout.read_line(&mut line).unwrap() > 0, "driver exited");
            let response: Value = serde_json::from_str(&line).unwrap();
            if response["id"] == json!(id) {
                return if response["ok"] == json!(true) {
                    Ok(response["result"].clone())
                } else {
                    Err(response["error"].as_str().unwrap_or_default().to_owned())
                };
            }
        }
    }
}

/// The JS client of the reference-worker test, on disk, restarted when LiveStore 0.4.0 stops on an upstream error.
///
/// Against the reference worker, a LiveStore 0.4.0 Node client sometimes receives an event it already has and its
/// leader stops with "Incoming events must be greater than upstream head" (seen in about a third of the runs here,
/// with or without Rust clients pushing at that moment; never against `livestore serve`, which sends each event once
/// per pull). The test opens the client with `onSyncError: "shutdown"` so such a stop is seen, not silently left
/// wedged, and restarts it from its data directory, as an app would: persisted and pending events survive, and the
/// restarted client pulls what it is missing. Restarts are counted and printed.
struct ReferenceJsClient {
    js: JsDriver,
    dir: tempfile::TempDir,
    store: String,
    url: String,
    restarts: usize,
}

impl ReferenceJsClient {
    const MAX_RESTARTS: usize = 5;

    fn open(js: JsDriver, store: &str, url: &str) -> ReferenceJsClient {
        let mut client = ReferenceJsClient {
            js,
            dir: tempfile::tempdir().unwrap(),
            store: store.to_owned(),
            url: url.to_owned(),
            restarts: 0,
        };
        let open = client.open_command();
        client.js.call(open);
        client
    }

    fn open_command(&self) -> Value {
        json!({"cmd": "open", "name": "js", "storeId": self.store, "url": self.url, "storage": "fs",
               "dir": self.dir.path(), "onSyncError": "shutdown"})
    }

    /// Runs `command`; when the client stopped on an upstream error, restarts it and runs `command` again.
    fn call(&mut self, command: &Value) -> Value {
        loop {
            match self.js.try_call(command.clone()) {
                Ok(result) => return result,
                Err(error) => self.restart_after(&error, command),
            }
        }
    }

    /// Restarts the client from disk after `error`, if the client stopped and restarts are left; else panics.
    fn restart_after(&mut self, error: &str, command: &Value) {
        assert!(
            error.contains("shut down") && self.restarts < Self::MAX_RESTARTS,
            "driver command {command} failed: {error}"
        );
        self.restarts += 1;
        eprintln!(
            "NOTE: LiveStore 0.4.0 stopped against the reference worker ({error}); restart {} from disk",
            self.restarts
        );
        let open = self.open_command();
        self.js.call(open);
    }

    /// Commits `event` unless the client's eventlog (pending included) already holds an event with its name and id,
    /// then waits until it is synced. A commit the client accepted before it stopped is on disk and is pushed after
    /// the restart, so it is not committed twice.
    fn commit_once(&mut self, event: &Value) {
        let id = event["args"]["id"].clone();
        let name = event["name"].clone();
        loop {
            let log = self.call(&json!({"cmd": "eventlog", "name": "js", "includePending": true}));
            let held = ["events", "pending"].iter().any(|part| {
                log[part].as_array().is_some_and(|events| {
                    events.iter().any(|held| held["name"] == name && held["args"]["id"] == id)
                })
            });
            if !held {
                self.call(&json!({"cmd": "commit", "name": "js", "events": [event.clone()]}));
            }
            let wait = json!({"cmd": "waitSynced", "name": "js", "timeoutMs": 60000});
            match self.js.try_call(wait.clone()) {
                Ok(_) => return,
                // After the restart the loop looks again: the commit may or may not have reached the disk.
                Err(error) => self.restart_after(&error, &wait),
            }
        }
    }
}

impl Drop for JsDriver {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, r#"{{"id":0,"cmd":"exit"}}"#);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

fn create(id: &str, text: &str) -> Value {
    json!({ "name": "v1.TodoCreated", "args": { "id": id, "text": text } })
}

#[test]
fn rust_and_js_clients_converge_through_offline_restart_and_backend_reset() {
    let binary = server_binary();
    let server_dir = tempfile::tempdir().unwrap();
    let rust_dir = tempfile::tempdir().unwrap();
    let rust_b_dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&binary, server_dir.path(), None);
    let store = "interop";
    let url = server.url();
    let mut js = JsDriver::start();
    if let Some(js) = &mut js {
        js.call(
            json!({"cmd": "open", "name": "js", "storeId": store, "url": url, "storage": "memory"}),
        );
    }

    // Concurrent commits on both sides, then sync: conflicts are rebased, nobody loses an event.
    let (ok, rust_id) = todo_cli(rust_dir.path(), store, &url, &["add", "from rust"]);
    assert!(ok);
    assert!(todo_cli(rust_b_dir.path(), store, &url, &["add", "from rust b"]).0);
    if let Some(js) = &mut js {
        js.call(json!({"cmd": "commit", "name": "js", "events": [create("js-1", "from js"), create("js-2", "second")]}));
    }
    let (ok, status) = todo_cli(rust_dir.path(), store, &url, &["sync"]);
    assert!(ok, "sync failed: {status}");
    assert!(todo_cli(rust_b_dir.path(), store, &url, &["sync"]).0);

    // Offline: the server goes away; both sides keep committing.
    server.stop();
    assert!(todo_cli(rust_dir.path(), store, &url, &["complete", &rust_id]).0);
    assert!(todo_cli(rust_dir.path(), store, &url, &["add", "offline rust"]).0);
    let (ok, status) = todo_cli(rust_dir.path(), store, &url, &["--timeout", "2", "sync"]);
    assert!(!ok, "sync must fail while the server is down");
    // It failed as a sync does (status printed, the offline commits pending), not on its arguments.
    let status: Value = serde_json::from_str(&status).expect("sync prints its status");
    assert_eq!(status["pendingSyncedCount"], 2, "{status}");
    if let Some(js) = &mut js {
        js.call(json!({"cmd": "commit", "name": "js", "events": [
            {"name": "v1.TodoCompleted", "args": {"id": "js-1"}},
            {"name": "v1.TodoDeleted", "args": {"id": "js-2", "deletedAt": "2026-01-02T03:04:05.678Z"}},
        ]}));
    }

    // Back online (same data, same backend id): everything converges.
    server.restart();
    assert!(todo_cli(rust_dir.path(), store, &url, &["sync"]).0);
    if let Some(js) = &mut js {
        js.call(json!({"cmd": "waitSynced", "name": "js", "timeoutMs": 60000}));
    }
    assert!(todo_cli(rust_dir.path(), store, &url, &["sync"]).0);
    assert!(todo_cli(rust_b_dir.path(), store, &url, &["sync"]).0);
    let (rust_todos, rust_events) = rust_state(rust_dir.path(), store);
    let (rust_b_todos, rust_b_events) = rust_state(rust_b_dir.path(), store);
    assert_eq!(rust_todos, rust_b_todos);
    assert_eq!(rust_events, rust_b_events);
    let expected = if js.is_some() { 5 } else { 3 };
    assert_eq!(rust_todos.len(), expected, "{rust_todos:?}");
    if let Some(js) = &mut js {
        let js_todos: Vec<Todo> =
            serde_json::from_value(js.call(json!({"cmd": "todos", "name": "js"}))).unwrap();
        assert_eq!(js_todos, rust_todos);
        let js_events = js.call(json!({"cmd": "eventlog", "name": "js"}));
        assert_eq!(js_events, Value::Array(rust_events.clone()));
        assert!(
            rust_todos
                .iter()
                .any(|todo| todo.id == "js-2" && todo.deleted_at == Some(1_767_323_045_678))
        );
    }
    let (_, listed) = todo_cli(rust_dir.path(), store, &url, &["list", "--offline"]);
    let listed: Vec<Todo> = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed, rust_todos);

    // Backend reset: the server loses its data and gets a new backend id; the Rust client wipes and resyncs.
    drop(js);
    server.stop();
    std::fs::remove_dir_all(server_dir.path()).unwrap();
    std::fs::create_dir_all(server_dir.path()).unwrap();
    server.restart();
    let (ok, status) = todo_cli(rust_dir.path(), store, &url, &["sync"]);
    assert!(ok, "sync after reset failed: {status}");
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["upstreamHead"], "e0");
    let (todos_after_reset, events_after_reset) = rust_state(rust_dir.path(), store);
    assert!(todos_after_reset.is_empty() && events_after_reset.is_empty());
    assert!(todo_cli(rust_dir.path(), store, &url, &["add", "fresh start"]).0);
    assert!(todo_cli(rust_dir.path(), store, &url, &["sync"]).0);
}

/// The reference `@livestore/sync-cf` 0.4.0 worker under `wrangler dev --local`, stopped (whole process group)
/// on drop.
struct ReferenceWorker {
    child: Child,
    port: u16,
    _state: tempfile::TempDir,
}

impl ReferenceWorker {
    fn start() -> ReferenceWorker {
        use std::os::unix::process::CommandExt as _;
        let state = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(state.path().join("wrangler.log")).unwrap();
        let child = Command::new(workspace_root().join("bench/reference-server/run.sh"))
            .arg(port.to_string())
            .arg(state.path().join("do-state"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        let worker = ReferenceWorker { child, port, _state: state };
        // First use runs `npm ci` for wrangler (about a minute); later starts take a few seconds.
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::Read as _;
                let _ = write!(
                    stream,
                    "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                );
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                if answer.contains("Sync backend endpoint for @livestore/sync-cf") {
                    return worker;
                }
            }
            let log = std::fs::read_to_string(worker._state.path().join("wrangler.log"))
                .unwrap_or_default();
            assert!(Instant::now() < deadline, "the reference worker did not start:\n{log}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }
}

impl Drop for ReferenceWorker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep the worker's log for the failure report.
            let dir = target_dir().join("test-artifacts/reference-worker");
            let _ = std::fs::create_dir_all(&dir);
            let kept = dir.join(format!("wrangler-{}.log", self.port));
            if std::fs::copy(self._state.path().join("wrangler.log"), &kept).is_ok() {
                eprintln!("the reference worker's log: {}", kept.display());
            }
        }
        // wrangler spawns workerd children; SIGTERM to the group stops all of them.
        let _ =
            Command::new("kill").args(["-TERM", "--", &format!("-{}", self.child.id())]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ =
            Command::new("kill").args(["-KILL", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.wait();
    }
}

/// The Rust client speaks the protocol of the reference server too: two `todo` clients and a JS client share a
/// store through the official sync-cf worker, with concurrent commits (rebases) and offline work.
#[test]
fn rust_and_js_clients_converge_through_the_reference_cloudflare_worker() {
    let worker = ReferenceWorker::start();
    let url = worker.url();
    let store = "reference-interop";
    let rust_a = tempfile::tempdir().unwrap();
    let rust_b = tempfile::tempdir().unwrap();
    let mut js = JsDriver::start().map(|driver| ReferenceJsClient::open(driver, store, &url));

    // Concurrent commits on A and B before either syncs: B must rebase onto A's push.
    let (ok, first) = todo_cli(rust_a.path(), store, &url, &["add", "from rust a"]);
    assert!(ok, "add failed: {first}");
    assert!(todo_cli(rust_b.path(), store, &url, &["add", "from rust b"]).0);
    let (ok, status) = todo_cli(rust_a.path(), store, &url, &["sync"]);
    assert!(ok, "sync against the reference worker failed: {status}");
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["pendingCount"], 0, "{status}");
    assert!(status["backendId"].as_str().is_some_and(|id| !id.is_empty()), "{status}");
    let (ok, status) = todo_cli(rust_b.path(), store, &url, &["sync"]);
    assert!(ok, "rebase and push of B failed: {status}");

    // The JS client commits only once it is caught up. LiveStore 0.4.0's own client can leave a session's event
    // unpushed after it rebased (upstream livestorejs/livestore#744, seen here about one run in four against the
    // reference worker); JS rebases against our server are covered by the tests in livestore-cli.
    if let Some(js) = &mut js {
        js.call(&json!({"cmd": "waitHead", "name": "js", "head": 2, "timeoutMs": 60000}));
        js.commit_once(&create("js-1", "from js"));
    }

    // More work on every side, offline on the Rust side, so both Rust clients rebase onto the JS events.
    assert!(todo_cli(rust_a.path(), store, &url, &["complete", &first]).0);
    assert!(todo_cli(rust_b.path(), store, &url, &["add", "offline b"]).0);
    if let Some(js) = &mut js {
        js.commit_once(
            &json!({"name": "v1.TodoDeleted", "args": {"id": "js-1", "deletedAt": "2026-01-02T03:04:05.678Z"}}),
        );
    }
    for _ in 0..2 {
        assert!(todo_cli(rust_a.path(), store, &url, &["sync"]).0);
        assert!(todo_cli(rust_b.path(), store, &url, &["sync"]).0);
    }

    let (todos_a, events_a) = rust_state(rust_a.path(), store);
    let (todos_b, events_b) = rust_state(rust_b.path(), store);
    assert_eq!(events_a, events_b, "both Rust clients hold the same log");
    assert_eq!(todos_a, todos_b);
    // A: create, complete; B: two creates; JS: create, delete.
    let expected = if js.is_some() { 6 } else { 4 };
    assert_eq!(events_a.len(), expected, "every event once: {events_a:?}");
    assert!(todos_a.iter().any(|todo| todo.id == first && todo.completed), "{todos_a:?}");
    if let Some(js) = &mut js {
        js.call(
            &json!({"cmd": "waitHead", "name": "js", "head": events_a.len(), "timeoutMs": 60000}),
        );
        let js_events = js.call(&json!({"cmd": "eventlog", "name": "js"}));
        assert_eq!(js_events, Value::Array(events_a.clone()), "the JS client holds the same log");
        let js_todos: Vec<Todo> =
            serde_json::from_value(js.call(&json!({"cmd": "todos", "name": "js"}))).unwrap();
        assert_eq!(js_todos, todos_a);
        assert!(
            todos_a
                .iter()
                .any(|todo| todo.id == "js-1" && todo.deleted_at == Some(1_767_323_045_678))
        );
        eprintln!("reference worker: the JS client was restarted {} times", js.restarts);
    }
}
