//! One function per signer route. Every mutating route runs the same steps
//! in the same order: parse the JSON body (400), check the key rules (400),
//! ask the token authority about the key's store (401/403), then sign or
//! call the backend.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::StreamExt;
use rusty_s3::Method;
use serde::de::DeserializeOwned;

use super::wire::{
    HeadResponse, KeyRequest, MultipartCompleteRequest, MultipartCompleteResponse,
    MultipartCreateRequest, MultipartCreateResponse, PartEntry, PartsResponse,
    SignDownloadResponse, SignPartRequest, SignUploadRequest, SignUploadResponse, SignUploadsEntry,
    SignUploadsRequest, SignUploadsResponse, UploadReference,
};
use super::{ApiError, SignerState};
use crate::auth::{AuthRejection, Caller, bearer_token};
use crate::backend::{BackendError, ObjectInfo, RequestOrigin, SignSpec};
use crate::key::ObjectKey;
use crate::store::{MAX_PUT_BYTES, MIN_PART_BYTES};

type Body = Result<Bytes, BytesRejection>;
type Shared = State<Arc<SignerState>>;

/// Most parts one upload may have (S3's limit).
const MAX_PARTS: usize = 10_000;
/// Most entries one `sign/uploads` call may carry.
const MAX_BATCH_UPLOADS: usize = 1000;
/// Existence checks of one `sign/uploads` call running at once (each is a HEAD against an external store).
const BATCH_HEAD_CONCURRENCY: usize = 8;
/// Longest upload id accepted; real ids are far shorter.
const MAX_UPLOAD_ID_BYTES: usize = 1024;

pub(super) async fn health(State(state): Shared) -> Response {
    if state.backend.health().await {
        (StatusCode::OK, Json(serde_json::json!({ "status": "ok" }))).into_response()
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({ "status": "error" })))
            .into_response()
    }
}

