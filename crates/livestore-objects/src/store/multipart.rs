//! Multipart uploads in the embedded store: create, part bookkeeping, list,
//! complete (assemble parts into one object file) and abort.
//!
//! Each upload is a directory `multipart/<uploadId>/` holding `upload.json`
//! (key, content type) and one object-format file per part, each written
//! atomically like an object. Completion copies the parts, in order, into a
//! fresh temp object and publishes it with the same fsync + rename as a single
//! PUT, so a crash mid-completion leaves the upload intact and no object.
//! Abandoned uploads are removed when the store opens if they are older than
//! [`UPLOAD_EXPIRY_MS`] (S3 leaves that to lifecycle rules; we have none).

use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::object_file::{ObjectMeta, TempObject, open_object};
use super::xml::CompletedPart;
use super::{MIN_PART_BYTES, S3Error, Store, now_ms};

/// Uploads older than this are deleted when the store opens.
pub(crate) const UPLOAD_EXPIRY_MS: i64 = 7 * 24 * 3600 * 1000;

/// S3's highest part number.
pub(crate) const MAX_PART_NUMBER: u32 = 10_000;

#[derive(Debug, Serialize, Deserialize)]
struct UploadRecord {
    key: String,
    content_type: String,
    created_ms: i64,
}

/// A stored part, as `ListParts` reports it.
#[derive(Debug, Clone)]
pub(crate) struct PartInfo {
    pub(crate) part_number: u32,
    pub(crate) etag: String,
    pub(crate) size: u64,
    pub(crate) last_modified_ms: i64,
}

impl Store {
    /// Starts an upload and returns its id.
    pub(crate) async fn create_multipart(
        &self,
        key: &str,
        content_type: &str,
    ) -> io::Result<String> {
        let upload_id = format!("{:032x}", rand::random::<u128>());
        let dir = self.multipart_dir.join(&upload_id);
        let record = UploadRecord {
            key: key.to_owned(),
            content_type: content_type.to_owned(),
            created_ms: now_ms(),
        };
        let bytes = serde_json::to_vec(&record).map_err(io::Error::other)?;
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let temp_path = dir.join("upload.json.tmp");
            let mut options = std::fs::File::options();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&temp_path)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp_path, dir.join("upload.json"))
        })
        .await
        .map_err(io::Error::other)??;
        Ok(upload_id)
    }

    /// The directory of `upload_id` if it exists and belongs to `key`.
    async fn upload_dir(&self, key: &str, upload_id: &str) -> Result<(PathBuf, String), S3Error> {
        // Ids are ours (32 hex digits); anything else could be a path trick.
        if upload_id.len() != 32 || !upload_id.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(S3Error::no_such_upload());
        }
        let dir = self.multipart_dir.join(upload_id);
        let bytes = match tokio::fs::read(dir.join("upload.json")).await {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(S3Error::no_such_upload());
            }
            Err(error) => return Err(S3Error::internal(&error)),
        };
        let record: UploadRecord = serde_json::from_slice(&bytes)
            .map_err(|error| S3Error::internal(&io::Error::other(error)))?;
        if record.key != key {
            return Err(S3Error::no_such_upload());
        }
        Ok((dir, record.content_type))
    }

    /// Where part `part_number` of the upload goes, after checking the upload.
    pub(crate) async fn part_destination(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
    ) -> Result<PathBuf, S3Error> {
        if !(1..=MAX_PART_NUMBER).contains(&part_number) {
            return Err(S3Error::invalid_request(
                "Part number must be an integer between 1 and 10000",
            ));
        }
        let (dir, _) = self.upload_dir(key, upload_id).await?;
        Ok(part_path(&dir, part_number))
    }

    pub(crate) fn tmp_dir(&self) -> &std::path::Path {
        &self.tmp_dir
    }

    /// The parts uploaded so far, ascending (what a resuming client needs).
    pub(crate) async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<PartInfo>, S3Error> {
        let (dir, _) = self.upload_dir(key, upload_id).await?;
        tokio::task::spawn_blocking(move || list_parts_blocking(&dir))
            .await
            .map_err(|error| S3Error::internal(&io::Error::other(error)))?
            .map_err(|error| S3Error::internal(&error))
    }

    /// Assembles the listed parts into the object `key`.
    pub(crate) async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<ObjectMeta, S3Error> {
        let (dir, content_type) = self.upload_dir(key, upload_id).await?;
        {
            let mut completing = self
                .completing
                .lock()
                .expect("completing set is never poisoned: no panics while held");
            if !completing.insert(upload_id.to_owned()) {
                return Err(S3Error::new(
                    StatusCode::CONFLICT,
                    "OperationAborted",
                    "A conflicting operation is currently in progress against this upload.",
                ));
            }
        }
        let destination = self.object_path(key);
        let tmp_dir = self.tmp_dir.clone();
        let key_owned = key.to_owned();
        let result = tokio::task::spawn_blocking(move || {
            assemble(&dir, &tmp_dir, &destination, key_owned, content_type, &parts)
        })
        .await
        .map_err(|error| S3Error::internal(&io::Error::other(error)))
        .and_then(|result| result);
        self.completing.lock().expect("completing set is never poisoned").remove(upload_id);
        result
    }

    /// Drops the upload and its parts.
    pub(crate) async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        let (dir, _) = self.upload_dir(key, upload_id).await?;
        tokio::fs::remove_dir_all(&dir).await.map_err(|error| S3Error::internal(&error))
    }
}

