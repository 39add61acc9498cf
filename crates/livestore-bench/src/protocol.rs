//! A minimal sync-cf WebSocket client for load generation: connect, push, pull, count events.

use anyhow::{Context, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Sending half of a connection.
pub type Sender = SplitSink<Socket, Message>;
/// Receiving half of a connection.
pub type Receiver = SplitStream<Socket>;

/// The credential every connection carries in its URL's sync payload (`{"authToken": …}`), if set.
static PAYLOAD_TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Makes every connection of this process carry `token` as `syncPayload.authToken`, as LiveStore clients do.
pub fn set_payload_token(token: String) {
    let _ = PAYLOAD_TOKEN.set(token);
}

/// The sync URL for `store_id` on a server whose base URL is `base` (`http://…` or `ws://…`).
pub fn sync_url(base: &str, store_id: &str) -> String {
    let base = base.trim_end_matches('/').replacen("http://", "ws://", 1);
    match PAYLOAD_TOKEN.get() {
        Some(token) => {
            format!("{base}/?storeId={store_id}&transport=ws&payload={}", payload_param(token))
        }
        None => format!("{base}/?storeId={store_id}&transport=ws"),
    }
}

/// A sync payload `{"authToken": token}` as the `payload` query parameter: JSON, `encodeURIComponent`ed, then
/// query-encoded again, as sync-cf clients send it.
fn payload_param(token: &str) -> String {
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

/// Opens a connection with small buffers, so thousands of idle connections stay cheap on the client side too.
pub async fn connect(base: &str, store_id: &str) -> anyhow::Result<(Sender, Receiver)> {
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(4096);
    let (socket, _) =
        tokio_tungstenite::connect_async_with_config(sync_url(base, store_id), Some(config), true)
            .await
            .with_context(|| format!("cannot connect to {base} for store {store_id}"))?;
    Ok(socket.split())
}

/// `count` events starting at `first`, each `args_bytes` of payload.
pub fn events(first: u64, count: u64, args_bytes: usize) -> Vec<Value> {
    let filler = "x".repeat(args_bytes);
    (first..first + count)
        .map(|seq| {
            json!({"name": "v1.TodoCreated", "args": {"id": format!("todo-{seq}"), "text": filler},
                   "seqNum": seq, "parentSeqNum": seq - 1, "clientId": "bench", "sessionId": "static"})
        })
        .collect()
}

/// A `SyncWsRpc.Push` request frame.
pub fn push_frame(
    request_id: u64,
    store_id: &str,
    batch: &[Value],
    backend_id: Option<&str>,
) -> String {
    let backend = match backend_id {
        Some(id) => json!({"_tag": "Some", "value": id}),
        None => json!({"_tag": "None"}),
    };
    json!({"_tag": "Request", "id": request_id.to_string(), "tag": "SyncWsRpc.Push",
           "payload": {"storeId": store_id, "batch": batch, "backendId": backend},
           "traceId": "bench", "spanId": "bench", "sampled": false, "headers": []})
    .to_string()
}

/// A `SyncWsRpc.Pull` request frame.
pub fn pull_frame(request_id: &str, store_id: &str, live: bool) -> String {
    json!({"_tag": "Request", "id": request_id, "tag": "SyncWsRpc.Pull",
           "payload": {"storeId": store_id, "live": live, "cursor": {"_tag": "None"}},
           "traceId": "bench", "spanId": "bench", "sampled": false, "headers": []})
    .to_string()
}

/// An `Ack` for a stream chunk (the reference server waits for it before sending the next chunk).
pub fn ack_frame(request_id: &str) -> String {
    json!({"_tag": "Ack", "requestId": request_id}).to_string()
}

/// A decoded server frame, reduced to what the benchmarks need.
#[derive(Debug)]
pub enum ServerFrame {
    /// A chunk: request id, highest seqNum in it (0 if empty), event count, whether its last page is `NoMore`.
    Chunk { request_id: String, last_seq_num: u64, event_count: usize, no_more: bool },
    /// An `Exit`: request id and whether it succeeded (with the error tag if not).
    Exit { request_id: String, error: Option<String> },
    /// Anything else (`Pong`).
    Other,
}

/// Reads the next text frame; `None` when the connection ends.
pub async fn next_frame(receiver: &mut Receiver) -> anyhow::Result<Option<ServerFrame>> {
    loop {
        let Some(message) = receiver.next().await else { return Ok(None) };
        let text = match message.context("WebSocket read failed")? {
            Message::Text(text) => text,
            Message::Close(_) => return Ok(None),
            _ => continue,
        };
        return Ok(Some(parse_frame(&text)?));
    }
}

fn parse_frame(text: &str) -> anyhow::Result<ServerFrame> {
    // Chunks dominate fan-out and backlog runs; scanning them instead of building a JSON tree keeps the load
    // generator's own CPU use from dominating what it measures on a small machine.
    if let Some(frame) = scan_chunk(text) {
        return Ok(frame);
    }
    let value: Value = serde_json::from_str(text).context("server sent invalid JSON")?;
    let request_id = value["requestId"].as_str().unwrap_or_default().to_owned();
    match value["_tag"].as_str() {
        Some("Chunk") => {
            let mut last_seq_num = 0;
            let mut event_count = 0;
            let mut no_more = false;
            for page in value["values"].as_array().context("Chunk without values")? {
                for item in page["batch"].as_array().context("page without batch")? {
                    last_seq_num =
                        item["eventEncoded"]["seqNum"].as_u64().context("event without seqNum")?;
                    event_count += 1;
                }
                no_more = page["pageInfo"]["_tag"] == "NoMore";
            }
            Ok(ServerFrame::Chunk { request_id, last_seq_num, event_count, no_more })
        }
        Some("Exit") => {
            let error = (value["exit"]["_tag"] != "Success").then(|| {
                value["exit"]["cause"]["error"]["_tag"].as_str().unwrap_or("defect").to_owned()
            });
            Ok(ServerFrame::Exit { request_id, error })
        }
        Some("Defect") => bail!("server sent a Defect: {text}"),
        _ => Ok(ServerFrame::Other),
    }
}

/// Reads a `Chunk` frame by scanning for the few fields the benchmarks need. Event payloads the load generator
/// sends never contain the scanned keys, so this cannot be fooled by the data.
fn scan_chunk(text: &str) -> Option<ServerFrame> {
    let rest = text.strip_prefix(r#"{"_tag":"Chunk","requestId":""#)?;
    let request_id = rest[..rest.find('"')?].to_owned();
    let mut last_seq_num = 0;
    let mut event_count = 0;
    for (index, _) in text.match_indices(r#""seqNum":"#) {
        let digits: String = text[index + 9..].chars().take_while(char::is_ascii_digit).collect();
        last_seq_num = digits.parse().ok()?;
        event_count += 1;
    }
    let no_more = text.rfind(r#""pageInfo":{"_tag":"NoMore"}"#).is_some()
        && text
            .rfind(r#""MoreKnown""#)
            .is_none_or(|more| more < text.rfind(r#""NoMore""#).unwrap_or(0));
    Some(ServerFrame::Chunk { request_id, last_seq_num, event_count, no_more })
}

/// Sends one text frame.
pub async fn send(sender: &mut Sender, frame: String) -> anyhow::Result<()> {
    sender.send(Message::Text(frame.into())).await.context("WebSocket write failed")
}

/// Pulls (non-live) until the backlog is complete; returns the backendId-free event count and last seqNum.
/// Request id of [`drain_pull`]; decimal, since the reference server parses ids as BigInt.
const DRAIN_REQUEST_ID: &str = "999999999";

pub async fn drain_pull(
    sender: &mut Sender,
    receiver: &mut Receiver,
    store_id: &str,
) -> anyhow::Result<(usize, u64)> {
    send(sender, pull_frame(DRAIN_REQUEST_ID, store_id, false)).await?;
    let mut total = 0;
    let mut last = 0;
    loop {
        match next_frame(receiver).await?.context("connection closed during pull")? {
            ServerFrame::Chunk { request_id, last_seq_num, event_count, no_more }
                if request_id == DRAIN_REQUEST_ID =>
            {
                total += event_count;
                last = last.max(last_seq_num);
                send(sender, ack_frame(DRAIN_REQUEST_ID)).await?;
                if no_more {
                    return Ok((total, last));
                }
            }
            ServerFrame::Exit { request_id, error: Some(error) }
                if request_id == DRAIN_REQUEST_ID =>
            {
                bail!("pull failed: {error}")
            }
            _ => {}
        }
    }
}
