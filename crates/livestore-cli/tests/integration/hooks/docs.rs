//! The hook receivers docs/hooks.md shows (Node and Python) run for real: the server calls them, and they refuse
//! a forged signature and a replayed or stale call.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::receiver::{SECRET, sign};
use super::{connect, http_ping, post, ws_url};
use crate::support::*;

/// The code block that follows `<!-- tested: {name} -->` in docs/hooks.md.
fn snippet(name: &str) -> String {
    doc_snippet("docs/hooks.md", name)
}

/// A receiver process, killed when dropped.
struct Snippet(Child);

impl Drop for Snippet {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(program: &str, file: &str, code: &str, dir: &std::path::Path, port: u16) -> Snippet {
    let path = dir.join(file);
    std::fs::write(&path, code).unwrap();
    let child = Command::new(program)
        .arg(&path)
        .env("PORT", port.to_string())
        .env("LIVESTORE_HOOKS_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("{program} starts: {error}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the {program} receiver never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    Snippet(child)
}

async fn post_signed(url: &str, body: &str, signature: &str) -> u16 {
    let response = reqwest::Client::new()
        .post(url)
        .header("x-livestore-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

#[tokio::test]
async fn the_receivers_in_docs_hooks_md_verify_signatures_and_refuse_replays() {
    let dir = tempfile::tempdir().unwrap();
    for (program, file, name) in
        [("node", "hook-receiver.mjs", "node"), ("python3", "hook_receiver.py", "python")]
    {
        let port = free_port();
        let _receiver = run(program, file, &snippet(name), dir.path(), port);
        let base = format!("http://127.0.0.1:{port}");
        let config = format!(
            "[hooks]\nconnect_url = \"{base}/connect\"\npush_url = \"{base}/push\"\npull_url = \"{base}/pull\"\n"
        );
        let (server, _config) = server_with_config(&config, &[("LIVESTORE_HOOKS_SECRET", SECRET)]);
        let mut ann = connect(&server, "docs", "ann").await;
        ann.send(&push_request("p1", "docs", events(1, 1), None)).await;
        assert_eq!(ann.frame().await["exit"]["_tag"], "Success", "{name}");
        ann.send(&pull_request("q1", "docs", false, None)).await;
        assert_eq!(chunk_seq_nums(&ann.frame().await).0, [1], "{name}");
        let refused = WsClient::try_connect(ws_url(&server, "docs", "eve")).await.err();
        assert_eq!(refused, Some((403, "unknown user".to_owned())), "{name}");
        let url = format!("{}/?storeId=docs&transport=http", server.http_url());
        assert_eq!(post(&url, &[], &http_ping("docs")).await.0, 403, "{name}: no user");

        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
                as u64;
        let call = |id: &str, sent_at: u64| {
            json!({"id": id, "sentAt": sent_at, "storeId": "docs", "subject": "ann", "claims": {},
                   "cursor": null, "live": false})
            .to_string()
        };
        let pull = format!("{base}/pull");
        let body = call("call-1", now_ms);
        assert_eq!(
            post_signed(&pull, &body, &sign(b"something else")).await,
            401,
            "{name}: forged"
        );
        assert_eq!(post_signed(&pull, &body, "sha256=").await, 401, "{name}: empty");
        assert_eq!(post_signed(&pull, &body, &sign(body.as_bytes())).await, 200, "{name}");
        assert_eq!(
            post_signed(&pull, &body, &sign(body.as_bytes())).await,
            409,
            "{name}: replayed"
        );
        let stale = call("call-2", now_ms - 600_000);
        assert_eq!(post_signed(&pull, &stale, &sign(stale.as_bytes())).await, 409, "{name}: stale");
    }
}
