//! The signer contract (`@livestore-filesync/core` 0.8.0 and our
//! extensions) and its answers to bad input: each case gets a specific
//! status and message, and nothing is signed or written.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TOKEN_A, TOKEN_B, embedded};

fn error_of(json: &Value) -> &str {
    json["error"].as_str().unwrap_or_else(|| panic!("expected an {{error}} body, got {json}"))
}

#[tokio::test]
async fn health_is_public_and_ok() {
    let server = embedded(900).await;
    let response = reqwest::get(format!("{}/api/health", server.base)).await.expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert_eq!(response.json::<Value>().await.expect("json"), json!({ "status": "ok" }));
}

#[tokio::test]
async fn upload_response_has_the_upstream_shape() {
    let server = embedded(900).await;
    let client = Client::new(&server, Some(TOKEN_A));
    let json = client
        .sign_upload(
            json!({ "key": "store-a/abc", "contentType": "text/plain", "contentLength": 3 }),
        )
        .await;
    let object = json.as_object().expect("object");
    let mut fields: Vec<&str> = object.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["expiresAt", "method", "url"], "{json}");
    assert_eq!(json["method"], "PUT");
    let url = json["url"].as_str().expect("url");
    assert!(url.starts_with(&format!("{}/s3/livestore-files/store-a/abc?", server.base)), "{url}");
    assert!(url.contains("X-Amz-Algorithm=AWS4-HMAC-SHA256"));

    let (status, json) = client.post("/v1/sign/download", json!({ "key": "store-a/abc" })).await;
    assert_eq!(status, StatusCode::OK);
    let mut fields: Vec<&str> =
        json.as_object().expect("object").keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["expiresAt", "url"]);
}

