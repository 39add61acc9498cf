//! The object store as the signer sees it: where presigned URLs point and how
//! the few server-side operations (health, delete, existence check,
//! multipart create/complete/abort/list) are carried out.
//!
//! Two implementations: the embedded store (URLs point at this server's
//! `/s3` routes; server-side operations call the store directly) and an
//! external S3 service (URLs point at it; server-side operations are
//! presigned requests sent with reqwest). Presigning itself is done by the
//! `rusty-s3` crate for both, so the embedded store verifies signatures made
//! by an independent implementation.

use std::sync::Arc;
use std::time::Duration;

use rusty_s3::{Bucket, Credentials, Method, UrlStyle};
use url::Url;

use crate::config::ExternalS3Config;
use crate::store::Store;

mod error;
pub(crate) use self::error::{BackendError, Operation};

/// Lifetime of the presigned URLs the signer uses for its own calls.
const SERVER_SIDE_TTL_SECONDS: u64 = 60;
/// Timeout of server-side calls to an external S3 service.
const EXTERNAL_TIMEOUT: Duration = Duration::from_secs(30);

/// What the existence check reports about an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ObjectInfo {
    pub(crate) size: u64,
    pub(crate) etag: Option<String>,
    pub(crate) sha256_hex: Option<String>,
    pub(crate) content_type: Option<String>,
}

/// A part as the multipart `parts` call reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartSummary {
    pub(crate) part_number: u32,
    /// Some S3 servers (s3s-fs 0.14) omit part ETags from ListParts.
    pub(crate) etag: Option<String>,
    pub(crate) size: u64,
}

#[derive(Debug)]
pub(crate) enum Backend {
    Embedded {
        store: Arc<Store>,
        /// Built once when `public_url` is configured; otherwise per request
        /// from the `Host` header.
        fixed_bucket: Option<Bucket>,
        bucket_name: String,
        region: String,
        credentials: Credentials,
    },
    External {
        bucket: Bucket,
        credentials: Credentials,
        region: String,
        http: reqwest::Client,
    },
}

/// How the signing request reached the server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestOrigin<'a> {
    pub(crate) host: &'a str,
    pub(crate) https: bool,
}

/// Everything needed to presign one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SignSpec<'a> {
    pub(crate) method: Method,
    pub(crate) key: &'a str,
    pub(crate) ttl_seconds: u64,
    /// Unix seconds the signature starts at.
    pub(crate) signed_at: i64,
    /// Sorted by name, lowercase names.
    pub(crate) headers: &'a [(&'a str, &'a str)],
    /// Sorted by name.
    pub(crate) query: &'a [(&'a str, &'a str)],
}

impl Backend {
    pub(crate) fn embedded(
        store: Arc<Store>,
        public_url: Option<&Url>,
        bucket_name: &str,
        region: &str,
    ) -> Result<Self, crate::Error> {
        let (access_key_id, secret) = store.credentials();
        let credentials = Credentials::new(access_key_id, secret);
        let fixed_bucket = public_url
            .map(|url| embedded_bucket(url, bucket_name, region))
            .transpose()
            .map_err(|message| crate::Error::Config(format!("public_url: {message}")))?;
        Ok(Self::Embedded {
            store,
            fixed_bucket,
            bucket_name: bucket_name.to_owned(),
            region: region.to_owned(),
            credentials,
        })
    }

