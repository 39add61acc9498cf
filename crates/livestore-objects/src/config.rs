//! Configuration of the file services: which object store backs the signer
//! (the embedded one, or an external S3 endpoint), the URL lifetime, region,
//! bucket, and the public URL put into presigned links.
//!
//! Values come from the server's TOML (a `[files]` table deserialized into
//! [`FilesConfig`]) and can be overridden by the environment variables that
//! the upstream JS `s3-signer` reads (`S3_ENDPOINT`, `S3_REGION`, ...), so a
//! deployment written for the Worker keeps working unchanged.

use std::path::PathBuf;

use serde::Deserialize;

use crate::Error;

/// Default lifetime of presigned URLs, as in the upstream signer.
pub const DEFAULT_TTL_SECONDS: u64 = 900;
/// Longest URL lifetime accepted (the upstream signer clamps to this too).
pub const MAX_TTL_SECONDS: u64 = 3600;

/// Everything the file services need to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Where objects live.
    #[serde(default)]
    pub backend: BackendConfig,
    /// Lifetime of presigned URLs in seconds, 1..=3600. The URL's
    /// `X-Amz-Expires` and the reported `expiresAt` both use it.
    #[serde(default = "default_ttl")]
    pub ttl_seconds: u64,
    /// SigV4 region (credential scope).
    #[serde(default = "default_region")]
    pub region: String,
    /// Bucket name (the embedded store serves exactly this bucket).
    #[serde(default = "default_bucket")]
    pub bucket: String,
    /// Base URL of this server as clients reach it, e.g.
    /// `https://sync.example.com`; embedded-store URLs become
    /// `<public_url>/s3/<bucket>/<key>`. When unset, the signer uses
    /// `http://<Host header of the signing request>` (`https` when
    /// `X-Forwarded-Proto: https`), which is right unless a proxy rewrites
    /// the `Host` header.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Largest signer request body in bytes (JSON); larger bodies get 413.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
}

/// The object store behind the signer.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BackendConfig {
    /// The embedded S3-compatible store, served under `/s3` by the same router.
    Embedded {
        /// Directory holding objects, multipart uploads and temp files.
        data_dir: PathBuf,
        /// Access key id the store accepts; generated (and kept in the data
        /// dir) when unset. Set it to use S3 tools against the store.
        #[serde(default)]
        access_key_id: Option<String>,
        /// Secret for `access_key_id`; both or neither must be set.
        #[serde(default)]
        secret_access_key: Option<String>,
    },
    /// Any S3-compatible service (AWS, Garage, MinIO, s3s-fs, R2...).
    External(ExternalS3Config),
}

/// Connection details of an external S3 service.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalS3Config {
    /// Endpoint URL, e.g. `https://s3.us-east-1.amazonaws.com` or
    /// `http://127.0.0.1:3900`.
    pub endpoint: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token for temporary credentials.
    #[serde(default)]
    pub session_token: Option<String>,
    /// Path-style URLs (`endpoint/bucket/key`) instead of virtual-host style
    /// (`bucket.endpoint/key`). Off by default, as in the upstream signer.
    #[serde(default)]
    pub force_path_style: bool,
}

impl std::fmt::Debug for ExternalS3Config {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs.
        formatter
            .debug_struct("ExternalS3Config")
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .field("force_path_style", &self.force_path_style)
            .finish()
    }
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self::Embedded {
            data_dir: PathBuf::from("data/objects"),
            access_key_id: None,
            secret_access_key: None,
        }
    }
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            backend: BackendConfig::default(),
            ttl_seconds: DEFAULT_TTL_SECONDS,
            region: default_region(),
            bucket: default_bucket(),
            public_url: None,
            max_request_bytes: default_max_request_bytes(),
        }
    }
}

