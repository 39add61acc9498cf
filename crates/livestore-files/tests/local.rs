//! Local behaviour without a server: saving from a file that changes underneath, and the local HTTP file server.

use std::io::Write;
use std::time::Duration;

use livestore_client::{Storage, Store, StoreOptions};
use livestore_files::{FileSource, FileSync, FileSyncOptions, FilesError};

fn local_sync(dir: &std::path::Path, store_id: &str) -> FileSync {
    let store = Store::open(
        StoreOptions::new(store_id, Storage::InMemory),
        livestore_files::schema::schema(),
    )
    .unwrap();
    FileSync::new(store, FileSyncOptions::local_only(dir)).unwrap()
}

#[test]
fn a_source_that_changes_while_it_is_saved_is_refused_and_nothing_is_saved() {
    let dir = tempfile::tempdir().unwrap();
    let files = local_sync(dir.path(), "changing");
    let source = dir.path().join("growing.log");
    std::fs::write(&source, vec![7u8; 32 * 1024 * 1024]).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let source = source.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::OpenOptions::new().append(true).open(&source).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                file.write_all(b"more\n").unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let result = files.save_file(FileSource::Path(&source));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert!(matches!(result, Err(FilesError::SourceChanged { .. })), "{result:?}");
    assert!(files.list_files().unwrap().is_empty());
    let tmp = dir.path().join("livestore-filesync-files/.work/changing/tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(dir.path().join("livestore-filesync-files/changing")).unwrap().count(),
        0
    );
    // Once it stops changing, it saves.
    let saved = files.save_file(FileSource::Path(&source)).unwrap();
    assert_eq!(saved.size, std::fs::metadata(&source).unwrap().len());
}

#[tokio::test]
async fn the_local_file_server_serves_bytes_with_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let files = local_sync(dir.path(), "served-store");
    let bytes: Vec<u8> = (0..100_000u32).map(|value| (value % 251) as u8).collect();
    let saved = files.save_file(FileSource::Bytes(&bytes)).unwrap();
    assert!(saved.path.starts_with("livestore-filesync-files/served-store/"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        axum::serve(listener, livestore_files::serve::router(files.clone())).into_future(),
    );
    let client = reqwest::Client::new();
    let url = format!("{base}/{}", saved.path);
    let full = client.get(&url).send().await.unwrap();
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["x-source"], "local");
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    assert_eq!(full.bytes().await.unwrap().to_vec(), bytes);
    let part = client.get(&url).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 10-19/100000");
    assert_eq!(part.bytes().await.unwrap().to_vec(), bytes[10..20].to_vec());
    let tail = client.get(&url).header("range", "bytes=-5").send().await.unwrap();
    assert_eq!(tail.bytes().await.unwrap().to_vec(), bytes[bytes.len() - 5..].to_vec());
    let bad = client.get(&url).header("range", "bytes=200000-").send().await.unwrap();
    assert_eq!(bad.status(), 416);
    let head = client.head(&url).send().await.unwrap();
    assert_eq!(head.headers()["content-length"], "100000");
    let missing = client
        .get(format!("{base}/livestore-filesync-files/served-store/{}", "0".repeat(64)))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let other_store = client
        .get(format!("{base}/livestore-filesync-files/other/{}", saved.content_hash))
        .send()
        .await
        .unwrap();
    assert_eq!(other_store.status(), 404);
    // A corrupt local copy is never served whole.
    let content = dir.path().join(&saved.path);
    let mut corrupt = bytes.clone();
    corrupt[500] ^= 1;
    std::fs::write(&content, &corrupt).unwrap();
    // The connection is cut: before the headers when the whole body is one chunk, else before its end.
    match client.get(&url).send().await {
        Err(_) => {}
        Ok(response) => assert!(response.bytes().await.is_err(), "a corrupt body must be cut off"),
    }
}
