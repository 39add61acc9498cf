//! A local HTTP file server: `GET`/`HEAD /livestore-filesync-files/<store>/<sha256>` answered from the local store
//! first, then from the remote object store, with single `Range` support. The native counterpart of filesync's
//! service worker, so an app can use `/${file.path}` as a URL.
//!
//! Local bytes stream from disk in fixed-size chunks; a full (non-range) response is hashed on the way and, if
//! the local copy turns out corrupt, the connection is cut before the last byte (the client never gets a
//! complete wrong body) and the copy is quarantined. Remote bytes are proxied from a presigned URL with the
//! client's `Range` forwarded; the file's download is also moved to the front of the queue.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::context::active_rows_with_hash;
use crate::layout::{ContentHash, FILES_ROOT, sanitize_store_id};
use crate::sync::FileSync;

/// The router: `/livestore-filesync-files/{store}/{hash}` (GET and HEAD).
pub fn router(files: FileSync) -> Router {
    Router::new()
        .route(
            &format!("/{FILES_ROOT}/{{store}}/{{hash}}"),
            axum::routing::get(serve_file).head(serve_file),
        )
        .with_state(Arc::new(files))
}

async fn serve_file(
    State(files): State<Arc<FileSync>>,
    Path((store, hash)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if store != sanitize_store_id(&files.inner.ctx.store_id) {
        return text(StatusCode::NOT_FOUND, "File not found");
    }
    let Ok(hash) = hash.parse::<ContentHash>() else {
        return text(StatusCode::NOT_FOUND, "File not found");
    };
    let range = headers.get(header::RANGE).and_then(|value| value.to_str().ok()).map(str::to_owned);
    if let Some(size) = files.inner.ctx.local.size(&hash) {
        files.inner.ctx.local.touch(&hash);
        return serve_local(&files, hash, size, range.as_deref(), method == Method::HEAD);
    }
    serve_remote(&files, hash, range.as_deref(), method == Method::HEAD).await
}

fn serve_local(
    files: &FileSync,
    hash: ContentHash,
    size: u64,
    range: Option<&str>,
    head: bool,
) -> Response {
    let mime = files.inner.ctx.local.mime_type(&hash);
    let (status, start, length) = match range.map(|range| parse_range(range, size)) {
        None => (StatusCode::OK, 0, size),
        Some(Some((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Some(None) => {
            let mut response = text(StatusCode::RANGE_NOT_SATISFIABLE, "Range not satisfiable");
            insert(&mut response, header::CONTENT_RANGE, &format!("bytes */{size}"));
            return response;
        }
    };
    let mut response = if head || length == 0 {
        Response::new(Body::empty())
    } else {
        let receiver = crate::stream::read_file_chunks(
            files.inner.ctx.local.content_path(&hash),
            start,
            length,
        );
        let verify = status == StatusCode::OK;
        let local = files.inner.ctx.local.clone();
        let stream = futures_util::stream::unfold(
            (receiver, Sha256::new(), 0u64, false),
            move |(mut receiver, mut hasher, mut sent, done)| {
                let local = local.clone();
                async move {
                    if done {
                        return None;
                    }
                    match receiver.recv().await {
                        Some(Ok(chunk)) => {
                            sent += chunk.len() as u64;
                            if verify {
                                hasher.update(&chunk);
                                if sent == length
                                    && hex::encode(hasher.clone().finalize()) != hash.to_string()
                                {
                                    let actual = hex::encode(hasher.clone().finalize());
                                    let _ = local.quarantine_corrupt(&hash, &actual);
                                    let error = std::io::Error::other(
                                        "local copy does not match its content hash",
                                    );
                                    return Some((Err(error), (receiver, hasher, sent, true)));
                                }
                            }
                            Some((
                                Ok::<Bytes, std::io::Error>(chunk),
                                (receiver, hasher, sent, false),
                            ))
                        }
                        Some(Err(error)) => Some((Err(error), (receiver, hasher, sent, true))),
                        None => None,
                    }
                }
            },
        );
        Response::new(Body::from_stream(stream))
    };
    *response.status_mut() = status;
    insert(&mut response, header::CONTENT_TYPE, &mime);
    insert(&mut response, header::CONTENT_LENGTH, &length.to_string());
    insert(&mut response, header::ACCEPT_RANGES, "bytes");
    insert(&mut response, header::ETAG, &format!("\"{hash}\""));
    insert(&mut response, header::CACHE_CONTROL, "public, max-age=31536000, immutable");
    insert(&mut response, header::HeaderName::from_static("x-source"), "local");
    if status == StatusCode::PARTIAL_CONTENT {
        insert(
            &mut response,
            header::CONTENT_RANGE,
            &format!("bytes {start}-{}/{size}", start + length - 1),
        );
    }
    response
}

async fn serve_remote(
    files: &FileSync,
    hash: ContentHash,
    range: Option<&str>,
    head: bool,
) -> Response {
    let Some(remote) = files.inner.ctx.remote.clone() else {
        return text(StatusCode::NOT_FOUND, "File not found");
    };
    let rows = match active_rows_with_hash(&files.inner.ctx.store, &hash.to_string()) {
        Ok(rows) => rows,
        Err(error) => return text(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string()),
    };
    let Some(row) = rows.into_iter().find(|row| !row.remote_key.is_empty()) else {
        return text(StatusCode::NOT_FOUND, "File not found");
    };
    let _ = files.prioritize_download(&row.id);
    let signed = match remote.sign_download(&row.remote_key).await {
        Ok(signed) => signed,
        Err(error) => return text(StatusCode::BAD_GATEWAY, &error.to_string()),
    };
    let mut request = if head { remote.raw_head(&signed.url) } else { remote.raw_get(&signed.url) };
    for (name, value) in &signed.headers {
        request = request.header(name, value);
    }
    if let Some(range) = range {
        request = request.header(reqwest::header::RANGE, range);
    }
    let upstream = match request.send().await {
        Ok(upstream) => upstream,
        Err(error) => {
            return text(StatusCode::BAD_GATEWAY, &format!("remote fetch failed: {error}"));
        }
    };
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    if !(status.is_success() || status == StatusCode::RANGE_NOT_SATISFIABLE) {
        return text(
            if status == StatusCode::NOT_FOUND { status } else { StatusCode::BAD_GATEWAY },
            "File not found",
        );
    }
    let mut forwarded = Vec::new();
    for name in
        [header::CONTENT_TYPE, header::CONTENT_LENGTH, header::CONTENT_RANGE, header::ACCEPT_RANGES]
    {
        if let Some(value) =
            upstream.headers().get(name.as_str()).and_then(|value| value.to_str().ok())
        {
            forwarded.push((name, value.to_owned()));
        }
    }
    let body = if head {
        Body::empty()
    } else {
        Body::from_stream(upstream.bytes_stream().map(|chunk| chunk.map_err(std::io::Error::other)))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if head && range.is_none() {
        // The probe asked for one byte; report the whole object like a HEAD would.
        let total = forwarded
            .iter()
            .find(|(name, _)| name == header::CONTENT_RANGE)
            .and_then(|(_, value)| value.rsplit('/').next())
            .map(str::to_owned);
        forwarded
            .retain(|(name, _)| name != header::CONTENT_RANGE && name != header::CONTENT_LENGTH);
        if let Some(total) = total {
            forwarded.push((header::CONTENT_LENGTH, total));
        }
        *response.status_mut() = StatusCode::OK;
    }
    for (name, value) in forwarded {
        insert(&mut response, name, &value);
    }
    insert(&mut response, header::ETAG, &format!("\"{hash}\""));
    insert(&mut response, header::HeaderName::from_static("x-source"), "remote");
    response
}

/// Parses one `bytes=` range against `size`: `Some((first, last))` inclusive, `None` if unsatisfiable or not a
/// single byte range (multiple ranges are answered with the first only being unsupported: we refuse them).
fn parse_range(range: &str, size: u64) -> Option<(u64, u64)> {
    let spec = range.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let suffix: u64 = suffix.parse().ok()?;
            if suffix == 0 {
                return None;
            }
            (size.saturating_sub(suffix), size - 1)
        }
        (start, "") => (start.parse().ok()?, size - 1),
        (start, end) => (start.parse().ok()?, end.parse::<u64>().ok()?.min(size - 1)),
    };
    (start <= end && start < size).then_some((start, end))
}

fn text(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message.to_owned())
        .into_response()
}

fn insert(response: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=95-200", 100), Some((95, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("bytes=0-1,4-5", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
