//! One attempt of one transfer: upload (existence check, checksum-bound PUT or resumable multipart) and download
//! (resumable GET into a partial file, verified against the content hash before it becomes visible).
//!
//! Inside an attempt, an expired presigned URL is re-signed and the transfer continues (downloads from where the
//! partial file ends, multipart uploads from the parts the store already has). Everything else is returned to the
//! engine, which records the error and retries with backoff. State (rows, statuses) is the engine's business;
//! this module only moves and checks bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{FilesError, RemoteError};
use crate::layout::{ContentHash, remote_key_for_path, stored_path};
use crate::local::{CHUNK_BYTES, Ingested, LocalFiles, now_ms, write_atomically};
use crate::remote::{ObjectInfo, ProgressCounter, SignedRequest, SignerClient, UploadedPart};
use crate::stream::{HashingWriter, hash_file_range};

/// How many times an attempt re-signs after an expired URL before giving up to the engine.
const RESIGN_LIMIT: usize = 3;
/// Parts of one multipart upload in flight at once.
const PART_CONCURRENCY: usize = 2;

/// What a transfer needs.
#[derive(Debug, Clone)]
pub(crate) struct TransferContext {
    pub(crate) remote: SignerClient,
    pub(crate) local: LocalFiles,
    pub(crate) store_id: String,
    pub(crate) multipart_threshold: u64,
    pub(crate) part_size: u64,
    /// Bytes moved so far.
    pub(crate) loaded: ProgressCounter,
    /// Total bytes, 0 while unknown.
    pub(crate) total: Arc<AtomicU64>,
}

/// A finished upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Uploaded {
    pub(crate) key: String,
    /// The object already existed; nothing was sent.
    pub(crate) skipped: bool,
}

/// The object key of `hash` in this store: `<sanitized store id>/<hash>`.
pub(crate) fn remote_key(ctx: &TransferContext, hash: &ContentHash) -> String {
    remote_key_for_path(&stored_path(&ctx.store_id, hash))
}

/// Whether what the store holds under the key is this content: the same SHA-256, or, when the store does not
/// know it, the same size (keys are content addresses, and objects only appear complete).
fn is_this_content(existing: &ObjectInfo, hash: &str, size: u64) -> bool {
    existing.exists
        && (existing.sha256.as_deref() == Some(hash)
            || (existing.sha256.is_none() && existing.size == Some(size)))
}

/// Uploads the local copy of `hash` to `<store>/<hash>`: existence check, then one checksum-bound PUT, or a
/// resumable multipart upload from `multipart_threshold` on.
pub(crate) async fn upload(
    ctx: &TransferContext,
    hash: ContentHash,
    mime_type: &str,
) -> Result<Uploaded, FilesError> {
    let key = remote_key(ctx, &hash);
    let path = ctx.local.content_path(&hash);
    let size = std::fs::metadata(&path)
        .map_err(|source| FilesError::LocalIo { path: path.clone(), source })?
        .len();
    ctx.total.store(size, Ordering::Relaxed);
    let hash_hex = hash.to_string();
    match ctx.remote.head(&key).await {
        Ok(info) if is_this_content(&info, &hash_hex, size) => {
            ctx.loaded.store(size, Ordering::Relaxed);
            return Ok(Uploaded { key, skipped: true });
        }
        Ok(_) => {}
        // A signer without the existence-check extension (the upstream one): just upload.
        Err(RemoteError::Status { status: 404 | 405, .. }) => {}
        Err(error) => return Err(error.into()),
    }
    if size >= ctx.multipart_threshold && size > 0 {
        upload_multipart(ctx, &key, &hash, size, mime_type).await?;
        return Ok(Uploaded { key, skipped: false });
    }
    let signed = ctx.remote.sign_upload(&key, size, Some(&hash_hex), Some(mime_type)).await?;
    put_whole(ctx, &key, &hash, size, mime_type, signed).await?;
    Ok(Uploaded { key, skipped: false })
}

