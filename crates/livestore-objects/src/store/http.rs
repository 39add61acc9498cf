//! HTTP routes of the embedded store: `/s3/<bucket>/<key>` path-style S3,
//! the subset livestore-filesync and ordinary S3 tools need — PutObject,
//! GetObject (with a single `Range`), HeadObject, DeleteObject, HeadBucket,
//! CreateBucket (idempotent, configured bucket only) and the multipart calls
//! (create, upload part, list parts, complete, abort). Everything else
//! answers S3's `NotImplemented`.
//!
//! Every request is authenticated by SigV4 (`sigv4`) before anything else,
//! like AWS does. CORS is open (`*`) with `ETag` exposed, because browsers
//! PUT and GET presigned URLs cross-origin and the filesync client reads the
//! `ETag` of uploads.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use percent_encoding::percent_decode_str;
use tower_http::cors::{AllowHeaders, Any, CorsLayer};

use super::object_file::{ObjectMeta, TempObject, open_object};
use super::sigv4::{self, PayloadCheck, SignedRequest};
use super::stream::{BodyDigests, ReceiveError, file_body, receive_body};
use super::xml::{escape, parse_complete_multipart};
use super::{MAX_PUT_BYTES, S3Error, Store, etag_for_sha256, now_ms};

/// Largest `CompleteMultipartUpload` XML body accepted (10,000 parts fit).
const MAX_COMPLETE_BODY_BYTES: usize = 2 * 1024 * 1024;
const CHECKSUM_SHA256: &str = "x-amz-checksum-sha256";
const UNSUPPORTED_CHECKSUMS: [&str; 4] = [
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-crc64nvme",
    "x-amz-checksum-sha1",
];

/// The store's routes, with their own CORS layer; meant to be merged into the
/// server's router.
pub(crate) fn router(store: Arc<Store>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::PUT, Method::POST, Method::DELETE, Method::HEAD])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([
            header::ETAG,
            header::CONTENT_LENGTH,
            header::CONTENT_RANGE,
            header::LAST_MODIFIED,
            HeaderName::from_static(CHECKSUM_SHA256),
        ])
        .max_age(Duration::from_secs(86_400));
    Router::new()
        .route("/s3", any(handle))
        .route("/s3/", any(handle))
        .route("/s3/{bucket}", any(handle))
        .route("/s3/{bucket}/", any(handle))
        .route("/s3/{bucket}/{*key}", any(handle))
        .with_state(store)
        .layer(cors)
}

async fn handle(State(store): State<Arc<Store>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    match dispatch(&store, &parts, body).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(code = error.code, message = %error.message, path = parts.uri.path(), "s3 request refused");
            error.into_response()
        }
    }
}

/// The S3 sub-resources that select an operation.
#[derive(Debug, Default)]
struct OperationQuery {
    uploads: bool,
    upload_id: Option<String>,
    part_number: Option<String>,
}

impl OperationQuery {
    fn parse(query: Option<&str>) -> Self {
        let mut parsed = Self::default();
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match name.as_ref() {
                "uploads" => parsed.uploads = true,
                "uploadId" => parsed.upload_id = Some(value.into_owned()),
                "partNumber" => parsed.part_number = Some(value.into_owned()),
                _ => {}
            }
        }
        parsed
    }
}

