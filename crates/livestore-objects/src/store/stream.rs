//! Moving bodies between HTTP and object files without buffering them.
//!
//! Both directions hand chunks between the async HTTP task and one blocking
//! thread through a small bounded channel, so memory stays at a few MiB
//! whatever the object size, and hashing plus disk IO run on the blocking
//! thread instead of stalling the runtime. Incoming bodies are hashed
//! (SHA-256 always, MD5 only when the client sent `Content-MD5`) while they
//! are written, so checksums cost no second pass.

use std::fs::File;
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use md5::Md5;
use sha2::{Digest, Sha256};

use super::object_file::TempObject;

/// Chunks in flight between the HTTP task and the disk thread, per request.
const CHANNEL_CHUNKS: usize = 8;
/// Read size when sending objects, and batch size when receiving.
const CHUNK_BYTES: usize = 1024 * 1024;
/// How many received bytes may wait in the page cache before a background flush starts (see [`BackgroundFlush`]).
const FLUSH_EVERY_BYTES: u64 = 64 * 1024 * 1024;

/// What the body turned out to be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyDigests {
    pub(crate) size: u64,
    pub(crate) sha256: [u8; 32],
    pub(crate) md5: Option<[u8; 16]>,
}

/// Why receiving a body failed.
#[derive(Debug)]
pub(crate) enum ReceiveError {
    /// The client's body ended early or the connection broke.
    Body(axum::Error),
    /// Writing the temp file failed.
    Io(io::Error),
}

/// Streams `body` into `temp`, hashing on the way.
pub(crate) async fn receive_body(
    mut temp: TempObject,
    body: Body,
    want_md5: bool,
) -> Result<(TempObject, BodyDigests), ReceiveError> {
    // Chunks from hyper are often only a few KiB; handing them over in
    // batches of about `CHUNK_BYTES` keeps channel wake-ups per GiB low.
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<Bytes>>(CHANNEL_CHUNKS);
    let writer = tokio::task::spawn_blocking(move || {
        let mut sha256 = Sha256::new();
        let mut md5 = want_md5.then(Md5::new);
        let mut size = 0u64;
        let result = (|| {
            let file = temp.file();
            let mut flush = BackgroundFlush::default();
            while let Some(batch) = receiver.blocking_recv() {
                for chunk in &batch {
                    sha256.update(chunk);
                    if let Some(md5) = md5.as_mut() {
                        md5.update(chunk);
                    }
                    size += chunk.len() as u64;
                }
                write_all_vectored(file, &batch)?;
                flush.after_write(file, size)?;
            }
            flush.finish()
        })();
        let digests = BodyDigests {
            size,
            sha256: sha256.finalize().into(),
            md5: md5.map(|md5| md5.finalize().into()),
        };
        (temp, result.map(|()| digests))
    });

    let mut stream = body.into_data_stream();
    let mut body_error = None;
    let mut batch = Vec::new();
    let mut batch_bytes = 0usize;
    loop {
        match stream.next().await {
            Some(Ok(chunk)) => {
                batch_bytes += chunk.len();
                batch.push(chunk);
                if batch_bytes < CHUNK_BYTES {
                    continue;
                }
            }
            Some(Err(error)) => {
                body_error = Some(error);
                break;
            }
            None => {
                // A send error means the writer stopped on an IO error,
                // which its result reports below.
                if !batch.is_empty() {
                    let _ = sender.send(batch).await;
                }
                break;
            }
        }
        batch_bytes = 0;
        if sender.send(std::mem::take(&mut batch)).await.is_err() {
            break;
        }
    }
    drop(sender);
    let (temp, written) =
        writer.await.map_err(|join_error| ReceiveError::Io(io::Error::other(join_error)))?;
    if let Some(error) = body_error {
        // Dropping `temp` deletes the partial file.
        drop(temp);
        return Err(ReceiveError::Body(error));
    }
    let digests = written.map_err(ReceiveError::Io)?;
    Ok((temp, digests))
}

