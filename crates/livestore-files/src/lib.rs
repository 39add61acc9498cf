//! Local-first file sync for LiveStore, compatible with `@livestore-filesync/core` 0.8.0.
//!
//! Features:
//! - the filesync data model ([`schema`]): the synced `files` table and `v1.FileCreated` / `v1.FileUpdated` /
//!   `v1.FileDeleted`, the per-device `localFileState` table with its client-only events, the `fileSyncCursor`
//!   document, and [`schema::add_to`] to merge all of it into an app's schema;
//! - a content-addressed local store ([`local`]) laid out like filesync's
//!   (`livestore-filesync-files/<store>/<sha256>` plus `.meta.json`), written by hash-then-rename and verified on
//!   read;
//! - [`FileSync`]: `save_file`, `read_file`, `get_file`, `update_file`, `delete_file`, `get_file_url`,
//!   `resolve_file_url`, `sync_status`, events, `start` / `stop` / `dispose`, local-only mode and a local byte
//!   budget with eviction;
//! - a transfer engine (`engine`) whose queue is derived from the store, so it survives crashes; bounded
//!   concurrency, capped jittered backoff, online/offline from the signer's health, checksum-bound and multipart
//!   resumable uploads, resumable verified downloads;
//! - [`serve`]: an HTTP handler serving `/livestore-filesync-files/<store>/<hash>` from the local store first,
//!   then from remote, with `Range` support (the native counterpart of filesync's service worker).
//!
//! ```
//! use livestore_client::{Storage, Store, StoreOptions};
//! use livestore_files::{FileSource, FileSync, FileSyncOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(StoreOptions::new("doc-store", Storage::InMemory), livestore_files::schema::schema()).unwrap();
//! let files = FileSync::new(store, FileSyncOptions::local_only(dir.path())).unwrap();
//! let saved = files.save_file(FileSource::Bytes(b"hello")).unwrap();
//! let mut text = String::new();
//! std::io::Read::read_to_string(&mut files.read_file(&saved.file_id).unwrap(), &mut text).unwrap();
//! assert_eq!(text, "hello");
//! assert_eq!(files.list_files().unwrap().len(), 1);
//! ```

mod context;
mod engine;
pub mod error;
pub mod layout;
pub mod local;
mod options;
mod plan;
pub mod remote;
pub mod schema;
pub mod serve;
#[doc(hidden)]
pub mod sim;
pub mod status;
mod stream;
mod sync;
mod transfer;

pub use error::{FilesError, RemoteError};
pub use layout::ContentHash;
pub use remote::RemoteConfig;
pub use status::{FileEntry, FileSyncEvent, SyncStatus, TransferKind, TransferProgress};
pub use sync::{FileSource, FileSync, FileSyncOptions, FileUrl, SaveOptions, SavedFile};
