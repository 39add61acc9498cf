//! The web gallery (`examples/web-gallery`, LiveStore 0.4 + livestore-filesync 0.8 in the browser) served by
//! `livestore serve --static-dir`, driven in Debian's Chromium by Playwright (`tests/js-filesync/gallery-e2e.mjs`)
//! as two independent devices: upload, propagation with identical bytes, delete, and a file added while the server
//! is down that syncs after it restarts on the same port and data dir. Also: the static file serving itself.
//!
//! The browser test needs `/usr/bin/chromium` (or `LIVESTORE_CHROMIUM`), the built example
//! (`examples/web-gallery/dist`) and `tests/js-filesync/node_modules`; scripts/test provides all three. Without
//! them it fails when `LIVESTORE_REQUIRE_BROWSER=1` (as in scripts/test) and is skipped with a loud note otherwise.
//! Screenshots of both devices land in `target/test-artifacts/web-gallery/`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::filesync_js::js_filesync_dir;
use crate::support::*;

const TOKEN: &str = "gallery-e2e-token-0123456789abcdef";

pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub(crate) fn gallery_dist() -> PathBuf {
    repo_root().join("examples/web-gallery/dist")
}

/// `target/test-artifacts/<name>` of the target dir this test binary was built in.
pub(crate) fn artifacts_dir(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // <target>/<profile>/deps/integration-<hash>
    let target =
        exe.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_else(|| repo_root().join("target"));
    let dir = target.join("test-artifacts").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What the browser test needs, or `None` (after a loud note) when something is missing and not required.
pub(crate) fn browser_setup() -> Option<PathBuf> {
    let chromium = std::env::var_os("LIVESTORE_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    let mut missing = Vec::new();
    if !chromium.exists() {
        missing.push(format!(
            "Chromium at {} (Debian: `apt-get update && apt-get install -y chromium`, or set LIVESTORE_CHROMIUM)",
            chromium.display()
        ));
    }
    if !gallery_dist().join("index.html").exists() {
        missing.push(
            "the built example examples/web-gallery/dist (`npm ci && npm run build` in examples/web-gallery)".into(),
        );
    }
    if !repo_root().join("tests/js-filesync/node_modules/playwright-core").exists() {
        missing.push("tests/js-filesync/node_modules (`npm ci` in tests/js-filesync)".into());
    }
    if missing.is_empty() {
        return Some(chromium);
    }
    let message = format!(
        "the browser test needs {}; scripts/test installs all of it",
        missing.join(", and ")
    );
    if std::env::var("LIVESTORE_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!("LIVESTORE_REQUIRE_BROWSER=1 but {message}");
    }
    eprintln!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    );
    eprintln!("!!! SKIPPED the web gallery browser test: {message}");
    eprintln!("!!! (set LIVESTORE_REQUIRE_BROWSER=1 to make this a failure)");
    eprintln!(
        "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    None
}

#[tokio::test]
async fn gallery_syncs_files_between_two_browsers_and_across_a_server_restart() {
    let Some(chromium) = browser_setup() else { return };
    let dist = gallery_dist();
    let mut server = TestServer::start_with(
        &[("LIVESTORE_AUTH_TOKENS", TOKEN)],
        &["--static-dir", dist.to_str().expect("a UTF-8 path")],
    );
    let artifacts = artifacts_dir("web-gallery");
    let store_id = format!("gallery-e2e-{}", server.port);
    let started = Instant::now();

    let mut child = tokio::process::Command::new("node")
        .arg("gallery-e2e.mjs")
        .current_dir(js_filesync_dir())
        .env("BASE_URL", server.http_url())
        .env("TOKEN", TOKEN)
        .env("STORE_ID", &store_id)
        .env("CHROMIUM", &chromium)
        .env("ARTIFACTS", &artifacts)
        .env("DOCS_SCREENSHOT", artifacts.join("gallery.png"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let mut restart = Duration::ZERO;
    let result = loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .unwrap_or_else(|_| {
                panic!("the browser test did not finish in 300 s; server log:\n{}", server.log())
            })
            .expect("node stdout readable")
            .unwrap_or_else(|| {
                panic!("node exited without a result; server log:\n{}", server.log())
            });
        let message: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("node printed {line}"));
        let answer = match message["request"].as_str() {
            Some("stop") => {
                server.stop();
                "stop"
            }
            Some("start") => {
                let restarting = Instant::now();
                server.spawn();
                restart = restarting.elapsed();
                "start"
            }
            Some(other) => panic!("unknown request {other}"),
            None => break message,
        };
        stdin.write_all(format!("{}\n", json!({ "done": answer })).as_bytes()).await.unwrap();
    };
    let _ = child.wait().await;
    eprintln!(
        "browser test: {:.1?} in all, server restart {restart:.1?}, timings (ms) {}",
        started.elapsed(),
        result["timings"]
    );
    assert_eq!(result["ok"], true, "{result:#}\nserver log:\n{}", server.log());

    // Device A is same-origin; device B talks to the server cross-origin (its own origin is localhost).
    assert_eq!(result["origins"]["A"], server.http_url());
    assert_eq!(result["origins"]["B"], format!("http://localhost:{}", server.port));
    assert_eq!(result["signers"]["B"], format!("{}/api", server.http_url()));

    // Upload on A, download on B: the same file row and the same bytes (SHA-256 computed in each page).
    let first = &result["first"];
    let expected = first["expectedSha256"].as_str().unwrap();
    assert_eq!(first["sha256OnA"], expected, "{first:#}");
    assert_eq!(first["sha256OnB"], expected, "{first:#}");
    assert_eq!(first["sameIdOnBoth"], true);
    assert_eq!(first["name"], "lagoon.png");
    assert_eq!(first["viewerSize"], json!([960, 640]), "B's viewer decoded the picture");
    assert_eq!(first["remote"]["sha256"], expected, "the object store holds the same bytes");
    let statuses = |transitions: &Value| -> Vec<String> {
        transitions
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["status"].as_str().unwrap().to_owned())
            .collect()
    };
    let on_a = statuses(&first["transitionsA"]);
    assert_eq!(on_a.first().map(String::as_str), Some("queued"), "{on_a:?}");
    assert_eq!(on_a.last().map(String::as_str), Some("uploaded"), "{on_a:?}");
    let on_b = statuses(&first["transitionsB"]);
    assert_eq!(on_b.last().map(String::as_str), Some("uploaded"), "{on_b:?}");
    assert!(on_b.len() >= 2, "B showed the file before its bytes arrived: {on_b:?}");

    // The other direction, from the cross-origin device (signer and object store through CORS).
    assert_eq!(result["second"]["sha256OnA"], result["second"]["expectedSha256"]);
    assert!(statuses(&result["second"]["transitionsB"]).contains(&"uploaded".to_owned()));

    // Delete on A: gone on B, from B's OPFS, and from the object store.
    assert_eq!(result["afterDelete"]["localOnB"], "removed");
    assert_eq!(result["afterDelete"]["localOnA"], Value::Null);
    assert_eq!(result["afterDelete"]["remote"]["exists"], false);

    // Added while the server was down: shown on A at once, not on B; synced after the restart.
    let offline = &result["offline"];
    assert_eq!(offline["onB"], Value::Null, "{offline:#}");
    assert!(
        ["queued", "uploading", "error"].contains(&offline["statusOnA"].as_str().unwrap()),
        "{offline:#}"
    );
    assert_eq!(offline["pills"]["sync"], "sync: offline", "{offline:#}");
    let third = &result["third"];
    assert_eq!(third["sha256OnA"], third["expectedSha256"], "{third:#}");
    assert_eq!(third["sha256OnB"], third["expectedSha256"], "{third:#}");
    assert_eq!(third["remote"]["exists"], true);
    assert_eq!(result["final"]["A"].as_array().unwrap().len(), 2);
    assert_eq!(result["final"]["A"], result["final"]["B"]);

    assert_eq!(result["pageErrors"], json!({"A": [], "B": []}));
    for screenshot in result["screenshots"].as_array().unwrap() {
        assert!(Path::new(screenshot.as_str().unwrap()).exists(), "{screenshot}");
    }
    assert!(!server.log().contains(TOKEN), "the token leaked into the server log");
}

/// One raw HTTP/1.1 exchange, so that paths reach the server exactly as written (no client-side normalization).
fn raw_request(port: u16, method: &str, path: &str) -> (u16, String, Vec<u8>) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split =
        response.windows(4).position(|window| window == b"\r\n\r\n").expect("a complete response");
    let head = String::from_utf8_lossy(&response[..split]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    (status, head, response[split + 4..].to_vec())
}

#[test]
fn static_dir_serves_the_site_and_leaves_every_other_route_alone() {
    let temp = tempfile::tempdir().unwrap();
    let site = temp.path().join("site");
    std::fs::create_dir_all(site.join("assets")).unwrap();
    std::fs::write(site.join("index.html"), "<!doctype html><title>site</title>").unwrap();
    std::fs::write(site.join("assets/app-1234.js"), "export {}").unwrap();
    std::fs::write(site.join("assets/sqlite.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(temp.path().join("secret.txt"), "secret").unwrap();
    let config = temp.path().join("livestore.toml");
    std::fs::write(&config, format!("static_dir = {:?}\n", site.to_str().unwrap())).unwrap();
    let config = config.to_str().unwrap().to_owned();
    let server = TestServer::start_with_env(&[("LIVESTORE_CONFIG", &config)]);

    let (status, head, body) = raw_request(server.port, "GET", "/");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html; charset=utf-8"), "{head}");
    assert_eq!(body, b"<!doctype html><title>site</title>");
    let (status, head, _) = raw_request(server.port, "GET", "/assets/app-1234.js");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/javascript"), "{head}");
    assert!(head.contains("cache-control: public, max-age=31536000, immutable"), "{head}");
    let (status, head, body) = raw_request(server.port, "HEAD", "/assets/sqlite.wasm");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/wasm"), "{head}");
    assert!(head.contains("content-length: 8"), "{head}");
    assert!(body.is_empty());

    for path in [
        "/../secret.txt",
        "/assets/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/.%2e/secret.txt",
        "/missing.html",
    ] {
        let (status, _, body) = raw_request(server.port, "GET", path);
        assert_eq!(status, 404, "{path}");
        assert_ne!(body, b"secret", "{path}");
    }

    // The other routes keep priority.
    assert_eq!(raw_request(server.port, "GET", "/healthz").2, b"ok");
    assert!(raw_request(server.port, "GET", "/metrics").1.contains("openmetrics"));
    let (status, head, body) = raw_request(server.port, "GET", "/api/health");
    assert_eq!(status, 200);
    assert!(head.contains("application/json"), "{head}");
    assert_eq!(body, br#"{"status":"ok"}"#);
    assert_eq!(raw_request(server.port, "GET", "/api/nope").0, 404);
    assert_eq!(raw_request(server.port, "GET", "/s3/livestore-files/store/key").0, 403);
    // A sync request without an upgrade still reaches the sync endpoint, not the site.
    assert_eq!(raw_request(server.port, "GET", "/?storeId=s1&transport=ws").0, 426);
    // Only GET and HEAD are static.
    assert_eq!(raw_request(server.port, "POST", "/").0, 400);

    // The environment variable works too; a missing directory refuses to start.
    let site = site.to_str().unwrap().to_owned();
    let from_env = TestServer::start_with_env(&[("LIVESTORE_STATIC_DIR", &site)]);
    assert_eq!(raw_request(from_env.port, "GET", "/index.html").0, 200);
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_livestore"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(temp.path().join("data-refused"))
        .arg("--static-dir")
        .arg(temp.path().join("no-such-dir"))
        .env_remove("LIVESTORE_CONFIG")
        .env_remove("LIVESTORE_STATIC_DIR")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("static_dir") && stderr.contains("no-such-dir"), "{stderr}");
}
