//! The signer client: `@livestore-filesync`'s `/api` contract (health, sign upload/download, delete) plus the
//! `livestore serve` extensions (existence check, checksum-bound uploads, batched signing, multipart), and the
//! data-plane PUT/GET of presigned URLs with streaming bodies.
//!
//! Every call maps failures to a [`RemoteError`] that says what was being done: network errors, 401/403
//! (revoked or wrong token), expired URLs, 404s, other statuses with the body's first bytes, and 2xx answers that
//! are not the contract's JSON ("a server that returns garbage"). Nothing here retries; the engine decides.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::RemoteError;

/// Where the signer is and how to authenticate.
#[derive(Clone)]
pub struct RemoteConfig {
    /// The signer base URL, e.g. `http://127.0.0.1:8787/api`.
    pub signer_url: String,
    /// Sent as `Authorization: Bearer <token>` on signer calls.
    pub auth_token: Option<String>,
}

impl std::fmt::Debug for RemoteConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RemoteConfig")
            .field("signer_url", &self.signer_url)
            .field("auth_token", &self.auth_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A presigned request: what to send where.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedRequest {
    /// `PUT` (or `POST`) for uploads; absent (GET) for downloads.
    #[serde(default)]
    pub method: Option<String>,
    /// The presigned URL.
    pub url: String,
    /// Headers the request must carry.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// When the URL stops working, ISO-8601.
    #[serde(default)]
    pub expires_at: Option<String>,
}

impl SignedRequest {
    /// Epoch ms at which the URL expires, if the signer said.
    pub fn expires_at_ms(&self) -> Option<i64> {
        self.expires_at.as_deref().and_then(livestore_client::schema::datetime::parse_iso_millis)
    }
}

/// Answer of `/v1/head`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectInfo {
    /// Whether the object exists.
    pub exists: bool,
    /// Its size.
    #[serde(default)]
    pub size: Option<u64>,
    /// Its SHA-256, when the store knows it.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// Answer of `/v1/multipart/create`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MultipartUpload {
    /// The upload id.
    pub upload_id: String,
    /// Every part but the last must be at least this large.
    #[serde(default)]
    pub min_part_size: Option<u64>,
}

/// One uploaded part as `/v1/multipart/parts` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadedPart {
    /// 1-based part number.
    pub part_number: u32,
    /// The part's ETag, absent when the store does not report it.
    #[serde(default)]
    pub etag: Option<String>,
    /// Its size.
    pub size: u64,
}

#[derive(Deserialize)]
struct PartsResponse {
    parts: Vec<UploadedPart>,
}

/// One upload to sign in a [`SignerClient::sign_uploads`] batch; always checksum-bound.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadToSign {
    /// The object key.
    pub key: String,
    /// Exact body length.
    pub content_length: u64,
    /// Hex SHA-256 of the body.
    pub sha256: String,
    /// MIME type to store with the object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// The signer's answer for one entry of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchSigned {
    /// What the key holds now, and a checksum-bound upload for it.
    Signed {
        /// The existence check (`exists: false` when nothing is stored under the key).
        existing: ObjectInfo,
        /// The upload.
        upload: SignedRequest,
    },
    /// The signer refused this entry (the others are unaffected).
    Refused {
        /// The entry's HTTP-like status (400 for bad input).
        status: u16,
        /// Why.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchEntry {
    key: String,
    #[serde(default)]
    exists: Option<bool>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(flatten)]
    upload: Option<SignedRequest>,
}

#[derive(Deserialize)]
struct BatchResponse {
    results: Vec<BatchEntry>,
}

/// The signer and data-plane client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SignerClient {
    base: Arc<str>,
    token: Option<Arc<str>>,
    http: reqwest::Client,
    /// Set once the signer answered 404/405 to `sign/uploads`, so later batches go straight to the general path.
    batch_signing_unsupported: Arc<AtomicBool>,
}

/// Bytes moved so far by a transfer, shared with whoever reports progress.
pub type ProgressCounter = Arc<AtomicU64>;

