//! File storage service for livestore-filesync: a signer API that hands out
//! presigned S3 URLs, and an embedded S3-compatible object store to point
//! them at when no external S3 service is configured.
//!
//! - [`FileServices::start`] opens the configured backend;
//!   [`FileServices::router`] returns an axum router with the signer under
//!   `/api` and (embedded backend only) the object store under `/s3`, ready
//!   to be merged into the sync server's router.
//! - Authorization is delegated to a [`TokenAuthority`]: a token for store
//!   `S` may only get URLs for keys under `S/`.
//! - The signer speaks exactly the contract of `@livestore-filesync/core`
//!   0.8.0 (`/api/health`, `/api/v1/sign/upload`, `/api/v1/sign/download`,
//!   `/api/v1/delete`), plus checksum-bound uploads, an existence check and
//!   multipart uploads (see the crate README).
//!
//! This crate does not sync files, track local state or know about LiveStore
//! events: that is the client's job. It never buffers whole objects.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use livestore_objects::{FileServices, FilesConfig, StaticTokens};
//!
//! let config = FilesConfig::embedded("/var/lib/livestore/objects")
//!     .from_env_overrides(|name| std::env::var(name).ok())?;
//! let authority = Arc::new(StaticTokens::new().with_token("secret-token", ["my-store"]));
//! let services = FileServices::start(config, authority).await?;
//! let app = axum::Router::new().merge(services.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8787").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod auth;
mod backend;
mod config;
mod error;
mod key;
mod signer;
mod store;

use std::sync::Arc;

use axum::Router;

pub use auth::{
    AllowAll, AuthFuture, AuthRejection, Caller, StaticTokens, TokenAuthority, bearer_token,
};
pub use config::{
    BackendConfig, DEFAULT_TTL_SECONDS, ExternalS3Config, FilesConfig, MAX_TTL_SECONDS,
};
pub use error::Error;
pub use key::{KeyError, MAX_KEY_BYTES, ObjectKey, sanitize_store_id};

/// Path prefix of the embedded object store's routes; S3 tools use
/// `http://<host>:<port>/s3` as endpoint, path-style.
pub const EMBEDDED_S3_PREFIX: &str = "/s3";

/// The running file services: the signer and, for the embedded backend, the
/// object store.
#[derive(Debug, Clone)]
pub struct FileServices {
    signer: Arc<signer::SignerState>,
    store: Option<Arc<store::Store>>,
}

/// Credentials and location of the embedded store, for S3 tools and tests.
#[derive(Clone, PartialEq, Eq)]
pub struct EmbeddedStoreInfo {
    /// The access key id the store accepts.
    pub access_key_id: String,
    /// Its secret.
    pub secret_access_key: String,
    /// The bucket the store serves.
    pub bucket: String,
    /// The region signatures must name.
    pub region: String,
}

/// What the embedded store stored since the process started: successful PutObject and UploadPart requests and
/// their body bytes (refused or interrupted uploads count nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredStats {
    /// Objects stored by PutObject.
    pub objects: u64,
    /// Parts stored by UploadPart.
    pub parts: u64,
    /// Body bytes of both.
    pub bytes: u64,
}

impl std::fmt::Debug for EmbeddedStoreInfo {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EmbeddedStoreInfo")
            .field("access_key_id", &self.access_key_id)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl FileServices {
    /// Validates `config` and opens its backend: for the embedded store this
    /// creates the data directory and removes temp files left by a crash.
    pub async fn start(
        config: FilesConfig,
        authority: Arc<dyn TokenAuthority>,
    ) -> Result<Self, Error> {
        config.validate()?;
        let public_url = config
            .public_url
            .as_deref()
            .map(|raw| {
                let url: url::Url = raw.parse().map_err(|source| Error::Url { field: "public_url", source })?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() || url.path() != "/" {
                    return Err(Error::Config(format!(
                        "public_url {raw:?} must be an http(s) origin without a path (the store is served at /s3)"
                    )));
                }
                Ok(url)
            })
            .transpose()?;
        let (backend, store) = match &config.backend {
            BackendConfig::Embedded { data_dir, access_key_id, secret_access_key } => {
                let credentials = access_key_id.clone().zip(secret_access_key.clone());
                let (data_dir, bucket, region) =
                    (data_dir.clone(), config.bucket.clone(), config.region.clone());
                let store = tokio::task::spawn_blocking(move || {
                    store::Store::open(&data_dir, &bucket, &region, credentials)
                })
                .await
                .map_err(|error| Error::Config(format!("store startup task failed: {error}")))??;
                let store = Arc::new(store);
                let backend = backend::Backend::embedded(
                    Arc::clone(&store),
                    public_url.as_ref(),
                    &config.bucket,
                    &config.region,
                )?;
                (backend, Some(store))
            }
            BackendConfig::External(external) => {
                (backend::Backend::external(external, &config.bucket, &config.region)?, None)
            }
        };
        let signer = Arc::new(signer::SignerState {
            backend,
            authority,
            ttl_seconds: config.ttl_seconds,
            max_request_bytes: config.max_request_bytes,
        });
        Ok(Self { signer, store })
    }

    /// The signer routes (`/api/...`) and, for the embedded backend, the
    /// object store routes (`/s3/...`), each with its own CORS policy.
    pub fn router(&self) -> Router {
        let router = signer::router(Arc::clone(&self.signer));
        match &self.store {
            Some(store) => router.merge(store::router(Arc::clone(store))),
            None => router,
        }
    }

    /// Counts of what the embedded store stored (`None` for an external backend).
    pub fn embedded_store_stats(&self) -> Option<StoredStats> {
        use std::sync::atomic::Ordering::Relaxed;
        self.store.as_ref().map(|store| StoredStats {
            objects: store.stored.objects.load(Relaxed),
            parts: store.stored.parts.load(Relaxed),
            bytes: store.stored.bytes.load(Relaxed),
        })
    }

    /// Credentials of the embedded store (`None` for an external backend).
    pub fn embedded_store(&self) -> Option<EmbeddedStoreInfo> {
        self.store.as_ref().map(|store| {
            let (access_key_id, secret_access_key) = store.credentials();
            EmbeddedStoreInfo {
                access_key_id: access_key_id.to_owned(),
                secret_access_key: secret_access_key.to_owned(),
                bucket: store.bucket().to_owned(),
                region: store.region().to_owned(),
            }
        })
    }
}