async fn dispatch(store: &Store, parts: &Parts, body: Body) -> Result<Response, S3Error> {
    let raw_path = parts.uri.path();
    let payload = sigv4::verify(
        SignedRequest {
            method: parts.method.as_str(),
            path: raw_path,
            query: parts.uri.query(),
            headers: &parts.headers,
        },
        &store.credentials,
        &store.region,
        now_ms() / 1000,
    )?;
    let rest = raw_path.strip_prefix("/s3").unwrap_or(raw_path);
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let (bucket_raw, key_raw) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket_raw.is_empty() {
        return Err(S3Error::not_implemented("ListBuckets"));
    }
    if decode(bucket_raw)? != store.bucket {
        return Err(S3Error::new(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            format!("The specified bucket does not exist; this store serves '{}'.", store.bucket),
        ));
    }
    let key = decode(key_raw)?;
    if key.len() > crate::key::MAX_KEY_BYTES {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "KeyTooLongError",
            "Your key is too long (the limit is 1024 bytes).",
        ));
    }
    let query = OperationQuery::parse(parts.uri.query());
    if key.is_empty() {
        return bucket_operation(store, &parts.method, &query);
    }
    let method = &parts.method;
    match (method, &query.upload_id) {
        (&Method::PUT, Some(upload_id)) => {
            let part_number = query
                .part_number
                .as_deref()
                .and_then(|number| number.parse::<u32>().ok())
                .ok_or_else(|| {
                    S3Error::new(
                        StatusCode::BAD_REQUEST,
                        "InvalidArgument",
                        "Part number must be an integer between 1 and 10000",
                    )
                })?;
            let destination = store.part_destination(&key, upload_id, part_number).await?;
            let response = put(store, parts, body, &key, payload, destination).await?;
            store.stored.parts.fetch_add(1, Ordering::Relaxed);
            Ok(response)
        }
        (&Method::PUT, None) => {
            if parts.headers.contains_key("x-amz-copy-source") {
                return Err(S3Error::not_implemented("CopyObject"));
            }
            let response = put(store, parts, body, &key, payload, store.object_path(&key)).await?;
            store.stored.objects.fetch_add(1, Ordering::Relaxed);
            Ok(response)
        }
        (&Method::GET, Some(upload_id)) => list_parts(store, &key, upload_id).await,
        (&Method::GET, None) => get(store, &parts.headers, &key, false).await,
        (&Method::HEAD, _) => get(store, &parts.headers, &key, true).await,
        (&Method::POST, _) if query.uploads => create_multipart(store, &parts.headers, &key).await,
        (&Method::POST, Some(upload_id)) => complete_multipart(store, body, &key, upload_id).await,
        (&Method::DELETE, Some(upload_id)) => {
            store.abort_multipart(&key, upload_id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (&Method::DELETE, None) => {
            store.delete(&key).await.map_err(|error| S3Error::internal(&error))?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(method_not_allowed(method)),
    }
}

/// S3's answer to a body that stopped arriving (the embedding server's body read timeout).
fn request_timeout() -> S3Error {
    S3Error::new(
        StatusCode::BAD_REQUEST,
        "RequestTimeout",
        "Your socket connection to the server was not read from or written to within the timeout period.",
    )
}

fn method_not_allowed(method: &Method) -> S3Error {
    S3Error::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("The specified method ({method}) is not allowed against this resource."),
    )
}

fn bucket_operation(
    store: &Store,
    method: &Method,
    query: &OperationQuery,
) -> Result<Response, S3Error> {
    match *method {
        Method::HEAD | Method::PUT => {
            Ok(([("x-amz-bucket-region", store.region.as_str())], StatusCode::OK).into_response())
        }
        Method::GET if query.uploads => Err(S3Error::not_implemented("ListMultipartUploads")),
        Method::GET => Err(S3Error::not_implemented("ListObjects")),
        Method::DELETE => Err(S3Error::not_implemented("DeleteBucket")),
        _ => Err(method_not_allowed(method)),
    }
}

fn decode(raw: &str) -> Result<String, S3Error> {
    percent_decode_str(raw).decode_utf8().map(|text| text.into_owned()).map_err(|_| {
        S3Error::new(
            StatusCode::BAD_REQUEST,
            "InvalidURI",
            "The path is not valid percent-encoded UTF-8.",
        )
    })
}

/// What a PUT body must satisfy, read from the headers before the body.
struct PutChecks {
    declared_length: u64,
    checksum_sha256: Option<[u8; 32]>,
    content_md5: Option<[u8; 16]>,
    payload: PayloadCheck,
}

fn put_checks(headers: &HeaderMap, payload: PayloadCheck) -> Result<PutChecks, S3Error> {
    // Without Content-Length and Transfer-Encoding an HTTP/1.1 request has an
    // empty body (RFC 9112 6.3), so clients that omit the header for empty
    // uploads are fine; a chunked body of unknown length is refused like S3 does.
    let declared_length = match headers.get(header::CONTENT_LENGTH) {
        Some(value) => value.to_str().ok().and_then(|value| value.parse::<u64>().ok()),
        None if !headers.contains_key(header::TRANSFER_ENCODING) => Some(0),
        None => None,
    }
    .ok_or_else(|| {
        S3Error::new(
            StatusCode::LENGTH_REQUIRED,
            "MissingContentLength",
            "You must provide the Content-Length HTTP header.",
        )
    })?;
    if declared_length > MAX_PUT_BYTES {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "EntityTooLarge",
            "Your proposed upload exceeds the maximum allowed size (5 GiB); use multipart.",
        ));
    }
    if let Some(name) = UNSUPPORTED_CHECKSUMS.iter().find(|name| headers.contains_key(**name)) {
        return Err(S3Error::invalid_request(format!(
            "{name} is not supported by the embedded store; use x-amz-checksum-sha256"
        )));
    }
    let checksum_sha256 = match headers.get(CHECKSUM_SHA256) {
        None => None,
        Some(value) => Some(
            BASE64
                .decode(value.as_bytes())
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| {
                    S3Error::invalid_request(
                        "Value for x-amz-checksum-sha256 header is invalid (expected base64 of 32 bytes).",
                    )
                })?,
        ),
    };
    let content_md5 = match headers.get("content-md5") {
        None => None,
        Some(value) => Some(
            BASE64
                .decode(value.as_bytes())
                .ok()
                .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
                .ok_or_else(|| {
                    S3Error::new(
                        StatusCode::BAD_REQUEST,
                        "InvalidDigest",
                        "The Content-MD5 you specified was invalid.",
                    )
                })?,
        ),
    };
    Ok(PutChecks { declared_length, checksum_sha256, content_md5, payload })
}