impl SignerClient {
    /// A client for `config`.
    pub fn new(config: &RemoteConfig) -> SignerClient {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Idle bodies (a stalled server) fail instead of hanging forever.
            .read_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(32)
            // Small requests (signing, small PUTs) must not wait for Nagle's algorithm.
            .tcp_nodelay(true)
            .build()
            .expect("a reqwest client with rustls builds");
        SignerClient {
            base: Arc::from(config.signer_url.trim_end_matches('/')),
            token: config.auth_token.as_deref().map(Arc::from),
            http,
            batch_signing_unsupported: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether this signer answered that it has no `sign/uploads`.
    pub(crate) fn batch_signing_unsupported(&self) -> bool {
        self.batch_signing_unsupported.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_batch_signing_unsupported(&self) {
        self.batch_signing_unsupported.store(true, Ordering::Relaxed);
    }

    /// The signer base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET /health`: true iff 2xx within 5 s. Never fails.
    pub async fn health(&self) -> bool {
        let request =
            self.http.get(format!("{}/health", self.base)).timeout(Duration::from_secs(5));
        matches!(request.send().await, Ok(response) if response.status().is_success())
    }

    /// `POST /v1/sign/upload`, checksum-bound when `sha256` is given.
    pub async fn sign_upload(
        &self,
        key: &str,
        content_length: u64,
        sha256: Option<&str>,
        content_type: Option<&str>,
    ) -> Result<SignedRequest, RemoteError> {
        let mut body = serde_json::json!({ "key": key, "contentLength": content_length });
        if let Some(sha256) = sha256 {
            body["sha256"] = sha256.into();
        }
        if let Some(content_type) = content_type {
            body["contentType"] = content_type.into();
        }
        let signed: SignedRequest = self.call("sign upload", "/v1/sign/upload", &body).await?;
        validate_signed("sign upload", &signed, true)?;
        Ok(signed)
    }

    /// `POST /v1/sign/uploads` (extension): existence check and checksum-bound signing for many keys in one round
    /// trip; the answers come in request order. A signer without the extension answers 404 or 405
    /// ([`RemoteError::Status`]); callers then fall back to [`SignerClient::head`] and
    /// [`SignerClient::sign_upload`].
    pub async fn sign_uploads(
        &self,
        uploads: &[UploadToSign],
    ) -> Result<Vec<BatchSigned>, RemoteError> {
        let operation = "sign uploads";
        let body = serde_json::json!({ "uploads": uploads });
        let response: BatchResponse = self.call(operation, "/v1/sign/uploads", &body).await?;
        batch_answers(response, uploads)
    }

    /// `POST /v1/sign/download`.
    pub async fn sign_download(&self, key: &str) -> Result<SignedRequest, RemoteError> {
        let signed: SignedRequest = self
            .call("sign download", "/v1/sign/download", &serde_json::json!({ "key": key }))
            .await?;
        validate_signed("sign download", &signed, false)?;
        Ok(signed)
    }

    /// `POST /v1/delete` (2xx, including for a missing object, is success).
    pub async fn delete(&self, key: &str) -> Result<(), RemoteError> {
        self.call_raw("delete", "/v1/delete", &serde_json::json!({ "key": key })).await.map(drop)
    }

    /// `POST /v1/head` (extension).
    pub async fn head(&self, key: &str) -> Result<ObjectInfo, RemoteError> {
        self.call("head", "/v1/head", &serde_json::json!({ "key": key })).await
    }

    /// `POST /v1/multipart/create` (extension).
    pub async fn multipart_create(
        &self,
        key: &str,
        content_type: Option<&str>,
    ) -> Result<MultipartUpload, RemoteError> {
        let mut body = serde_json::json!({ "key": key });
        if let Some(content_type) = content_type {
            body["contentType"] = content_type.into();
        }
        let created: MultipartUpload =
            self.call("multipart create", "/v1/multipart/create", &body).await?;
        if created.upload_id.is_empty() {
            return Err(RemoteError::InvalidResponse {
                operation: "multipart create",
                reason: "empty uploadId".to_owned(),
            });
        }
        Ok(created)
    }

    /// `POST /v1/multipart/sign-part` (extension), checksum-bound.
    pub async fn multipart_sign_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        content_length: u64,
        sha256: &str,
    ) -> Result<SignedRequest, RemoteError> {
        let body = serde_json::json!({
            "key": key, "uploadId": upload_id, "partNumber": part_number,
            "contentLength": content_length, "sha256": sha256,
        });
        let signed: SignedRequest =
            self.call("multipart sign part", "/v1/multipart/sign-part", &body).await?;
        validate_signed("multipart sign part", &signed, true)?;
        Ok(signed)
    }

    /// `POST /v1/multipart/parts` (extension): what a resumed upload already has.
    pub async fn multipart_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<UploadedPart>, RemoteError> {
        let body = serde_json::json!({ "key": key, "uploadId": upload_id });
        let parts: PartsResponse =
            self.call("multipart parts", "/v1/multipart/parts", &body).await?;
        Ok(parts.parts)
    }

    /// `POST /v1/multipart/complete` (extension).
    pub async fn multipart_complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<(), RemoteError> {
        let parts: Vec<serde_json::Value> = parts
            .iter()
            .map(|(number, etag)| serde_json::json!({ "partNumber": number, "etag": etag }))
            .collect();
        let body = serde_json::json!({ "key": key, "uploadId": upload_id, "parts": parts });
        self.call_raw("multipart complete", "/v1/multipart/complete", &body).await.map(drop)
    }

    /// `POST /v1/multipart/abort` (extension).
    pub async fn multipart_abort(&self, key: &str, upload_id: &str) -> Result<(), RemoteError> {
        let body = serde_json::json!({ "key": key, "uploadId": upload_id });
        self.call_raw("multipart abort", "/v1/multipart/abort", &body).await.map(drop)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, RemoteError> {
        let bytes = self.call_raw(operation, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|error| RemoteError::InvalidResponse {
            operation,
            reason: format!("{error}; body starts with {:?}", excerpt(&bytes)),
        })
    }

    async fn call_raw(
        &self,
        operation: &'static str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Bytes, RemoteError> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .timeout(Duration::from_secs(30));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response =
            request.send().await.map_err(|source| RemoteError::Network { operation, source })?;
        let status = response.status().as_u16();
        let bytes =
            response.bytes().await.map_err(|source| RemoteError::Network { operation, source })?;
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|value| {
                value.get("error").and_then(|error| error.as_str()).map(str::to_owned)
            })
            .unwrap_or_else(|| excerpt(&bytes));
        Err(match status {
            401 | 403 => RemoteError::Unauthorized { operation, status, message },
            _ => RemoteError::Status { operation, status, message },
        })
    }

    /// PUTs an in-memory body (small files) to a presigned URL; returns the ETag.
    pub async fn put_bytes(
        &self,
        operation: &'static str,
        signed: &SignedRequest,
        body: Bytes,
    ) -> Result<Option<String>, RemoteError> {
        let length = body.len() as u64;
        self.send_put(operation, signed, length, reqwest::Body::from(body)).await
    }

    /// PUTs `length` bytes of `path` starting at `offset` to a presigned URL, streaming; returns the ETag.
    pub async fn put_file_range(
        &self,
        operation: &'static str,
        signed: &SignedRequest,
        path: &Path,
        offset: u64,
        length: u64,
        progress: &ProgressCounter,
    ) -> Result<Option<String>, RemoteError> {
        let receiver = crate::stream::read_file_chunks(path.to_path_buf(), offset, length);
        let counter = Arc::clone(progress);
        let stream = futures_util::stream::unfold(receiver, move |mut receiver| {
            let counter = Arc::clone(&counter);
            async move {
                let chunk = receiver.recv().await?;
                if let Ok(bytes) = &chunk {
                    counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                Some((chunk, receiver))
            }
        });
        self.send_put(operation, signed, length, reqwest::Body::wrap_stream(stream)).await
    }

    async fn send_put(
        &self,
        operation: &'static str,
        signed: &SignedRequest,
        length: u64,
        body: reqwest::Body,
    ) -> Result<Option<String>, RemoteError> {
        let method = match signed.method.as_deref() {
            Some("POST") => reqwest::Method::POST,
            _ => reqwest::Method::PUT,
        };
        let mut request = self.http.request(method, &signed.url);
        let mut has_length = false;
        for (name, value) in &signed.headers {
            has_length |= name.eq_ignore_ascii_case("content-length");
            request = request.header(name, value);
        }
        if !has_length {
            request = request.header(reqwest::header::CONTENT_LENGTH, length);
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|source| RemoteError::Network { operation, source })?;
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.unwrap_or_default();
        if (200..300).contains(&status) {
            return Ok(etag);
        }
        Err(data_plane_error(operation, status, &body, None))
    }

    /// Starts a GET of a presigned URL (optionally from `offset`); the caller streams the body.
    pub async fn get(
        &self,
        signed: &SignedRequest,
        offset: u64,
        key: &str,
    ) -> Result<reqwest::Response, RemoteError> {
        let operation = "download";
        let mut request = self.http.get(&signed.url);
        for (name, value) in &signed.headers {
            request = request.header(name, value);
        }
        if offset > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={offset}-"));
        }
        let response =
            request.send().await.map_err(|source| RemoteError::Network { operation, source })?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(data_plane_error(operation, status, &body, Some(key)))
    }

    /// A GET with caller-chosen headers (the local file server forwards `Range`).
    pub(crate) fn raw_get(&self, url: &str) -> reqwest::RequestBuilder {
        self.http.get(url)
    }

    /// A HEAD of a presigned GET URL is not signed for HEAD; the local file server sends a one-byte GET instead.
    pub(crate) fn raw_head(&self, url: &str) -> reqwest::RequestBuilder {
        self.http.get(url).header(reqwest::header::RANGE, "bytes=0-0")
    }
}

/// Checks a `sign/uploads` answer against what was asked (same keys, same order) and types its entries.
fn batch_answers(
    response: BatchResponse,
    uploads: &[UploadToSign],
) -> Result<Vec<BatchSigned>, RemoteError> {
    let operation = "sign uploads";
    if response.results.len() != uploads.len() {
        return Err(RemoteError::InvalidResponse {
            operation,
            reason: format!("{} results for {} uploads", response.results.len(), uploads.len()),
        });
    }
    let mut answers = Vec::with_capacity(uploads.len());
    for (entry, asked) in response.results.into_iter().zip(uploads) {
        if entry.key != asked.key {
            return Err(RemoteError::InvalidResponse {
                operation,
                reason: format!("result for {:?} where {:?} was asked", entry.key, asked.key),
            });
        }
        if let Some(message) = entry.error {
            answers.push(BatchSigned::Refused { status: entry.status.unwrap_or(400), message });
            continue;
        }
        let (Some(exists), Some(upload)) = (entry.exists, entry.upload) else {
            return Err(RemoteError::InvalidResponse {
                operation,
                reason: format!("result for {:?} has neither an upload nor an error", entry.key),
            });
        };
        validate_signed(operation, &upload, true)?;
        answers.push(BatchSigned::Signed {
            existing: ObjectInfo { exists, size: entry.size, sha256: entry.sha256 },
            upload,
        });
    }
    Ok(answers)
}

fn validate_signed(
    operation: &'static str,
    signed: &SignedRequest,
    upload: bool,
) -> Result<(), RemoteError> {
    let invalid =
        |reason: &str| RemoteError::InvalidResponse { operation, reason: reason.to_owned() };
    if signed.url.is_empty() {
        return Err(invalid("empty url"));
    }
    if !(signed.url.starts_with("http://") || signed.url.starts_with("https://")) {
        return Err(invalid("url is not http(s)"));
    }
    if upload && !matches!(signed.method.as_deref(), Some("PUT" | "POST")) {
        return Err(invalid("method is not PUT or POST"));
    }
    Ok(())
}

/// Maps a data-plane (S3) failure: expired URLs, missing objects, refused checksums.
fn data_plane_error(
    operation: &'static str,
    status: u16,
    body: &[u8],
    key: Option<&str>,
) -> RemoteError {
    let text = String::from_utf8_lossy(&body[..body.len().min(2048)]);
    if status == 403 && text.to_ascii_lowercase().contains("expired") {
        return RemoteError::UrlExpired { operation };
    }
    if status == 404 {
        return RemoteError::ObjectNotFound { operation, key: key.unwrap_or_default().to_owned() };
    }
    let code = text
        .split("<Code>")
        .nth(1)
        .and_then(|rest| rest.split("</Code>").next())
        .map(str::to_owned)
        .unwrap_or_else(|| excerpt(body));
    RemoteError::Status { operation, status, message: code }
}

fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
    text.chars().filter(|character| !character.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(key: &str) -> UploadToSign {
        UploadToSign {
            key: key.to_owned(),
            content_length: 1,
            sha256: "0".repeat(64),
            content_type: None,
        }
    }

    #[test]
    fn batch_answers_are_typed_and_checked_against_the_request() {
        let response: BatchResponse = serde_json::from_value(serde_json::json!({ "results": [
            { "key": "s/a", "exists": true, "size": 1, "sha256": "ab", "method": "PUT",
              "url": "http://127.0.0.1/s3/b/s/a?sig", "headers": { "Content-Length": "1" },
              "expiresAt": "2026-01-01T00:00:00.000Z" },
            { "key": "s/b", "error": "Invalid key: nope", "status": 400 },
        ] }))
        .unwrap();
        let answers = batch_answers(response, &[asked("s/a"), asked("s/b")]).unwrap();
        match &answers[0] {
            BatchSigned::Signed { existing, upload } => {
                assert_eq!(
                    existing,
                    &ObjectInfo { exists: true, size: Some(1), sha256: Some("ab".into()) }
                );
                assert_eq!(upload.method.as_deref(), Some("PUT"));
                assert_eq!(upload.headers["Content-Length"], "1");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            answers[1],
            BatchSigned::Refused { status: 400, message: "Invalid key: nope".into() }
        );

        // Answers for other keys, in another order or count, or without an upload, are not the contract's.
        for results in [
            serde_json::json!([{ "key": "s/b", "error": "x", "status": 400 }]),
            serde_json::json!([]),
            serde_json::json!([{ "key": "s/a", "exists": false }]),
        ] {
            let response: BatchResponse =
                serde_json::from_value(serde_json::json!({ "results": results })).unwrap();
            let error = batch_answers(response, &[asked("s/a")]).unwrap_err();
            assert!(matches!(error, RemoteError::InvalidResponse { .. }), "{error}");
        }
    }
}