    pub(crate) fn external(
        config: &ExternalS3Config,
        bucket_name: &str,
        region: &str,
    ) -> Result<Self, crate::Error> {
        let endpoint: Url = config
            .endpoint
            .parse()
            .map_err(|source| crate::Error::Url { field: "endpoint", source })?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
            return Err(crate::Error::Config(format!(
                "endpoint {:?} must be an http(s) URL with a host",
                config.endpoint
            )));
        }
        let style = if config.force_path_style { UrlStyle::Path } else { UrlStyle::VirtualHost };
        let bucket = Bucket::new(endpoint, style, bucket_name.to_owned(), region.to_owned())
            .map_err(|error| {
                crate::Error::Config(format!("endpoint and bucket do not form a URL: {error}"))
            })?;
        let credentials = match &config.session_token {
            Some(token) => {
                Credentials::new_with_token(&config.access_key_id, &config.secret_access_key, token)
            }
            None => Credentials::new(&config.access_key_id, &config.secret_access_key),
        };
        let http = reqwest::Client::builder()
            .timeout(EXTERNAL_TIMEOUT)
            .build()
            .map_err(crate::Error::HttpClient)?;
        Ok(Self::External { bucket, credentials, region: region.to_owned(), http })
    }

    /// A presigned URL for `spec`. `host` is the `Host` of the signing request,
    /// used for embedded-store URLs when no public URL is configured.
    pub(crate) fn presign(
        &self,
        origin: Option<RequestOrigin<'_>>,
        spec: SignSpec<'_>,
    ) -> Result<Url, BackendError> {
        let (bucket, credentials, region) = match self {
            Self::Embedded { fixed_bucket: Some(bucket), credentials, region, .. } => {
                (std::borrow::Cow::Borrowed(bucket), credentials, region)
            }
            Self::Embedded { fixed_bucket: None, bucket_name, credentials, region, .. } => {
                let origin = origin.ok_or(BackendError::NoPublicOrigin)?;
                let scheme = if origin.https { "https" } else { "http" };
                let base: Url = format!("{scheme}://{}/", origin.host)
                    .parse()
                    .map_err(|_| BackendError::InvalidHost)?;
                let bucket = embedded_bucket(&base, bucket_name, region)
                    .map_err(|_| BackendError::InvalidHost)?;
                (std::borrow::Cow::Owned(bucket), credentials, region)
            }
            Self::External { bucket, credentials, region, .. } => {
                (std::borrow::Cow::Borrowed(bucket), credentials, region)
            }
        };
        let timestamp = jiff::Timestamp::from_second(spec.signed_at)
            .map_err(|_| BackendError::ClockOutOfRange)?;
        Ok(rusty_s3::signing::sign(
            &timestamp,
            spec.method,
            bucket.object_url(spec.key),
            credentials.key(),
            credentials.secret(),
            credentials.token(),
            region,
            spec.ttl_seconds,
            spec.query.iter().copied(),
            spec.headers.iter().copied(),
        ))
    }

    /// `true` when the bucket answers.
    pub(crate) async fn health(&self) -> bool {
        match self {
            Self::Embedded { store, .. } => store.is_healthy().await,
            Self::External { http, .. } => {
                let Ok(url) = self.server_side_url(Method::Head, None, &[], &[]) else {
                    return false;
                };
                http.head(url).send().await.is_ok_and(|response| response.status().is_success())
            }
        }
    }

    /// Deletes `key`; a missing object is not an error.
    pub(crate) async fn delete(&self, key: &str) -> Result<(), BackendError> {
        match self {
            Self::Embedded { store, .. } => store.delete(key).await.map(drop).map_err(|error| {
                tracing::error!(%error, "embedded delete failed");
                BackendError::OperationFailed(Operation::Delete)
            }),
            Self::External { http, .. } => {
                let url = self.server_side_url(Method::Delete, Some(key), &[], &[])?;
                let response = http.delete(url).send().await.map_err(|error| {
                    tracing::warn!(%error, "external delete failed");
                    BackendError::OperationFailed(Operation::Delete)
                })?;
                let status = response.status();
                if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
                    Ok(())
                } else {
                    tracing::warn!(%status, "external delete refused");
                    Err(BackendError::OperationFailed(Operation::Delete))
                }
            }
        }
    }

    /// The object's size and checksums, `None` when absent.
    pub(crate) async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, BackendError> {
        match self {
            Self::Embedded { store, .. } => {
                let meta = store.stat(key).await.map_err(|error| {
                    tracing::error!(%error, "embedded stat failed");
                    BackendError::OperationFailed(Operation::ExistenceCheck)
                })?;
                Ok(meta.map(|meta| ObjectInfo {
                    size: meta.size,
                    etag: Some(meta.etag),
                    sha256_hex: Some(meta.sha256),
                    content_type: Some(meta.content_type),
                }))
            }
            Self::External { http, .. } => {
                let headers = [("x-amz-checksum-mode", "ENABLED")];
                let url = self.server_side_url(Method::Head, Some(key), &headers, &[])?;
                let response = http
                    .head(url)
                    .header("x-amz-checksum-mode", "ENABLED")
                    .send()
                    .await
                    .map_err(|error| upstream_failure(Operation::ExistenceCheck, &error))?;
                match response.status() {
                    reqwest::StatusCode::NOT_FOUND => Ok(None),
                    status if status.is_success() => {
                        let header = |name: &str| {
                            response
                                .headers()
                                .get(name)
                                .and_then(|value| value.to_str().ok())
                                .map(str::to_owned)
                        };
                        let sha256_hex = header("x-amz-checksum-sha256").and_then(|value| {
                            use base64::Engine as _;
                            base64::engine::general_purpose::STANDARD
                                .decode(value)
                                .ok()
                                .filter(|bytes| bytes.len() == 32)
                                .map(hex::encode)
                        });
                        Ok(Some(ObjectInfo {
                            size: header("content-length")
                                .and_then(|value| value.parse().ok())
                                .unwrap_or(0),
                            etag: header("etag").map(|etag| etag.trim_matches('"').to_owned()),
                            sha256_hex,
                            content_type: header("content-type"),
                        }))
                    }
                    status => Err(upstream_status(Operation::ExistenceCheck, status)),
                }
            }
        }
    }

    pub(crate) async fn create_multipart(
        &self,
        key: &str,
        content_type: Option<&str>,
    ) -> Result<String, BackendError> {
        match self {
            Self::Embedded { store, .. } => store
                .create_multipart(key, content_type.unwrap_or("application/octet-stream"))
                .await
                .map_err(|error| {
                    tracing::error!(%error, "embedded multipart create failed");
                    BackendError::OperationFailed(Operation::MultipartCreate)
                }),
            Self::External { http, .. } => {
                let headers: Vec<(&str, &str)> =
                    content_type.map(|value| ("content-type", value)).into_iter().collect();
                let url =
                    self.server_side_url(Method::Post, Some(key), &headers, &[("uploads", "")])?;
                let mut request = http.post(url);
                if let Some(content_type) = content_type {
                    request = request.header("content-type", content_type);
                }
                let response = request
                    .send()
                    .await
                    .map_err(|error| upstream_failure(Operation::MultipartCreate, &error))?;
                let body = success_text(response, Operation::MultipartCreate).await?;
                crate::store::xml_element(&body, "UploadId").ok_or(BackendError::NoUploadId)
            }
        }
    }

    /// Completes the upload; returns the object's ETag.
    pub(crate) async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<String, BackendError> {
        match self {
            Self::Embedded { store, .. } => {
                let parts = parts
                    .iter()
                    .map(|(part_number, etag)| crate::store::CompletedPart {
                        part_number: *part_number,
                        etag: etag.trim_matches('"').to_owned(),
                    })
                    .collect();
                let meta = store
                    .complete_multipart(key, upload_id, parts)
                    .await
                    .map_err(BackendError::Store)?;
                Ok(meta.etag)
            }
            Self::External { http, .. } => {
                let url =
                    self.server_side_url(Method::Post, Some(key), &[], &[("uploadId", upload_id)])?;
                let mut body = String::from("<CompleteMultipartUpload>");
                for (part_number, etag) in parts {
                    body.push_str(&format!(
                        "<Part><PartNumber>{part_number}</PartNumber><ETag>\"{}\"</ETag></Part>",
                        crate::store::xml_escape(etag.trim_matches('"'))
                    ));
                }
                body.push_str("</CompleteMultipartUpload>");
                let response = http
                    .post(url)
                    .header("content-type", "application/xml")
                    .body(body)
                    .send()
                    .await
                    .map_err(|error| upstream_failure(Operation::MultipartComplete, &error))?;
                let text = success_text(response, Operation::MultipartComplete).await?;
                // S3 can answer 200 with an <Error> body when assembly fails late.
                if let Some(code) = crate::store::xml_element(&text, "Code") {
                    return Err(BackendError::CompleteFailed { code });
                }
                let etag = crate::store::xml_element(&text, "ETag").unwrap_or_default();
                Ok(etag.replace("&quot;", "").trim_matches('"').to_owned())
            }
        }
    }

    pub(crate) async fn abort_multipart(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<(), BackendError> {
        match self {
            Self::Embedded { store, .. } => {
                store.abort_multipart(key, upload_id).await.map_err(BackendError::Store)
            }
            Self::External { http, .. } => {
                let url = self.server_side_url(
                    Method::Delete,
                    Some(key),
                    &[],
                    &[("uploadId", upload_id)],
                )?;
                let response = http
                    .delete(url)
                    .send()
                    .await
                    .map_err(|error| upstream_failure(Operation::MultipartAbort, &error))?;
                success_text(response, Operation::MultipartAbort).await.map(drop)
            }
        }
    }

    pub(crate) async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<PartSummary>, BackendError> {
        match self {
            Self::Embedded { store, .. } => {
                let parts = store.list_parts(key, upload_id).await.map_err(BackendError::Store)?;
                Ok(parts
                    .into_iter()
                    .map(|part| PartSummary {
                        part_number: part.part_number,
                        etag: Some(part.etag),
                        size: part.size,
                    })
                    .collect())
            }
            Self::External { http, .. } => {
                let url =
                    self.server_side_url(Method::Get, Some(key), &[], &[("uploadId", upload_id)])?;
                let response = http
                    .get(url)
                    .send()
                    .await
                    .map_err(|error| upstream_failure(Operation::ListParts, &error))?;
                let text = success_text(response, Operation::ListParts).await?;
                Ok(crate::store::xml_elements(&text, "Part")
                    .into_iter()
                    .filter_map(|part| {
                        Some(PartSummary {
                            part_number: crate::store::xml_element(part, "PartNumber")?
                                .trim()
                                .parse()
                                .ok()?,
                            etag: crate::store::xml_element(part, "ETag").map(|etag| {
                                etag.replace("&quot;", "").trim_matches('"').to_owned()
                            }),
                            size: crate::store::xml_element(part, "Size")?.trim().parse().ok()?,
                        })
                    })
                    .collect())
            }
        }
    }

    /// A short-lived presigned URL for a call the signer makes itself.
    fn server_side_url(
        &self,
        method: Method,
        key: Option<&str>,
        headers: &[(&str, &str)],
        query: &[(&str, &str)],
    ) -> Result<Url, BackendError> {
        let Self::External { bucket, credentials, region, .. } = self else {
            return Err(BackendError::NotExternal);
        };
        let url = match key {
            Some(key) => bucket.object_url(key),
            None => bucket.base_url().clone(),
        };
        let timestamp = jiff::Timestamp::now();
        Ok(rusty_s3::signing::sign(
            &timestamp,
            method,
            url,
            credentials.key(),
            credentials.secret(),
            credentials.token(),
            region,
            SERVER_SIDE_TTL_SECONDS,
            query.iter().copied(),
            headers.iter().copied(),
        ))
    }
}

