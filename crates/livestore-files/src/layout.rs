//! Content addressing and the on-disk layout shared with `@livestore-filesync`.
//!
//! - local path: `livestore-filesync-files/<sanitized store id>/<sha256 hex>` relative to the data root, with a
//!   `<path>.meta.json` sidecar `{"type": <mime>, "lastModified": <ms>}`;
//! - remote key: the local path without the `livestore-filesync-files/` prefix, `<sanitized store id>/<sha256>`.
//!
//! Private working directories (temp files, partial downloads, quarantined corrupt files, multipart upload
//! records) live under `livestore-filesync-files/.work/<sanitized store id>/`, next to but outside the store's
//! content directory, so listing the content directory never shows half-written files.

use std::fmt;
use std::str::FromStr;

/// `FILES_ROOT` of `@livestore-filesync`.
pub const FILES_ROOT: &str = "livestore-filesync-files";
/// Suffix of the sidecar metadata file.
pub const SIDECAR_SUFFIX: &str = ".meta.json";

/// A SHA-256 content hash, 64 lowercase hex characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    /// Wraps a raw digest.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ContentHash(bytes)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest;
        ContentHash(sha2::Sha256::digest(bytes).into())
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&hex::encode(self.0))
    }
}

/// Why a string is not a content hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a SHA-256 hex digest: {0:?}")]
pub struct InvalidHash(pub String);

impl FromStr for ContentHash {
    type Err = InvalidHash;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // Only the canonical lowercase form: a path or key with uppercase hex would be a second name for the
        // same content.
        if text.len() != 64 || !text.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(InvalidHash(text.to_owned()));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| InvalidHash(text.to_owned()))?;
        Ok(ContentHash(bytes))
    }
}

/// `sanitizeStoreId` (shared with the signer's key checks, so both sides agree on a store's prefix).
pub use livestore_core::store_id::sanitize_store_id;

/// `makeStoredPath`: `livestore-filesync-files/<sanitized store id>/<hash>`.
pub fn stored_path(store_id: &str, hash: &ContentHash) -> String {
    format!("{FILES_ROOT}/{}/{hash}", sanitize_store_id(store_id))
}

/// `stripFilesRoot`: the path without a leading `/` and the `livestore-filesync-files/` prefix.
pub fn remote_key_for_path(path: &str) -> String {
    let path = path.trim_start_matches('/');
    path.strip_prefix(FILES_ROOT).and_then(|rest| rest.strip_prefix('/')).unwrap_or(path).to_owned()
}

/// The hash named by the last segment of a stored path or key, if it is one.
pub fn hash_from_path(path: &str) -> Option<ContentHash> {
    path.rsplit('/').next().and_then(|name| name.parse().ok())
}

/// A relative stored path is safe to join onto the data root: no absolute paths, no `..`, no empty segments.
pub fn is_safe_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path.split('/').all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_filesync_utils() {
        assert_eq!(sanitize_store_id("store/one"), "store_one");
        assert_eq!(sanitize_store_id("store:one"), "store_one");
        assert_eq!(sanitize_store_id("a.b_c-D9"), "a.b_c-D9");
        let hash = ContentHash::of(b"Hello from node");
        assert_eq!(
            stored_path("node_filesync_store", &hash),
            format!("livestore-filesync-files/node_filesync_store/{hash}")
        );
        assert_eq!(remote_key_for_path(&stored_path("s", &hash)), format!("s/{hash}"));
        assert_eq!(
            remote_key_for_path(&format!("/livestore-filesync-files/s/{hash}")),
            format!("s/{hash}")
        );
        assert_eq!(hash_from_path(&stored_path("s", &hash)), Some(hash));
        assert!("ABC".parse::<ContentHash>().is_err());
        assert!(hash.to_string().to_uppercase().parse::<ContentHash>().is_err());
        assert!(!is_safe_relative_path("../x"));
        assert!(!is_safe_relative_path("/etc/passwd"));
        assert!(is_safe_relative_path("livestore-filesync-files/s/abc"));
    }
}