/// Receives a body into a temp file and checks it against length, signed
/// payload hash, checksum header and Content-MD5. On any failure the temp
/// file is dropped (deleted), so nothing half-written becomes visible.
async fn receive_checked(
    store: &Store,
    body: Body,
    checks: &PutChecks,
) -> Result<(TempObject, BodyDigests), S3Error> {
    let temp = TempObject::create(store.tmp_dir()).map_err(|error| S3Error::internal(&error))?;
    let (temp, digests) = match receive_body(temp, body, checks.content_md5.is_some()).await {
        Ok(received) => received,
        Err(ReceiveError::Body(error)) if crate::error::is_timeout(&error) => {
            return Err(request_timeout());
        }
        Err(ReceiveError::Body(error)) => {
            tracing::debug!(%error, "request body ended early");
            return Err(incomplete_body());
        }
        Err(ReceiveError::Io(error)) => return Err(S3Error::internal(&error)),
    };
    if digests.size != checks.declared_length {
        return Err(incomplete_body());
    }
    if let PayloadCheck::Sha256(expected) = checks.payload
        && expected != digests.sha256
    {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        ));
    }
    if let Some(expected) = checks.checksum_sha256
        && expected != digests.sha256
    {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "BadDigest",
            "The SHA256 you specified did not match the calculated checksum.",
        ));
    }
    if let (Some(expected), Some(actual)) = (checks.content_md5, digests.md5)
        && expected != actual
    {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "BadDigest",
            "The Content-MD5 you specified did not match what we received.",
        ));
    }
    Ok((temp, digests))
}

fn incomplete_body() -> S3Error {
    S3Error::new(
        StatusCode::BAD_REQUEST,
        "IncompleteBody",
        "You did not provide the number of bytes specified by the Content-Length HTTP header.",
    )
}

