//! JSON shapes of the signer API. Field names are camelCase to match
//! `@livestore-filesync/core`; unknown fields are ignored so newer clients
//! keep working, and every field is typed so a wrong type is a 400 that
//! names the field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /v1/sign/upload`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SignUploadRequest {
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) content_type: Option<String>,
    #[serde(default)]
    pub(crate) content_length: Option<u64>,
    /// Extension: hex SHA-256 of the body; binds checksum and length into the URL.
    #[serde(default)]
    pub(crate) sha256: Option<String>,
}

/// `POST /v1/sign/uploads` (extension): many checksum-bound uploads at once.
#[derive(Debug, Deserialize)]
pub(crate) struct SignUploadsRequest {
    pub(crate) uploads: Vec<SignUploadRequest>,
}

/// `POST /v1/sign/download`, `/v1/delete`, `/v1/head`.
#[derive(Debug, Deserialize)]
pub(crate) struct KeyRequest {
    pub(crate) key: String,
}

/// `POST /v1/multipart/create`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MultipartCreateRequest {
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) content_type: Option<String>,
}

/// `POST /v1/multipart/sign-part`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SignPartRequest {
    pub(crate) key: String,
    pub(crate) upload_id: String,
    pub(crate) part_number: u32,
    #[serde(default)]
    pub(crate) content_length: Option<u64>,
    #[serde(default)]
    pub(crate) sha256: Option<String>,
}

/// One entry of `parts` in `POST /v1/multipart/complete`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PartReference {
    pub(crate) part_number: u32,
    pub(crate) etag: String,
}

/// `POST /v1/multipart/complete`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MultipartCompleteRequest {
    pub(crate) key: String,
    pub(crate) upload_id: String,
    pub(crate) parts: Vec<PartReference>,
}

/// `POST /v1/multipart/abort` and `/v1/multipart/parts`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UploadReference {
    pub(crate) key: String,
    pub(crate) upload_id: String,
}

/// Response of the upload and sign-part calls.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SignUploadResponse {
    pub(crate) method: &'static str,
    pub(crate) url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) headers: Option<BTreeMap<&'static str, String>>,
    pub(crate) expires_at: String,
}

/// One entry of the `sign/uploads` response, in request order: what is stored under the key now, and a signed
/// upload, or why this entry was refused.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SignUploadsEntry {
    pub(crate) key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) exists: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sha256: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub(crate) signed: Option<SignUploadResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<u16>,
}

/// Response of `sign/uploads`.
#[derive(Debug, Serialize)]
pub(crate) struct SignUploadsResponse {
    pub(crate) results: Vec<SignUploadsEntry>,
}

/// Response of the download call.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SignDownloadResponse {
    pub(crate) url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) headers: Option<BTreeMap<&'static str, String>>,
    pub(crate) expires_at: String,
}

/// Response of the existence check.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HeadResponse {
    pub(crate) exists: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) content_type: Option<String>,
}

/// Response of `multipart/create`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MultipartCreateResponse {
    pub(crate) key: String,
    pub(crate) upload_id: String,
    /// Every part but the last must be at least this large.
    pub(crate) min_part_size: u64,
}

/// Response of `multipart/complete`.
#[derive(Debug, Serialize)]
pub(crate) struct MultipartCompleteResponse {
    pub(crate) key: String,
    pub(crate) etag: String,
}

/// One entry of the `multipart/parts` response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PartEntry {
    pub(crate) part_number: u32,
    /// Absent when the object store does not report it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) etag: Option<String>,
    pub(crate) size: u64,
}

/// Response of `multipart/parts`.
#[derive(Debug, Serialize)]
pub(crate) struct PartsResponse {
    pub(crate) parts: Vec<PartEntry>,
}
