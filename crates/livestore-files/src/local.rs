//! The local content-addressed file store: `<root>/livestore-filesync-files/<store>/<sha256>` plus sidecars.
//!
//! Every write goes the same way: stream into a temp file in the work directory while hashing, `fdatasync`, rename
//! into place, fsync the directory. A file therefore appears under its hash name only complete, durable and with
//! the bytes that name says; a crash leaves at most a temp file, removed at the next open. Reads verify the hash
//! while streaming; a mismatch moves the file to quarantine (never deletes evidence) and reports it.
//!
//! This module knows nothing about rows or transfers; `crate::sync` decides what to store and the engine what to
//! download. Buffers are fixed-size (1 MiB), so memory does not depend on file size.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::error::FilesError;
use crate::layout::{ContentHash, FILES_ROOT, SIDECAR_SUFFIX, sanitize_store_id};

/// Size of the streaming buffer for local copies.
pub(crate) const CHUNK_BYTES: usize = 1024 * 1024;

/// The local store of one LiveStore store id.
#[derive(Debug, Clone)]
pub struct LocalFiles {
    root: PathBuf,
    content_dir: PathBuf,
    work_dir: PathBuf,
}

/// What [`LocalFiles::ingest`] stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    /// The content hash (and file name).
    pub hash: ContentHash,
    /// The size in bytes.
    pub size: u64,
}

