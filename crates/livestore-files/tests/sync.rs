//! The file sync against a real server (in process): two clients with their own stores and data dirs, the sync
//! driver carrying the events and the signer plus embedded object store carrying the bytes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use livestore_client::sync::{DriverOptions, SyncHandle};
use livestore_client::{Storage, Store, StoreOptions};
use livestore_files::schema::{FileCreated, FileUpdated};
use livestore_files::{FileSource, FileSync, FileSyncOptions, FileUrl, RemoteConfig};
use livestore_server::config::{Secret, TokenEntry};
use livestore_server::{Server, ServerConfig};
use tokio::sync::oneshot;

struct TestServer {
    addr: SocketAddr,
    data_dir: PathBuf,
    tokens: Vec<String>,
    ttl_seconds: Option<u64>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    async fn start(data_dir: &Path, tokens: &[&str]) -> TestServer {
        let mut server = TestServer {
            addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.to_path_buf(),
            tokens: tokens.iter().map(|token| token.to_string()).collect(),
            ttl_seconds: None,
            shutdown: None,
            task: None,
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let mut config = ServerConfig {
            addr: self.addr,
            data_dir: self.data_dir.clone(),
            ..ServerConfig::default()
        };
        config.auth.tokens =
            self.tokens.iter().map(|token| TokenEntry::AllStores(Secret(token.clone()))).collect();
        let mut files = config.files_config();
        if let Some(ttl_seconds) = self.ttl_seconds {
            files.ttl_seconds = ttl_seconds;
        }
        config.files = Some(files);
        let server = Server::bind(config).await.expect("server binds");
        self.addr = server.local_addr();
        let (sender, receiver) = oneshot::channel();
        self.shutdown = Some(sender);
        self.task = Some(tokio::spawn(async move {
            server
                .run_until(async move {
                    let _ = receiver.await;
                })
                .await
                .expect("server runs");
        }));
    }

    async fn stop(&mut self) {
        if let Some(sender) = self.shutdown.take() {
            let _ = sender.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

struct Client {
    files: FileSync,
    sync: Option<SyncHandle>,
    _dir: tempfile::TempDir,
}

fn options(dir: &Path, server: &str, token: Option<&str>) -> FileSyncOptions {
    let mut options = FileSyncOptions::with_remote(
        dir.join("files"),
        RemoteConfig { signer_url: format!("{server}/api"), auth_token: token.map(str::to_owned) },
    );
    options.retry_base_delay = Duration::from_millis(100);
    options.retry_max_delay = Duration::from_millis(800);
    options.health_check_interval = Duration::from_millis(500);
    options.multipart_threshold = 12 * 1024 * 1024;
    options.part_size = 5 * 1024 * 1024;
    options
}

impl Client {
    fn open(
        store_id: &str,
        server: &str,
        token: Option<&str>,
        tweak: impl FnOnce(&mut FileSyncOptions),
    ) -> Client {
        if std::env::var("FILES_DEBUG").is_ok() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("info,livestore_files=debug")
                .with_test_writer()
                .try_init();
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            StoreOptions::new(store_id, Storage::Dir(dir.path().join("db"))),
            livestore_files::schema::schema(),
        )
        .unwrap();
        let mut driver = DriverOptions::new(server);
        driver.sync_payload = token.map(|token| serde_json::json!({ "authToken": token }));
        driver.min_backoff = Duration::from_millis(100);
        driver.max_backoff = Duration::from_millis(500);
        let sync = livestore_client::sync::start(store.clone(), driver);
        let mut options = options(dir.path(), server, token);
        tweak(&mut options);
        let files = FileSync::new(store, options).unwrap();
        files.start().unwrap();
        Client { files, sync: Some(sync), _dir: dir }
    }

    async fn close(mut self) {
        self.files.dispose().await;
        if let Some(sync) = self.sync.take() {
            sync.stop().await;
        }
        self.files.store().shutdown().unwrap();
    }
}

async fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn read_all(files: &FileSync, id: &str) -> Option<Vec<u8>> {
    let mut reader = files.read_file(id).ok()?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut bytes).ok()?;
    Some(bytes)
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

async fn head(server: &TestServer, key: &str) -> bool {
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/head", server.url()))
        .json(&serde_json::json!({ "key": key }))
        .send()
        .await
        .unwrap();
    // An error answer must not read as "gone": the deletion checks below wait for `false`.
    assert!(response.status().is_success(), "head {key}: {}", response.status());
    let body: serde_json::Value = response.json().await.unwrap();
    body["exists"].as_bool().unwrap_or_else(|| panic!("head {key}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_reach_the_other_client_and_updates_and_deletes_propagate() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(server_dir.path(), &[]).await;
    let a = Client::open("shared-files", &server.url(), None, |_| {});
    let b = Client::open("shared-files", &server.url(), None, |_| {});

    let small = b"hello from A".to_vec();
    let large = pseudo_random(13 * 1024 * 1024 + 17, 1); // multipart: 3 parts
    let first = a.files.save_file(FileSource::Bytes(&small)).unwrap();
    let twin = a.files.save_file(FileSource::Bytes(&small)).unwrap();
    let big = a.files.save_file(FileSource::Bytes(&large)).unwrap();
    assert_eq!(first.content_hash, twin.content_hash);
    assert_ne!(first.file_id, twin.file_id);
    // Durable and readable locally at once.
    assert_eq!(read_all(&a.files, &first.file_id).unwrap(), small);

    for (id, bytes) in [(&first.file_id, &small), (&twin.file_id, &small), (&big.file_id, &large)] {
        let got = eventually("the file on B", Duration::from_secs(30), || {
            let found = read_all(&b.files, id);
            if found.is_none() && std::env::var("FILES_DEBUG").is_ok() {
                eprintln!(
                    "A: {:?}\nB: {:?}\nB files: {:?}",
                    a.files.sync_status().unwrap(),
                    b.files.sync_status().unwrap(),
                    b.files.list_files().unwrap()
                );
                std::thread::sleep(Duration::from_millis(500));
            }
            found
        })
        .await;
        assert_eq!(&got, bytes);
    }
    let record = a.files.file(&big.file_id).unwrap();
    assert_eq!(record.remote_key, format!("shared-files/{}", big.content_hash));
    assert!(a.files.wait_idle(Duration::from_secs(10)).await);
    assert!(b.files.wait_idle(Duration::from_secs(10)).await);
    let status = b.files.sync_status().unwrap();
    assert!(!status.has_pending && status.errors.is_empty(), "{status:?}");

    // Update on A: B gets the new bytes; the old object goes away (nothing else used it).
    let old_key = record.remote_key.clone();
    let replacement = pseudo_random(4096, 2);
    let updated = a.files.update_file(&big.file_id, FileSource::Bytes(&replacement)).unwrap();
    let got = eventually("the update on B", Duration::from_secs(30), || {
        read_all(&b.files, &big.file_id).filter(|bytes| bytes == &replacement)
    })
    .await;
    assert_eq!(got, replacement);
    assert_eq!(b.files.file(&big.file_id).unwrap().content_hash, updated.content_hash);
    let deadline = Instant::now() + Duration::from_secs(20);
    while head(&server, &old_key).await {
        assert!(Instant::now() < deadline, "old object still exists");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Two rows share content: deleting one keeps the object and B's copy of the other.
    let shared_key = a.files.file(&first.file_id).unwrap().remote_key;
    assert!(a.files.delete_file(&first.file_id).unwrap());
    assert!(!a.files.delete_file(&first.file_id).unwrap());
    eventually("delete on B", Duration::from_secs(20), || {
        b.files.file(&first.file_id).is_err().then_some(())
    })
    .await;
    assert!(a.files.wait_idle(Duration::from_secs(10)).await);
    assert!(head(&server, &shared_key).await);
    assert_eq!(read_all(&b.files, &twin.file_id).unwrap(), small);
    // A client that never had the bytes still downloads the remaining row.
    let c = Client::open("shared-files", &server.url(), None, |_| {});
    let got =
        eventually("twin on C", Duration::from_secs(30), || read_all(&c.files, &twin.file_id))
            .await;
    assert_eq!(got, small);
    // Deleting the last row deletes the object and every local copy.
    assert!(b.files.delete_file(&twin.file_id).unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while head(&server, &shared_key).await {
        assert!(Instant::now() < deadline, "shared object still exists");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hash: livestore_files::ContentHash = twin.content_hash.parse().unwrap();
    eventually("local copies removed", Duration::from_secs(20), || {
        [&a, &b, &c].iter().all(|client| !client.files.local_files().contains(&hash)).then_some(())
    })
    .await;
    for client in [a, b, c] {
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_saved_while_the_server_is_down_uploads_when_it_comes_back() {
    let server_dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(server_dir.path(), &[]).await;
    server.stop().await;
    let a = Client::open("offline-files", &server.url(), None, |_| {});
    let saved = a.files.save_file(FileSource::Bytes(b"made offline")).unwrap();
    eventually("offline", Duration::from_secs(10), || (!a.files.is_online()).then_some(())).await;
    let status = a.files.sync_status().unwrap();
    assert!(status.has_pending && status.queued_upload_count == 1, "{status:?}");
    server.spawn().await;
    let b = Client::open("offline-files", &server.url(), None, |_| {});
    let got =
        eventually("the file on B", Duration::from_secs(30), || read_all(&b.files, &saved.file_id))
            .await;
    assert_eq!(got, b"made offline");
    assert!(a.files.is_online());
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_remote_object_is_quarantined_reported_and_retried() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(server_dir.path(), &[]).await;
    let a = Client::open("corrupt-files", &server.url(), None, |_| {});
    let good = b"the real bytes".to_vec();
    let hash = livestore_files::ContentHash::of(&good);
    let key = format!("corrupt-files/{hash}");
    // Put other bytes under the key (an unbound upload, like a buggy or malicious client).
    let put = |bytes: Vec<u8>| {
        let url = server.url();
        let key = key.clone();
        async move {
            let signed: serde_json::Value = reqwest::Client::new()
                .post(format!("{url}/api/v1/sign/upload"))
                .json(&serde_json::json!({ "key": key }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let response = reqwest::Client::new()
                .put(signed["url"].as_str().unwrap())
                .body(bytes)
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success());
        }
    };
    put(b"forged bytes!!".to_vec()).await;
    let path = format!("livestore-filesync-files/corrupt-files/{hash}");
    a.files
        .store()
        .commit_batch(vec![
            livestore_client::NewEvent::new(&FileCreated {
                id: "f-corrupt".into(),
                path: path.clone(),
                content_hash: hash.to_string(),
                created_at: 1,
                updated_at: 1,
                metadata_json: None,
            })
            .unwrap(),
            livestore_client::NewEvent::new(&FileUpdated {
                id: "f-corrupt".into(),
                path,
                remote_key: key.clone(),
                content_hash: hash.to_string(),
                updated_at: 2,
                metadata_json: None,
            })
            .unwrap(),
        ])
        .unwrap();
    let status = eventually("the mismatch reported", Duration::from_secs(20), || {
        let status = a.files.sync_status().unwrap();
        if std::env::var("FILES_DEBUG").is_ok() {
            eprintln!("A: {status:?}\n{:?}", a.files.list_files().unwrap());
            std::thread::sleep(Duration::from_millis(500));
        }
        (!status.errors.is_empty()).then_some(status)
    })
    .await;
    assert!(status.errors[0].error.contains("quarantined"), "{status:?}");
    assert!(a.files.read_file("f-corrupt").is_err(), "corrupt bytes must never become visible");
    let quarantine = a
        .files
        .local_files()
        .root()
        .join("livestore-filesync-files/.work/corrupt-files/quarantine");
    assert!(std::fs::read_dir(&quarantine).unwrap().count() >= 1);
    // Fix the object: the retry succeeds by itself.
    put(good.clone()).await;
    let got =
        eventually("the real bytes", Duration::from_secs(20), || read_all(&a.files, "f-corrupt"))
            .await;
    assert_eq!(got, good);
    assert!(a.files.wait_idle(Duration::from_secs(10)).await);
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_reported_and_retried_without_losing_the_file() {
    let server_dir = tempfile::tempdir().unwrap();
    let mut server =
        TestServer::start(server_dir.path(), &["good-token-0123456789abcdef-123456"]).await;
    let a = Client::open(
        "token-files",
        &server.url(),
        Some("wrong-token-0123456789abcdef-456789"),
        |_| {},
    );
    let saved = a.files.save_file(FileSource::Bytes(b"kept safe")).unwrap();
    let status = eventually("an auth error", Duration::from_secs(20), || {
        let status = a.files.sync_status().unwrap();
        (!status.errors.is_empty()).then_some(status)
    })
    .await;
    assert!(status.errors[0].error.contains("not authorized"), "{status:?}");
    assert_eq!(read_all(&a.files, &saved.file_id).unwrap(), b"kept safe");
    assert!(status.has_pending);
    // Retried: once the server takes the token, the upload goes through with nothing done on the client.
    server.stop().await;
    server.tokens.push("wrong-token-0123456789abcdef-456789".into());
    server.spawn().await;
    eventually("the upload once the token is accepted", Duration::from_secs(30), || {
        let record = a.files.file(&saved.file_id).ok()?;
        (!record.remote_key.is_empty()).then_some(())
    })
    .await;
    assert!(a.files.wait_idle(Duration::from_secs(10)).await);
    let status = a.files.sync_status().unwrap();
    assert!(!status.has_pending && status.errors.is_empty(), "{status:?}");
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_only_mode_makes_no_remote_calls() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        StoreOptions::new("local-only", Storage::InMemory),
        livestore_files::schema::schema(),
    )
    .unwrap();
    let files = FileSync::new(store, FileSyncOptions::local_only(dir.path())).unwrap();
    files.start().unwrap();
    let saved = files.save_file(FileSource::Bytes(b"local")).unwrap();
    assert!(files.wait_idle(Duration::from_secs(5)).await);
    let entry = &files.list_files().unwrap()[0];
    let state = entry.local_state.as_ref().unwrap();
    assert_eq!((state.upload_status.as_str(), state.download_status.as_str()), ("done", "done"));
    assert_eq!(entry.record.remote_key, "");
    match files.resolve_file_url(&saved.file_id).await.unwrap() {
        Some(FileUrl::Local { url, .. }) => assert!(url.starts_with("file://")),
        other => panic!("expected a local URL, got {other:?}"),
    }
    assert!(files.sync_status().unwrap().local_only);
    assert!(files.delete_file(&saved.file_id).unwrap());
    assert!(files.list_files().unwrap().is_empty());
    files.dispose().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_budget_evicts_uploaded_files_and_resolve_brings_them_back() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(server_dir.path(), &[]).await;
    let a = Client::open("budget-files", &server.url(), None, |_| {});
    let b = Client::open("budget-files", &server.url(), None, |options| {
        options.local_byte_budget = Some(1024 * 1024);
    });
    let mut ids = Vec::new();
    for seed in 0..3 {
        ids.push(
            a.files.save_file(FileSource::Bytes(&pseudo_random(600 * 1024, seed))).unwrap().file_id,
        );
    }
    assert!(a.files.wait_idle(Duration::from_secs(20)).await);
    // Eviction runs on the engine turn after a download lands, so the budget holds shortly after B settles.
    eventually("B settled within its budget", Duration::from_secs(30), || {
        let status = b.files.sync_status().unwrap();
        (b.files.list_files().unwrap().len() == 3
            && !status.has_pending
            && status.local_bytes <= 1024 * 1024)
            .then_some(())
    })
    .await;
    let evicted: Vec<&String> = ids.iter().filter(|id| read_all(&b.files, id).is_none()).collect();
    assert!(!evicted.is_empty());
    match b.files.resolve_file_url(evicted[0]).await.unwrap() {
        Some(FileUrl::Remote { url, .. }) => assert!(url.contains("/s3/")),
        other => panic!("expected a remote URL, got {other:?}"),
    }
    let got =
        eventually("evicted file back", Duration::from_secs(20), || read_all(&b.files, evicted[0]))
            .await;
    let seed = ids.iter().position(|id| id == evicted[0]).unwrap() as u64;
    assert_eq!(got, pseudo_random(600 * 1024, seed));
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_presigned_url_is_recognised_so_the_transfer_re_signs() {
    let server_dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(server_dir.path(), &[]).await;
    server.stop().await;
    server.ttl_seconds = Some(1);
    server.spawn().await;
    let signer = livestore_files::remote::SignerClient::new(&RemoteConfig {
        signer_url: format!("{}/api", server.url()),
        auth_token: None,
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bytes");
    std::fs::write(&path, b"expiring").unwrap();
    let hash = livestore_files::ContentHash::of(b"expiring").to_string();
    let key = format!("expiring/{hash}");
    let signed = signer.sign_upload(&key, 8, Some(&hash), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let error = signer.put_file_range("upload", &signed, &path, 0, 8, &progress).await.unwrap_err();
    assert!(matches!(error, livestore_files::RemoteError::UrlExpired { .. }), "{error}");
    // A fresh signature works, which is what the transfer does on `UrlExpired`.
    let signed = signer.sign_upload(&key, 8, Some(&hash), None).await.unwrap();
    signer.put_file_range("upload", &signed, &path, 0, 8, &progress).await.unwrap();
    // And the engine moves files through a signer with one-second URLs.
    let a = Client::open("expiring", &server.url(), None, |_| {});
    let b = Client::open("expiring", &server.url(), None, |_| {});
    let saved = a.files.save_file(FileSource::Bytes(&pseudo_random(300_000, 5))).unwrap();
    let got =
        eventually("the file on B", Duration::from_secs(30), || read_all(&b.files, &saved.file_id))
            .await;
    assert_eq!(got, pseudo_random(300_000, 5));
    a.close().await;
    b.close().await;
}

/// The upstream signer contract has no `sign/uploads`: every file still goes up (existence check, sign, PUT each),
/// and the client asks for the batch only once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_without_batched_signing_still_gets_every_file() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let services = livestore_objects::FileServices::start(
        livestore_objects::FilesConfig::embedded(dir.path().join("objects")),
        Arc::new(livestore_objects::AllowAll),
    )
    .await
    .unwrap();
    let batch_calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&batch_calls);
    // The real signer and store, with `sign/uploads` answered like a signer that does not have it.
    let app = services.router().layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let counted = Arc::clone(&counted);
            async move {
                if request.uri().path() == "/api/v1/sign/uploads" {
                    counted.fetch_add(1, Ordering::SeqCst);
                    return axum::response::IntoResponse::into_response((
                        axum::http::StatusCode::NOT_FOUND,
                        axum::Json(serde_json::json!({ "error": "Not found" })),
                    ));
                }
                next.run(request).await
            }
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let serving = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let store = Store::open(
        StoreOptions::new("upstream-signer", Storage::Dir(dir.path().join("db"))),
        livestore_files::schema::schema(),
    )
    .unwrap();
    let files = FileSync::new(store, options(dir.path(), &url, None)).unwrap();
    let mut contents: Vec<Vec<u8>> = (0..20).map(|seed| pseudo_random(4096, seed)).collect();
    // Larger than a group member (1 MiB), smaller than the multipart threshold: a group of one.
    contents.push(pseudo_random(2 * 1024 * 1024 + 1, 99));
    let saved: Vec<_> =
        contents.iter().map(|bytes| files.save_file(FileSource::Bytes(bytes)).unwrap()).collect();
    files.start().unwrap();
    assert!(files.wait_idle(Duration::from_secs(60)).await, "{:?}", files.sync_status());
    let signer = livestore_files::remote::SignerClient::new(&RemoteConfig {
        signer_url: format!("{url}/api"),
        auth_token: None,
    });
    for (saved, bytes) in saved.iter().zip(&contents) {
        let row = files.file(&saved.file_id).unwrap();
        assert_eq!(row.remote_key, format!("upstream-signer/{}", saved.content_hash));
        let info = signer.head(&row.remote_key).await.unwrap();
        assert!(info.exists, "{}", row.remote_key);
        assert_eq!(info.size, Some(bytes.len() as u64));
    }
    // Groups that started together each asked once; after the first answer the client stops asking.
    let asked = batch_calls.load(Ordering::SeqCst);
    assert!((1..=4).contains(&asked), "{asked}");
    let later = files.save_file(FileSource::Bytes(b"saved later")).unwrap();
    assert!(files.wait_idle(Duration::from_secs(60)).await, "{:?}", files.sync_status());
    assert!(!files.file(&later.file_id).unwrap().remote_key.is_empty());
    assert_eq!(batch_calls.load(Ordering::SeqCst), asked, "the missing route is remembered");
    files.dispose().await;
    files.store().shutdown().unwrap();
    serving.abort();
}

/// Regression (found by the chaos test, seed 12639197422747667271): B deletes a file before it has seen the
/// `v1.FileUpdated` that gives the row its `remoteKey`, so B queues no remote delete; its delete lands after A's
/// update. A, which uploaded the object, learns of the delete and removes the object: nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_that_raced_the_upload_still_removes_the_object() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(server_dir.path(), &[]).await;
    let a = Client::open("raced-delete", &server.url(), None, |_| {});
    let mut b = Client::open("raced-delete", &server.url(), None, |_| {});
    // Both engines wait: the row travels, the bytes do not yet.
    a.files.stop().await;
    b.files.stop().await;

    let bytes = pseudo_random(64 * 1024, 7);
    let saved = a.files.save_file(FileSource::Bytes(&bytes)).unwrap();
    eventually("the row on B", Duration::from_secs(20), || b.files.file(&saved.file_id).ok()).await;
    // B goes offline, then A uploads and commits the remote key.
    b.sync.take().unwrap().stop().await;
    a.files.start().unwrap();
    let key = eventually("A's upload", Duration::from_secs(20), || {
        let record = a.files.file(&saved.file_id).ok()?;
        (!record.remote_key.is_empty()).then_some(record.remote_key)
    })
    .await;
    assert!(a.files.wait_idle(Duration::from_secs(10)).await);
    assert!(head(&server, &key).await, "the object was uploaded");
    assert!(b.files.file(&saved.file_id).unwrap().remote_key.is_empty(), "B never saw the key");
    assert!(b.files.delete_file(&saved.file_id).unwrap());

    // B comes back: its delete is rebased onto A's update and pushed; A removes the object.
    let mut driver = DriverOptions::new(server.url());
    driver.min_backoff = Duration::from_millis(100);
    b.sync = Some(livestore_client::sync::start(b.files.store().clone(), driver));
    eventually("the delete on A", Duration::from_secs(20), || {
        a.files.file(&saved.file_id).is_err().then_some(())
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while head(&server, &key).await {
        assert!(Instant::now() < deadline, "the object of the deleted row is still there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for client in [a, b] {
        client.close().await;
    }
}

/// Regression (found by the chaos test, seed 2346874016936217983): a second row with the same content is saved while
/// the first row's upload is under way. Its job waits for the content, starts once the first upload is done, is
/// skipped as existing, and must still end `done`: its launch wrote `inProgress` after the first completion had
/// already given the row its `remoteKey`, and nothing outside the engine changes to make a reconcile look again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_row_saved_while_its_content_uploads_ends_settled() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(server_dir.path(), &[]).await;
    // The signer calls of A go through a proxy that can hold them, so the first upload stays in flight.
    let signer = livestore_testkit::FaultProxy::start(server.addr).await.unwrap();
    let signer_url = signer.http_url();
    let a = Client::open("same-content", &server.url(), None, |options| {
        options.remote =
            Some(RemoteConfig { signer_url: format!("{signer_url}/api"), auth_token: None });
    });
    let bytes = pseudo_random(256 * 1024, 11);
    signer.stall();
    let first = a.files.save_file(FileSource::Bytes(&bytes)).unwrap();
    eventually("the first upload in flight", Duration::from_secs(10), || {
        let status = a.files.sync_status().ok()?;
        status.transfers.iter().any(|transfer| transfer.file_id == first.file_id).then_some(())
    })
    .await;
    let second = a.files.save_file(FileSource::Bytes(&bytes)).unwrap();
    assert_ne!(first.file_id, second.file_id);
    signer.resume();

    // Both rows get the key and settle, well within the engine's periodic full reconcile (10 s).
    eventually("both rows settled", Duration::from_secs(5), || {
        let status = a.files.sync_status().ok()?;
        let keyed = [&first.file_id, &second.file_id]
            .iter()
            .all(|id| a.files.file(id).is_ok_and(|record| !record.remote_key.is_empty()));
        (keyed && !status.has_pending && status.uploading_count == 0).then_some(())
    })
    .await;
    a.close().await;
}
