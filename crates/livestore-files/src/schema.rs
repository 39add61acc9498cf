//! The `@livestore-filesync/core` 0.8.0 data model: the synced `files` table and its three events, the per-device
//! `localFileState` table with its client-only events, and the `fileSyncCursor` client document.
//!
//! Names, payload shapes and encodings are the compatibility contract with JavaScript clients: dates travel as
//! ISO-8601 strings and are stored as epoch milliseconds; `metadataJson` may be omitted from `v1.FileCreated` and
//! `v1.FileUpdated`, and in `v1.FileUpdated` an omitted field keeps the stored value while `null` clears it.
//!
//! One addition that JavaScript never sees: the client-only table `fileRemoteDeletes` (with
//! `v1.FileRemoteDeleteQueued` / `v1.FileRemoteDeleteDone`) remembers remote objects this client still has to
//! delete, so a delete that fails while offline is retried instead of forgotten. Client-only events never leave
//! the device, so this does not change what other clients see.
//!
//! This module only describes data; the transfer engine (`crate::engine`) decides what to write.

use livestore_client::schema::datetime::iso_millis;
use livestore_client::schema::{ClientDocument, Column, Event, Index, SchemaBuilder, Table, Write};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Name of the synced files table.
pub const FILES_TABLE: &str = "files";
/// Name of the per-device transfer state table.
pub const LOCAL_STATE_TABLE: &str = "localFileState";
/// Name of the cursor client document.
pub const CURSOR_DOCUMENT: &str = "fileSyncCursor";
/// Name of the client-only table of remote deletes still to do (a Rust-side extension).
pub const REMOTE_DELETES_TABLE: &str = "fileRemoteDeletes";

/// `v1.FileCreated`: a new logical file. The row starts with an empty `remoteKey` and no `deletedAt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileCreated {
    /// Random UUID v4 of the logical file.
    pub id: String,
    /// Local content-addressed path, `livestore-filesync-files/<store>/<sha256>`.
    pub path: String,
    /// Lowercase hex SHA-256 of the bytes.
    pub content_hash: String,
    /// Creation time, epoch ms (ISO-8601 on the wire).
    #[serde(with = "iso_millis")]
    pub created_at: i64,
    /// Last update time, epoch ms (ISO-8601 on the wire).
    #[serde(with = "iso_millis")]
    pub updated_at: i64,
    /// JSON of the file's metadata; omitted and `null` both mean none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_json: Option<String>,
}

/// `v1.FileUpdated`: new content or a new `remoteKey` for an existing file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileUpdated {
    /// The file id.
    pub id: String,
    /// Local content-addressed path.
    pub path: String,
    /// Object key once uploaded, `""` before.
    pub remote_key: String,
    /// Lowercase hex SHA-256 of the bytes.
    pub content_hash: String,
    /// Update time, epoch ms (ISO-8601 on the wire).
    #[serde(with = "iso_millis")]
    pub updated_at: i64,
    /// `None`: the field is omitted and the stored metadata stays; `Some(None)`: `null`, clears it;
    /// `Some(Some(json))`: replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "present_or_absent")]
    pub metadata_json: Option<Option<String>>,
}

/// `v1.FileDeleted`: soft delete; the row stays with `deletedAt` set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileDeleted {
    /// The file id.
    pub id: String,
    /// Deletion time, epoch ms (ISO-8601 on the wire).
    #[serde(with = "iso_millis")]
    pub deleted_at: i64,
}

/// `v1.LocalFileStateUpsert` (client-only): replaces the device's transfer state of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalFileStateUpsert {
    /// The file id.
    pub file_id: String,
    /// The local path the state refers to.
    pub path: String,
    /// SHA-256 of the bytes on this device, `""` when there are none.
    pub local_hash: String,
    /// Download direction status (stored as its filesync text).
    pub download_status: TransferStatus,
    /// Upload direction status (stored as its filesync text).
    pub upload_status: TransferStatus,
    /// Why the last attempt failed, `""` if it did not.
    pub last_sync_error: String,
}

/// `v1.LocalFileStateRemove` (client-only): forgets one file's transfer state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalFileStateRemove {
    /// The file id.
    pub file_id: String,
}

/// `v1.LocalFileStateClear` (client-only): forgets all transfer state. Its payload is `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalFileStateClear {}

/// `v1.FileRemoteDeleteQueued` (client-only, Rust extension): an object this client must delete remotely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileRemoteDeleteQueued {
    /// The object key.
    pub key: String,
    /// When the delete was asked for, epoch ms (ISO-8601 in the event).
    #[serde(with = "iso_millis")]
    pub queued_at: i64,
}