/// PutObject and UploadPart: the same streaming, checking and publishing,
/// only the destination differs.
async fn put(
    store: &Store,
    parts: &Parts,
    body: Body,
    key: &str,
    payload: PayloadCheck,
    destination: std::path::PathBuf,
) -> Result<Response, S3Error> {
    let checks = put_checks(&parts.headers, payload)?;
    let (temp, digests) = receive_checked(store, body, &checks).await?;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/octet-stream");
    let meta = ObjectMeta {
        key: key.to_owned(),
        size: digests.size,
        sha256: hex::encode(digests.sha256),
        etag: etag_for_sha256(&digests.sha256),
        content_type: content_type.to_owned(),
        last_modified_ms: now_ms(),
        parts: None,
    };
    let etag = quoted(&meta.etag);
    tokio::task::spawn_blocking(move || temp.persist(&meta, &destination))
        .await
        .map_err(|error| S3Error::internal(&std::io::Error::other(error)))?
        .map_err(|error| S3Error::internal(&error))?;
    store.stored.bytes.fetch_add(digests.size, Ordering::Relaxed);
    let mut response = (StatusCode::OK, [(header::ETAG, etag)]).into_response();
    if checks.checksum_sha256.is_some() {
        let value = BASE64.encode(digests.sha256);
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(CHECKSUM_SHA256, value);
        }
    }
    Ok(response)
}

fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

/// GetObject and HeadObject.
async fn get(
    store: &Store,
    headers: &HeaderMap,
    key: &str,
    head_only: bool,
) -> Result<Response, S3Error> {
    let path = store.object_path(key);
    let opened = tokio::task::spawn_blocking(move || open_object(&path))
        .await
        .map_err(|error| S3Error::internal(&std::io::Error::other(error)))?
        .map_err(|error| S3Error::internal(&error))?
        .ok_or_else(S3Error::no_such_key)?;
    let meta = &opened.meta;
    let etag = quoted(&meta.etag);
    let last_modified = httpdate::fmt_http_date(
        std::time::UNIX_EPOCH
            + Duration::from_millis(u64::try_from(meta.last_modified_ms).unwrap_or(0)),
    );
    if let Some(if_none_match) =
        headers.get(header::IF_NONE_MATCH).and_then(|value| value.to_str().ok())
        && if_none_match.split(',').any(|tag| {
            let tag = tag.trim().trim_start_matches("W/");
            tag == "*" || tag.trim_matches('"') == meta.etag
        })
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
        .map(|value| parse_range(value, meta.size))
        .transpose()?
        .flatten();
    let (status, offset, length) = match range {
        Some((start, length)) => (StatusCode::PARTIAL_CONTENT, start, length),
        None => (StatusCode::OK, 0, meta.size),
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, meta.content_type.as_str())
        .header(header::CONTENT_LENGTH, length)
        .header(header::ETAG, etag)
        .header(header::LAST_MODIFIED, last_modified)
        .header(header::ACCEPT_RANGES, "bytes")
        // Pages that are cross-origin isolated (COEP) may only embed
        // cross-origin bytes that opt in; the upstream R2 handler sends it too.
        .header("cross-origin-resource-policy", "cross-origin")
        // Objects share the server's origin and their content type is chosen
        // by the uploader: an uploaded HTML page must not run scripts there.
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CONTENT_SECURITY_POLICY, "default-src 'none'; sandbox");
    if range.is_some() {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {offset}-{}/{}", offset + length - 1, meta.size),
        );
    }
    let checksum_mode = headers
        .get("x-amz-checksum-mode")
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"enabled"));
    if checksum_mode && range.is_none() && meta.parts.is_none() {
        let mut digest = [0u8; 32];
        if hex::decode_to_slice(&meta.sha256, &mut digest).is_ok() {
            builder = builder.header(CHECKSUM_SHA256, BASE64.encode(digest));
        }
    }
    if let Some(part_count) = meta.parts {
        builder = builder.header("x-amz-mp-parts-count", part_count);
    }
    let body = if head_only || length == 0 {
        Body::empty()
    } else {
        file_body(opened.file, offset, length)
    };
    builder.body(body).map_err(|error| S3Error::internal(&std::io::Error::other(error)))
}

