//! One conformance suite, run against the embedded store, s3s-fs and (when `GARAGE_BIN` is set) Garage.
//!
//! Every scenario goes through the signer (`/api/...`) and then talks to the
//! presigned URLs over HTTP, so it checks both that our URLs are valid for an
//! independent S3 implementation and that our store enforces what S3 does.
//! Where s3s-fs and the embedded store pick different 4xx codes for the same
//! refusal, the suite asserts the class and that no object was written, and
//! the embedded store's exact code.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{
    Client, ExternalS3, Server, TOKEN_A, embedded, garage_binary, pattern, s3s_fs_binary,
    sha256_hex,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Embedded,
    S3sFs,
    Garage,
}

pub(crate) struct Ctx {
    pub(crate) kind: Kind,
    pub(crate) server: Server,
    external: Option<ExternalS3>,
}

impl Ctx {
    async fn embedded() -> Self {
        Self { kind: Kind::Embedded, server: embedded(900).await, external: None }
    }

    async fn s3s_fs() -> Option<Self> {
        let external = ExternalS3::s3s_fs(&s3s_fs_binary()?).await;
        let server = external.signer(900).await;
        Some(Self { kind: Kind::S3sFs, server, external: Some(external) })
    }

    async fn garage() -> Option<Self> {
        let external = ExternalS3::garage(&garage_binary()?).await;
        let server = external.signer(900).await;
        Some(Self { kind: Kind::Garage, server, external: Some(external) })
    }

    /// Another signer over the same object store with a different URL lifetime.
    async fn with_ttl(&self, ttl_seconds: u64) -> Server {
        match &self.external {
            Some(external) => external.signer(ttl_seconds).await,
            None => embedded(ttl_seconds).await,
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.server, Some(TOKEN_A))
    }

    /// The object store seen by a plain S3 tool (rusty-s3, path-style).
    fn tool(&self) -> (rusty_s3::Bucket, rusty_s3::Credentials) {
        if let Some(external) = &self.external {
            return external.tool();
        }
        let info = self.server.services.embedded_store().expect("embedded store");
        let url = format!("{}/s3", self.server.base).parse().expect("endpoint url");
        let bucket = rusty_s3::Bucket::new(url, rusty_s3::UrlStyle::Path, info.bucket, info.region)
            .expect("bucket");
        (bucket, rusty_s3::Credentials::new(info.access_key_id, info.secret_access_key))
    }
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(&super::Ctx::embedded().await).await;
                }
            )*
        }
        mod s3s_fs {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let Some(ctx) = super::Ctx::s3s_fs().await else { return };
                    super::$scenario(&ctx).await;
                }
            )*
        }
        mod garage {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let Some(ctx) = super::Ctx::garage().await else { return };
                    super::$scenario(&ctx).await;
                }
            )*
        }
    };
}

conformance!(
    round_trip,
    presigned_head_and_delete,
    interesting_sizes,
    unicode_keys,
    expires_at_matches_signed_url,
    tampered_signature_rejected,
    url_reused_for_other_key_rejected,
    url_used_with_other_method_rejected,
    unsigned_request_rejected,
    expired_url_rejected,
    checksum_enforced,
    length_enforced,
    existence_check,
    batch_signing,
    delete_missing_is_ok,
    multipart_round_trip,
    multipart_resume_lists_parts,
    multipart_abort,
);

async fn round_trip(ctx: &Ctx) {
    let client = ctx.client();
    let body = pattern(100_000, 1);
    let key = format!("store-a/{}", sha256_hex(&body));
    let signed = client
        .sign_upload(json!({ "key": key, "contentType": "image/png", "contentLength": body.len() }))
        .await;
    assert_eq!(signed["method"], "PUT");
    assert!(signed.get("headers").is_none(), "no headers without sha256: {signed}");
    let response = client.put_signed(&signed, body.clone()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("etag"), "upload must return an ETag");
    assert_eq!(client.download(&key).await.as_deref(), Some(body.as_slice()));
    let (status, _) = client.post("/v1/delete", json!({ "key": key })).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(client.download(&key).await, None, "object must be gone after delete");
}

/// Sizes around the store's 1 MiB streaming chunk, plus the empty object.
const INTERESTING_SIZES: [usize; 6] = [
    0,               // empty object: no body chunks at all
    1,               // smallest body
    1024 * 1024 - 1, // one byte short of a read chunk
    1024 * 1024,     // exactly one chunk
    1024 * 1024 + 1, // one byte into the second chunk
    3 * 1024 * 1024 + 17,
];