/// `v1.FileRemoteDeleteDone` (client-only, Rust extension): the object is gone or must stay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileRemoteDeleteDone {
    /// The object key.
    pub key: String,
}

impl Event for FileCreated {
    const NAME: &'static str = "v1.FileCreated";
}
impl Event for FileUpdated {
    const NAME: &'static str = "v1.FileUpdated";
}
impl Event for FileDeleted {
    const NAME: &'static str = "v1.FileDeleted";
}
impl Event for LocalFileStateUpsert {
    const NAME: &'static str = "v1.LocalFileStateUpsert";
    const CLIENT_ONLY: bool = true;
}
impl Event for LocalFileStateRemove {
    const NAME: &'static str = "v1.LocalFileStateRemove";
    const CLIENT_ONLY: bool = true;
}
impl Event for LocalFileStateClear {
    const NAME: &'static str = "v1.LocalFileStateClear";
    const CLIENT_ONLY: bool = true;
}
impl Event for FileRemoteDeleteQueued {
    const NAME: &'static str = "v1.FileRemoteDeleteQueued";
    const CLIENT_ONLY: bool = true;
}
impl Event for FileRemoteDeleteDone {
    const NAME: &'static str = "v1.FileRemoteDeleteDone";
    const CLIENT_ONLY: bool = true;
}

/// The transfer status values of `@livestore-filesync` (`TransferStatusSchema`).
///
/// Stored and sent as exactly the strings of filesync (`"pending"`, `"queued"`, `"inProgress"`, `"done"`,
/// `"error"`). Text this version does not know (written by a newer client) is kept as [`TransferStatus::Other`],
/// so reading and writing such a row back loses nothing; the engine treats it like `pending` (work may remain).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransferStatus {
    /// Needs a transfer, not yet handed to the queue.
    Pending,
    /// Waiting in the queue.
    Queued,
    /// An attempt is running.
    InProgress,
    /// Nothing to do in this direction.
    Done,
    /// The last attempt failed; `lastSyncError` says why. It is retried.
    Error,
    /// Text this version does not know, kept as written.
    Other(String),
}

impl TransferStatus {
    /// The text stored in `localFileState`.
    pub fn as_str(&self) -> &str {
        match self {
            TransferStatus::Pending => "pending",
            TransferStatus::Queued => "queued",
            TransferStatus::InProgress => "inProgress",
            TransferStatus::Done => "done",
            TransferStatus::Error => "error",
            TransferStatus::Other(text) => text,
        }
    }

    /// Parses the stored text; unknown text becomes [`TransferStatus::Other`].
    pub fn parse(text: &str) -> TransferStatus {
        match text {
            "pending" => TransferStatus::Pending,
            "queued" => TransferStatus::Queued,
            "inProgress" => TransferStatus::InProgress,
            "done" => TransferStatus::Done,
            "error" => TransferStatus::Error,
            other => TransferStatus::Other(other.to_owned()),
        }
    }

    /// Whether work remains in this direction (anything but `done`, unknown text included).
    pub fn is_pending_work(&self) -> bool {
        !matches!(self, TransferStatus::Done)
    }
}

impl std::fmt::Display for TransferStatus {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl Serialize for TransferStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TransferStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TransferStatus, D::Error> {
        // Borrowed or owned: rows may hand over either.
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(TransferStatus::parse(&text))
    }
}

/// A row of `files`, with the table's column names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileRecord {
    /// Primary key.
    pub id: String,
    /// Local content-addressed path.
    pub path: String,
    /// Object key, `""` before the upload finished.
    pub remote_key: String,
    /// Lowercase hex SHA-256.
    pub content_hash: String,
    /// Metadata JSON or `null`.
    pub metadata_json: Option<String>,
    /// Epoch ms.
    pub created_at: i64,
    /// Epoch ms.
    pub updated_at: i64,
    /// Epoch ms when soft-deleted.
    pub deleted_at: Option<i64>,
}

impl FileRecord {
    /// Whether the row is not soft-deleted.
    pub fn is_active(&self) -> bool {
        self.deleted_at.is_none()
    }
}

/// A row of `localFileState`, with the table's column names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalFileState {
    /// The file id.
    pub file_id: String,
    /// The local path the state refers to.
    pub path: String,
    /// SHA-256 of the local bytes, `""` when there are none.
    pub local_hash: String,
    /// Download direction status (stored as its filesync text).
    pub download_status: TransferStatus,
    /// Upload direction status (stored as its filesync text).
    pub upload_status: TransferStatus,
    /// Last failure, `""` when none.
    pub last_sync_error: String,
}

