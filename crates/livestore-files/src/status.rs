//! What the file sync reports: [`SyncStatus`] (counts, bytes, errors, like `getSyncStatus` of
//! `@livestore-filesync/core` plus byte counts), [`FileSyncEvent`] (its event names), and per-transfer progress.

use serde::Serialize;

use crate::schema::{FileRecord, LocalFileState};

/// Upload or download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TransferKind {
    /// Local bytes to the object store.
    Upload,
    /// Object store to local bytes.
    Download,
}

/// One running transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferProgress {
    /// Upload or download.
    pub kind: TransferKind,
    /// The file id.
    pub file_id: String,
    /// The content hash.
    pub content_hash: String,
    /// Bytes moved so far in this attempt (including a resumed prefix).
    pub loaded: u64,
    /// Total bytes, 0 when unknown.
    pub total: u64,
}

/// A failed file and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileError {
    /// The file id (or the object key, for a remote delete).
    pub file_id: String,
    /// The last error message.
    pub error: String,
    /// How many attempts failed in a row.
    pub attempts: u32,
}

/// Aggregated sync state (field names follow `getSyncStatus`, plus bytes, connectivity and remote deletes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// Uploads running.
    pub uploading_count: usize,
    /// Downloads running.
    pub downloading_count: usize,
    /// Uploads waiting (queued, pending, or failed and waiting for a retry).
    pub queued_upload_count: usize,
    /// Downloads waiting.
    pub queued_download_count: usize,
    /// Files in `error` (counted once per file).
    pub error_count: usize,
    /// A transfer is running.
    pub is_syncing: bool,
    /// Anything is left to do (transfers or remote deletes).
    pub has_pending: bool,
    /// Active files whose bytes another client has not uploaded yet (nothing this client can do).
    pub awaiting_remote_count: usize,
    /// Remote deletes not done yet.
    pub pending_remote_deletes: usize,
    /// Bytes of queued and running uploads.
    pub upload_bytes_pending: u64,
    /// Bytes moved by running transfers.
    pub bytes_in_flight: u64,
    /// Bytes of content files on this device.
    pub local_bytes: u64,
    /// Whether the signer answered its last health check.
    pub online: bool,
    /// Local-only mode: no remote calls at all.
    pub local_only: bool,
    /// Running transfers.
    pub transfers: Vec<TransferProgress>,
    /// Failures, each retried with backoff.
    pub errors: Vec<FileError>,
}

/// Something that happened, for progress displays and logs. Serialized with `type` names like upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type")]
pub enum FileSyncEvent {
    /// `upload:start`.
    #[serde(rename = "upload:start", rename_all = "camelCase")]
    UploadStart {
        /// The file id.
        file_id: String,
    },
    /// `upload:progress`.
    #[serde(rename = "upload:progress")]
    UploadProgress {
        /// Progress.
        progress: TransferProgress,
    },
    /// `upload:complete`.
    #[serde(rename = "upload:complete", rename_all = "camelCase")]
    UploadComplete {
        /// The file id.
        file_id: String,
        /// Whether the object already existed and nothing was sent.
        skipped: bool,
    },
    /// `upload:error`.
    #[serde(rename = "upload:error", rename_all = "camelCase")]
    UploadError {
        /// The file id.
        file_id: String,
        /// Why.
        error: String,
    },
    /// `download:start`.
    #[serde(rename = "download:start", rename_all = "camelCase")]
    DownloadStart {
        /// The file id.
        file_id: String,
    },
    /// `download:progress`.
    #[serde(rename = "download:progress")]
    DownloadProgress {
        /// Progress.
        progress: TransferProgress,
    },
    /// `download:complete`.
    #[serde(rename = "download:complete", rename_all = "camelCase")]
    DownloadComplete {
        /// The file id.
        file_id: String,
    },
    /// `download:error`.
    #[serde(rename = "download:error", rename_all = "camelCase")]
    DownloadError {
        /// The file id.
        file_id: String,
        /// Why.
        error: String,
    },
    /// `delete:complete` (remote object deleted).
    #[serde(rename = "delete:complete")]
    RemoteDeleteComplete {
        /// The object key.
        key: String,
    },
    /// `delete:error`.
    #[serde(rename = "delete:error")]
    RemoteDeleteError {
        /// The object key.
        key: String,
        /// Why.
        error: String,
    },
    /// `online`.
    #[serde(rename = "online")]
    Online,
    /// `offline`.
    #[serde(rename = "offline")]
    Offline {
        /// Why the signer is considered unreachable.
        reason: String,
    },
    /// `sync:error`.
    #[serde(rename = "sync:error")]
    SyncError {
        /// Why.
        error: String,
        /// Where.
        context: String,
    },
    /// `file:evicted` (local copy removed to stay within the byte budget; still remote).
    #[serde(rename = "file:evicted", rename_all = "camelCase")]
    Evicted {
        /// The content hash.
        content_hash: String,
        /// Bytes freed.
        bytes: u64,
    },
}

/// An active file with this device's transfer state (what `livestore files ls --json` prints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// The `files` row, with its column names.
    #[serde(flatten)]
    pub record: FileRecord,
    /// Size of the local copy, if present.
    pub local_size: Option<u64>,
    /// The `localFileState` row, if any.
    pub local_state: Option<LocalFileState>,
}
