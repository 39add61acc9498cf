//! Embedded-store specifics that the signer contract does not reach: S3 tools
//! talking to `/s3` directly (presigned by rusty-s3, or header-signed),
//! ranges, checksum mode, CORS, interrupted uploads and restarts.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use reqwest::StatusCode;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use sha2::Digest;
use tokio::io::AsyncWriteExt;

use crate::harness::{
    Client, Server, TOKEN_A, embedded, pattern, serve, serve_when_free, sha256_hex,
};

/// A rusty-s3 view of the embedded store, as an external S3 tool would use it.
fn tool(server: &Server) -> (Bucket, Credentials) {
    let info = server.services.embedded_store().expect("embedded store");
    let endpoint = format!("{}/s3", server.base).parse().expect("endpoint url");
    let bucket = Bucket::new(endpoint, UrlStyle::Path, info.bucket, info.region).expect("bucket");
    (bucket, Credentials::new(info.access_key_id, info.secret_access_key))
}

/// SigV4 header signing, written independently of the crate's verifier.
fn header_signed(
    server: &Server,
    method: &str,
    key: &str,
    payload_hash: &str,
) -> (String, Vec<(&'static str, String)>) {
    let info = server.services.embedded_store().expect("embedded store");
    let url: reqwest::Url =
        format!("{}/s3/{}/{key}", server.base, info.bucket).parse().expect("url");
    let host = format!("{}:{}", url.host_str().expect("host"), url.port().expect("port"));
    let now = jiff::Timestamp::now();
    let amz_date = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let date = now.strftime("%Y%m%d").to_string();
    let canonical_request = format!(
        "{method}\n{}\n\nhost:{host}\nx-amz-content-sha256:{payload_hash}\nx-amz-date:{amz_date}\n\nhost;x-amz-content-sha256;x-amz-date\n{payload_hash}",
        url.path()
    );
    let scope = format!("{date}/{}/s3/aws4_request", info.region);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(sha2::Sha256::digest(canonical_request.as_bytes()))
    );
    let mac = |key: &[u8], data: &str| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("hmac key");
        mac.update(data.as_bytes());
        mac.finalize().into_bytes().to_vec()
    };
    let mut signing_key = mac(format!("AWS4{}", info.secret_access_key).as_bytes(), &date);
    for part in [info.region.as_str(), "s3", "aws4_request"] {
        signing_key = mac(&signing_key, part);
    }
    let signature = hex::encode(mac(&signing_key, &string_to_sign));
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}",
        info.access_key_id
    );
    (
        url.to_string(),
        vec![
            ("authorization", authorization),
            ("x-amz-content-sha256", payload_hash.to_owned()),
            ("x-amz-date", amz_date),
        ],
    )
}

async fn send_header_signed(
    server: &Server,
    method: reqwest::Method,
    key: &str,
    body: &[u8],
    claimed_hash: &str,
) -> reqwest::Response {
    let (url, headers) = header_signed(server, method.as_str(), key, claimed_hash);
    let mut request = reqwest::Client::new().request(method, url).body(body.to_vec());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.send().await.expect("request")
}

#[tokio::test]
async fn header_auth_verifies_the_payload_hash() {
    let server = embedded(900).await;
    let body = pattern(50_000, 1);
    let hash = sha256_hex(&body);
    let response =
        send_header_signed(&server, reqwest::Method::PUT, "store-a/h", &body, &hash).await;
    assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap_or_default());

    let wrong = sha256_hex(b"something else");
    let response =
        send_header_signed(&server, reqwest::Method::PUT, "store-a/h2", &body, &wrong).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.expect("body").contains("XAmzContentSHA256Mismatch"));

    let response =
        send_header_signed(&server, reqwest::Method::GET, "store-a/h", b"", "UNSIGNED-PAYLOAD")
            .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.expect("body").as_ref(), body.as_slice());
    let response =
        send_header_signed(&server, reqwest::Method::GET, "store-a/h2", b"", "UNSIGNED-PAYLOAD")
            .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "a refused PUT must leave no object");

    let streaming = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
    let response =
        send_header_signed(&server, reqwest::Method::PUT, "store-a/h3", &body, streaming).await;
    assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
}

