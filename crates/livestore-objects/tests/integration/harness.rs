//! Test servers: the file services on a real loopback listener, backed by the
//! embedded store or by an s3s-fs process, and a small signer client.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use livestore_objects::{FileServices, FilesConfig, StaticTokens};
use reqwest::StatusCode;
use serde_json::Value;

/// Token granting only `store-a`.
pub(crate) const TOKEN_A: &str = "token-a";
/// Token granting only `store-b`.
pub(crate) const TOKEN_B: &str = "token-b";

/// A running file-services server.
pub(crate) struct Server {
    pub(crate) base: String,
    pub(crate) services: FileServices,
    pub(crate) data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn authority() -> Arc<StaticTokens> {
    Arc::new(StaticTokens::new().with_token(TOKEN_A, ["store-a"]).with_token(TOKEN_B, ["store-b"]))
}

impl Server {
    /// Stops accepting connections and waits until the listener task is gone.
    /// Connections still open keep their own tasks (and the store) alive.
    pub(crate) async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

/// Serves `config` on 127.0.0.1:0.
pub(crate) async fn serve(
    config: FilesConfig,
    dir: Option<tempfile::TempDir>,
    data_dir: PathBuf,
) -> Server {
    let services = FileServices::start(config, authority()).await.expect("file services start");
    listen(services, dir, data_dir).await
}

/// Like [`serve`], but waits (up to 5 s) for a previous server on the same
/// data dir to release its lock, as a restarted process would.
pub(crate) async fn serve_when_free(config: FilesConfig, data_dir: PathBuf) -> Server {
    for _ in 0..250 {
        match FileServices::start(config.clone(), authority()).await {
            Ok(services) => return listen(services, None, data_dir).await,
            Err(error) if error.to_string().contains("in use by another process") => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("file services start: {error}"),
        }
    }
    panic!("the data dir stayed locked");
}

async fn listen(
    services: FileServices,
    dir: Option<tempfile::TempDir>,
    data_dir: PathBuf,
) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local addr");
    let app = services.router();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    Server { base: format!("http://{address}"), services, data_dir, _dir: dir, task }
}

/// The embedded store with `ttl_seconds`, in a fresh temp dir.
pub(crate) async fn embedded(ttl_seconds: u64) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("objects");
    let mut config = FilesConfig::embedded(&data_dir);
    config.ttl_seconds = ttl_seconds;
    serve(config, Some(dir), data_dir).await
}

/// An s3s-fs process with a created bucket.
pub(crate) struct S3sFs {
    pub(crate) endpoint: String,
    child: Child,
    _dir: tempfile::TempDir,
}

pub(crate) const S3S_ACCESS_KEY: &str = "AKIDLIVESTORETEST";
pub(crate) const S3S_SECRET_KEY: &str = "livestore-test-secret-0123456789";
pub(crate) const S3S_BUCKET: &str = "livestore-files";

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The s3s-fs binary from `S3S_FS_BIN`. Without it the s3s-fs half is
/// skipped loudly, or fails when `LIVESTORE_REQUIRE_S3S_FS=1` (CI).
pub(crate) fn s3s_fs_binary() -> Option<PathBuf> {
    let from_env = std::env::var_os("S3S_FS_BIN").map(PathBuf::from).filter(|path| path.is_file());
    if from_env.is_none() {
        let help = "s3s-fs is not available: set S3S_FS_BIN to the binary printed by `scripts/install-s3s-fs` \
                    (e.g. S3S_FS_BIN=\"$(scripts/install-s3s-fs)\" cargo test -p livestore-objects)";
        if std::env::var("LIVESTORE_REQUIRE_S3S_FS").is_ok_and(|value| value == "1") {
            panic!("LIVESTORE_REQUIRE_S3S_FS=1 but {help}");
        }
        // Written to the real stderr (not the captured test output) once, so
        // the skip is visible in a normal `cargo test` run.
        static NOTE: std::sync::Once = std::sync::Once::new();
        NOTE.call_once(|| {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!!!!!\n!!! NOTE: skipping the s3s-fs half of the conformance suite: {help}\n!!!!!!!!\n"
            );
        });
    }
    from_env
}