pub(super) async fn sign_upload(
    State(state): Shared,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SignUploadResponse>, ApiError> {
    let request: SignUploadRequest = parse(&state, body)?;
    let key = authorize(&state, &headers, &request.key).await?;
    let content_type = checked_content_type(request.content_type)?;
    if let Some(length) = request.content_length
        && length > MAX_PUT_BYTES
    {
        return Err(ApiError::bad_request(
            "Invalid request: contentLength exceeds the 5 GiB single-upload limit; use multipart",
        ));
    }
    let binding = checksum_binding(
        request.sha256.as_deref(),
        request.content_length,
        content_type.as_deref(),
    )?;
    sign_put(&state, &headers, &key, &binding, &[]).map(Json)
}

/// Extension: existence check plus checksum-bound signing for many keys in one call, so a client with many small
/// files spends one signer round trip per batch instead of two per file. Entries that break the key or field rules
/// get their own `{key, error, status: 400}` and do not fail the others; a token that may not touch one of the
/// stores fails the whole call (401/403), like a single call would.
pub(super) async fn sign_uploads(
    State(state): Shared,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SignUploadsResponse>, ApiError> {
    let request: SignUploadsRequest = parse(&state, body)?;
    if request.uploads.is_empty() || request.uploads.len() > MAX_BATCH_UPLOADS {
        return Err(ApiError::bad_request(format!(
            "Invalid request: uploads must list between 1 and {MAX_BATCH_UPLOADS} entries"
        )));
    }
    let mut checked = Vec::with_capacity(request.uploads.len());
    let mut authorized_stores = std::collections::HashSet::new();
    for upload in request.uploads {
        let entry = check_batch_entry(&upload);
        if let Ok((key, _)) = &entry
            && authorized_stores.insert(key.store_id().to_owned())
        {
            authorize(&state, &headers, key.as_str()).await?;
        }
        checked.push((upload.key, entry));
    }
    // Owned keys: a stream over borrowed entries trips the `Send` check of axum handlers (higher-ranked
    // lifetimes of the closure).
    let keys: Vec<Option<String>> = checked
        .iter()
        .map(|(_, entry)| entry.as_ref().ok().map(|(key, _)| key.as_str().to_owned()))
        .collect();
    let backend = &state.backend;
    let heads: Vec<Result<Option<ObjectInfo>, BackendError>> = futures_util::stream::iter(keys)
        .map(|key| async move {
            match key {
                Some(key) => backend.head(&key).await,
                None => Ok(None),
            }
        })
        .buffered(BATCH_HEAD_CONCURRENCY)
        .collect()
        .await;
    let mut results = Vec::with_capacity(checked.len());
    for ((raw_key, entry), head) in checked.into_iter().zip(heads) {
        let refused = |error: ApiError| SignUploadsEntry {
            key: raw_key.clone(),
            exists: None,
            size: None,
            sha256: None,
            signed: None,
            error: Some(error.message),
            status: Some(error.status.as_u16()),
        };
        let outcome = entry.and_then(|(key, binding)| {
            let info = head?;
            let signed = sign_put(&state, &headers, &key, &binding, &[])?;
            Ok((info, signed))
        });
        results.push(match outcome {
            Ok((info, signed)) => SignUploadsEntry {
                key: raw_key,
                exists: Some(info.is_some()),
                size: info.as_ref().map(|info| info.size),
                sha256: info.and_then(|info| info.sha256_hex),
                signed: Some(signed),
                error: None,
                status: None,
            },
            Err(error) => refused(error),
        });
    }
    Ok(Json(SignUploadsResponse { results }))
}

/// The key and checksum binding of one `sign/uploads` entry, which must be checksum-bound (`sha256` and
/// `contentLength`).
fn check_batch_entry(upload: &SignUploadRequest) -> Result<(ObjectKey, Binding), ApiError> {
    let key = ObjectKey::parse(&upload.key)
        .map_err(|error| ApiError::bad_request(format!("Invalid key: {error}")))?;
    let content_type = checked_content_type(upload.content_type.clone())?;
    if upload.sha256.is_none() {
        return Err(ApiError::bad_request(
            "Invalid request: every entry of sign/uploads needs sha256 and contentLength",
        ));
    }
    if upload.content_length.is_some_and(|length| length > MAX_PUT_BYTES) {
        return Err(ApiError::bad_request(
            "Invalid request: contentLength exceeds the 5 GiB single-upload limit; use multipart",
        ));
    }
    let binding =
        checksum_binding(upload.sha256.as_deref(), upload.content_length, content_type.as_deref())?;
    Ok((key, binding))
}

pub(super) async fn sign_download(
    State(state): Shared,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SignDownloadResponse>, ApiError> {
    let request: KeyRequest = parse(&state, body)?;
    let key = authorize(&state, &headers, &request.key).await?;
    let signed_at = now_seconds();
    let url = state.backend.presign(
        host(&headers),
        SignSpec {
            method: Method::Get,
            key: key.as_str(),
            ttl_seconds: state.ttl_seconds,
            signed_at,
            headers: &[],
            query: &[],
        },
    )?;
    Ok(Json(SignDownloadResponse {
        url: url.into(),
        headers: None,
        expires_at: iso_timestamp(signed_at + ttl_as_i64(state.ttl_seconds)),
    }))
}

pub(super) async fn delete(
    State(state): Shared,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let request: KeyRequest = parse(&state, body)?;
    let key = authorize(&state, &headers, &request.key).await?;
    state.backend.delete(key.as_str()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Extension: does the object exist, and with which size and checksum, so a
/// client can skip uploading content that is already there.
pub(super) async fn head(
    State(state): Shared,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<HeadResponse>, ApiError> {
    let request: KeyRequest = parse(&state, body)?;
    let key = authorize(&state, &headers, &request.key).await?;
    let info = state.backend.head(key.as_str()).await?;
    Ok(Json(match info {
        None => {
            HeadResponse { exists: false, size: None, etag: None, sha256: None, content_type: None }
        }
        Some(info) => HeadResponse {
            exists: true,
            size: Some(info.size),
            etag: info.etag,
            sha256: info.sha256_hex,
            content_type: info.content_type,
        },
    }))
}

pub(super) async fn multipart_create(
    State(state): Shared,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<MultipartCreateResponse>, ApiError> {
    let request: MultipartCreateRequest = parse(&state, body)?;
    let key = authorize(&state, &headers, &request.key).await?;
    let content_type = checked_content_type(request.content_type)?;
    let upload_id = state.backend.create_multipart(key.as_str(), content_type.as_deref()).await?;
    Ok(Json(MultipartCreateResponse {
        key: key.as_str().to_owned(),
        upload_id,
        min_part_size: MIN_PART_BYTES,
    }))
}

pub(super) async fn multipart_sign_part(
    State(state): Shared,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SignUploadResponse>, ApiError> {
    let request: SignPartRequest = parse(&state, body)?;
    let key = authorize(&state, &headers, &request.key).await?;
    check_upload_id(&request.upload_id)?;
    if !(1..=10_000).contains(&request.part_number) {
        return Err(ApiError::bad_request(
            "Invalid request: partNumber must be between 1 and 10000",
        ));
    }
    if let Some(length) = request.content_length
        && length > MAX_PUT_BYTES
    {
        return Err(ApiError::bad_request(
            "Invalid request: contentLength exceeds the 5 GiB part limit",
        ));
    }
    let binding = checksum_binding(request.sha256.as_deref(), request.content_length, None)?;
    let part_number = request.part_number.to_string();
    let query = [("partNumber", part_number.as_str()), ("uploadId", request.upload_id.as_str())];
    sign_put(&state, &headers, &key, &binding, &query).map(Json)
}

pub(super) async fn multipart_complete(
    State(state): Shared,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<MultipartCompleteResponse>, ApiError> {
    let request: MultipartCompleteRequest = parse(&state, body)?;
    let key = authorize(&state, &headers, &request.key).await?;
    check_upload_id(&request.upload_id)?;
    if request.parts.is_empty() || request.parts.len() > MAX_PARTS {
        return Err(ApiError::bad_request(
            "Invalid request: parts must list between 1 and 10000 parts",
        ));
    }
    if request.parts.iter().any(|part| part.etag.is_empty() || part.etag.len() > 256) {
        return Err(ApiError::bad_request("Invalid request: every part needs a non-empty etag"));
    }
    let parts: Vec<(u32, String)> =
        request.parts.into_iter().map(|part| (part.part_number, part.etag)).collect();
    let etag = state.backend.complete_multipart(key.as_str(), &request.upload_id, &parts).await?;
    Ok(Json(MultipartCompleteResponse { key: key.as_str().to_owned(), etag }))
}

pub(super) async fn multipart_abort(
    State(state): Shared,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let request: UploadReference = parse(&state, body)?;
    let key = authorize(&state, &headers, &request.key).await?;
    check_upload_id(&request.upload_id)?;
    state.backend.abort_multipart(key.as_str(), &request.upload_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Extension: the parts uploaded so far, so an interrupted upload can resume.
pub(super) async fn multipart_parts(
    State(state): Shared,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PartsResponse>, ApiError> {
    let request: UploadReference = parse(&state, body)?;
    let key = authorize(&state, &headers, &request.key).await?;
    check_upload_id(&request.upload_id)?;
    let parts = state.backend.list_parts(key.as_str(), &request.upload_id).await?;
    Ok(Json(PartsResponse {
        parts: parts
            .into_iter()
            .map(|part| PartEntry {
                part_number: part.part_number,
                etag: part.etag,
                size: part.size,
            })
            .collect(),
    }))
}

/// Headers bound into an upload URL: `(signed lowercase name, value, name as returned)`.
type Binding = Vec<(&'static str, String, &'static str)>;

/// With `sha256`, the URL signs `content-length`, `content-type` (when
/// known) and `x-amz-checksum-sha256`, so the object store rejects other
/// bytes; without it, nothing but `host` is signed, exactly like upstream.
fn checksum_binding(
    sha256: Option<&str>,
    content_length: Option<u64>,
    content_type: Option<&str>,
) -> Result<Binding, ApiError> {
    let Some(sha256) = sha256 else { return Ok(Vec::new()) };
    let mut digest = [0u8; 32];
    if sha256.len() != 64 || hex::decode_to_slice(sha256, &mut digest).is_err() {
        return Err(ApiError::bad_request("Invalid request: sha256 must be 64 hex digits"));
    }
    let length = content_length.ok_or_else(|| {
        ApiError::bad_request("Invalid request: contentLength is required when sha256 is given")
    })?;
    // Sorted by signed name, as SigV4 requires.
    let mut binding = vec![("content-length", length.to_string(), "Content-Length")];
    if let Some(content_type) = content_type {
        binding.push(("content-type", content_type.to_owned(), "Content-Type"));
    }
    binding.push((
        "x-amz-checksum-sha256",
        base64::engine::general_purpose::STANDARD.encode(digest),
        "x-amz-checksum-sha256",
    ));
    Ok(binding)
}

fn sign_put(
    state: &SignerState,
    headers: &HeaderMap,
    key: &ObjectKey,
    binding: &Binding,
    query: &[(&str, &str)],
) -> Result<SignUploadResponse, ApiError> {
    let signed: Vec<(&str, &str)> =
        binding.iter().map(|(name, value, _)| (*name, value.as_str())).collect();
    let signed_at = now_seconds();
    let url = state.backend.presign(
        host(headers),
        SignSpec {
            method: Method::Put,
            key: key.as_str(),
            ttl_seconds: state.ttl_seconds,
            signed_at,
            headers: &signed,
            query,
        },
    )?;
    let returned: BTreeMap<&'static str, String> =
        binding.iter().map(|(_, value, returned_name)| (*returned_name, value.clone())).collect();
    Ok(SignUploadResponse {
        method: "PUT",
        url: url.into(),
        headers: (!returned.is_empty()).then_some(returned),
        expires_at: iso_timestamp(signed_at + ttl_as_i64(state.ttl_seconds)),
    })
}

/// Decodes the JSON body, naming the offending field on failure.
fn parse<T: DeserializeOwned>(state: &SignerState, body: Body) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body too large (limit {} bytes)", state.max_request_bytes),
            )
        } else if crate::error::is_timeout(&rejection) {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "Request body did not arrive in time")
        } else {
            ApiError::bad_request(format!("Invalid request: {}", rejection.body_text()))
        }
    })?;
    // Serde would also accept a JSON array for a struct; the contract is an object.
    let first = bytes.iter().find(|byte| !byte.is_ascii_whitespace());
    if first.is_some_and(|byte| *byte != b'{') {
        return Err(ApiError::bad_request("Invalid request: body must be a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        if path == "." || path == "?" {
            ApiError::bad_request(format!("Invalid request: {}", error.inner()))
        } else {
            ApiError::bad_request(format!("Invalid request: {path}: {}", error.inner()))
        }
    })?;
    deserializer.end().map_err(|error| {
        ApiError::bad_request(format!("Invalid request: trailing data after JSON ({error})"))
    })?;
    Ok(value)
}

/// Key rules first (400), then the token authority on the key's store (401/403).
async fn authorize(
    state: &SignerState,
    headers: &HeaderMap,
    raw_key: &str,
) -> Result<ObjectKey, ApiError> {
    let key = ObjectKey::parse(raw_key)
        .map_err(|error| ApiError::bad_request(format!("Invalid key: {error}")))?;
    let caller = Caller { bearer: bearer_token(headers), headers };
    state.authority.authorize(caller, key.store_id()).await.map_err(
        |rejection| match rejection {
            AuthRejection::Unauthorized(message) => {
                ApiError::new(StatusCode::UNAUTHORIZED, message)
            }
            AuthRejection::Forbidden(message) => ApiError::new(StatusCode::FORBIDDEN, message),
        },
    )?;
    Ok(key)
}

fn checked_content_type(content_type: Option<String>) -> Result<Option<String>, ApiError> {
    match content_type.filter(|value| !value.is_empty()) {
        Some(value) if value.len() > 256 || HeaderValue::from_str(&value).is_err() => {
            Err(ApiError::bad_request("Invalid request: contentType is not a valid header value"))
        }
        other => Ok(other),
    }
}

fn check_upload_id(upload_id: &str) -> Result<(), ApiError> {
    if upload_id.is_empty()
        || upload_id.len() > MAX_UPLOAD_ID_BYTES
        || upload_id.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request("Invalid request: uploadId is empty or malformed"));
    }
    Ok(())
}

/// Where the caller reached us, for embedded-store URLs when no `public_url`
/// is configured: the `Host` header, and `https` when a TLS-terminating proxy
/// says so in `X-Forwarded-Proto` (the scheme is not part of the signature,
/// the host is).
fn host(headers: &HeaderMap) -> Option<RequestOrigin<'_>> {
    let host = headers.get(header::HOST).and_then(|value| value.to_str().ok())?;
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
    Some(RequestOrigin { host, https })
}

fn now_seconds() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn ttl_as_i64(ttl_seconds: u64) -> i64 {
    // The configuration caps the TTL at 3600 s.
    i64::try_from(ttl_seconds).unwrap_or(i64::MAX)
}

/// Like JavaScript's `Date.prototype.toISOString`: `2024-01-01T00:00:00.000Z`.
fn iso_timestamp(unix_seconds: i64) -> String {
    jiff::Timestamp::from_second(unix_seconds)
        .map(|timestamp| timestamp.strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string())
        .unwrap_or_default()
}