async fn interesting_sizes(ctx: &Ctx) {
    let client = ctx.client();
    for size in INTERESTING_SIZES {
        let body = pattern(size, 11);
        let digest = sha256_hex(&body);
        let key = format!("store-a/{digest}");
        let signed = client
            .sign_upload(json!({ "key": key, "contentLength": size, "sha256": digest }))
            .await;
        let response = client.put_signed(&signed, body.clone()).await;
        assert_eq!(response.status(), StatusCode::OK, "size {size}");
        let downloaded = client.download(&key).await.expect("object exists");
        assert!(downloaded == body, "size {size}: got {} bytes back", downloaded.len());
    }
}

async fn presigned_head_and_delete(ctx: &Ctx) {
    use rusty_s3::S3Action as _;
    let client = ctx.client();
    let key = "store-a/ünï head";
    client.upload(key, &pattern(777, 8)).await;
    let (bucket, credentials) = ctx.tool();
    let ttl = std::time::Duration::from_secs(60);
    let head = bucket.head_object(Some(&credentials), key).sign(ttl);
    let response = client.http.head(head.clone()).send().await.expect("HEAD");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-length"], "777");
    assert!(response.headers().contains_key("etag"));
    let delete = bucket.delete_object(Some(&credentials), key).sign(ttl);
    let response = client.http.delete(delete.clone()).send().await.expect("DELETE");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = client.http.head(head).send().await.expect("HEAD");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // Deleting again is still a success, as in S3.
    let response = client.http.delete(delete).send().await.expect("DELETE");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

async fn unicode_keys(ctx: &Ctx) {
    let client = ctx.client();
    for (index, name) in
        ["ünïcödé 日本語.txt", "a+b=c&d?e#f%g", "emoji 🎉 (1) [x] ~'!*.bin", "ø/ñ/deep/path"]
            .iter()
            .enumerate()
    {
        let key = format!("store-a/{name}");
        let body = pattern(1000 + index, 7);
        client.upload(&key, &body).await;
        assert_eq!(client.download(&key).await.as_deref(), Some(body.as_slice()), "{key}");
    }
}

async fn expires_at_matches_signed_url(ctx: &Ctx) {
    let client = ctx.client();
    for path in ["/v1/sign/upload", "/v1/sign/download"] {
        let (status, json) = client.post(path, json!({ "key": "store-a/x" })).await;
        assert_eq!(status, StatusCode::OK);
        let url = reqwest::Url::parse(json["url"].as_str().expect("url")).expect("valid url");
        let param = |name: &str| {
            url.query_pairs()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.into_owned())
                .expect(name)
        };
        assert_eq!(param("X-Amz-Expires"), "900");
        let signed_at: jiff::Timestamp =
            jiff::fmt::strtime::parse("%Y%m%dT%H%M%SZ", param("X-Amz-Date"))
                .and_then(|parsed| parsed.to_datetime())
                .and_then(|datetime| datetime.to_zoned(jiff::tz::TimeZone::UTC))
                .map(|zoned| zoned.timestamp())
                .expect("X-Amz-Date");
        let expires_at: jiff::Timestamp =
            json["expiresAt"].as_str().expect("expiresAt").parse().expect("ISO date");
        assert_eq!(expires_at.as_second() - signed_at.as_second(), 900, "{json}");
        assert!(json["expiresAt"].as_str().expect("str").ends_with(".000Z"), "JS toISOString form");
    }
}

async fn tampered_signature_rejected(ctx: &Ctx) {
    let client = ctx.client();
    let signed = client.sign_upload(json!({ "key": "store-a/tampered" })).await;
    let url = signed["url"].as_str().expect("url");
    let position = url.find("X-Amz-Signature=").expect("signature") + "X-Amz-Signature=".len();
    let mut tampered = url.to_owned();
    let flipped = if &url[position..=position] == "0" { "1" } else { "0" };
    tampered.replace_range(position..=position, flipped);
    let response = client.http.put(tampered).body("evil").send().await.expect("PUT");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let text = response.text().await.expect("body");
    match ctx.kind {
        Kind::Embedded | Kind::S3sFs => assert!(text.contains("SignatureDoesNotMatch"), "{text}"),
        // Garage 2.5.0 answers `AccessDenied` with "Invalid signature" for the same refusal.
        Kind::Garage => assert!(text.contains("Invalid signature"), "{text}"),
    }
    assert_eq!(client.download("store-a/tampered").await, None);
}

