//! Signing in by session cookie, in a real browser: the web gallery served by `livestore serve --static-dir`,
//! whose connect hook is the example backend `examples/web-gallery/login-backend.mjs` (`[hooks] connect_url`,
//! `forward_headers = ["cookie"]`), driven in Chromium by `tests/js-filesync/cookie-login-e2e.mjs`. Two devices
//! signed in as the same person sync pictures over the WebSocket and the HTTP transports (sync, signer and object
//! store all by cookie); a device that never signed in reaches nobody; credentialed CORS works for the listed
//! origin only. Needs what the gallery browser test needs (`browser::browser_setup`).

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::browser::{artifacts_dir, browser_setup, gallery_dist, repo_root};
use crate::filesync_js::js_filesync_dir;
use crate::support::*;

const HOOKS_SECRET: &str = "cookie-login-hooks-secret-0123456789ab";

#[tokio::test]
async fn a_session_cookie_signs_in_over_both_transports_and_files() {
    let Some(chromium) = browser_setup() else { return };
    let login_port = free_port();
    let login_url = format!("http://127.0.0.1:{login_port}");
    let config = format!(
        "static_dir = \"{}\"\n[hooks]\nconnect_url = \"{login_url}/hooks/connect\"\n\
         forward_headers = [\"cookie\"]\nsecret = \"{HOOKS_SECRET}\"\n[cors]\nallowed_origins = [\"{login_url}\"]\n",
        gallery_dist().display()
    );
    let (server, _dir) = server_with_config(&config, &[]);
    let mut backend = tokio::process::Command::new("node")
        .arg(repo_root().join("examples/web-gallery/login-backend.mjs"))
        .args(["--port", &login_port.to_string(), "--app", &format!("{}/", server.http_url())])
        .env("LIVESTORE_HOOKS_SECRET", HOOKS_SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts the login backend");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !reqwest::get(format!("{login_url}/calls"))
        .await
        .is_ok_and(|response| response.status() == 200)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the login backend did not start within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let artifacts = artifacts_dir("cookie-login");
    let mut child = tokio::process::Command::new("node")
        .arg("cookie-login-e2e.mjs")
        .current_dir(js_filesync_dir())
        .env("BASE_URL", server.http_url())
        .env("LOGIN_URL", &login_url)
        .env("STORE_ID", format!("cookie-{}", server.port))
        .env("CHROMIUM", &chromium)
        .env("ARTIFACTS", &artifacts)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(240), lines.next_line())
        .await
        .unwrap_or_else(|_| {
            panic!("the browser test did not finish in 240 s; server log:\n{}", server.log())
        })
        .expect("node stdout readable")
        .unwrap_or_else(|| panic!("node exited without a result; server log:\n{}", server.log()));
    let result: Value =
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("node printed {line}"));
    assert_eq!(result["ok"], true, "{result}\nserver log:\n{}", server.log());
    assert_eq!(result["bSha256"], result["pictureSha256"], "B has A's picture, byte for byte");
    let stranger = result["strangerSha256"].as_str().unwrap();
    for device in ["cardsSeenByA", "cardsSeenByB"] {
        let seen: Vec<&str> =
            result[device].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert!(
            !seen.contains(&stranger),
            "{device} got the picture of a device that never signed in"
        );
    }
    assert_eq!(result["corsWithCookie"]["status"], 200, "{result}");
    assert!(result["corsWithCookie"]["body"].as_str().unwrap().contains("SyncMessage.Pong"));
    assert_eq!(result["corsWithoutCookie"]["status"], 403, "{result}");
    assert!(
        result["corsUnlisted"]["error"].is_string(),
        "an unlisted origin cannot read the answer: {result}"
    );
    let calls = result["hookCalls"].as_array().unwrap();
    for transport in ["ws", "http", "signer"] {
        assert!(
            calls.iter().any(|call| call["transport"] == transport
                && call["allowed"] == true
                && call["name"] == "ann"),
            "no allowed {transport} call for ann: {calls:?}"
        );
    }
    assert!(
        calls.iter().any(|call| call["allowed"] == false),
        "the device without a session was asked about"
    );
    let log = server.log();
    assert!(!log.contains("gallery_session="), "a session cookie reached the server log");
    eprintln!(
        "reliability: cookie_login hook_calls={} allowed={} screenshots={}",
        calls.len(),
        calls.iter().filter(|call| call["allowed"] == true).count(),
        artifacts.display()
    );
    backend.kill().await.ok();
}