#[tokio::test]
async fn rusty_s3_tool_round_trip_head_and_checksum_mode() {
    let server = embedded(900).await;
    let (bucket, credentials) = tool(&server);
    let http = reqwest::Client::new();
    let body = pattern(3000, 2);
    let put = bucket.put_object(Some(&credentials), "store-a/tool").sign(Duration::from_secs(60));
    let response = http
        .put(put)
        .header("content-type", "text/csv")
        .body(body.clone())
        .send()
        .await
        .expect("PUT");
    assert_eq!(response.status(), StatusCode::OK);
    let etag = response.headers()["etag"].to_str().expect("etag").to_owned();

    let mut head = bucket.head_object(Some(&credentials), "store-a/tool");
    head.headers_mut().insert("x-amz-checksum-mode", "ENABLED");
    let url = head.sign(Duration::from_secs(60));
    let response =
        http.head(url).header("x-amz-checksum-mode", "ENABLED").send().await.expect("HEAD");
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(headers["content-length"], "3000");
    assert_eq!(headers["content-type"], "text/csv");
    assert_eq!(headers["etag"].to_str().expect("etag"), etag);
    assert!(headers.contains_key("last-modified"));
    assert_eq!(headers["cross-origin-resource-policy"], "cross-origin");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["content-security-policy"], "default-src 'none'; sandbox");
    let expected = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&body))
    };
    assert_eq!(headers["x-amz-checksum-sha256"].to_str().expect("checksum"), expected);

    let missing =
        bucket.head_object(Some(&credentials), "store-a/none").sign(Duration::from_secs(60));
    assert_eq!(http.head(missing).send().await.expect("HEAD").status(), StatusCode::NOT_FOUND);

    // Bucket-level calls S3 tools make on startup.
    let head_bucket = bucket.head_bucket(Some(&credentials)).sign(Duration::from_secs(60));
    assert_eq!(http.head(head_bucket).send().await.expect("HEAD").status(), StatusCode::OK);
    let list = bucket.list_objects_v2(Some(&credentials)).sign(Duration::from_secs(60));
    assert_eq!(http.get(list).send().await.expect("GET").status(), StatusCode::NOT_IMPLEMENTED);
    let other = Bucket::new(
        format!("{}/s3", server.base).parse().expect("url"),
        UrlStyle::Path,
        "other",
        "us-east-1",
    )
    .expect("bucket");
    let url = other.get_object(Some(&credentials), "store-a/tool").sign(Duration::from_secs(60));
    let response = http.get(url).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.text().await.expect("body").contains("NoSuchBucket"));
}

#[tokio::test]
async fn ranges_and_conditional_get() {
    let server = embedded(900).await;
    let client = Client::new(&server, Some(TOKEN_A));
    let body = pattern(1000, 3);
    client.upload("store-a/ranged", &body).await;
    let url = client.sign_download("store-a/ranged").await;
    let get = |range: &'static str| client.http.get(&url).header("range", range).send();

    let response = get("bytes=10-19").await.expect("GET");
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.headers()["content-range"], "bytes 10-19/1000");
    assert_eq!(response.bytes().await.expect("body").as_ref(), &body[10..20]);

    let response = get("bytes=-5").await.expect("GET");
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.bytes().await.expect("body").as_ref(), &body[995..]);

    let response = get("bytes=990-").await.expect("GET");
    assert_eq!(response.bytes().await.expect("body").as_ref(), &body[990..]);

    let response = get("bytes=1000-").await.expect("GET");
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert!(response.text().await.expect("body").contains("InvalidRange"));

    let etag = client.http.get(&url).send().await.expect("GET").headers()["etag"].clone();
    let response = client.http.get(&url).header("if-none-match", etag).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn store_cors_allows_browser_put_and_exposes_etag() {
    let server = embedded(900).await;
    let client = Client::new(&server, Some(TOKEN_A));
    let signed = client.sign_upload(serde_json::json!({ "key": "store-a/cors" })).await;
    let url = signed["url"].as_str().expect("url");
    let response = client
        .http
        .request(reqwest::Method::OPTIONS, url)
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "content-type,x-amz-checksum-sha256")
        .send()
        .await
        .expect("OPTIONS");
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let allowed = response.headers()["access-control-allow-headers"].to_str().expect("headers");
    assert!(allowed.contains("x-amz-checksum-sha256"), "{allowed}");

    let response = client
        .http
        .put(url)
        .header("origin", "http://localhost:5173")
        .body("hello")
        .send()
        .await
        .expect("PUT");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .expect("expose")
        .to_ascii_lowercase();
    assert!(exposed.contains("etag"), "{exposed}");
}

#[tokio::test]
async fn unsigned_checksum_header_is_still_verified() {
    let server = embedded(900).await;
    let client = Client::new(&server, Some(TOKEN_A));
    let signed = client.sign_upload(serde_json::json!({ "key": "store-a/c" })).await;
    let wrong = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(b"other"))
    };
    let response = client
        .http
        .put(signed["url"].as_str().expect("url"))
        .header("x-amz-checksum-sha256", wrong)
        .body("payload")
        .send()
        .await
        .expect("PUT");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.expect("body").contains("BadDigest"));
    let response = client
        .http
        .put(signed["url"].as_str().expect("url"))
        .header("x-amz-checksum-sha256", "not base64!")
        .body("payload")
        .send()
        .await
        .expect("PUT");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        response.text().await.expect("body").contains("x-amz-checksum-sha256 header is invalid")
    );
    assert_eq!(client.download("store-a/c").await, None);
}