async fn url_reused_for_other_key_rejected(ctx: &Ctx) {
    let client = ctx.client();
    let signed = client.sign_upload(json!({ "key": "store-a/allowed" })).await;
    let url = signed["url"].as_str().expect("url").replace("store-a/allowed", "store-b/stolen");
    let response = client.http.put(url).body("evil").send().await.expect("PUT");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let other = Client::new(&ctx.server, Some(crate::harness::TOKEN_B));
    assert_eq!(other.download("store-b/stolen").await, None);
}

async fn url_used_with_other_method_rejected(ctx: &Ctx) {
    let client = ctx.client();
    client.upload("store-a/method", b"data").await;
    let put_url = client.sign_upload(json!({ "key": "store-a/method" })).await["url"]
        .as_str()
        .expect("url")
        .to_owned();
    let response = client.http.get(&put_url).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "a PUT URL must not allow GET");
    let response = client.http.delete(&put_url).send().await.expect("DELETE");
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "a PUT URL must not allow DELETE");
    assert_eq!(client.download("store-a/method").await.as_deref(), Some(&b"data"[..]));
}

async fn unsigned_request_rejected(ctx: &Ctx) {
    let client = ctx.client();
    client.upload("store-a/private", b"secret").await;
    let url = client.sign_download("store-a/private").await;
    let bare = url.split('?').next().expect("path").to_owned();
    let response = client.http.get(&bare).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = client.http.put(&bare).body("anonymous").send().await.expect("PUT");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

async fn expired_url_rejected(ctx: &Ctx) {
    let short = ctx.with_ttl(1).await;
    let client = Client::new(&short, Some(TOKEN_A));
    let signed = client.sign_upload(json!({ "key": "store-a/late" })).await;
    assert!(signed["url"].as_str().expect("url").contains("X-Amz-Expires=1&"));
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let response = client.put_signed(&signed, b"late".to_vec()).await;
    let status = response.status();
    let text = response.text().await.expect("body");
    match ctx.kind {
        Kind::Embedded | Kind::S3sFs => {
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert!(text.contains("expired"), "{text}");
        }
        // Garage 2.5.0 refuses an expired URL with 400 `InvalidRequest: Date is too old`.
        Kind::Garage => {
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert!(text.contains("too old"), "{text}");
        }
    }
    assert_eq!(client.download("store-a/late").await, None);
}

async fn checksum_enforced(ctx: &Ctx) {
    let client = ctx.client();
    let body = pattern(64 * 1024, 3);
    let digest = sha256_hex(&body);
    let key = format!("store-a/{digest}");
    let signed = client
        .sign_upload(json!({ "key": key, "contentLength": body.len(), "sha256": digest, "contentType": "text/plain" }))
        .await;
    let headers = signed["headers"].as_object().expect("headers are returned with sha256");
    assert_eq!(headers["Content-Length"], body.len().to_string());
    assert_eq!(headers["Content-Type"], "text/plain");
    assert!(headers.contains_key("x-amz-checksum-sha256"));
    let url = signed["url"].as_str().expect("url");
    assert!(
        url.contains(
            "X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost%3Bx-amz-checksum-sha256"
        ),
        "{url}"
    );

    // Same length, different bytes: the store must refuse and keep nothing.
    let mut wrong = body.clone();
    wrong[100] ^= 0xff;
    let response = client.put_signed(&signed, wrong).await;
    let status = response.status();
    let text = response.text().await.expect("body");
    assert!(status.is_client_error(), "wrong bytes must be refused, got {status} {text}");
    if ctx.kind == Kind::Embedded {
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.contains("BadDigest"), "{text}");
    }
    let stored = client.download(&key).await.map(|body| body.len());
    match ctx.kind {
        Kind::Embedded | Kind::Garage => {
            assert_eq!(stored, None, "no object after a checksum failure")
        }
        // FIXME(s3s-fs 0.14.1): it answers 400 BadDigest but has already
        // published the wrong bytes. Our store does not; upstream bug.
        Kind::S3sFs => {
            assert_eq!(stored, Some(body.len()), "s3s-fs behaviour changed: update this test")
        }
    }

    // A checksum header different from the signed one fails the signature.
    let mut request = client.http.put(url).body(body.clone()).header("content-type", "text/plain");
    request =
        request.header("x-amz-checksum-sha256", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    let response = request.send().await.expect("PUT");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let response = client.put_signed(&signed, body.clone()).await;
    assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap_or_default());
    assert!(client.download(&key).await == Some(body), "stored bytes differ");
}

