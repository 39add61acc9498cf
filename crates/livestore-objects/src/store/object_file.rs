//! The on-disk format of one object (or one multipart part) and the crash-safe
//! way to write it.
//!
//! An object is a single file: the body bytes, then a JSON trailer with the
//! metadata, then the trailer length (u32 LE) and an 8-byte magic. One file
//! means one `rename` publishes body and metadata together, so a reader never
//! sees a body without its metadata or the other way round. Files are named
//! by the SHA-256 of the key (see `Store::object_path`), so keys never become
//! file names and need no escaping.
//!
//! Writing goes to a temp file in `<data>/tmp`, is fsynced, renamed into
//! place and the parent directory fsynced. A crash at any point leaves either
//! the old object or the new one, plus at worst a stale temp file that
//! `Store::open` deletes. Streaming the body in and out is `store::stream`'s job.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const TRAILER_MAGIC: [u8; 8] = *b"LSOBJv01";
const TRAILER_FIXED_LEN: u64 = 4 + TRAILER_MAGIC.len() as u64;
/// A trailer larger than this means the file is not ours (keys are at most
/// 1 KiB, so real trailers are far smaller).
const MAX_TRAILER_LEN: u32 = 64 * 1024;

/// Metadata stored in the trailer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ObjectMeta {
    /// The S3 key, so a hashed file name can be traced back.
    pub(crate) key: String,
    pub(crate) size: u64,
    /// Hex SHA-256 of the body.
    pub(crate) sha256: String,
    /// ETag without quotes.
    pub(crate) etag: String,
    pub(crate) content_type: String,
    pub(crate) last_modified_ms: i64,
    /// Number of parts when the object came from a multipart upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) parts: Option<u32>,
}

/// An object file opened for reading, positioned nowhere in particular.
#[derive(Debug)]
pub(crate) struct OpenedObject {
    pub(crate) file: File,
    pub(crate) meta: ObjectMeta,
}

/// Opens `path`; `Ok(None)` when there is no such object.
pub(crate) fn open_object(path: &Path) -> io::Result<Option<OpenedObject>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let meta = read_trailer(&mut file)?;
    Ok(Some(OpenedObject { file, meta }))
}

fn read_trailer(file: &mut File) -> io::Result<ObjectMeta> {
    let corrupt = |what: &str| {
        io::Error::new(io::ErrorKind::InvalidData, format!("corrupt object file: {what}"))
    };
    let file_len = file.metadata()?.len();
    if file_len < TRAILER_FIXED_LEN {
        return Err(corrupt("too short"));
    }
    let mut fixed = [0u8; TRAILER_FIXED_LEN as usize];
    file.seek(SeekFrom::Start(file_len - TRAILER_FIXED_LEN))?;
    file.read_exact(&mut fixed)?;
    let (length_bytes, magic) = fixed.split_at(4);
    if magic != TRAILER_MAGIC {
        return Err(corrupt("bad magic"));
    }
    let trailer_len = u32::from_le_bytes(length_bytes.try_into().expect("split at 4"));
    if trailer_len > MAX_TRAILER_LEN || u64::from(trailer_len) + TRAILER_FIXED_LEN > file_len {
        return Err(corrupt("bad trailer length"));
    }
    let mut trailer = vec![0u8; trailer_len as usize];
    file.seek(SeekFrom::Start(file_len - TRAILER_FIXED_LEN - u64::from(trailer_len)))?;
    file.read_exact(&mut trailer)?;
    let meta: ObjectMeta = serde_json::from_slice(&trailer).map_err(|_| corrupt("bad trailer"))?;
    if meta.size != file_len - TRAILER_FIXED_LEN - u64::from(trailer_len) {
        return Err(corrupt("size does not match"));
    }
    Ok(meta)
}

/// A temp file that is deleted on drop unless [`TempObject::persist`] moved it
/// into place, so every early return or cancelled request cleans up.
#[derive(Debug)]
pub(crate) struct TempObject {
    path: PathBuf,
    file: Option<File>,
}

impl TempObject {
    /// Creates a fresh temp file in `tmp_dir` with a random name.
    pub(crate) fn create(tmp_dir: &Path) -> io::Result<Self> {
        let name = format!("{:032x}.tmp", rand::random::<u128>());
        let path = tmp_dir.join(name);
        let mut options = File::options();
        options.write(true).create_new(true);
        // Object bytes are the stores' files: readable by the server's user only.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path)?;
        Ok(Self { path, file: Some(file) })
    }

    /// The open file, for writing the body.
    pub(crate) fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("the file is only taken by persist, which consumes self")
    }

    /// Appends the trailer, fsyncs, renames over `destination` and fsyncs the
    /// destination directory. After this returns `Ok`, the object survives a crash.
    pub(crate) fn persist(mut self, meta: &ObjectMeta, destination: &Path) -> io::Result<()> {
        let trailer = serde_json::to_vec(meta).map_err(io::Error::other)?;
        let trailer_len = u32::try_from(trailer.len()).map_err(io::Error::other)?;
        let mut file = self.file.take().expect("persist runs once");
        file.write_all(&trailer)?;
        file.write_all(&trailer_len.to_le_bytes())?;
        file.write_all(&TRAILER_MAGIC)?;
        file.sync_all()?;
        drop(file);
        let parent = destination.parent().expect("object paths always have a parent directory");
        std::fs::create_dir_all(parent)?;
        std::fs::rename(&self.path, destination)?;
        // The rename is only durable once the directory entry is on disk.
        File::open(parent)?.sync_all()?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempObject {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            drop(self.file.take());
            if let Err(error) = std::fs::remove_file(&self.path)
                && error.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %self.path.display(), %error, "could not remove temp object");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64) -> ObjectMeta {
        ObjectMeta {
            key: "s/k".into(),
            size,
            sha256: "00".repeat(32),
            etag: "e".into(),
            content_type: "text/plain".into(),
            last_modified_ms: 1,
            parts: None,
        }
    }

    #[test]
    fn write_then_read_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut temp = TempObject::create(dir.path()).expect("create");
        temp.file().write_all(b"hello").expect("write");
        let destination = dir.path().join("objects/ab/obj");
        temp.persist(&meta(5), &destination).expect("persist");
        let opened = open_object(&destination).expect("open").expect("exists");
        assert_eq!(opened.meta.size, 5);
        assert_eq!(opened.meta.content_type, "text/plain");
        assert!(open_object(&dir.path().join("missing")).expect("open").is_none());
    }

    #[test]
    fn dropped_temp_file_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut temp = TempObject::create(dir.path()).expect("create");
        temp.file().write_all(b"partial").expect("write");
        drop(temp);
        assert_eq!(std::fs::read_dir(dir.path()).expect("read_dir").count(), 0);
    }

    #[test]
    fn foreign_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("junk");
        std::fs::write(&path, b"not an object at all, no trailer").expect("write");
        assert!(open_object(&path).is_err());
        std::fs::write(&path, b"x").expect("write");
        assert!(open_object(&path).is_err());
    }
}
