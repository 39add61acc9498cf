//! The embedded S3-compatible object store: a data directory plus the HTTP
//! routes under `/s3/<bucket>/<key>`.
//!
//! Owns object storage, multipart uploads, SigV4 verification and the S3
//! wire format. It does not know bearer tokens or store ids: every request
//! must carry a SigV4 signature (normally a presigned URL from the signer),
//! and the signer is what limits which keys a caller can get URLs for.
//!
//! Layout of the data directory:
//! - `objects/<h[0..2]>/<h>` with `h` = hex SHA-256 of the key: one file per
//!   object (`object_file` describes the format);
//! - `multipart/<uploadId>/upload.json` and `part-<n>` files (uploads older
//!   than seven days are removed on start);
//! - `tmp/`: files being written, deleted on start;
//! - `credentials.json`: the generated key pair when none is configured;
//! - `lock`: held (advisory lock) by the one process serving the directory.

mod http;
mod multipart;
mod object_file;
mod s3_error;
pub(crate) mod sigv4;
mod stream;
mod xml;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub(crate) use http::router;
pub(crate) use object_file::ObjectMeta;
pub(crate) use s3_error::S3Error;
use sigv4::Credentials;
pub(crate) use xml::{CompletedPart, elements as xml_elements, escape as xml_escape};

use crate::Error;

/// S3's minimum size of every part but the last.
pub(crate) const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;
/// S3's largest single PUT.
pub(crate) const MAX_PUT_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// An open data directory. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub(crate) struct Store {
    objects_dir: PathBuf,
    multipart_dir: PathBuf,
    tmp_dir: PathBuf,
    bucket: String,
    region: String,
    credentials: Credentials,
    /// Upload ids whose completion is running, so two concurrent completes of
    /// the same upload cannot both assemble it.
    completing: Mutex<HashSet<String>>,
    /// What PUTs and part uploads stored since the process started (for metrics, and for tests that check a
    /// resumed upload sends only the missing parts).
    pub(crate) stored: StoredCounters,
    /// Held for the store's lifetime: the advisory lock on `<data>/lock`.
    _lock: std::fs::File,
}

/// Counts of successfully stored bodies (a refused or interrupted upload counts nothing).
#[derive(Debug, Default)]
pub(crate) struct StoredCounters {
    pub(crate) objects: std::sync::atomic::AtomicU64,
    pub(crate) parts: std::sync::atomic::AtomicU64,
    pub(crate) bytes: std::sync::atomic::AtomicU64,
}

#[derive(Serialize, Deserialize)]
struct StoredCredentials {
    access_key_id: String,
    secret_access_key: String,
}