async fn length_enforced(ctx: &Ctx) {
    let client = ctx.client();
    let body = pattern(10_000, 5);
    let digest = sha256_hex(&body);
    let key = format!("store-a/{digest}");
    let signed = client
        .sign_upload(json!({ "key": key, "contentLength": body.len(), "sha256": digest }))
        .await;
    for (label, attempt) in
        [("short", body[..9_999].to_vec()), ("long", [body.as_slice(), b"extra"].concat())]
    {
        let response = client.put_signed(&signed, attempt).await;
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "{label} body must fail the signed Content-Length"
        );
        assert!(client.download(&key).await.is_none(), "{label} body must not be stored");
    }
    let response = client.put_signed(&signed, body.clone()).await;
    assert_eq!(response.status(), StatusCode::OK);
}

async fn existence_check(ctx: &Ctx) {
    let client = ctx.client();
    let body = pattern(4096, 9);
    let digest = sha256_hex(&body);
    let key = format!("store-a/{digest}");
    let (status, json) = client.post("/v1/head", json!({ "key": key })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json, json!({ "exists": false }));
    client.upload(&key, &body).await;
    let (status, json) = client.post("/v1/head", json!({ "key": key })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["exists"], true);
    assert_eq!(json["size"], 4096);
    assert!(json["etag"].as_str().is_some_and(|etag| !etag.is_empty()), "{json}");
    if ctx.kind == Kind::Embedded {
        assert_eq!(
            json["sha256"],
            digest.as_str(),
            "the embedded store knows every object's SHA-256"
        );
    }
}