/// One `bytes=` range as (start, length). `Ok(None)` means "serve the whole
/// object": syntax we do not support (several ranges) is ignored, as RFC 9110
/// allows; a range that starts past the end is 416.
fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, S3Error> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return Ok(None) };
    let not_satisfiable = || {
        S3Error::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "InvalidRange",
            format!("The requested range is not satisfiable (object size {size})."),
        )
    };
    let parse = |text: &str| text.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => {
            let Some(suffix) = parse(last) else { return Ok(None) };
            if suffix == 0 || size == 0 {
                return Err(not_satisfiable());
            }
            let length = suffix.min(size);
            Ok(Some((size - length, length)))
        }
        (false, _) => {
            let Some(start) = parse(first) else { return Ok(None) };
            let end = if last.trim().is_empty() { Some(u64::MAX) } else { parse(last) };
            let Some(end) = end else { return Ok(None) };
            if end < start {
                return Ok(None);
            }
            if start >= size {
                return Err(not_satisfiable());
            }
            let end = end.min(size - 1);
            Ok(Some((start, end - start + 1)))
        }
        (true, true) => Ok(None),
    }
}

async fn create_multipart(
    store: &Store,
    headers: &HeaderMap,
    key: &str,
) -> Result<Response, S3Error> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/octet-stream");
    let upload_id = store
        .create_multipart(key, content_type)
        .await
        .map_err(|error| S3Error::internal(&error))?;
    Ok(xml_response(&format!(
        "<InitiateMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Bucket>{}</Bucket><Key>{}</Key><UploadId>{upload_id}</UploadId></InitiateMultipartUploadResult>",
        escape(&store.bucket),
        escape(key)
    )))
}

async fn complete_multipart(
    store: &Store,
    body: Body,
    key: &str,
    upload_id: &str,
) -> Result<Response, S3Error> {
    let malformed = || {
        S3Error::new(
            StatusCode::BAD_REQUEST,
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate against our published schema.",
        )
    };
    let bytes = axum::body::to_bytes(body, MAX_COMPLETE_BODY_BYTES).await.map_err(|error| {
        if crate::error::is_timeout(&error) { request_timeout() } else { malformed() }
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| malformed())?;
    let parts = parse_complete_multipart(text).ok_or_else(malformed)?;
    let meta = store.complete_multipart(key, upload_id, parts).await?;
    Ok(xml_response(&format!(
        "<CompleteMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Bucket>{}</Bucket><Key>{}</Key><ETag>&quot;{}&quot;</ETag></CompleteMultipartUploadResult>",
        escape(&store.bucket),
        escape(key),
        escape(&meta.etag)
    )))
}

async fn list_parts(store: &Store, key: &str, upload_id: &str) -> Result<Response, S3Error> {
    let parts = store.list_parts(key, upload_id).await?;
    let mut body = format!(
        "<ListPartsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Bucket>{}</Bucket><Key>{}</Key><UploadId>{}</UploadId><IsTruncated>false</IsTruncated>",
        escape(&store.bucket),
        escape(key),
        escape(upload_id)
    );
    for part in parts {
        let modified = jiff::Timestamp::from_millisecond(part.last_modified_ms)
            .map(|timestamp| timestamp.to_string())
            .unwrap_or_default();
        body.push_str(&format!(
            "<Part><PartNumber>{}</PartNumber><LastModified>{modified}</LastModified><ETag>&quot;{}&quot;</ETag><Size>{}</Size></Part>",
            part.part_number,
            escape(&part.etag),
            part.size
        ));
    }
    body.push_str("</ListPartsResult>");
    Ok(xml_response(&body))
}

fn xml_response(body: &str) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/xml")],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 10))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 10))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 10))));
        assert_eq!(parse_range("bytes=-1000", 100), Ok(Some((0, 100))));
        assert_eq!(parse_range("bytes=50-1000", 100), Ok(Some((50, 50))));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=9-3", 100), Ok(None));
        assert!(parse_range("bytes=100-", 100).is_err());
        assert!(parse_range("bytes=-0", 100).is_err());
    }
}