/// The embedded store's endpoint is `<base>/s3`, always path-style.
fn embedded_bucket(base: &Url, bucket_name: &str, region: &str) -> Result<Bucket, String> {
    let endpoint = base.join("s3").map_err(|error| error.to_string())?;
    Bucket::new(endpoint, UrlStyle::Path, bucket_name.to_owned(), region.to_owned())
        .map_err(|error| error.to_string())
}

fn upstream_failure(operation: Operation, error: &reqwest::Error) -> BackendError {
    tracing::warn!(%error, %operation, "object store unreachable");
    BackendError::Unreachable(operation)
}

fn upstream_status(operation: Operation, status: reqwest::StatusCode) -> BackendError {
    tracing::warn!(%status, %operation, "object store refused");
    match status {
        reqwest::StatusCode::NOT_FOUND => BackendError::NotFound(operation),
        status if status.is_client_error() => BackendError::Refused { operation, status },
        status => BackendError::UpstreamFailed { operation, status },
    }
}

async fn success_text(
    response: reqwest::Response,
    operation: Operation,
) -> Result<String, BackendError> {
    let status = response.status();
    if !status.is_success() {
        return Err(upstream_status(operation, status));
    }
    response.text().await.map_err(|error| upstream_failure(operation, &error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn external(force_path_style: bool) -> Backend {
        let config = ExternalS3Config {
            endpoint: "http://s3.example.test:9000".into(),
            access_key_id: "AK".into(),
            secret_access_key: "SK".into(),
            session_token: None,
            force_path_style,
        };
        Backend::external(&config, "files", "eu-central-1").expect("valid external config")
    }

    fn spec(key: &str) -> SignSpec<'_> {
        SignSpec {
            method: Method::Get,
            key,
            ttl_seconds: 900,
            signed_at: 1_700_000_000,
            headers: &[],
            query: &[],
        }
    }

    #[test]
    fn url_styles_and_expiry() {
        let virtual_host = external(false).presign(None, spec("s/a b")).expect("signed");
        assert_eq!(virtual_host.host_str(), Some("files.s3.example.test"));
        assert_eq!(virtual_host.path(), "/s/a%20b");
        let path_style = external(true).presign(None, spec("s/ü")).expect("signed");
        assert_eq!(path_style.host_str(), Some("s3.example.test"));
        assert_eq!(path_style.path(), "/files/s/%C3%BC");
        let query: std::collections::HashMap<_, _> = path_style.query_pairs().collect();
        assert_eq!(query["X-Amz-Expires"], "900");
        assert_eq!(query["X-Amz-Date"], "20231114T221320Z");
        assert!(query["X-Amz-Credential"].ends_with("/20231114/eu-central-1/s3/aws4_request"));
    }

    #[test]
    fn bad_endpoints_are_config_errors() {
        let mut config = ExternalS3Config {
            endpoint: "not a url".into(),
            access_key_id: "AK".into(),
            secret_access_key: "SK".into(),
            session_token: None,
            force_path_style: true,
        };
        assert!(matches!(
            Backend::external(&config, "files", "us-east-1"),
            Err(crate::Error::Url { field: "endpoint", .. })
        ));
        config.endpoint = "ftp://host".into();
        assert!(matches!(
            Backend::external(&config, "files", "us-east-1"),
            Err(crate::Error::Config(_))
        ));
    }
}
