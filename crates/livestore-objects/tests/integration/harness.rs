//! Test servers: the file services on a real loopback listener, backed by the
//! embedded store or by an independent S3 process (s3s-fs, Garage), and a small signer client.

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

/// An independent S3 server process (s3s-fs or Garage) with one bucket.
pub(crate) struct ExternalS3 {
    pub(crate) endpoint: String,
    pub(crate) region: &'static str,
    pub(crate) bucket: &'static str,
    pub(crate) access_key: &'static str,
    pub(crate) secret_key: &'static str,
    child: Child,
    _dir: tempfile::TempDir,
}

pub(crate) const S3S_ACCESS_KEY: &str = "AKIDLIVESTORETEST";
pub(crate) const S3S_SECRET_KEY: &str = "livestore-test-secret-0123456789";
pub(crate) const S3S_BUCKET: &str = "livestore-files";
/// Garage's key ids are "GK" + 24 hex digits and its secrets 64 hex digits.
const GARAGE_ACCESS_KEY: &str = "GK0123456789abcdef01234567";
const GARAGE_SECRET_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000001";

impl Drop for ExternalS3 {
    fn drop(&mut self) {
        // Garage shuts down on SIGTERM in about a second; a test process does not need to wait for that.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An external test tool from `variable`, or `None` (with a loud note) when it is not set, unless
/// `require_variable=1` makes that an error (CI).
fn tool_binary(variable: &str, require_variable: &str, help: &str) -> Option<PathBuf> {
    let from_env = std::env::var_os(variable).map(PathBuf::from).filter(|path| path.is_file());
    if from_env.is_none() {
        if std::env::var(require_variable).is_ok_and(|value| value == "1") {
            panic!("{require_variable}=1 but {help}");
        }
        // Written to the real stderr (not the captured test output) once per tool, so the skip is visible in a
        // normal `cargo test` run.
        static NOTED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        let mut noted = NOTED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !noted.iter().any(|name| name == variable) {
            noted.push(variable.to_owned());
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!!!!!\n!!! NOTE: skipping a half of the conformance suite: {help}\n!!!!!!!!\n"
            );
        }
    }
    from_env
}

/// The s3s-fs binary from `S3S_FS_BIN`; required when `LIVESTORE_REQUIRE_S3S_FS=1` (CI).
pub(crate) fn s3s_fs_binary() -> Option<PathBuf> {
    tool_binary(
        "S3S_FS_BIN",
        "LIVESTORE_REQUIRE_S3S_FS",
        "s3s-fs is not available: set S3S_FS_BIN to the binary printed by `scripts/install-s3s-fs` \
         (e.g. S3S_FS_BIN=\"$(scripts/install-s3s-fs)\" cargo test -p livestore-objects)",
    )
}

/// The Garage binary from `GARAGE_BIN`; required when `LIVESTORE_REQUIRE_GARAGE=1`.
pub(crate) fn garage_binary() -> Option<PathBuf> {
    tool_binary(
        "GARAGE_BIN",
        "LIVESTORE_REQUIRE_GARAGE",
        "Garage is not available: set GARAGE_BIN to the binary printed by `scripts/install-garage` \
         (an 18-minute build the first time)",
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

async fn wait_for_port(port: u16, what: &str) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not start listening on port {port}");
}

impl ExternalS3 {
    /// s3s-fs over a temp dir, with the bucket created through a presigned CreateBucket.
    pub(crate) async fn s3s_fs(binary: &std::path::Path) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3S_ACCESS_KEY, "--secret-key", S3S_SECRET_KEY])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn s3s-fs");
        let server = Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            region: "us-east-1",
            bucket: S3S_BUCKET,
            access_key: S3S_ACCESS_KEY,
            secret_key: S3S_SECRET_KEY,
            child,
            _dir: dir,
        };
        wait_for_port(port, "s3s-fs").await;
        let (bucket, credentials) = server.tool();
        let url =
            rusty_s3::S3Action::sign(&bucket.create_bucket(&credentials), Duration::from_secs(60));
        let response = reqwest::Client::new().put(url).send().await.expect("create bucket");
        assert!(response.status().is_success(), "create bucket: {}", response.status());
        server
    }

    /// A single-node Garage (`server --single-node --default-bucket`) with fixed credentials, region `garage`.
    pub(crate) async fn garage(binary: &std::path::Path) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s3_port, rpc_port) = (free_port(), free_port());
        let config = format!(
            "metadata_dir = \"{root}/meta\"\ndata_dir = \"{root}/data\"\ndb_engine = \"sqlite\"\n\
             replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{secret}\"\n\n[s3_api]\n\
             s3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
             root_domain = \".s3.garage.localhost\"\n",
            root = dir.path().display(),
            secret = "ab".repeat(32),
        );
        let config_path = dir.path().join("garage.toml");
        std::fs::write(&config_path, config).expect("garage.toml");
        let log = std::fs::File::create(dir.path().join("garage.log")).expect("garage.log");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config_path)
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", GARAGE_ACCESS_KEY)
            .env("GARAGE_DEFAULT_SECRET_KEY", GARAGE_SECRET_KEY)
            .env("GARAGE_DEFAULT_BUCKET", S3S_BUCKET)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn garage");
        let server = Self {
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            region: "garage",
            bucket: S3S_BUCKET,
            access_key: GARAGE_ACCESS_KEY,
            secret_key: GARAGE_SECRET_KEY,
            child,
            _dir: dir,
        };
        wait_for_port(s3_port, "garage").await;
        // The layout, key and bucket are created right after the listener opens; wait until a listing works.
        let (bucket, credentials) = server.tool();
        for attempt in 0.. {
            let url = rusty_s3::S3Action::sign(
                &bucket.list_objects_v2(Some(&credentials)),
                Duration::from_secs(60),
            );
            let status = reqwest::get(url).await.map(|response| response.status());
            if status.as_ref().is_ok_and(StatusCode::is_success) {
                break;
            }
            assert!(attempt < 100, "garage bucket not ready: {status:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    /// The bucket seen by a plain S3 tool (rusty-s3, path-style).
    pub(crate) fn tool(&self) -> (rusty_s3::Bucket, rusty_s3::Credentials) {
        let bucket = rusty_s3::Bucket::new(
            self.endpoint.parse().expect("url"),
            rusty_s3::UrlStyle::Path,
            self.bucket.to_owned(),
            self.region.to_owned(),
        )
        .expect("bucket");
        (bucket, rusty_s3::Credentials::new(self.access_key, self.secret_key))
    }

    /// The signer configured against this server, through the JS signer's environment variable names.
    pub(crate) async fn signer(&self, ttl_seconds: u64) -> Server {
        let env = [
            ("S3_ENDPOINT", self.endpoint.clone()),
            ("S3_REGION", self.region.to_owned()),
            ("S3_BUCKET", self.bucket.to_owned()),
            ("S3_ACCESS_KEY_ID", self.access_key.to_owned()),
            ("S3_SECRET_ACCESS_KEY", self.secret_key.to_owned()),
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