impl LocalFileState {
    /// The event that writes this row.
    pub fn to_event(&self) -> LocalFileStateUpsert {
        LocalFileStateUpsert {
            file_id: self.file_id.clone(),
            path: self.path.clone(),
            local_hash: self.local_hash.clone(),
            download_status: self.download_status.clone(),
            upload_status: self.upload_status.clone(),
            last_sync_error: self.last_sync_error.clone(),
        }
    }

    /// The upload status.
    pub fn upload(&self) -> &TransferStatus {
        &self.upload_status
    }

    /// The download status.
    pub fn download(&self) -> &TransferStatus {
        &self.download_status
    }
}

/// A row of `fileRemoteDeletes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteDelete {
    /// The object key.
    pub key: String,
    /// When it was queued, epoch ms.
    pub queued_at: i64,
}

/// The `files` table.
pub fn files_table() -> Table {
    Table::new(FILES_TABLE)
        .column(Column::text("id").primary_key())
        .column(Column::text("path").default_value(""))
        .column(Column::text("remoteKey").default_value(""))
        .column(Column::text("contentHash").default_value(""))
        .column(Column::text("metadataJson").nullable())
        .column(Column::date_ms("createdAt"))
        .column(Column::date_ms("updatedAt"))
        .column(Column::date_ms("deletedAt").nullable())
        .index(Index::new("files_contentHash", ["contentHash"]))
}

/// The `localFileState` table.
pub fn local_state_table() -> Table {
    Table::new(LOCAL_STATE_TABLE)
        .column(Column::text("fileId").primary_key())
        .column(Column::text("path").default_value(""))
        .column(Column::text("localHash").default_value(""))
        .column(Column::text("downloadStatus").default_value("pending"))
        .column(Column::text("uploadStatus").default_value("pending"))
        .column(Column::text("lastSyncError").default_value(""))
}

/// The `fileRemoteDeletes` table (client-only extension).
pub fn remote_deletes_table() -> Table {
    Table::new(REMOTE_DELETES_TABLE)
        .column(Column::text("key").primary_key())
        .column(Column::date_ms("queuedAt"))
}

/// The `fileSyncCursor` client document: `{lastEventSequence, updatedAt}` (`updatedAt` is `DateFromMillis`, so
/// epoch ms), fixed id `global`.
pub fn cursor_document() -> ClientDocument {
    ClientDocument::new(
        CURSOR_DOCUMENT,
        serde_json::json!({ "lastEventSequence": "e0", "updatedAt": 0 }),
    )
    .default_id("global")
}

/// Adds the whole filesync data model (tables, events, materializers, cursor document) to an app's schema.
///
/// ```
/// use livestore_client::schema::Schema;
/// let schema = livestore_files::schema::add_to(Schema::builder()).build().unwrap();
/// assert!(schema.event_meta("v1.FileCreated").is_some());
/// ```
pub fn add_to(builder: SchemaBuilder) -> SchemaBuilder {
    builder
        .table(files_table())
        .table(local_state_table())
        .table(remote_deletes_table())
        .client_document(cursor_document())
        .event(|event: &FileCreated, _| {
            Ok(vec![
                Write::insert(FILES_TABLE)
                    .set("id", &event.id)
                    .set("path", &event.path)
                    .set("remoteKey", "")
                    .set("contentHash", &event.content_hash)
                    .set("metadataJson", event.metadata_json.clone())
                    .set("createdAt", event.created_at)
                    .set("updatedAt", event.updated_at)
                    .set("deletedAt", None::<i64>),
            ])
        })
        .event(|event: &FileUpdated, _| {
            let mut write = Write::update(FILES_TABLE)
                .set("path", &event.path)
                .set("remoteKey", &event.remote_key)
                .set("contentHash", &event.content_hash)
                .set("updatedAt", event.updated_at);
            // Only a present field touches the column: old events without it keep the stored metadata.
            if let Some(metadata_json) = &event.metadata_json {
                write = write.set("metadataJson", metadata_json.clone());
            }
            Ok(vec![write.where_eq("id", &event.id)])
        })
        .event(|event: &FileDeleted, _| {
            Ok(vec![
                Write::update(FILES_TABLE)
                    .set("deletedAt", event.deleted_at)
                    .where_eq("id", &event.id),
            ])
        })
        .event(|event: &LocalFileStateUpsert, _| {
            Ok(vec![
                Write::delete(LOCAL_STATE_TABLE).where_eq("fileId", &event.file_id),
                Write::insert(LOCAL_STATE_TABLE)
                    .set("fileId", &event.file_id)
                    .set("path", &event.path)
                    .set("localHash", &event.local_hash)
                    .set("downloadStatus", event.download_status.as_str())
                    .set("uploadStatus", event.upload_status.as_str())
                    .set("lastSyncError", &event.last_sync_error),
            ])
        })
        .event(|event: &LocalFileStateRemove, _| {
            Ok(vec![Write::delete(LOCAL_STATE_TABLE).where_eq("fileId", &event.file_id)])
        })
        .event(|_: &LocalFileStateClear, _| {
            Ok(vec![Write::raw(format!("DELETE FROM \"{LOCAL_STATE_TABLE}\""), [])])
        })
        .event(|event: &FileRemoteDeleteQueued, _| {
            Ok(vec![
                Write::insert(REMOTE_DELETES_TABLE)
                    .set("key", &event.key)
                    .set("queuedAt", event.queued_at)
                    .on_conflict_ignore(),
            ])
        })
        .event(|event: &FileRemoteDeleteDone, _| {
            Ok(vec![Write::delete(REMOTE_DELETES_TABLE).where_eq("key", &event.key)])
        })
}