#[tokio::test]
async fn auth_is_required_and_scoped_to_the_store() {
    let server = embedded(900).await;
    let anonymous = Client::new(&server, None);
    let (status, json) = anonymous.post("/v1/sign/upload", json!({ "key": "store-a/x" })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(error_of(&json).starts_with("Unauthorized"), "{json}");

    let unknown = Client::new(&server, Some("not-a-token"));
    let (status, _) = unknown.post("/v1/sign/download", json!({ "key": "store-a/x" })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let client_b = Client::new(&server, Some(TOKEN_B));
    for path in
        ["/v1/sign/upload", "/v1/sign/download", "/v1/delete", "/v1/head", "/v1/multipart/create"]
    {
        let (status, json) = client_b.post(path, json!({ "key": "store-a/x" })).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert!(error_of(&json).contains("store-a"), "{json}");
    }
    // A batch fails as a whole when the token may not touch one of its stores.
    let digest = "0".repeat(64);
    let (status, json) = client_b
        .post(
            "/v1/sign/uploads",
            json!({ "uploads": [
                { "key": "store-b/x", "contentLength": 1, "sha256": digest },
                { "key": "store-a/x", "contentLength": 1, "sha256": digest },
            ] }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{json}");
    assert!(error_of(&json).contains("store-a"), "{json}");
    let (status, _) = anonymous
        .post(
            "/v1/sign/uploads",
            json!({ "uploads": [{ "key": "store-a/x", "contentLength": 1, "sha256": digest }] }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The upstream Worker helpers also accept X-Worker-Auth.
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/sign/download", server.base))
        .header("x-worker-auth", TOKEN_A)
        .body(json!({ "key": "store-a/x" }).to_string())
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn malformed_requests_name_the_problem() {
    let server = embedded(900).await;
    let client = Client::new(&server, Some(TOKEN_A));
    let cases: Vec<(&str, &str, &str)> = vec![
        ("/v1/sign/upload", "{not json", "Invalid request: key must be a string"),
        ("/v1/sign/upload", "", "Invalid request: EOF"),
        ("/v1/sign/upload", "[]", "Invalid request: body must be a JSON object"),
        ("/v1/sign/upload", r#"["store-a/x"]"#, "Invalid request: body must be a JSON object"),
        ("/v1/sign/upload", "\"store-a/x\"", "Invalid request: body must be a JSON object"),
        ("/v1/sign/upload", r#"{"contentType":"a/b"}"#, "Invalid request: missing field `key`"),
        ("/v1/sign/upload", r#"{"key":5}"#, "Invalid request: key: invalid type: integer `5`"),
        (
            "/v1/sign/upload",
            r#"{"key":"store-a/x","contentLength":-1}"#,
            "Invalid request: contentLength: invalid value",
        ),
        (
            "/v1/sign/upload",
            r#"{"key":"store-a/x","contentLength":"12"}"#,
            "Invalid request: contentLength: invalid type",
        ),
        ("/v1/sign/upload", r#"{"key":"store-a/x"} trailing"#, "Invalid request: trailing data"),
        (
            "/v1/sign/upload",
            r#"{"key":"store-a/x","sha256":"xyz","contentLength":1}"#,
            "Invalid request: sha256 must be 64 hex",
        ),
        (
            "/v1/sign/upload",
            r#"{"key":"store-a/x","sha256":"0000000000000000000000000000000000000000000000000000000000000000"}"#,
            "Invalid request: contentLength is required",
        ),
        (
            "/v1/sign/upload",
            r#"{"key":"store-a/x","contentLength":6000000000}"#,
            "Invalid request: contentLength exceeds",
        ),
        (
            "/v1/sign/upload",
            r#"{"key":"store-a/x","contentType":"a\nb"}"#,
            "Invalid request: contentType",
        ),
        ("/v1/delete", r#"{"key":null}"#, "Invalid request: key: invalid type: null"),
        (
            "/v1/multipart/sign-part",
            r#"{"key":"store-a/x","uploadId":"u","partNumber":0}"#,
            "Invalid request: partNumber",
        ),
        (
            "/v1/multipart/sign-part",
            r#"{"key":"store-a/x","uploadId":"","partNumber":1}"#,
            "Invalid request: uploadId",
        ),
        (
            "/v1/multipart/complete",
            r#"{"key":"store-a/x","uploadId":"u","parts":[]}"#,
            "Invalid request: parts must list",
        ),
        (
            "/v1/multipart/complete",
            r#"{"key":"store-a/x","uploadId":"u","parts":[{"partNumber":1}]}"#,
            "Invalid request: parts[0]: missing field `etag`",
        ),
    ];
    for (path, body, expected) in cases {
        let (status, json) = client.post_raw(path, body.to_owned()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body:?}: {json}");
        let message = error_of(&json);
        assert!(message.starts_with(expected), "{body:?}: got {message:?}, expected {expected:?}");
    }
}

#[tokio::test]
async fn bad_keys_are_refused_before_auth() {
    let server = embedded(900).await;
    let client = Client::new(&server, Some(TOKEN_A));
    let long = format!("store-a/{}", "x".repeat(1100));
    let cases = [
        ("", "Invalid key: key is empty"),
        ("store-a/../store-b/x", "Invalid key: key must not contain '.' or '..' segments"),
        ("store-a/./x", "Invalid key: key must not contain '.' or '..' segments"),
        ("/store-a/x", "Invalid key: key must not start with '/'"),
        ("store-a\\x", "Invalid key: key must not contain a backslash"),
        ("store-a/x\u{0}", "Invalid key: key must not contain control characters"),
        ("store-a/x\r\ny", "Invalid key: key must not contain control characters"),
        ("store-a//x", "Invalid key: key must not contain empty segments"),
        ("store-a", "Invalid key: key must look like '<storeId>/<name>'"),
        (long.as_str(), "Invalid key: key is 1108 bytes long, the limit is 1024"),
    ];
    for path in ["/v1/sign/upload", "/v1/sign/download", "/v1/delete", "/v1/head"] {
        for (key, expected) in &cases {
            let (status, json) = client.post(path, json!({ "key": key })).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {key:?}");
            assert!(error_of(&json).starts_with(expected), "{path} {key:?}: {json}");
        }
    }
    // Traversal must not have written anything anywhere.
    let client_b = Client::new(&server, Some(TOKEN_B));
    assert_eq!(client_b.download("store-b/x").await, None);
}

#[tokio::test]
async fn oversized_body_is_413() {
    let server = embedded(900).await;
    let client = Client::new(&server, Some(TOKEN_A));
    let huge = format!(r#"{{"key":"store-a/x","contentType":"{}"}}"#, "a".repeat(100 * 1024));
    let (status, json) = client.post_raw("/v1/sign/upload", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error_of(&json).starts_with("Request body too large (limit 65536 bytes)"), "{json}");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let server = embedded(900).await;
    let http = reqwest::Client::new();
    for path in ["/api/v1/nope", "/api/v2/sign/upload", "/api", "/api/"] {
        let response = http.post(format!("{}{path}", server.base)).send().await.expect("POST");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        assert_eq!(response.json::<Value>().await.expect("json"), json!({ "error": "Not found" }));
    }
    // The token is checked first (before anything of the request is looked at), then the method.
    let response =
        http.get(format!("{}/api/v1/sign/upload", server.base)).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = http
        .get(format!("{}/api/v1/sign/upload", server.base))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({ "error": "Method not allowed" })
    );
}

#[tokio::test]
async fn cors_preflight_matches_upstream() {
    let server = embedded(900).await;
    let response = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{}/api/v1/sign/upload", server.base))
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("OPTIONS");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let headers = response.headers();
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert_eq!(headers["access-control-allow-methods"], "GET, POST, DELETE, OPTIONS");
    assert_eq!(
        headers["access-control-allow-headers"],
        "Content-Type, Authorization, X-Worker-Auth"
    );
    assert_eq!(headers["access-control-max-age"], "86400");
    assert_eq!(headers["access-control-expose-headers"], "ETag");
}

#[tokio::test]
async fn foreign_prefix_cannot_be_reached_through_multipart() {
    let server = embedded(900).await;
    let client_a = Client::new(&server, Some(TOKEN_A));
    let client_b = Client::new(&server, Some(TOKEN_B));
    let (_, created) = client_a.post("/v1/multipart/create", json!({ "key": "store-a/m" })).await;
    let upload_id = created["uploadId"].as_str().expect("uploadId");
    // B cannot sign parts for A's key, nor reuse A's upload id on its own key.
    let (status, _) = client_b
        .post(
            "/v1/multipart/sign-part",
            json!({ "key": "store-a/m", "uploadId": upload_id, "partNumber": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, json) = client_b
        .post("/v1/multipart/parts", json!({ "key": "store-b/m", "uploadId": upload_id }))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{json}");
    assert!(error_of(&json).starts_with("NoSuchUpload"), "{json}");
}

#[tokio::test]
async fn public_url_is_used_in_embedded_urls_and_validated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = livestore_objects::FilesConfig::embedded(dir.path());
    config.public_url = Some("https://files.example.test".into());
    let server = crate::harness::serve(config.clone(), None, dir.path().to_path_buf()).await;
    let client = Client::new(&server, Some(TOKEN_A));
    let json = client.sign_upload(json!({ "key": "store-a/x" })).await;
    let url = json["url"].as_str().expect("url");
    assert!(url.starts_with("https://files.example.test/s3/livestore-files/store-a/x?"), "{url}");

    config.public_url = Some("https://files.example.test/prefix".into());
    let authority = std::sync::Arc::new(livestore_objects::AllowAll);
    let error = livestore_objects::FileServices::start(config.clone(), authority.clone())
        .await
        .expect_err("path refused");
    assert!(
        matches!(&error, livestore_objects::Error::Config(message) if message.contains("without a path")),
        "{error}"
    );
    config.public_url = None;
    config.ttl_seconds = 7200;
    let error =
        livestore_objects::FileServices::start(config, authority).await.expect_err("ttl refused");
    assert!(error.to_string().contains("ttl_seconds"), "{error}");
}

#[tokio::test]
async fn forwarded_proto_https_is_honoured_without_public_url() {
    let server = embedded(900).await;
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/sign/download", server.base))
        .bearer_auth(TOKEN_A)
        .header("x-forwarded-proto", "https")
        .body(json!({ "key": "store-a/x" }).to_string())
        .send()
        .await
        .expect("POST");
    let json: Value = response.json().await.expect("json");
    let host = server.base.trim_start_matches("http://");
    assert!(
        json["url"].as_str().expect("url").starts_with(&format!("https://{host}/s3/")),
        "{json}"
    );
}

#[tokio::test]
async fn unreachable_external_store_is_reported_not_hidden() {
    // A port nobody listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let env = [
        ("S3_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("S3_ACCESS_KEY_ID", "AK".to_owned()),
        ("S3_SECRET_ACCESS_KEY", "SK".to_owned()),
        ("S3_FORCE_PATH_STYLE", "true".to_owned()),
    ];
    let config = livestore_objects::FilesConfig::default()
        .from_env_overrides(|name| {
            env.iter().find(|(key, _)| *key == name).map(|(_, value)| value.clone())
        })
        .expect("config");
    let server = crate::harness::serve(config, None, std::path::PathBuf::new()).await;
    let response = reqwest::get(format!("{}/api/health", server.base)).await.expect("GET");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(response.json::<Value>().await.expect("json"), json!({ "status": "error" }));

    let client = Client::new(&server, Some(TOKEN_A));
    // Signing needs no round trip to the store, so it still works.
    let signed = client.sign_upload(json!({ "key": "store-a/x" })).await;
    assert!(
        signed["url"]
            .as_str()
            .expect("url")
            .starts_with(&format!("http://127.0.0.1:{port}/livestore-files/store-a/x?"))
    );
    let (status, json) = client.post("/v1/delete", json!({ "key": "store-a/x" })).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(json, json!({ "error": "Delete failed" }));
    let (status, json) = client.post("/v1/head", json!({ "key": "store-a/x" })).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(error_of(&json).starts_with("Object store unreachable"), "{json}");
}