impl FilesConfig {
    /// An embedded-store configuration over `data_dir` with every other field
    /// at its default.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            backend: BackendConfig::Embedded {
                data_dir: data_dir.into(),
                access_key_id: None,
                secret_access_key: None,
            },
            ..Self::default()
        }
    }

    /// Applies the upstream `s3-signer` environment variables, read through
    /// `lookup` (pass `|name| std::env::var(name).ok()` in production).
    ///
    /// `S3_ENDPOINT` switches to an external backend, which then needs
    /// `S3_ACCESS_KEY_ID` and `S3_SECRET_ACCESS_KEY`; `S3_SESSION_TOKEN` and
    /// `S3_FORCE_PATH_STYLE` (`true`, any case, enables path style) are
    /// optional. `S3_REGION` and `S3_BUCKET` override region and bucket for
    /// either backend. Empty values count as unset.
    pub fn from_env_overrides(
        mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        if let Some(region) = get("S3_REGION") {
            self.region = region;
        }
        if let Some(bucket) = get("S3_BUCKET") {
            self.bucket = bucket;
        }
        if let Some(endpoint) = get("S3_ENDPOINT") {
            let require = |name: &str| {
                get(name).ok_or_else(|| {
                    Error::Config(format!("S3_ENDPOINT is set, so {name} is required too"))
                })
            };
            self.backend = BackendConfig::External(ExternalS3Config {
                endpoint,
                access_key_id: require("S3_ACCESS_KEY_ID")?,
                secret_access_key: require("S3_SECRET_ACCESS_KEY")?,
                session_token: get("S3_SESSION_TOKEN"),
                force_path_style: get("S3_FORCE_PATH_STYLE")
                    .is_some_and(|value| value.trim().eq_ignore_ascii_case("true")),
            });
        }
        Ok(self)
    }

    /// Checks ranges and names; [`FileServices::start`](crate::FileServices::start)
    /// calls it, so callers only need it to fail early.
    pub fn validate(&self) -> Result<(), Error> {
        if !(1..=MAX_TTL_SECONDS).contains(&self.ttl_seconds) {
            return Err(Error::Config(format!(
                "ttl_seconds must be between 1 and {MAX_TTL_SECONDS}, got {}",
                self.ttl_seconds
            )));
        }
        if self.region.is_empty() || !self.region.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(Error::Config(format!("region {:?} is not a valid region", self.region)));
        }
        let bucket_ok = (3..=63).contains(&self.bucket.len())
            && self.bucket.bytes().all(|byte| {
                byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'.'
            })
            && !self.bucket.starts_with(['-', '.'])
            && !self.bucket.ends_with(['-', '.']);
        if !bucket_ok {
            return Err(Error::Config(format!(
                "bucket {:?} is not a valid bucket name (3-63 chars of a-z, 0-9, '-', '.')",
                self.bucket
            )));
        }
        if self.max_request_bytes < 1024 {
            return Err(Error::Config("max_request_bytes must be at least 1024".into()));
        }
        if let BackendConfig::Embedded { access_key_id, secret_access_key, .. } = &self.backend
            && access_key_id.is_some() != secret_access_key.is_some()
        {
            return Err(Error::Config(
                "embedded access_key_id and secret_access_key must be set together".into(),
            ));
        }
        Ok(())
    }
}

fn default_ttl() -> u64 {
    DEFAULT_TTL_SECONDS
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

fn default_bucket() -> String {
    "livestore-files".to_owned()
}

fn default_max_request_bytes() -> usize {
    64 * 1024
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn env_overrides_switch_to_external() {
        let env: HashMap<&str, &str> = [
            ("S3_ENDPOINT", "http://127.0.0.1:9000"),
            ("S3_REGION", "garage"),
            ("S3_BUCKET", "files"),
            ("S3_ACCESS_KEY_ID", "AK"),
            ("S3_SECRET_ACCESS_KEY", "SK"),
            ("S3_FORCE_PATH_STYLE", "TRUE"),
        ]
        .into_iter()
        .collect();
        let config = FilesConfig::default()
            .from_env_overrides(|name| env.get(name).map(|value| (*value).to_owned()))
            .expect("complete env");
        assert_eq!(config.region, "garage");
        assert_eq!(config.bucket, "files");
        let BackendConfig::External(external) = &config.backend else {
            panic!("expected an external backend, got {:?}", config.backend);
        };
        assert!(external.force_path_style);
        assert_eq!(external.access_key_id, "AK");
        assert!(!format!("{external:?}").contains("SK"), "secret must not be logged");
    }

    #[test]
    fn env_endpoint_without_credentials_is_an_error() {
        let result = FilesConfig::default()
            .from_env_overrides(|name| (name == "S3_ENDPOINT").then(|| "http://x".to_owned()));
        assert!(
            matches!(result, Err(Error::Config(message)) if message.contains("S3_ACCESS_KEY_ID"))
        );
    }

    #[test]
    fn validate_ranges() {
        let mut config = FilesConfig::default();
        assert!(config.validate().is_ok());
        config.ttl_seconds = 0;
        assert!(config.validate().is_err());
        config.ttl_seconds = 3601;
        assert!(config.validate().is_err());
        config.ttl_seconds = 3600;
        config.bucket = "Bad_Bucket".into();
        assert!(config.validate().is_err());
    }

    #[test]
    fn deserializes_from_toml_shape() {
        let config: FilesConfig = serde_json::from_value(serde_json::json!({
            "backend": {"kind": "external", "endpoint": "http://h", "access_key_id": "a",
                        "secret_access_key": "b", "force_path_style": true},
            "ttl_seconds": 60
        }))
        .expect("valid config");
        assert_eq!(config.ttl_seconds, 60);
        assert!(matches!(config.backend, BackendConfig::External(_)));
    }
}