impl LocalFiles {
    /// Opens (creating directories) the local store for `store_id` under `root`, and removes temp files a crash
    /// may have left.
    pub fn open(root: &Path, store_id: &str) -> Result<LocalFiles, FilesError> {
        let sanitized = sanitize_store_id(store_id);
        let content_dir = root.join(FILES_ROOT).join(&sanitized);
        let work_dir = root.join(FILES_ROOT).join(".work").join(&sanitized);
        let files = LocalFiles { root: root.to_path_buf(), content_dir, work_dir };
        for dir in [
            files.content_dir.clone(),
            files.tmp_dir(),
            files.partial_dir(),
            files.quarantine_dir(),
            files.uploads_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(|source| FilesError::LocalIo { path: dir, source })?;
        }
        // Temp files belong to saves that never finished; nothing refers to them. Partial downloads are kept
        // (they resume), quarantined files are kept (evidence).
        if let Ok(entries) = fs::read_dir(files.tmp_dir()) {
            for entry in entries.flatten() {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(files)
    }

    /// The data root (what stored paths are relative to).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding this store's content files.
    pub fn content_dir(&self) -> &Path {
        &self.content_dir
    }

    /// Absolute path of the content file for `hash`.
    pub fn content_path(&self, hash: &ContentHash) -> PathBuf {
        self.content_dir.join(hash.to_string())
    }

    /// Absolute path of the sidecar for `hash`.
    pub fn sidecar_path(&self, hash: &ContentHash) -> PathBuf {
        self.content_dir.join(format!("{hash}{SIDECAR_SUFFIX}"))
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.work_dir.join("tmp")
    }

    pub(crate) fn partial_dir(&self) -> PathBuf {
        self.work_dir.join("partial")
    }

    pub(crate) fn quarantine_dir(&self) -> PathBuf {
        self.work_dir.join("quarantine")
    }

    pub(crate) fn uploads_dir(&self) -> PathBuf {
        self.work_dir.join("uploads")
    }

    /// The resumable partial download of `hash`.
    pub(crate) fn partial_path(&self, hash: &ContentHash) -> PathBuf {
        self.partial_dir().join(hash.to_string())
    }

    /// Size of the local copy, if there is one.
    pub fn size(&self, hash: &ContentHash) -> Option<u64> {
        fs::metadata(self.content_path(hash))
            .ok()
            .filter(|meta| meta.is_file())
            .map(|meta| meta.len())
    }

    /// Whether a local copy exists.
    pub fn contains(&self, hash: &ContentHash) -> bool {
        self.size(hash).is_some()
    }

    /// Streams `reader` into the store: hash while writing a temp file, fsync, rename to its hash name.
    pub fn ingest(&self, reader: &mut dyn Read, mime_type: &str) -> Result<Ingested, FilesError> {
        let staged = self.stage(reader)?;
        let ingested = staged.ingested;
        self.publish_staged(staged, mime_type)?;
        Ok(ingested)
    }

    /// First half of [`LocalFiles::ingest`]: streams `reader` into a synced temp file while hashing. The temp file
    /// is removed when the returned value is dropped unpublished, and on any error.
    pub fn stage(&self, reader: &mut dyn Read) -> Result<Staged, FilesError> {
        let (temp_path, mut file) = self.create_temp()?;
        let mut staged = Staged {
            temp_path: Some(temp_path),
            ingested: Ingested { hash: ContentHash::from_bytes([0; 32]), size: 0 },
        };
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; CHUNK_BYTES];
        let mut size = 0u64;
        let temp_path = staged.temp_path.clone().expect("set above");
        loop {
            let read = match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(FilesError::SourceUnreadable {
                        path: PathBuf::from("<reader>"),
                        source,
                    });
                }
            };
            hasher.update(&buffer[..read]);
            file.write_all(&buffer[..read])
                .map_err(|source| FilesError::LocalIo { path: temp_path.clone(), source })?;
            size += read as u64;
        }
        file.sync_data()
            .map_err(|source| FilesError::LocalIo { path: temp_path.clone(), source })?;
        staged.ingested =
            Ingested { hash: ContentHash::from_bytes(hasher.finalize().into()), size };
        Ok(staged)
    }

    /// Second half of [`LocalFiles::ingest`]: renames the staged file to its content name.
    pub fn publish_staged(&self, mut staged: Staged, mime_type: &str) -> Result<(), FilesError> {
        let temp_path = staged.temp_path.take().expect("a staged file is published once");
        self.publish(&temp_path, &staged.ingested, mime_type)
    }

    /// Moves a complete, verified, synced temp file to its content name and writes the sidecar.
    pub(crate) fn publish(
        &self,
        temp_path: &Path,
        ingested: &Ingested,
        mime_type: &str,
    ) -> Result<(), FilesError> {
        let final_path = self.content_path(&ingested.hash);
        let existing = fs::metadata(&final_path).ok().filter(|meta| meta.is_file());
        if existing.is_some_and(|meta| meta.len() == ingested.size) {
            // Same name, same size: the same content (names are hashes and files only appear complete).
            let _ = fs::remove_file(temp_path);
        } else {
            fs::rename(temp_path, &final_path).map_err(|source| {
                let _ = fs::remove_file(temp_path);
                FilesError::LocalIo { path: final_path.clone(), source }
            })?;
            sync_dir(&self.content_dir)
                .map_err(|source| FilesError::LocalIo { path: self.content_dir.clone(), source })?;
        }
        // The sidecar is derivable (it only carries a MIME type and a time), so it is not fsynced.
        let sidecar = serde_json::json!({ "type": mime_type, "lastModified": now_ms() });
        let sidecar_path = self.sidecar_path(&ingested.hash);
        fs::write(&sidecar_path, sidecar.to_string())
            .map_err(|source| FilesError::LocalIo { path: sidecar_path, source })?;
        Ok(())
    }

    /// A new temp file in the work directory (same file system as the content directory, so rename works).
    pub(crate) fn create_temp(&self) -> Result<(PathBuf, File), FilesError> {
        let dir = self.tmp_dir();
        for _ in 0..16 {
            let path = dir.join(format!("{:016x}.tmp", rand::random::<u64>()));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok((path, file)),
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(FilesError::LocalIo { path, source }),
            }
        }
        Err(FilesError::LocalIo {
            path: dir,
            source: io::Error::new(io::ErrorKind::AlreadyExists, "no free temp file name"),
        })
    }

    /// Opens the local copy for reading; the reader fails at the end if the bytes do not match the hash.
    pub fn open_verified(&self, hash: &ContentHash) -> Result<VerifiedReader, FilesError> {
        let path = self.content_path(hash);
        let file = File::open(&path)
            .map_err(|source| FilesError::LocalIo { path: path.clone(), source })?;
        Ok(VerifiedReader { file, hasher: Sha256::new(), expected: *hash, path, finished: false })
    }

    /// Copies the local copy to `destination` (temp file next to it, verified, synced, renamed).
    ///
    /// A corrupt local copy is quarantined and reported as [`FilesError::CorruptLocalFile`]; `destination` is not
    /// touched then.
    pub fn copy_verified_to(
        &self,
        hash: &ContentHash,
        destination: &Path,
    ) -> Result<u64, FilesError> {
        let mut reader = self.open_verified(hash)?;
        write_atomically(destination, |file| {
            let mut buffer = vec![0u8; CHUNK_BYTES];
            let mut total = 0u64;
            loop {
                let read = reader.read(&mut buffer)?;
                if read == 0 {
                    return Ok(total);
                }
                file.write_all(&buffer[..read])?;
                total += read as u64;
            }
        })
        .map_err(|source| match reader.mismatch() {
            Some(actual) => self.quarantine_corrupt(hash, &actual),
            None => FilesError::LocalIo { path: destination.to_path_buf(), source },
        })
    }

    /// Hashes the local copy; a mismatch is quarantined and reported.
    pub fn verify(&self, hash: &ContentHash) -> Result<u64, FilesError> {
        let mut reader = self.open_verified(hash)?;
        io::copy(&mut reader, &mut io::sink()).map_err(|source| match reader.mismatch() {
            Some(actual) => self.quarantine_corrupt(hash, &actual),
            None => FilesError::LocalIo { path: self.content_path(hash), source },
        })
    }

    /// Moves a corrupt local copy (named `hash`, hashing to `actual`) to quarantine and returns the error.
    pub(crate) fn quarantine_corrupt(&self, hash: &ContentHash, actual: &str) -> FilesError {
        let quarantined = self.quarantine_dir().join(format!("{hash}.{}", now_ms()));
        let _ = fs::rename(self.content_path(hash), &quarantined);
        let _ = fs::remove_file(self.sidecar_path(hash));
        tracing::warn!(target: "livestore_files::_events::quarantine", %hash, %actual, path = %quarantined.display(), "corrupt local file quarantined");
        FilesError::CorruptLocalFile {
            hash: hash.to_string(),
            actual: actual.to_owned(),
            quarantined,
        }
    }

    /// Moves arbitrary bad bytes (a failed download) to quarantine; returns where they went.
    pub(crate) fn quarantine_file(&self, path: &Path, hash: &ContentHash) -> PathBuf {
        let quarantined = self.quarantine_dir().join(format!("{hash}.download.{}", now_ms()));
        if fs::rename(path, &quarantined).is_err() {
            let _ = fs::remove_file(path);
        }
        quarantined
    }

    /// Removes the local copy and its sidecar; a missing file is not an error.
    pub fn remove(&self, hash: &ContentHash) -> Result<(), FilesError> {
        for path in [self.content_path(hash), self.sidecar_path(hash)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(FilesError::LocalIo { path, source }),
            }
        }
        Ok(())
    }

    /// The sidecar's MIME type, `application/octet-stream` when unknown.
    pub fn mime_type(&self, hash: &ContentHash) -> String {
        fs::read(self.sidecar_path(hash))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .and_then(|value| value.get("type").and_then(|kind| kind.as_str()).map(str::to_owned))
            .filter(|kind| !kind.is_empty())
            .unwrap_or_else(|| "application/octet-stream".to_owned())
    }

    /// Marks the local copy as recently used (eviction removes the least recently used first).
    pub(crate) fn touch(&self, hash: &ContentHash) {
        if let Ok(file) = File::options().write(true).open(self.content_path(hash)) {
            let _ = file.set_modified(SystemTime::now());
        }
    }

    /// Every content file with its size and last use, for eviction.
    pub(crate) fn inventory(&self) -> Vec<(ContentHash, u64, SystemTime)> {
        let Ok(entries) = fs::read_dir(&self.content_dir) else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|entry| {
                let hash: ContentHash = entry.file_name().to_str()?.parse().ok()?;
                let meta = entry.metadata().ok().filter(|meta| meta.is_file())?;
                Some((hash, meta.len(), meta.modified().unwrap_or(UNIX_EPOCH)))
            })
            .collect()
    }
}

