//! [`FileSyncOptions`]: how a [`crate::FileSync`] behaves (root, remote, limits, retries, budget).

use std::path::PathBuf;
use std::time::Duration;

use crate::remote::RemoteConfig;

/// How a [`crate::FileSync`] behaves.
#[derive(Debug, Clone)]
pub struct FileSyncOptions {
    /// Data root: local files live in `<root>/livestore-filesync-files/<store>/`.
    pub root: PathBuf,
    /// The signer; `None` is local-only mode (no remote calls at all).
    pub remote: Option<RemoteConfig>,
    /// Uploads running at once (default 4).
    pub max_concurrent_uploads: usize,
    /// Downloads running at once (default 4).
    pub max_concurrent_downloads: usize,
    /// First retry delay after a failure (default 1 s); doubles per failure, jittered ±20 %.
    pub retry_base_delay: Duration,
    /// Longest retry delay (default 60 s). Failures are retried forever at this pace.
    pub retry_max_delay: Duration,
    /// Health check interval while online (default 10 s); offline checks start at 500 ms and back off to it.
    pub health_check_interval: Duration,
    /// Keep at most this many bytes of content locally, evicting least recently used files that are safely
    /// uploaded (default: no limit).
    pub local_byte_budget: Option<u64>,
    /// Files at least this large upload in parts and resume after a crash (default 4 GiB; smaller files go in
    /// one checksum-bound PUT, which is faster, and restart from the beginning after a crash).
    pub multipart_threshold: u64,
    /// Part size for multipart uploads (default 64 MiB; raised to the store's minimum).
    pub part_size: u64,
    /// Base URL of a running `livestore files serve`; `resolve_file_url` then returns
    /// `<base>/<path>` instead of `file://` URLs for local files.
    pub local_url_base: Option<String>,
}

impl FileSyncOptions {
    /// Local-only mode rooted at `root`.
    pub fn local_only(root: impl Into<PathBuf>) -> Self {
        FileSyncOptions {
            root: root.into(),
            remote: None,
            max_concurrent_uploads: 4,
            max_concurrent_downloads: 4,
            retry_base_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(60),
            health_check_interval: Duration::from_secs(10),
            local_byte_budget: None,
            multipart_threshold: 4 * 1024 * 1024 * 1024,
            part_size: 64 * 1024 * 1024,
            local_url_base: None,
        }
    }

    /// Syncing through the signer at `remote`.
    pub fn with_remote(root: impl Into<PathBuf>, remote: RemoteConfig) -> Self {
        FileSyncOptions { remote: Some(remote), ..FileSyncOptions::local_only(root) }
    }
}