/// A schema with only the filesync data model (what the `livestore files` command uses).
pub fn schema() -> livestore_client::schema::Schema {
    add_to(livestore_client::schema::Schema::builder())
        .build()
        .expect("the filesync schema is statically valid")
}

/// Serde for `Option<Option<String>>` where `None` is an absent field and `Some(None)` is `null`.
mod present_or_absent {
    use super::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Option<String>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(Some(text)) => serializer.serialize_str(text),
            // `None` is skipped by `skip_serializing_if`, so only `Some(None)` gets here.
            Some(None) | None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        // Called only when the field is present (absent fields take the `default`).
        Option::<String>::deserialize(deserializer).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_encodings_match_filesync() {
        let created = FileCreated {
            id: "f1".into(),
            path: "livestore-filesync-files/s/abc".into(),
            content_hash: "abc".into(),
            created_at: 0,
            updated_at: 1,
            metadata_json: None,
        };
        assert_eq!(
            serde_json::to_string(&created).unwrap(),
            r#"{"id":"f1","path":"livestore-filesync-files/s/abc","contentHash":"abc","createdAt":"1970-01-01T00:00:00.000Z","updatedAt":"1970-01-01T00:00:00.001Z"}"#
        );
        let mut updated = FileUpdated {
            id: "f1".into(),
            path: "p".into(),
            remote_key: "s/abc".into(),
            content_hash: "abc".into(),
            updated_at: 0,
            metadata_json: None,
        };
        assert!(!serde_json::to_string(&updated).unwrap().contains("metadataJson"));
        updated.metadata_json = Some(None);
        assert!(serde_json::to_string(&updated).unwrap().contains(r#""metadataJson":null"#));
        let absent: FileUpdated = serde_json::from_str(
            r#"{"id":"f1","path":"p","remoteKey":"","contentHash":"h","updatedAt":"2026-01-01T00:00:00.000Z"}"#,
        )
        .unwrap();
        assert_eq!(absent.metadata_json, None);
        let null: FileUpdated = serde_json::from_str(
            r#"{"id":"f1","path":"p","remoteKey":"","contentHash":"h","updatedAt":"2026-01-01T00:00:00.000Z","metadataJson":null}"#,
        )
        .unwrap();
        assert_eq!(null.metadata_json, Some(None));
        assert_eq!(serde_json::to_string(&LocalFileStateClear {}).unwrap(), "{}");
    }

    #[test]
    fn statuses_keep_filesync_text_and_unknown_text_survives() {
        for (status, text) in [
            (TransferStatus::Pending, "pending"),
            (TransferStatus::Queued, "queued"),
            (TransferStatus::InProgress, "inProgress"),
            (TransferStatus::Done, "done"),
            (TransferStatus::Error, "error"),
        ] {
            assert_eq!(serde_json::to_string(&status).unwrap(), format!("\"{text}\""));
            assert_eq!(TransferStatus::parse(text), status);
        }
        let upsert: LocalFileStateUpsert = serde_json::from_str(
            r#"{"fileId":"f","path":"p","localHash":"","downloadStatus":"paused","uploadStatus":"done","lastSyncError":""}"#,
        )
        .unwrap();
        assert_eq!(upsert.download_status, TransferStatus::Other("paused".into()));
        assert!(upsert.download_status.is_pending_work());
        assert!(serde_json::to_string(&upsert).unwrap().contains(r#""downloadStatus":"paused""#));
    }
}