/// Bytes hashed into a synced temp file, not yet visible under their content name.
#[derive(Debug)]
pub struct Staged {
    temp_path: Option<PathBuf>,
    /// Hash and size of the staged bytes.
    pub ingested: Ingested,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(path) = self.temp_path.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// A reader over a local copy that hashes what it reads and fails at the end on a mismatch.
#[derive(Debug)]
pub struct VerifiedReader {
    file: File,
    hasher: Sha256,
    expected: ContentHash,
    path: PathBuf,
    finished: bool,
}

impl VerifiedReader {
    /// The actual hash, once the end was reached and it did not match.
    fn mismatch(&self) -> Option<String> {
        if !self.finished {
            return None;
        }
        let actual = hex::encode(self.hasher.clone().finalize());
        (actual != self.expected.to_string()).then_some(actual)
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Read for VerifiedReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.file.read(buffer)?;
        if read == 0 && !buffer.is_empty() {
            self.finished = true;
            if self.mismatch().is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} does not match its content hash", self.path.display()),
                ));
            }
        }
        self.hasher.update(&buffer[..read]);
        Ok(read)
    }
}

/// Writes `destination` through a temp file in the same directory: synced and renamed only if `fill` succeeds.
pub(crate) fn write_atomically<T>(
    destination: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<T>,
) -> io::Result<T> {
    let dir = match destination.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = destination.file_name().and_then(|name| name.to_str()).unwrap_or("file");
    let temp_path = dir.join(format!(".{name}.{:08x}.partial", rand::random::<u32>()));
    let mut file = OpenOptions::new().write(true).create_new(true).open(&temp_path)?;
    let result = fill(&mut file).and_then(|value| file.sync_data().map(|()| value));
    drop(file);
    match result {
        Ok(value) => {
            fs::rename(&temp_path, destination).inspect_err(|_| {
                let _ = fs::remove_file(&temp_path);
            })?;
            let _ = sync_dir(&dir);
            Ok(value)
        }
        Err(error) => {
            let _ = fs::remove_file(&temp_path);
            Err(error)
        }
    }
}

