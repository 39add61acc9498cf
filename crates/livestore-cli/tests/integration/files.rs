//! The file services as `livestore serve` exposes them: the signer under `/api` and the embedded object store under
//! `/s3`, sharing the sync server's authentication. (The full S3 conformance suite lives in `livestore-objects`.)

use serde_json::{Value, json};

use crate::support::*;

async fn sign(server: &TestServer, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut request =
        reqwest::Client::new().post(format!("{}/api/v1/{path}", server.http_url())).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn signed_upload_download_and_delete_through_the_embedded_store() {
    let server = TestServer::start_with_env(&[(
        "LIVESTORE_AUTH_TOKENS",
        "files-token-0123456789abcdef-1234",
    )]);
    let token = Some("files-token-0123456789abcdef-1234");
    let health = reqwest::get(format!("{}/api/health", server.http_url())).await.unwrap();
    assert_eq!(health.status(), 200);

    let bytes = b"hello from livestore serve".to_vec();
    // A plain upload, as @livestore-filesync/core 0.8.0 asks for it.
    let (status, upload) = sign(
        &server,
        "sign/upload",
        token,
        json!({"key": "store1/abc", "contentType": "text/plain", "contentLength": bytes.len()}),
    )
    .await;
    assert_eq!(status, 200, "{upload}");
    assert_eq!(upload["method"], "PUT");
    let url = upload["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/s3/", server.http_url())), "{url}");
    assert!(url.contains("X-Amz-Expires=900"), "{url}");
    let put = reqwest::Client::new().put(url).body(bytes.clone()).send().await.unwrap();
    assert_eq!(put.status(), 200);
    assert!(put.headers().contains_key("etag"));

    let (_, download) = sign(&server, "sign/download", token, json!({"key": "store1/abc"})).await;
    let fetched = reqwest::get(download["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(fetched.bytes().await.unwrap().to_vec(), bytes);

    assert_eq!(sign(&server, "delete", token, json!({"key": "store1/abc"})).await.0, 204);
    let gone = reqwest::get(download["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(gone.status(), 404);

    // The sync server's credentials guard the signer too; keys are checked before anything is signed.
    assert_eq!(sign(&server, "sign/upload", None, json!({"key": "store1/abc"})).await.0, 401);
    assert_eq!(
        sign(&server, "sign/upload", Some("wrong-token-000"), json!({"key": "store1/abc"})).await.0,
        401
    );
    let (status, refused) =
        sign(&server, "sign/upload", token, json!({"key": "../etc/passwd"})).await;
    assert_eq!(status, 400, "{refused}");
    // The refusal is the key's, not some other field's.
    assert!(
        refused["error"].as_str().is_some_and(|error| error.contains("Invalid key")),
        "{refused}"
    );
    assert!(!server.log().contains("files-token-0123456789abcdef-1234"));
}

#[tokio::test]
async fn scoped_tokens_only_reach_their_own_store_prefix() {
    let temp = tempfile::tempdir().unwrap();
    let config = temp.path().join("livestore.toml");
    std::fs::write(
        &config,
        "[auth]\ntokens = [{ token = \"team-a-token-0123456789abcdefghij\", stores = [\"team-a\"] }]\n",
    )
    .unwrap();
    let server = TestServer::start_with_env(&[("LIVESTORE_CONFIG", config.to_str().unwrap())]);
    let token = Some("team-a-token-0123456789abcdefghij");
    assert_eq!(sign(&server, "sign/upload", token, json!({"key": "team-a/file"})).await.0, 200);
    assert_eq!(sign(&server, "sign/upload", token, json!({"key": "team-b/file"})).await.0, 403);
    // The same token opens the sync endpoint of its store only: the same payload upgrades for team-a and gets 403
    // (not refused for a malformed URL or a bad token) for team-b.
    let ws = |store: &str| {
        format!(
            "{}&payload=%257B%2522authToken%2522%253A%2522team-a-token-0123456789abcdefghij%2522%257D",
            server.ws_url(store)
        )
    };
    assert!(tokio_tungstenite::connect_async(ws("team-a")).await.is_ok());
    match tokio_tungstenite::connect_async(ws("team-b")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("expected a 403 refusal, got {:?}", other.map(|_| "a connection")),
    }
}