impl Store {
    /// Opens (creating if needed) the data directory and deletes stale temp
    /// files left by a crash.
    pub(crate) fn open(
        data_dir: &Path,
        bucket: &str,
        region: &str,
        configured: Option<(String, String)>,
    ) -> Result<Self, Error> {
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::DataDir { path, source }
        };
        private_dir(data_dir).map_err(io_error(data_dir))?;
        // Two processes on one data dir would delete each other's temp files
        // on start; an advisory lock makes the second one fail instead.
        let lock_path = data_dir.join("lock");
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::DataDir {
                    path: data_dir.to_path_buf(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::ResourceBusy,
                        "the data directory is in use by another process",
                    ),
                });
            }
            Err(std::fs::TryLockError::Error(error)) => return Err(io_error(&lock_path)(error)),
        }
        let objects_dir = data_dir.join("objects");
        let multipart_dir = data_dir.join("multipart");
        let tmp_dir = data_dir.join("tmp");
        for dir in [&objects_dir, &multipart_dir, &tmp_dir] {
            private_dir(dir).map_err(io_error(dir))?;
        }
        for entry in std::fs::read_dir(&tmp_dir).map_err(io_error(&tmp_dir))? {
            let path = entry.map_err(io_error(&tmp_dir))?.path();
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
        multipart::sweep_expired_uploads(&multipart_dir, now_ms());
        let (access_key_id, secret_access_key) = match configured {
            Some(pair) => pair,
            None => load_or_create_credentials(&data_dir.join("credentials.json"))?,
        };
        Ok(Self {
            objects_dir,
            multipart_dir,
            tmp_dir,
            bucket: bucket.to_owned(),
            region: region.to_owned(),
            credentials: Credentials { access_key_id, secret_access_key },
            stored: StoredCounters::default(),
            completing: Mutex::new(HashSet::new()),
            _lock: lock,
        })
    }

    pub(crate) fn credentials(&self) -> (&str, &str) {
        (&self.credentials.access_key_id, &self.credentials.secret_access_key)
    }

    pub(crate) fn bucket(&self) -> &str {
        &self.bucket
    }

    pub(crate) fn region(&self) -> &str {
        &self.region
    }

    fn object_path(&self, key: &str) -> PathBuf {
        let hash = hex::encode(Sha256::digest(key.as_bytes()));
        self.objects_dir.join(&hash[..2]).join(hash)
    }

    /// Metadata of `key`, `None` if absent.
    pub(crate) async fn stat(&self, key: &str) -> std::io::Result<Option<ObjectMeta>> {
        let path = self.object_path(key);
        let opened = tokio::task::spawn_blocking(move || object_file::open_object(&path))
            .await
            .map_err(std::io::Error::other)??;
        Ok(opened.map(|opened| opened.meta))
    }

    /// `true` while the object and temp directories are reachable.
    pub(crate) async fn is_healthy(&self) -> bool {
        let objects = tokio::fs::metadata(&self.objects_dir).await;
        let tmp = tokio::fs::metadata(&self.tmp_dir).await;
        objects.is_ok_and(|meta| meta.is_dir()) && tmp.is_ok_and(|meta| meta.is_dir())
    }

    /// Deletes `key`; `Ok(false)` if it was not there.
    pub(crate) async fn delete(&self, key: &str) -> std::io::Result<bool> {
        match tokio::fs::remove_file(self.object_path(key)).await {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        }
    }
}

/// Creates `dir` if needed and makes it private to the server's user (0700): the store's directory holds every
/// store's files and the generated credentials, which no other local user may read.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn load_or_create_credentials(path: &Path) -> Result<(String, String), Error> {
    let io_error = |source| Error::DataDir { path: path.to_path_buf(), source };
    match std::fs::read(path) {
        Ok(bytes) => {
            // Written 0600 by this crate; an older or hand-made copy may be readable by others.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io_error)?;
            }
            let stored: StoredCredentials = serde_json::from_slice(&bytes).map_err(|error| {
                io_error(std::io::Error::new(std::io::ErrorKind::InvalidData, error))
            })?;
            return Ok((stored.access_key_id, stored.secret_access_key));
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error(error)),
    }
    let stored = StoredCredentials {
        access_key_id: format!("LSO{:017X}", rand::random::<u64>() >> 4),
        secret_access_key: format!(
            "{:032x}{:032x}",
            rand::random::<u128>(),
            rand::random::<u128>()
        ),
    };
    let bytes = serde_json::to_vec_pretty(&stored)
        .map_err(|error| io_error(std::io::Error::other(error)))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io_error)?;
    std::io::Write::write_all(&mut file, &bytes).map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    Ok((stored.access_key_id, stored.secret_access_key))
}

/// The text of the first `<tag>` element of an S3 XML document.
pub(crate) fn xml_element(document: &str, tag: &str) -> Option<String> {
    xml::elements(document, tag).first().map(|text| (*text).to_owned())
}

/// The ETag of a single-PUT object: the first 128 bits of its SHA-256.
///
/// AWS uses MD5 here, but ETags are opaque to clients, and reusing the
/// SHA-256 we compute anyway keeps uploads at one hash pass.
pub(crate) fn etag_for_sha256(sha256: &[u8; 32]) -> String {
    hex::encode(&sha256[..16])
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}
