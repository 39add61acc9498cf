//! The published JavaScript file client against `livestore serve`: `makeS3SignerRemoteStorage` from
//! `@livestore-filesync/core` 0.8.0 (installed next to LiveStore 0.4.0, `tests/js-filesync`) uploads, downloads and
//! deletes through our signer and the embedded object store, with a bearer token configured. Its requests go
//! through a fetch that applies the browser's CORS rules for a page on another origin, so the ETag it reports is
//! one a browser could read.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

const TOKEN: &str = "filesync-js-token-0123456789abcdef";

/// `tests/js-filesync`, with its `node_modules` installed (scripts/test runs `npm ci` there).
pub fn js_filesync_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/js-filesync");
    assert!(
        dir.join("node_modules/@livestore-filesync/core").exists(),
        "tests/js-filesync/node_modules is missing: run `npm ci` in tests/js-filesync (scripts/test does this)"
    );
    dir
}

/// Runs `node <script>` in `tests/js-filesync` and returns the JSON line it prints last on stdout.
pub async fn run_node_script(script: &str, env: &[(&str, String)], timeout: Duration) -> Value {
    let started = Instant::now();
    let mut command = tokio::process::Command::new("node");
    command
        .arg(script)
        .current_dir(js_filesync_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .unwrap_or_else(|_| panic!("node {script} did not finish within {timeout:?}"))
        .expect("node starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("node {script} took {:.1?}; its stderr:\n{stderr}", started.elapsed());
    let line = stdout.lines().rev().find(|line| line.starts_with('{')).unwrap_or_else(|| {
        panic!("node {script} printed no result ({}):\n{stdout}\n{stderr}", output.status)
    });
    serde_json::from_str(line).unwrap_or_else(|error| panic!("bad result line {line}: {error}"))
}

#[tokio::test]
async fn published_filesync_client_round_trips_files_through_the_signer() {
    let server = TestServer::start_with_env(&[("LIVESTORE_AUTH_TOKENS", TOKEN)]);
    let result = run_node_script(
        "signer-interop.mjs",
        &[
            ("SIGNER_URL", format!("{}/api", server.http_url())),
            ("TOKEN", TOKEN.to_owned()),
            ("PAGE_ORIGIN", "http://localhost:5173".to_owned()),
            ("STORE_ID", "gallery store/ä".to_owned()),
        ],
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(result["ok"], true, "{result:#}");
    assert_eq!(result["health"], true, "{result:#}");

    // filesync's key layout: `<sanitized store id>/<sha256>`.
    let sha256 = result["sha256"].as_str().unwrap();
    assert_eq!(result["key"], format!("gallery_store__/{sha256}"));
    assert_eq!(result["uploadKey"], result["key"]);

    // The bytes round-trip, streamed with progress as FileSync downloads them.
    assert_eq!(result["downloadedSha256"], sha256, "{result:#}");
    assert_eq!(result["downloadedSize"], result["size"]);
    assert_eq!(result["downloadedName"], sha256);
    assert_eq!(result["progressLast"]["loaded"], result["size"]);
    assert_eq!(result["progressLast"]["total"], result["size"]);

    // The ETag came through the CORS filter, and it is the one the store keeps for the object.
    let etag = result["etag"].as_str().expect("the client saw the upload's ETag (exposed by CORS)");
    assert_eq!(etag, format!("\"{}\"", result["head"]["etag"].as_str().unwrap()), "{result:#}");
    assert_eq!(result["head"]["exists"], true);
    assert_eq!(result["head"]["sha256"], sha256);
    let cors = result["cors"].as_array().unwrap();
    let put = cors
        .iter()
        .find(|entry| entry["kind"] == "response" && entry["method"] == "PUT")
        .expect("the upload went through the CORS filter");
    assert!(put["url"].as_str().unwrap().starts_with(&format!("{}/s3/", server.http_url())));
    assert!(put["exposeHeaders"].as_array().unwrap().contains(&Value::from("etag")), "{put}");
    let put_preflight = cors
        .iter()
        .find(|entry| entry["kind"] == "preflight" && entry["method"] == "PUT")
        .expect("the cross-origin PUT was preflighted");
    assert!(put_preflight["allowMethods"].as_array().unwrap().contains(&Value::from("PUT")));
    let sign_preflight = cors
        .iter()
        .find(|entry| {
            entry["kind"] == "preflight"
                && entry["url"].as_str().unwrap().ends_with("/api/v1/sign/upload")
        })
        .expect("signing was preflighted (Authorization and a JSON body are not simple)");
    assert!(
        sign_preflight["allowHeaders"].as_array().unwrap().contains(&Value::from("authorization"))
    );
    assert!(
        result["downloadUrl"].as_str().unwrap().starts_with(&format!("{}/s3/", server.http_url())),
        "{result:#}"
    );

    // Delete: the object is gone, and deleting again still succeeds (204, like upstream).
    assert_eq!(result["deleted"], true, "{result:#}");
    assert!(result["downloadAfterDelete"].as_str().unwrap().contains("404"), "{result:#}");
    assert_eq!(result["deleteAgain"], true, "{result:#}");

    // The sync server's credentials guard the signer.
    assert!(result["wrongToken"].as_str().unwrap().contains("401"), "{result:#}");
    assert!(result["noToken"].as_str().unwrap().contains("401"), "{result:#}");
    assert!(!server.log().contains(TOKEN), "the token leaked into the server log");
}
