//! A handle on `tests/js/driver.mjs`: real `@livestore/*` 0.4.0 Node clients, driven by JSON lines.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// One Node process hosting any number of LiveStore clients.
pub struct JsDriver {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    next_id: u64,
}

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/js")
}

impl JsDriver {
    pub async fn start() -> JsDriver {
        Self::start_script("driver.mjs").await
    }

    /// Starts `script` from `tests/js` (e.g. `chaos-driver.mjs`, the same driver on another schema).
    pub async fn start_script(script: &str) -> JsDriver {
        let dir = js_dir();
        assert!(
            dir.join("node_modules/@livestore/livestore").exists(),
            "tests/js/node_modules is missing: run `npm ci` in tests/js (scripts/test does this)"
        );
        let mut child = Command::new("node")
            .arg(script)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        JsDriver { child, stdin, stdout, next_id: 0 }
    }

    /// Sends a command and returns its result; panics with the driver's error message on failure.
    pub async fn call(&mut self, mut command: Value) -> Value {
        match self.try_call(&mut command).await {
            Ok(result) => result,
            Err(error) => panic!("driver command {command} failed: {error}"),
        }
    }

    pub async fn try_call(&mut self, command: &mut Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        command["id"] = json!(id);
        let line = format!("{command}\n");
        self.stdin.write_all(line.as_bytes()).await.expect("driver stdin open");
        loop {
            let line = tokio::time::timeout(Duration::from_secs(90), self.stdout.next_line())
                .await
                .expect("driver answers within 90 s")
                .expect("driver stdout readable")
                .expect("driver still running");
            let response: Value =
                serde_json::from_str(&line).unwrap_or_else(|_| panic!("driver printed {line}"));
            if response["id"] != json!(id) {
                continue;
            }
            return if response["ok"] == json!(true) {
                Ok(response["result"].clone())
            } else {
                Err(response["error"].to_string())
            };
        }
    }

    pub async fn open(&mut self, name: &str, store_id: &str, url: &str, extra: Value) -> Value {
        let mut command =
            json!({"cmd": "open", "name": name, "storeId": store_id, "url": url, "clientId": name});
        for (key, value) in extra.as_object().into_iter().flatten() {
            command[key] = value.clone();
        }
        self.call(command).await
    }

    pub async fn commit(&mut self, name: &str, events: Value) {
        self.call(json!({"cmd": "commit", "name": name, "events": events})).await;
    }

    pub async fn todos(&mut self, name: &str) -> Value {
        self.call(json!({"cmd": "todos", "name": name})).await
    }

    pub async fn eventlog(&mut self, name: &str) -> Value {
        self.call(json!({"cmd": "eventlog", "name": name})).await
    }

    pub async fn sync_state(&mut self, name: &str) -> Value {
        self.call(json!({"cmd": "syncState", "name": name})).await
    }

    pub async fn wait_synced(&mut self, name: &str) -> Value {
        self.call(json!({"cmd": "waitSynced", "name": name, "timeoutMs": 30_000})).await
    }

    pub async fn wait_head(&mut self, name: &str, head: u64) -> Value {
        self.call(json!({"cmd": "waitHead", "name": name, "head": head, "timeoutMs": 30_000})).await
    }

    pub async fn shutdown(&mut self, name: &str) {
        self.call(json!({"cmd": "shutdown", "name": name})).await;
    }

    /// Polls `todos` on `name` until `predicate` holds or the timeout passes.
    pub async fn wait_todos(
        &mut self,
        name: &str,
        timeout: Duration,
        predicate: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let todos = self.todos(name).await;
            if predicate(&todos) {
                return todos;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never reached the expected todos; last: {todos}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn exit(mut self) {
        let _ = self.try_call(&mut json!({"cmd": "exit"})).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

pub fn created(id: &str, text: &str) -> Value {
    json!({"name": "v1.TodoCreated", "args": {"id": id, "text": text}})
}