/// Flushes what was written so far to disk on another thread while the body is still arriving.
///
/// A PUT is acknowledged only after the whole object is fsynced. Without this, a large body sits dirty in the page
/// cache until that final fsync, which then writes all of it while the client waits: receiving and writing to disk
/// happen one after the other. With one `fdatasync` in flight at a time, started every [`FLUSH_EVERY_BYTES`],
/// the disk works while the network and SHA-256 do, and the final fsync has only the tail left. A failed background
/// flush fails the upload, as the final fsync would (after a failed flush the kernel may have dropped the pages).
#[derive(Debug, Default)]
struct BackgroundFlush {
    in_flight: Option<std::thread::JoinHandle<io::Result<()>>>,
    flushed_up_to: u64,
}

impl BackgroundFlush {
    fn after_write(&mut self, file: &File, written: u64) -> io::Result<()> {
        if written - self.flushed_up_to < FLUSH_EVERY_BYTES
            || self.in_flight.as_ref().is_some_and(|flush| !flush.is_finished())
        {
            return Ok(());
        }
        self.finish()?;
        let file = file.try_clone()?;
        self.in_flight = Some(std::thread::spawn(move || file.sync_data()));
        self.flushed_up_to = written;
        Ok(())
    }

    /// Waits for the flush in flight, if any, and reports its outcome.
    fn finish(&mut self) -> io::Result<()> {
        match self.in_flight.take() {
            Some(flush) => {
                flush.join().map_err(|_| io::Error::other("background flush panicked"))?
            }
            None => Ok(()),
        }
    }
}

/// Writes every chunk of `batch` with as few `writev` calls as the kernel
/// allows, instead of copying small chunks into a buffer first.
fn write_all_vectored(file: &mut File, batch: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = batch.iter().map(|chunk| IoSlice::new(chunk)).collect();
    let mut remaining = &mut slices[..];
    while !remaining.is_empty() {
        let written = file.write_vectored(remaining)?;
        if written == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "the file accepted no bytes"));
        }
        IoSlice::advance_slices(&mut remaining, written);
    }
    Ok(())
}

/// A response body streaming `length` bytes of `file` from `offset`.
pub(crate) fn file_body(mut file: File, offset: u64, length: u64) -> Body {
    let (sender, receiver) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS / 2);
    tokio::task::spawn_blocking(move || {
        if let Err(error) = file.seek(SeekFrom::Start(offset)) {
            let _ = sender.blocking_send(Err(error));
            return;
        }
        let mut remaining = length;
        while remaining > 0 {
            let want = remaining.min(CHUNK_BYTES as u64);
            let mut buffer = Vec::with_capacity(want as usize);
            match (&mut file).take(want).read_to_end(&mut buffer) {
                Ok(0) => {
                    let _ = sender.blocking_send(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "object file shorter than its metadata says",
                    )));
                    return;
                }
                Ok(read) => {
                    remaining -= read as u64;
                    // The receiver is gone when the client disconnected.
                    if sender.blocking_send(Ok(Bytes::from(buffer))).is_err() {
                        return;
                    }
                }
                Err(error) => {
                    let _ = sender.blocking_send(Err(error));
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body larger than several flush intervals, in uneven chunks, arrives whole: the background flushes run
    /// while it is written and neither lose nor reorder bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bodies_larger_than_the_flush_interval_arrive_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let total = 3 * FLUSH_EVERY_BYTES as usize + 12_345;
        let chunk_sizes = [1usize, 4096, 300_000, 1 << 20, 77];
        let mut chunks = Vec::new();
        let mut expected = Sha256::new();
        let (mut produced, mut index) = (0usize, 0u8);
        while produced < total {
            let size = chunk_sizes[index as usize % chunk_sizes.len()].min(total - produced);
            let chunk = Bytes::from(vec![index; size]);
            expected.update(&chunk);
            chunks.push(Ok::<_, io::Error>(chunk));
            produced += size;
            index = index.wrapping_add(1);
        }
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let temp = TempObject::create(dir.path()).expect("temp object");
        let (mut temp, digests) = receive_body(temp, body, false).await.expect("received");
        assert_eq!(digests.size, total as u64);
        assert_eq!(digests.sha256, <[u8; 32]>::from(expected.finalize()));
        let file = temp.file();
        assert_eq!(file.metadata().expect("metadata").len(), total as u64);
    }
}