/// Uploads the local copy of `hash` (`size` bytes, below the multipart threshold) with an answer of a batched
/// signing call: nothing is sent when the store already holds the content.
pub(crate) async fn upload_presigned(
    ctx: &TransferContext,
    hash: ContentHash,
    size: u64,
    mime_type: &str,
    existing: &ObjectInfo,
    signed: SignedRequest,
) -> Result<Uploaded, FilesError> {
    let key = remote_key(ctx, &hash);
    ctx.total.store(size, Ordering::Relaxed);
    if is_this_content(existing, &hash.to_string(), size) {
        ctx.loaded.store(size, Ordering::Relaxed);
        return Ok(Uploaded { key, skipped: true });
    }
    put_whole(ctx, &key, &hash, size, mime_type, signed).await?;
    Ok(Uploaded { key, skipped: false })
}

/// One checksum-bound PUT of the whole local copy. Bodies up to one chunk are read into memory (one request
/// write instead of a reader thread and a channel); larger ones stream. An expired URL is signed again, up to
/// [`RESIGN_LIMIT`] times; a refused checksum makes the local copy verify itself (a rotten copy is quarantined).
async fn put_whole(
    ctx: &TransferContext,
    key: &str,
    hash: &ContentHash,
    size: u64,
    mime_type: &str,
    mut signed: SignedRequest,
) -> Result<(), FilesError> {
    let path = ctx.local.content_path(hash);
    if has_expired(&signed) {
        // A URL of a batch signed a while ago (a long group on a slow link, or a short lifetime): a fresh one
        // costs a round trip, a refused body costs the body.
        signed =
            ctx.remote.sign_upload(key, size, Some(&hash.to_string()), Some(mime_type)).await?;
    }
    let mut attempt = 0;
    loop {
        ctx.loaded.store(0, Ordering::Relaxed);
        let sent = if size <= CHUNK_BYTES as u64 {
            let body = tokio::fs::read(&path)
                .await
                .map_err(|source| FilesError::LocalIo { path: path.clone(), source })?;
            if body.len() as u64 != size {
                // Content files never change in place; a different size means it was replaced or damaged.
                ctx.local.verify(hash)?;
                return Err(FilesError::LocalIo {
                    path,
                    source: std::io::Error::other("the local copy changed size while uploading"),
                });
            }
            let result = ctx.remote.put_bytes("upload", &signed, Bytes::from(body)).await;
            if result.is_ok() {
                ctx.loaded.store(size, Ordering::Relaxed);
            }
            result
        } else {
            ctx.remote.put_file_range("upload", &signed, &path, 0, size, &ctx.loaded).await
        };
        match sent {
            Ok(_) => return Ok(()),
            Err(error) if attempt < RESIGN_LIMIT && failed_by_expiry(&error, &signed) => {
                attempt += 1;
                tracing::info!(target: "livestore_files::_events::upload", %key, attempt, "upload URL expired; signing again");
                signed = ctx
                    .remote
                    .sign_upload(key, size, Some(&hash.to_string()), Some(mime_type))
                    .await?;
            }
            Err(error @ RemoteError::Status { status: 400, .. }) => {
                // The store refused our checksum: either the local copy rotted, or it changed under us.
                ctx.local.verify(hash)?;
                return Err(error.into());
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Whether a signed URL's reported expiry has passed by this machine's clock (false when the signer did not say).
fn has_expired(signed: &SignedRequest) -> bool {
    signed.expires_at_ms().is_some_and(|expires_at| now_ms() >= expires_at)
}

/// Whether a PUT failed because its URL expired: the store said so, or the connection broke once the URL's expiry
/// had passed. The second case is the usual one for a large body: the store refuses the request as soon as it has
/// the headers and closes the connection, so the client fails while still sending the body and never reads the
/// answer. Either way the caller signs again (a bounded number of times, so a clock that runs ahead of the
/// server's cannot make it loop).
fn failed_by_expiry(error: &RemoteError, signed: &SignedRequest) -> bool {
    match error {
        RemoteError::UrlExpired { .. } => true,
        RemoteError::Network { .. } => has_expired(signed),
        _ => false,
    }
}

/// The record of an unfinished multipart upload, kept so a restarted process resumes it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MultipartRecord {
    key: String,
    upload_id: String,
    part_size: u64,
}

async fn upload_multipart(
    ctx: &TransferContext,
    key: &str,
    hash: &ContentHash,
    size: u64,
    mime_type: &str,
) -> Result<(), FilesError> {
    let record_path = ctx.local.uploads_dir().join(format!("{hash}.json"));
    let record = std::fs::read(&record_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<MultipartRecord>(&bytes).ok())
        .filter(|record| record.key == key);
    let (record, existing) = match record {
        Some(record) => match ctx.remote.multipart_parts(key, &record.upload_id).await {
            Ok(parts) => (record, parts),
            Err(RemoteError::Status { status: 404, .. }) => {
                (create_upload(ctx, key, mime_type, &record_path).await?, vec![])
            }
            Err(error) => return Err(error.into()),
        },
        None => (create_upload(ctx, key, mime_type, &record_path).await?, vec![]),
    };
    let part_size = record.part_size;
    let part_count = size.div_ceil(part_size) as u32;
    let part_length = |number: u32| (size - u64::from(number - 1) * part_size).min(part_size);
    let mut etags: Vec<(u32, String)> = Vec::with_capacity(part_count as usize);
    let mut missing = Vec::new();
    for number in 1..=part_count {
        let reusable = existing.iter().find(|part: &&UploadedPart| {
            part.part_number == number && part.size == part_length(number) && part.etag.is_some()
        });
        match reusable.and_then(|part| part.etag.clone()) {
            Some(etag) => {
                ctx.loaded.fetch_add(part_length(number), Ordering::Relaxed);
                etags.push((number, etag));
            }
            None => missing.push(number),
        }
    }
    if !existing.is_empty() {
        tracing::info!(target: "livestore_files::_events::upload", %key, reused = etags.len(), remaining = missing.len(), "resuming multipart upload");
    }
    let path = ctx.local.content_path(hash);
    let results: Vec<Result<(u32, String), FilesError>> = futures_util::stream::iter(missing)
        .map(|number| {
            let path = path.clone();
            let upload_id = record.upload_id.clone();
            async move {
                let offset = u64::from(number - 1) * part_size;
                let length = part_length(number);
                let hash_path = path.clone();
                let sha256 = tokio::task::spawn_blocking(move || {
                    hash_file_range(&hash_path, offset, length)
                })
                .await
                .map_err(|error| FilesError::LocalIo {
                    path: path.clone(),
                    source: std::io::Error::other(error),
                })?
                .map_err(|source| FilesError::LocalIo { path: path.clone(), source })?;
                let mut attempt = 0;
                loop {
                    let signed = ctx
                        .remote
                        .multipart_sign_part(key, &upload_id, number, length, &sha256)
                        .await?;
                    match ctx
                        .remote
                        .put_file_range("upload part", &signed, &path, offset, length, &ctx.loaded)
                        .await
                    {
                        Ok(Some(etag)) => return Ok((number, etag)),
                        Ok(None) => {
                            return Err(RemoteError::InvalidResponse {
                                operation: "upload part",
                                reason: "no ETag in the response".to_owned(),
                            }
                            .into());
                        }
                        Err(error)
                            if attempt < RESIGN_LIMIT && failed_by_expiry(&error, &signed) =>
                        {
                            attempt += 1;
                            tracing::info!(target: "livestore_files::_events::upload", %key, part = number, attempt, "part URL expired; signing the part again");
                        }
                        Err(error) => return Err(error.into()),
                    }
                }
            }
        })
        .buffer_unordered(PART_CONCURRENCY)
        .collect()
        .await;
    for result in results {
        etags.push(result?);
    }
    etags.sort_by_key(|(number, _)| *number);
    match ctx.remote.multipart_complete(key, &record.upload_id, &etags).await {
        Ok(()) => {
            let _ = std::fs::remove_file(&record_path);
            Ok(())
        }
        Err(error @ RemoteError::Status { status: 404, .. }) => {
            // The store forgot the upload (expired or aborted): start over next attempt.
            let _ = std::fs::remove_file(&record_path);
            Err(error.into())
        }
        Err(error) => Err(error.into()),
    }
}

async fn create_upload(
    ctx: &TransferContext,
    key: &str,
    mime_type: &str,
    record_path: &std::path::Path,
) -> Result<MultipartRecord, FilesError> {
    let created = ctx.remote.multipart_create(key, Some(mime_type)).await?;
    let part_size = ctx.part_size.max(created.min_part_size.unwrap_or(5 * 1024 * 1024));
    let record = MultipartRecord { key: key.to_owned(), upload_id: created.upload_id, part_size };
    let json = serde_json::to_vec(&record).expect("a multipart record serializes");
    write_atomically(record_path, |file| std::io::Write::write_all(file, &json))
        .map_err(|source| FilesError::LocalIo { path: record_path.to_path_buf(), source })?;
    Ok(record)
}

/// Downloads `key` into the local store as `hash`: resumes a partial file, verifies the hash, then publishes.
pub(crate) async fn download(
    ctx: &TransferContext,
    hash: ContentHash,
    key: &str,
) -> Result<(), FilesError> {
    if ctx.local.contains(&hash) {
        return Ok(());
    }
    let partial = ctx.local.partial_path(&hash);
    let mut last_error: Option<FilesError> = None;
    for _ in 0..=RESIGN_LIMIT {
        let offset = std::fs::metadata(&partial).map(|meta| meta.len()).unwrap_or(0);
        let signed = ctx.remote.sign_download(key).await?;
        let response = match ctx.remote.get(&signed, offset, key).await {
            Ok(response) => response,
            Err(error @ RemoteError::UrlExpired { .. }) => {
                last_error = Some(error.into());
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        let resumed = offset > 0
            && response.status().as_u16() == 206
            && content_range_start(&response) == Some(offset);
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let base = if resumed { offset } else { 0 };
        ctx.total
            .store(response.content_length().map_or(0, |length| length + base), Ordering::Relaxed);
        ctx.loaded.store(base, Ordering::Relaxed);
        let mut writer = HashingWriter::start(partial.clone(), resumed);
        let mut body = response.bytes_stream();
        let mut body_error = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => {
                    ctx.loaded.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    if writer.write(bytes).await.is_err() {
                        break; // The writer failed; `finish` says why.
                    }
                }
                Err(source) => {
                    body_error = Some(RemoteError::Network { operation: "download", source });
                    break;
                }
            }
        }
        let (actual, size) = match writer.finish().await {
            Ok(done) => done,
            Err(source) => {
                // A full disk or another local failure: drop the partial so it does not hold space.
                let _ = std::fs::remove_file(&partial);
                return Err(FilesError::LocalIo { path: partial, source });
            }
        };
        if let Some(error) = body_error {
            // Keep the partial file: the next try resumes after it.
            last_error = Some(error.into());
            continue;
        }
        if actual != hash.to_string() {
            let quarantined = ctx.local.quarantine_file(&partial, &hash);
            tracing::warn!(target: "livestore_files::_events::download", %key, expected = %hash, %actual, quarantined = %quarantined.display(), "downloaded bytes do not match the content hash");
            return Err(RemoteError::HashMismatch {
                key: key.to_owned(),
                expected: hash.to_string(),
                actual,
            }
            .into());
        }
        ctx.local.publish(&partial, &Ingested { hash, size }, &content_type)?;
        return Ok(());
    }
    Err(last_error.unwrap_or(FilesError::Remote(RemoteError::UrlExpired { operation: "download" })))
}

fn content_range_start(response: &reqwest::Response) -> Option<u64> {
    let value = response.headers().get(reqwest::header::CONTENT_RANGE)?.to_str().ok()?;
    let range = value.strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}
