//! Runs the real `tenant-rules` binary: keys from `tenant-rules key`, a server from `tenant-rules serve`, and raw
//! sync-cf clients over WebSocket and HTTP on 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "tenant-rules-integration-secret-0123456789";

/// `tenant-rules serve`, killed when dropped.
struct Served {
    child: Child,
    addr: String,
    _data: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Served {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenant-rules"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("TENANT_RULES_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr =
        line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("{line:?}")).to_owned();
    Served { child, addr, _data: data }
}

/// The payload `tenant-rules key` prints.
fn key(user: &str, ttl: u64) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_tenant-rules"))
        .args(["key", user, "--ttl", &ttl.to_string()])
        .env("TENANT_RULES_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The sync URL of `store` with `payload`, encoded twice as LiveStore's client does.
fn url(served: &Served, scheme: &str, store: &str, payload: &Value) -> String {
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
    let transport = if scheme == "ws" { "ws" } else { "http" };
    let payload = escape(&escape(&payload.to_string()));
    format!("{scheme}://{}/?storeId={store}&transport={transport}&payload={payload}", served.addr)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(url: &str) -> Result<Socket, (u16, String)> {
    match tokio_tungstenite::connect_async(url).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            Err((response.status().as_u16(), String::from_utf8_lossy(body).into_owned()))
        }
        Err(other) => panic!("{other}"),
    }
}

async fn request(socket: &mut Socket, frame: Value) -> Value {
    socket.send(Message::Text(frame.to_string().into())).await.unwrap();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an answer within 10 s")
            .expect("the socket is open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

fn push(id: &str, store: &str, seq: u64, user_id: &str) -> Value {
    let event = json!({"name": "v1.TodoCreated", "args": {"id": format!("t{seq}"), "text": "x", "userId": user_id},
        "seqNum": seq, "parentSeqNum": seq - 1, "clientId": "c", "sessionId": "s"});
    json!({"_tag": "Request", "id": id, "tag": "SyncWsRpc.Push",
        "payload": {"storeId": store, "batch": [event], "backendId": {"_tag": "None"}}, "headers": []})
}

#[tokio::test]
async fn users_keep_to_their_own_store_and_their_own_events() {
    let served = serve();
    let ann = key("ann", 3600);
    let mut socket =
        open(&url(&served, "ws", "user-ann", &ann)).await.expect("ann opens her store");
    assert_eq!(
        open(&url(&served, "ws", "user-bob", &ann)).await.err(),
        Some((403, "ann may only open the store user-ann".to_owned()))
    );
    let mut forged = ann.clone();
    forged["user"] = json!("bob");
    assert_eq!(open(&url(&served, "ws", "user-bob", &forged)).await.err().unwrap().0, 403);
    assert_eq!(
        open(&url(&served, "ws", "user-ann", &key("ann", 0))).await.err(),
        Some((403, "the key has expired".to_owned()))
    );
    let anonymous = format!("ws://{}/?storeId=user-ann&transport=ws", served.addr);
    assert_eq!(open(&anonymous).await.err().unwrap().0, 403);

    let reply = request(&mut socket, push("p1", "user-ann", 1, "ann")).await;
    assert_eq!(reply["exit"]["_tag"], "Success", "{reply}");
    let reply = request(&mut socket, push("p2", "user-ann", 2, "bob")).await;
    assert_eq!(
        reply["exit"]["cause"]["error"]["cause"]["message"],
        "push refused: event e2 (v1.TodoCreated) does not carry userId \"ann\"",
        "{reply}"
    );
    let pull = json!({"_tag": "Request", "id": "q", "tag": "SyncWsRpc.Pull",
        "payload": {"storeId": "user-ann", "cursor": {"_tag": "None"}, "live": false}, "headers": []});
    let page = request(&mut socket, pull).await;
    let batch = page["values"][0]["batch"].as_array().unwrap();
    let owners: Vec<&Value> =
        batch.iter().map(|item| &item["eventEncoded"]["args"]["userId"]).collect();
    assert_eq!(owners, [&json!("ann")], "the refused event was not written: {page}");

    // The HTTP transport is asked about per request, with the same rules.
    let ping = json!({"_tag": "Request", "id": "1", "tag": "SyncHttpRpc.Ping",
        "payload": {"storeId": "user-bob"}, "headers": []});
    let client = reqwest::Client::new();
    let response =
        client.post(url(&served, "http", "user-bob", &ann)).body(ping.to_string()).send();
    assert_eq!(response.await.unwrap().status(), 403);
    let bob = key("bob", 3600);
    let response =
        client.post(url(&served, "http", "user-bob", &bob)).body(ping.to_string()).send();
    assert_eq!(response.await.unwrap().status(), 200);
}