/// Fsyncs a directory so a rename in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

/// A MIME type from a file name's extension (the sidecar's `type`), `application/octet-stream` when unknown.
pub fn mime_from_name(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map(|(_, extension)| extension.to_ascii_lowercase());
    match extension.as_deref() {
        Some("txt") => "text/plain",
        Some("md") => "text/markdown",
        Some("html" | "htm") => "text/html",
        Some("css") => "text/css",
        Some("csv") => "text/csv",
        Some("json") => "application/json",
        Some("js" | "mjs") => "text/javascript",
        Some("pdf") => "application/pdf",
        Some("zip") => "application/zip",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("svg") => "image/svg+xml",
        Some("avif") => "image/avif",
        Some("mp3") => "audio/mpeg",
        Some("wav") => "audio/wav",
        Some("mp4") => "video/mp4",
        Some("webm") => "video/webm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_is_content_addressed_and_verified_on_read() {
        let temp = tempfile::tempdir().unwrap();
        let files = LocalFiles::open(temp.path(), "store/one").unwrap();
        let ingested = files.ingest(&mut &b"Hello from node"[..], "text/plain").unwrap();
        assert_eq!(ingested.hash, ContentHash::of(b"Hello from node"));
        assert_eq!(ingested.size, 15);
        let path =
            temp.path().join("livestore-filesync-files/store_one").join(ingested.hash.to_string());
        assert_eq!(fs::read(&path).unwrap(), b"Hello from node");
        assert_eq!(files.mime_type(&ingested.hash), "text/plain");
        // Saving the same bytes again is a no-op on disk.
        assert_eq!(files.ingest(&mut &b"Hello from node"[..], "text/plain").unwrap(), ingested);
        assert_eq!(fs::read_dir(files.tmp_dir()).unwrap().count(), 0);

        let out = temp.path().join("out.txt");
        files.copy_verified_to(&ingested.hash, &out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"Hello from node");

        // Corrupt the local copy: reads fail, the file goes to quarantine, the destination is untouched.
        fs::write(&path, b"Hello from nodf").unwrap();
        let out2 = temp.path().join("out2.txt");
        let error = files.copy_verified_to(&ingested.hash, &out2).unwrap_err();
        assert!(matches!(error, FilesError::CorruptLocalFile { .. }), "{error}");
        assert!(!out2.exists());
        assert!(!path.exists());
        assert_eq!(fs::read_dir(files.quarantine_dir()).unwrap().count(), 1);
        // No stray temp files next to the destination.
        assert_eq!(fs::read_dir(temp.path()).unwrap().count(), 2);
    }
}
