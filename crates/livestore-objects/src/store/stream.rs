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
            while let Some(batch) = receiver.blocking_recv() {
                for chunk in &batch {
                    sha256.update(chunk);
                    if let Some(md5) = md5.as_mut() {
                        md5.update(chunk);
                    }
                    size += chunk.len() as u64;
                }
                write_all_vectored(file, &batch)?;
            }
            Ok(())
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