/// Deletes uploads older than [`UPLOAD_EXPIRY_MS`] and directories left by a
/// crash during create (no `upload.json`). Runs before the store serves, so
/// no request can race it; failures are logged, never fatal.
pub(crate) fn sweep_expired_uploads(multipart_dir: &std::path::Path, now_ms: i64) {
    let Ok(entries) = std::fs::read_dir(multipart_dir) else { return };
    for entry in entries.flatten() {
        let dir = entry.path();
        let expired = match std::fs::read(dir.join("upload.json")) {
            Ok(bytes) => serde_json::from_slice::<UploadRecord>(&bytes)
                .map_or(true, |record| now_ms - record.created_ms > UPLOAD_EXPIRY_MS),
            Err(error) => error.kind() == io::ErrorKind::NotFound,
        };
        if expired && let Err(error) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(%error, dir = %dir.display(), "could not remove expired multipart upload");
        }
    }
}

fn part_path(dir: &std::path::Path, part_number: u32) -> PathBuf {
    dir.join(format!("part-{part_number:05}"))
}

fn list_parts_blocking(dir: &std::path::Path) -> io::Result<Vec<PartInfo>> {
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(number) =
            name.to_str().and_then(|name| name.strip_prefix("part-")).and_then(|n| n.parse().ok())
        else {
            continue;
        };
        if let Some(opened) = open_object(&entry.path())? {
            parts.push(PartInfo {
                part_number: number,
                etag: opened.meta.etag,
                size: opened.meta.size,
                last_modified_ms: opened.meta.last_modified_ms,
            });
        }
    }
    parts.sort_by_key(|part| part.part_number);
    Ok(parts)
}

fn assemble(
    dir: &std::path::Path,
    tmp_dir: &std::path::Path,
    destination: &std::path::Path,
    key: String,
    content_type: String,
    parts: &[CompletedPart],
) -> Result<ObjectMeta, S3Error> {
    let invalid_part = |number: u32| {
        S3Error::new(
            StatusCode::BAD_REQUEST,
            "InvalidPart",
            format!("Part {number} was not uploaded or its ETag does not match."),
        )
    };
    if parts.is_empty() {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "MalformedXML",
            "The XML lists no parts.",
        ));
    }
    if parts.windows(2).any(|pair| pair[0].part_number >= pair[1].part_number) {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "InvalidPartOrder",
            "The list of parts was not in ascending order.",
        ));
    }
    let mut opened_parts = Vec::with_capacity(parts.len());
    for (index, part) in parts.iter().enumerate() {
        let opened = open_object(&part_path(dir, part.part_number))
            .map_err(|error| S3Error::internal(&error))?
            .ok_or_else(|| invalid_part(part.part_number))?;
        if opened.meta.etag != part.etag {
            return Err(invalid_part(part.part_number));
        }
        if index + 1 < parts.len() && opened.meta.size < MIN_PART_BYTES {
            return Err(S3Error::new(
                StatusCode::BAD_REQUEST,
                "EntityTooSmall",
                format!(
                    "Part {} is smaller than the 5 MiB minimum for all but the last part.",
                    part.part_number
                ),
            ));
        }
        opened_parts.push(opened);
    }
    let io_failure = |error: io::Error| S3Error::internal(&error);
    let mut temp = TempObject::create(tmp_dir).map_err(io_failure)?;
    let mut whole = Sha256::new();
    let mut of_parts = Sha256::new();
    let mut size = 0u64;
    {
        let mut output = BufWriter::with_capacity(1024 * 1024, temp.file());
        let mut buffer = vec![0u8; 1024 * 1024];
        for opened in &mut opened_parts {
            let mut part_digest = [0u8; 32];
            hex::decode_to_slice(&opened.meta.sha256, &mut part_digest)
                .map_err(|error| io_failure(io::Error::other(error)))?;
            of_parts.update(part_digest);
            opened.file.seek(SeekFrom::Start(0)).map_err(io_failure)?;
            let mut reader = (&mut opened.file).take(opened.meta.size);
            loop {
                let read = reader.read(&mut buffer).map_err(io_failure)?;
                if read == 0 {
                    break;
                }
                whole.update(&buffer[..read]);
                output.write_all(&buffer[..read]).map_err(io_failure)?;
                size += read as u64;
            }
        }
        output.flush().map_err(io_failure)?;
    }
    let meta = ObjectMeta {
        key,
        size,
        sha256: hex::encode(whole.finalize()),
        etag: format!("{}-{}", hex::encode(&of_parts.finalize()[..16]), parts.len()),
        content_type,
        last_modified_ms: now_ms(),
        parts: u32::try_from(parts.len()).ok(),
    };
    temp.persist(&meta, destination).map_err(io_failure)?;
    if let Err(error) = std::fs::remove_dir_all(dir) {
        // The object is published; a leftover upload dir only wastes space.
        tracing::warn!(%error, dir = %dir.display(), "could not remove completed upload");
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_removes_expired_and_broken_uploads_only() {
        let root = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, created_ms: Option<i64>| {
            let dir = root.path().join(name);
            std::fs::create_dir_all(&dir).expect("mkdir");
            if let Some(created_ms) = created_ms {
                let record =
                    UploadRecord { key: "s/k".into(), content_type: "x/y".into(), created_ms };
                std::fs::write(dir.join("upload.json"), serde_json::to_vec(&record).expect("json"))
                    .expect("write");
            }
        };
        let now = 10 * UPLOAD_EXPIRY_MS;
        write("fresh", Some(now - 1000));
        write("old", Some(now - UPLOAD_EXPIRY_MS - 1));
        write("broken", None);
        sweep_expired_uploads(root.path(), now);
        let mut left: Vec<String> = std::fs::read_dir(root.path())
            .expect("read_dir")
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["fresh"]);
    }
}
