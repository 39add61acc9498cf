//! Streaming file bodies between blocking file I/O and async HTTP: a reader thread that feeds fixed-size chunks
//! into a bounded channel (uploads), and a writer thread that hashes and appends received chunks (downloads).
//!
//! The channels hold at most [`CHANNEL_CHUNKS`] chunks of [`crate::local::CHUNK_BYTES`], so a transfer's memory is
//! bounded by a few MiB whatever the file size.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::local::CHUNK_BYTES;

/// Chunks buffered between the file thread and the network.
pub(crate) const CHANNEL_CHUNKS: usize = 4;

/// Reads `length` bytes of `path` from `offset` on a blocking thread, as a stream of chunks. A short file is an
/// error (`UnexpectedEof`), so a body never silently ends early.
pub(crate) fn read_file_chunks(
    path: PathBuf,
    offset: u64,
    length: u64,
) -> mpsc::Receiver<io::Result<Bytes>> {
    let (sender, receiver) = mpsc::channel(CHANNEL_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let result = (|| -> io::Result<()> {
            let mut file = File::open(&path)?;
            file.seek(SeekFrom::Start(offset))?;
            let mut remaining = length;
            while remaining > 0 {
                let want = remaining.min(CHUNK_BYTES as u64) as usize;
                let mut buffer = vec![0u8; want];
                file.read_exact(&mut buffer)?;
                remaining -= want as u64;
                if sender.blocking_send(Ok(Bytes::from(buffer))).is_err() {
                    return Ok(()); // The request was dropped.
                }
            }
            Ok(())
        })();
        if let Err(error) = result {
            let _ = sender.blocking_send(Err(error));
        }
    });
    receiver
}

/// Hashes `length` bytes of a file from `offset` (multipart parts are signed with their SHA-256).
pub(crate) fn hash_file_range(
    path: &std::path::Path,
    offset: u64,
    length: u64,
) -> io::Result<String> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK_BYTES];
    let mut remaining = length;
    while remaining > 0 {
        let want = remaining.min(CHUNK_BYTES as u64) as usize;
        file.read_exact(&mut buffer[..want])?;
        hasher.update(&buffer[..want]);
        remaining -= want as u64;
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Two blocking threads behind one handle: one appends chunks to a file, the other hashes them, so a download
/// costs the slower of hashing and writing rather than their sum. The hash covers everything the file holds
/// (a resumed prefix is hashed first).
pub(crate) struct HashingWriter {
    writer: Option<mpsc::Sender<Bytes>>,
    hasher: Option<mpsc::Sender<Bytes>>,
    written: tokio::sync::oneshot::Receiver<io::Result<u64>>,
    hashed: tokio::sync::oneshot::Receiver<io::Result<String>>,
}

impl HashingWriter {
    /// Opens `path` for append; with `keep_existing` the bytes already there are hashed first (resume),
    /// otherwise the file is truncated.
    pub(crate) fn start(path: PathBuf, keep_existing: bool) -> HashingWriter {
        let (writer, mut write_receiver) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
        let (hasher, mut hash_receiver) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
        let (written_sender, written) = tokio::sync::oneshot::channel();
        let (hashed_sender, hashed) = tokio::sync::oneshot::channel();
        let hash_path = path.clone();
        tokio::task::spawn_blocking(move || {
            let result = (|| -> io::Result<String> {
                let mut hasher = Sha256::new();
                if keep_existing {
                    let mut existing = File::open(&hash_path)?;
                    let mut buffer = vec![0u8; CHUNK_BYTES];
                    loop {
                        let read = existing.read(&mut buffer)?;
                        if read == 0 {
                            break;
                        }
                        hasher.update(&buffer[..read]);
                    }
                }
                while let Some(chunk) = hash_receiver.blocking_recv() {
                    hasher.update(&chunk);
                }
                Ok(hex::encode(hasher.finalize()))
            })();
            let _ = hashed_sender.send(result);
        });
        tokio::task::spawn_blocking(move || {
            let result = (|| -> io::Result<u64> {
                let mut file = if keep_existing {
                    let mut file = OpenOptions::new().write(true).open(&path)?;
                    file.seek(SeekFrom::End(0))?;
                    file
                } else {
                    OpenOptions::new().write(true).create(true).truncate(true).open(&path)?
                };
                let mut size = file.stream_position()?;
                while let Some(chunk) = write_receiver.blocking_recv() {
                    file.write_all(&chunk)?;
                    size += chunk.len() as u64;
                }
                file.sync_data()?;
                Ok(size)
            })();
            let _ = written_sender.send(result);
        });
        HashingWriter { writer: Some(writer), hasher: Some(hasher), written, hashed }
    }

    /// Queues a chunk; fails when a thread stopped (its error comes from [`HashingWriter::finish`]).
    pub(crate) async fn write(&mut self, chunk: Bytes) -> Result<(), ()> {
        let (Some(writer), Some(hasher)) = (&self.writer, &self.hasher) else { return Err(()) };
        hasher.send(chunk.clone()).await.map_err(|_| ())?;
        writer.send(chunk).await.map_err(|_| ())
    }

    /// Ends the stream and returns the hash and size of the whole file.
    pub(crate) async fn finish(mut self) -> io::Result<(String, u64)> {
        self.writer = None;
        self.hasher = None;
        let lost = || io::Error::other("download thread ended unexpectedly");
        let size = self.written.await.map_err(|_| lost())??;
        let hash = self.hashed.await.map_err(|_| lost())??;
        Ok((hash, size))
    }
}
