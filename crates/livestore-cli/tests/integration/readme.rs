//! The Authentication guide in README.md, run as written: the blocks marked `<!-- tested: readme-… -->` are read
//! from the README (so editing them without keeping them true fails here), their placeholders (the identity
//! provider's URL, the hook receiver's address, the secret) replaced with the test's own, and then used for real:
//! the JWKS configuration admits its users to their own store only, the JS client snippet syncs with such a token,
//! and the hooks configuration asks the application about connects (seeing the session cookie) and pushes.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use livestore_testkit::jwt::{TestKey, jwks, unix_now};
use livestore_testkit::{JwksReply, JwksServer};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::hooks::receiver::{Answer, Receiver, SECRET};
use crate::support::*;

const JWKS_PLACEHOLDER: &str = "https://YOUR_TENANT.example.com/.well-known/jwks.json";
const ISSUER: &str = "https://YOUR_TENANT.example.com/";
const AUDIENCE: &str = "livestore";

/// The code block after `<!-- tested: {name} -->` in README.md.
fn readme_block(name: &str) -> String {
    doc_snippet("README.md", name)
}

/// A token as the README's identity provider would issue it for `sub`.
fn token_for(sub: &str, audience: &str) -> String {
    TestKey::Rsa1
        .sign(&json!({"sub": sub, "iss": ISSUER, "aud": audience, "exp": unix_now() + 3_600}))
}

/// `livestore serve` with the README's `[auth]` block, pointed at a JWKS the test serves.
fn jwks_server_from_readme(jwks_server: &JwksServer) -> (TestServer, tempfile::TempDir) {
    let block = readme_block("readme-jwks-config");
    assert!(block.contains(JWKS_PLACEHOLDER) && block.contains(ISSUER), "{block}");
    server_with_config(&block.replace(JWKS_PLACEHOLDER, &jwks_server.url()), &[])
}

#[tokio::test]
async fn the_jwks_configuration_admits_each_user_to_their_own_store() {
    let jwks_server = JwksServer::start(JwksReply::document(jwks(&[TestKey::Rsa1])));
    let (server, _dir) = jwks_server_from_readme(&jwks_server);
    let alice = token_for("alice", AUDIENCE);
    let with = |store: &str, token: &str| {
        format!("{}&payload={}", server.ws_url(store), payload_param(token))
    };
    assert!(WsClient::try_connect(with("user-alice", &alice)).await.is_ok());
    let (status, body) = WsClient::try_connect(with("user-bob", &alice)).await.err().unwrap();
    assert_eq!(status, 403, "{body}");
    let elsewhere = token_for("alice", "another-api");
    let (status, body) = WsClient::try_connect(with("user-alice", &elsewhere)).await.err().unwrap();
    assert_eq!((status, body.contains("audience")), (401, true), "{body}");
}

#[tokio::test]
async fn the_js_client_snippet_syncs_with_an_identity_provider_token() {
    let jwks_server = JwksServer::start(JwksReply::document(jwks(&[TestKey::Rsa1])));
    let (server, _dir) = jwks_server_from_readme(&jwks_server);
    let snippet = readme_block("readme-js-client");
    let placeholder = "ws://127.0.0.1:8787";
    assert!(snippet.contains(placeholder), "{snippet}");
    let base = server.http_url().replace("http://", "ws://");
    let token = token_for("alice", AUDIENCE);
    let mut node = run_js_snippet(&snippet.replace(placeholder, &base), &token);

    // The event the script commits reaches the server: a reader with alice's token pulls it.
    let mut reader = WsClient::connect(&format!(
        "{}&payload={}",
        server.ws_url("user-alice"),
        payload_param(&token)
    ))
    .await;
    reader.send(&pull_request("r", "user-alice", true, None)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the README client's event never reached the server");
        if let Ok(frame) = tokio::time::timeout(Duration::from_secs(1), reader.frame()).await
            && frame.to_string().contains("written by the README snippet")
        {
            break;
        }
        assert!(node.try_wait().unwrap().is_none(), "the README snippet exited early");
    }
}

/// Runs the README's client snippet in Node with what a real app has around it: LiveStore's imports, a schema, and
/// `token`. Node resolves packages next to the script, so it runs in a temp dir linked to `tests/js/node_modules`.
fn run_js_snippet(snippet: &str, token: &str) -> KillOnDrop {
    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/js");
    assert!(
        js.join("node_modules/@livestore/livestore").exists(),
        "tests/js/node_modules is missing: run `npm ci` in tests/js (scripts/test does this)"
    );
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(js.join("node_modules"), dir.path().join("node_modules")).unwrap();
    let schema = js.join("todo-schema.mjs");
    let script = format!(
        "if (typeof globalThis.WebSocket === 'undefined') globalThis.WebSocket = (await import('ws')).WebSocket\n\
         const {{ createStorePromise }} = await import('@livestore/livestore')\n\
         const {{ makeAdapter }} = await import('@livestore/adapter-node')\n\
         const {{ schema, events }} = await import({schema:?})\n\
         const token = process.env.README_TOKEN\n\
         {snippet}\n\
         store.commit(events.todoCreated({{ id: 'readme', text: 'written by the README snippet' }}))\n\
         await new Promise(() => {{}})\n",
        schema = format!("file://{}", schema.display()),
    );
    std::fs::write(dir.path().join("snippet.mjs"), script).unwrap();
    let child = std::process::Command::new("node")
        .arg("snippet.mjs")
        .current_dir(dir.path())
        .env("README_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node starts");
    KillOnDrop(child, dir)
}

/// A child process killed (and its temp dir removed) when the test ends.
struct KillOnDrop(std::process::Child, #[allow(dead_code)] tempfile::TempDir);

impl KillOnDrop {
    fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.0.try_wait()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_hooks_configuration_asks_the_backend_with_the_session_cookie() {
    let block = readme_block("readme-hooks-config");
    let (base, secret) = ("http://127.0.0.1:3000/livestore/", "…32 or more random bytes…");
    assert!(block.contains(base) && block.contains(secret), "{block}");
    // The backend: a session cookie names the user; pushes are allowed.
    let receiver = Receiver::start(|hook: &str, body: &Value| match hook {
        "connect" if body["headers"]["cookie"] == "session=alice-session" => {
            Answer::Json(json!({"allow": true, "subject": "alice"}))
        }
        "connect" => Answer::deny("not signed in"),
        _ => Answer::allow(),
    })
    .await;
    let config = block.replace(base, &format!("http://{}/", receiver.addr)).replace(secret, SECRET);
    let (server, _dir) = server_with_config(&config, &[]);

    let (status, _) = WsClient::try_connect(server.ws_url("notes")).await.err().unwrap();
    assert_eq!(status, 403);
    let mut request = server.ws_url("notes").into_client_request().unwrap();
    request.headers_mut().insert("cookie", "session=alice-session".parse().unwrap());
    let mut client = WsClient::try_connect(request).await.unwrap();
    push_events(&mut client, "notes", 0, 3, 3).await;
    let pushes = receiver.calls("push");
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].body["storeId"], "notes");
    assert_eq!(pushes[0].body["subject"], "alice");
    assert_eq!(pushes[0].body["batch"].as_array().map(Vec::len), Some(3));
    assert_eq!(receiver.bad_signatures(), 0);
}