/// `sign/uploads`: existence and a checksum-bound URL per entry, in request order; a bad entry is refused alone.
async fn batch_signing(ctx: &Ctx) {
    let client = ctx.client();
    let stored = pattern(4096, 21);
    let fresh = pattern(3000, 22);
    let stored_key = format!("store-a/{}", sha256_hex(&stored));
    let fresh_key = format!("store-a/{}", sha256_hex(&fresh));
    client.upload(&stored_key, &stored).await;
    let entry = |key: &str, bytes: &[u8]| json!({ "key": key, "contentLength": bytes.len(), "sha256": sha256_hex(bytes) });
    let (status, json) = client
        .post(
            "/v1/sign/uploads",
            json!({ "uploads": [
                entry(&stored_key, &stored),
                entry(&fresh_key, &fresh),
                { "key": "store-a/../x", "contentLength": 1, "sha256": sha256_hex(b"x") },
                { "key": "store-a/unbound", "contentLength": 1 },
            ] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let results = json["results"].as_array().expect("results");
    assert_eq!(results.len(), 4, "{json}");
    assert_eq!(results[0]["key"], stored_key.as_str());
    assert_eq!(results[0]["exists"], true);
    assert_eq!(results[0]["size"], 4096);
    if ctx.kind == Kind::Embedded {
        assert_eq!(results[0]["sha256"], sha256_hex(&stored).as_str());
    }
    assert_eq!(results[1]["key"], fresh_key.as_str());
    assert_eq!(results[1]["exists"], false);
    assert_eq!(results[1]["method"], "PUT");
    assert!(results[1]["headers"]["x-amz-checksum-sha256"].is_string(), "{json}");
    assert_eq!(results[2]["status"], 400);
    assert!(results[2]["error"].as_str().expect("error").starts_with("Invalid key"), "{json}");
    assert!(results[2].get("url").is_none());
    assert_eq!(results[3]["status"], 400);
    assert!(results[3]["error"].as_str().expect("error").contains("sha256"), "{json}");
    // The URL is checksum-bound like a single sign/upload: other bytes are refused, the right ones stored.
    let response = client.put_signed(&results[1], pattern(3000, 23)).await;
    assert!(response.status().is_client_error(), "{}", response.status());
    if ctx.kind == Kind::Embedded {
        // FIXME(s3s-fs): it answers BadDigest but keeps the wrong bytes (see `checksum_enforced`).
        assert!(client.download(&fresh_key).await.is_none());
    }
    let response = client.put_signed(&results[1], fresh.clone()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(client.download(&fresh_key).await.expect("stored"), fresh);
}

async fn delete_missing_is_ok(ctx: &Ctx) {
    let (status, json) =
        ctx.client().post("/v1/delete", json!({ "key": "store-a/never-existed" })).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{json}");
}

const PART: usize = 5 * 1024 * 1024;

async fn upload_part(
    client: &Client,
    key: &str,
    upload_id: &str,
    number: u32,
    body: &[u8],
    with_sha: bool,
) -> String {
    let mut request = json!({ "key": key, "uploadId": upload_id, "partNumber": number, "contentLength": body.len() });
    if with_sha {
        request["sha256"] = json!(sha256_hex(body));
    }
    let (status, signed) = client.post("/v1/multipart/sign-part", request).await;
    assert_eq!(status, StatusCode::OK, "{signed}");
    let response = client.put_signed(&signed, body.to_vec()).await;
    assert_eq!(response.status(), StatusCode::OK, "part {number}: {}", response.status());
    response.headers()["etag"].to_str().expect("etag").to_owned()
}

async fn multipart_round_trip(ctx: &Ctx) {
    let client = ctx.client();
    let key = "store-a/big-object";
    let (status, created) = client
        .post("/v1/multipart/create", json!({ "key": key, "contentType": "video/mp4" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let upload_id = created["uploadId"].as_str().expect("uploadId").to_owned();
    assert_eq!(created["minPartSize"], PART);
    let first = pattern(PART, 1);
    let second = pattern(1024, 2);
    let etag1 = upload_part(&client, key, &upload_id, 1, &first, true).await;
    let etag2 = upload_part(&client, key, &upload_id, 2, &second, false).await;
    let (status, completed) = client
        .post(
            "/v1/multipart/complete",
            json!({ "key": key, "uploadId": upload_id, "parts": [
                { "partNumber": 1, "etag": etag1 }, { "partNumber": 2, "etag": etag2 } ] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{completed}");
    assert!(completed["etag"].as_str().is_some_and(|etag| !etag.is_empty()));
    let downloaded = client.download(key).await.expect("assembled object");
    assert_eq!(downloaded.len(), PART + 1024);
    assert!(downloaded[..PART] == first[..] && downloaded[PART..] == second[..], "parts in order");
}

async fn multipart_resume_lists_parts(ctx: &Ctx) {
    let client = ctx.client();
    let key = "store-a/resumed";
    let (_, created) = client.post("/v1/multipart/create", json!({ "key": key })).await;
    let upload_id = created["uploadId"].as_str().expect("uploadId").to_owned();
    let first = pattern(PART, 4);
    let etag1 = upload_part(&client, key, &upload_id, 1, &first, false).await;
    // A "restarted" client asks which parts are already there.
    let (status, listed) =
        client.post("/v1/multipart/parts", json!({ "key": key, "uploadId": upload_id })).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let parts = listed["parts"].as_array().expect("parts");
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0]["partNumber"], 1);
    assert_eq!(parts[0]["size"], PART);
    match ctx.kind {
        Kind::Embedded | Kind::Garage => {
            assert_eq!(
                parts[0]["etag"].as_str().map(|etag| etag.trim_matches('"')),
                Some(etag1.trim_matches('"'))
            );
        }
        // FIXME(s3s-fs 0.14.1): ListParts omits <ETag>; the signer then omits
        // `etag` and the client must have kept the ETag from the part upload.
        Kind::S3sFs => assert!(parts[0].get("etag").is_none(), "{listed}"),
    }
    let last = pattern(10, 5);
    let etag2 = upload_part(&client, key, &upload_id, 2, &last, false).await;
    let (status, _) = client
        .post(
            "/v1/multipart/complete",
            json!({ "key": key, "uploadId": upload_id, "parts": [
                { "partNumber": 1, "etag": etag1 }, { "partNumber": 2, "etag": etag2 } ] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(client.download(key).await.map(|body| body.len()), Some(PART + 10));
}

async fn multipart_abort(ctx: &Ctx) {
    let client = ctx.client();
    let key = "store-a/aborted";
    let (_, created) = client.post("/v1/multipart/create", json!({ "key": key })).await;
    let upload_id = created["uploadId"].as_str().expect("uploadId").to_owned();
    let etag = upload_part(&client, key, &upload_id, 1, b"tiny", false).await;
    let (status, json) =
        client.post("/v1/multipart/abort", json!({ "key": key, "uploadId": upload_id })).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{json}");
    let (status, json) = client
        .post(
            "/v1/multipart/complete",
            json!({ "key": key, "uploadId": upload_id, "parts": [{ "partNumber": 1, "etag": etag }] }),
        )
        .await;
    assert!(status.is_client_error(), "completing an aborted upload must fail: {status} {json}");
    assert_eq!(client.download(key).await, None);
}