impl S3sFs {
    pub(crate) async fn start(binary: &std::path::Path) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3S_ACCESS_KEY, "--secret-key", S3S_SECRET_KEY])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn s3s-fs");
        let endpoint = format!("http://127.0.0.1:{port}");
        let server = Self { endpoint, child, _dir: dir };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Create the bucket with a presigned CreateBucket.
        let bucket = rusty_s3::Bucket::new(
            server.endpoint.parse().expect("url"),
            rusty_s3::UrlStyle::Path,
            S3S_BUCKET.to_owned(),
            "us-east-1".to_owned(),
        )
        .expect("bucket");
        let credentials = rusty_s3::Credentials::new(S3S_ACCESS_KEY, S3S_SECRET_KEY);
        let url =
            rusty_s3::S3Action::sign(&bucket.create_bucket(&credentials), Duration::from_secs(60));
        let response = reqwest::Client::new().put(url).send().await.expect("create bucket");
        assert!(response.status().is_success(), "create bucket: {}", response.status());
        server
    }

    /// The signer configured against this s3s-fs.
    pub(crate) async fn signer(&self, ttl_seconds: u64) -> Server {
        let env = [
            ("S3_ENDPOINT", self.endpoint.clone()),
            ("S3_REGION", "us-east-1".to_owned()),
            ("S3_BUCKET", S3S_BUCKET.to_owned()),
            ("S3_ACCESS_KEY_ID", S3S_ACCESS_KEY.to_owned()),
            ("S3_SECRET_ACCESS_KEY", S3S_SECRET_KEY.to_owned()),
            ("S3_FORCE_PATH_STYLE", "true".to_owned()),
        ];
        let mut config = FilesConfig::default()
            .from_env_overrides(|name| {
                env.iter().find(|(key, _)| *key == name).map(|(_, value)| value.clone())
            })
            .expect("env config");
        config.ttl_seconds = ttl_seconds;
        serve(config, None, PathBuf::new()).await
    }
}

/// A signer client with a bearer token.
#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) token: Option<String>,
}

impl Client {
    pub(crate) fn new(server: &Server, token: Option<&str>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: server.base.clone(),
            token: token.map(str::to_owned),
        }
    }

    /// POSTs raw bytes to `/api<path>`; returns status and JSON (Null if none).
    pub(crate) async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(format!("{}/api{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("signer request");
        let status = response.status();
        let text = response.text().await.expect("body");
        (
            status,
            if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).expect("JSON body")
            },
        )
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.post_raw(path, body.to_string()).await
    }

    /// Signs an upload and asserts success.
    pub(crate) async fn sign_upload(&self, body: Value) -> Value {
        let (status, json) = self.post("/v1/sign/upload", body).await;
        assert_eq!(status, StatusCode::OK, "sign upload: {json}");
        json
    }

    pub(crate) async fn sign_download(&self, key: &str) -> String {
        let (status, json) =
            self.post("/v1/sign/download", serde_json::json!({ "key": key })).await;
        assert_eq!(status, StatusCode::OK, "sign download: {json}");
        json["url"].as_str().expect("url").to_owned()
    }

    /// PUTs `body` to a signed upload, sending the signer's headers.
    pub(crate) async fn put_signed(&self, signed: &Value, body: Vec<u8>) -> reqwest::Response {
        let body_len = body.len();
        let mut request = self.http.put(signed["url"].as_str().expect("url")).body(body);
        if let Some(headers) = signed["headers"].as_object() {
            for (name, value) in headers {
                let value = value.as_str().expect("header value");
                // The signed length is sent as given (reqwest omits the
                // header for empty bodies); a body of another length is
                // what the short/long tests want, so then let reqwest set it.
                if name.eq_ignore_ascii_case("content-length") && value != body_len.to_string() {
                    continue;
                }
                request = request.header(name, value);
            }
        }
        request.send().await.expect("PUT")
    }

    /// Uploads via the signer and asserts 200.
    pub(crate) async fn upload(&self, key: &str, body: &[u8]) {
        let signed =
            self.sign_upload(serde_json::json!({ "key": key, "contentLength": body.len() })).await;
        let response = self.put_signed(&signed, body.to_vec()).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "PUT {key}: {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// Downloads via the signer; `None` on 404.
    pub(crate) async fn download(&self, key: &str) -> Option<Vec<u8>> {
        let url = self.sign_download(key).await;
        let response = self.http.get(url).send().await.expect("GET");
        match response.status() {
            StatusCode::NOT_FOUND => None,
            StatusCode::OK => Some(response.bytes().await.expect("body").to_vec()),
            other => panic!(
                "GET {key}: unexpected {other}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Deterministic test content.
pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|index| (index as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}