#[tokio::test]
async fn interrupted_upload_leaves_no_object_and_no_temp_file() {
    let server = embedded(900).await;
    let client = Client::new(&server, Some(TOKEN_A));
    let signed = client.sign_upload(serde_json::json!({ "key": "store-a/cut" })).await;
    let url: reqwest::Url = signed["url"].as_str().expect("url").parse().expect("url");
    let address = format!("{}:{}", url.host_str().expect("host"), url.port().expect("port"));
    let mut stream = tokio::net::TcpStream::connect(&address).await.expect("connect");
    let head = format!(
        "PUT {}?{} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 10000000\r\n\r\n",
        url.path(),
        url.query().expect("query")
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(&pattern(300_000, 1)).await.expect("write part of the body");
    stream.flush().await.expect("flush");
    // Wait until the server receives into a temp file, then vanish. (Had it refused the request outright, there
    // would be nothing to clean up and the checks below would hold for nothing.)
    let tmp = server.data_dir.join("tmp");
    let mut receiving = false;
    for _ in 0..100 {
        receiving = std::fs::read_dir(&tmp).expect("tmp dir").count() > 0;
        if receiving {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(receiving, "the upload never reached a temp file");
    drop(stream);

    let mut leftover = usize::MAX;
    for _ in 0..50 {
        leftover = std::fs::read_dir(&tmp).expect("tmp dir").count();
        if leftover == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(leftover, 0, "the partial temp file must be removed");
    assert_eq!(client.download("store-a/cut").await, None, "no partial object may become visible");
}

#[tokio::test]
async fn restart_keeps_objects_credentials_and_cleans_temp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("objects");
    let first =
        serve(livestore_objects::FilesConfig::embedded(&data_dir), None, data_dir.clone()).await;
    let client = Client::new(&first, Some(TOKEN_A));
    client.upload("store-a/durable", b"still here").await;
    let credentials_before = first.services.embedded_store().expect("embedded");
    drop(client);
    first.stop().await;

    std::fs::write(data_dir.join("tmp").join("stale.tmp"), b"crash leftovers")
        .expect("write stale temp");
    let second =
        serve_when_free(livestore_objects::FilesConfig::embedded(&data_dir), data_dir.clone())
            .await;
    assert_eq!(
        std::fs::read_dir(data_dir.join("tmp")).expect("tmp").count(),
        0,
        "stale temp files are removed"
    );
    // Generated credentials are kept, so URLs signed before a restart stay valid.
    assert_eq!(second.services.embedded_store().expect("embedded"), credentials_before);
    let client = Client::new(&second, Some(TOKEN_A));
    assert_eq!(client.download("store-a/durable").await.as_deref(), Some(&b"still here"[..]));
}

#[tokio::test]
async fn anonymous_and_malformed_auth_get_s3_errors() {
    let server = embedded(900).await;
    let http = reqwest::Client::new();
    let url = format!("{}/s3/livestore-files/store-a/x", server.base);
    let response = http.get(&url).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.headers()["content-type"], "application/xml");
    assert!(response.text().await.expect("body").contains("<Code>AccessDenied</Code>"));

    let response = http.get(format!("{url}?X-Amz-Signature=abc")).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.expect("body").contains("AuthorizationQueryParametersError"));

    let response = http.get(&url).header("authorization", "Bearer nope").send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.expect("body").contains("AuthorizationHeaderMalformed"));

    // Paths under /s3 never fall through to another route.
    for path in ["/s3", "/s3/"] {
        let response = http.get(format!("{}{path}", server.base)).send().await.expect("GET");
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
    }
}

#[tokio::test]
async fn empty_and_chunked_bodies() {
    let server = embedded(900).await;
    let client = Client::new(&server, Some(TOKEN_A));
    // No Content-Length on an empty PUT means an empty body.
    let signed = client.sign_upload(serde_json::json!({ "key": "store-a/empty" })).await;
    let response = client.http.put(signed["url"].as_str().expect("url")).send().await.expect("PUT");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(client.download("store-a/empty").await.map(|body| body.len()), Some(0));

    // A chunked body of unknown length is refused, as S3 does.
    let signed = client.sign_upload(serde_json::json!({ "key": "store-a/chunked" })).await;
    let stream =
        futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"abc"))]);
    let response = client
        .http
        .put(signed["url"].as_str().expect("url"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("PUT");
    assert_eq!(response.status(), StatusCode::LENGTH_REQUIRED);
    assert!(response.text().await.expect("body").contains("MissingContentLength"));
    assert_eq!(client.download("store-a/chunked").await, None);
}

#[tokio::test]
async fn second_process_on_the_same_data_dir_is_refused() {
    let server = embedded(900).await;
    let config = livestore_objects::FilesConfig::embedded(&server.data_dir);
    let error = livestore_objects::FileServices::start(
        config,
        std::sync::Arc::new(livestore_objects::AllowAll),
    )
    .await
    .expect_err("the data dir is locked");
    assert!(error.to_string().contains("in use by another process"), "{error}");
}
