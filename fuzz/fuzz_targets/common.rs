//! Shared setup of the HTTP fuzz targets: one tokio runtime and one embedded object store per process, on tmpfs
//! when available (object writes fsync), wiped every few thousand inputs so disk use stays flat.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use livestore_objects::{EmbeddedStoreInfo, FileServices, FilesConfig, StaticTokens};
use tower::ServiceExt;

/// The admin token: valid for every store.
pub const ADMIN_TOKEN: &str = "fuzz-admin-token";
/// A token scoped to [`SCOPED_STORE`] only.
pub const SCOPED_TOKEN: &str = "fuzz-scoped-token";
/// The one store [`SCOPED_TOKEN`] may touch.
pub const SCOPED_STORE: &str = "store-a";
/// The Host every request claims, so presigned URLs point back at the same router.
pub const HOST: &str = "fuzz.local";

pub struct Harness {
    pub runtime: tokio::runtime::Runtime,
    pub router: Router,
    /// The embedded store's credentials (the S3 target signs with them).
    #[allow(dead_code)]
    pub store: EmbeddedStoreInfo,
    pub data_dir: PathBuf,
    inputs: AtomicU64,
}

pub static HARNESS: LazyLock<Harness> = LazyLock::new(|| {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let data_dir = base.join(format!("livestore-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let authority = Arc::new(
        StaticTokens::new().with_admin_token(ADMIN_TOKEN).with_token(SCOPED_TOKEN, [SCOPED_STORE]),
    );
    let services = runtime
        .block_on(FileServices::start(FilesConfig::embedded(&data_dir), authority))
        .expect("file services start");
    let store = services.embedded_store().expect("the embedded store is configured");
    Harness { runtime, router: services.router(), store, data_dir, inputs: AtomicU64::new(0) }
});

impl Harness {
    /// Sends one request through the router in process and collects the whole response body.
    pub fn send(&self, request: Request<Body>) -> (Response<()>, Vec<u8>) {
        self.runtime.block_on(async {
            let response =
                self.router.clone().oneshot(request).await.expect("routers are infallible");
            let (parts, body) = response.into_parts();
            let bytes =
                axum::body::to_bytes(body, 64 * 1024 * 1024).await.map(|bytes| bytes.to_vec());
            (Response::from_parts(parts, ()), bytes.unwrap_or_default())
        })
    }

    /// Counts one input; every 5,000 inputs wipes the store and returns true (targets then re-create their seeds).
    pub fn tick(&self) -> bool {
        let wipe = self.inputs.fetch_add(1, Ordering::Relaxed) % 5_000 == 4_999;
        if wipe {
            self.wipe();
        }
        wipe
    }

    /// Removes stored objects and multipart uploads (not the lock or the credentials).
    fn wipe(&self) {
        for dir in ["objects", "multipart"] {
            let path = self.data_dir.join(dir);
            if let Ok(entries) = std::fs::read_dir(&path) {
                for entry in entries.flatten() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
}
