//! Fault-hit counters: how often each fault and workload event actually happened, summed over seeds.
//!
//! A fault *hits* when it had something to act on (a reset of a connection that existed, a cut of a frame that
//! was sent); a fault that fired at nothing is not counted. The totals show that every kind of fault really
//! fires at the default size, which a passing run alone would not prove.

use std::collections::BTreeMap;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hit {
    /// A live connection was reset.
    Reset,
    /// A frame was cut mid-way.
    Cut,
    /// A client was partitioned.
    Partition,
    /// A frame vanished into a partition.
    PartitionDroppedFrame,
    /// A connection attempt timed out (partition).
    ConnectTimeout,
    /// A connection was slowed down.
    SlowReader,
    /// The server restarted.
    ServerRestart,
    /// A connection attempt was refused (server down).
    ConnectRefused,
    /// A push failed with the armed storage error.
    StorageError,
    /// The server lost its log.
    LogLost,
    /// A client wiped its data after a `backendId` change.
    BackendReset,
    /// A push was refused with `ServerAheadError` (the client then rebases).
    ServerAhead,
    /// A client process crashed.
    ClientCrash,
    /// A client went offline.
    Offline,
    /// A commit of 50 or more events.
    LargeBatch,
    /// A burst of commits.
    Burst,
    /// A commit made while the client had no open connection.
    OfflineCommit,
    /// The watchdog ended a connection (push unanswered, no page after `ServerAheadError`, no echo).
    Stall,
    /// A connection ended for silence.
    Silence,
    /// A file was saved, replaced or deleted.
    FileSave,
    /// See `FileSave`.
    FileReplace,
    /// See `FileSave`.
    FileDelete,
    /// An upload, download or remote delete completed.
    Upload,
    /// See `Upload`.
    Download,
    /// See `Upload`.
    RemoteDelete,
    /// The blob store answered 5xx (nothing done).
    BlobServerError,
    /// The blob store did the work but the client saw a timeout.
    BlobTimeoutAfterSuccess,
    /// An upload was cut: nothing stored, the client sees an error.
    BlobCutUpload,
    /// The blob store served bytes not matching the key (the client's check refused them).
    BlobCorruptRead,
    /// A transfer failed because the client was offline, partitioned or the object was missing.
    BlobUnreachable,
    /// At quiescence, an object no active file uses (a failure only with `RunOptions::strict_files`).
    OrphanedObject,
    /// At quiescence, an active row whose object a remote delete removed and no local bytes (a failure only with
    /// `RunOptions::strict_files`).
    UnreachableAfterDelete,
}

impl Hit {
    /// The counter's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Hit::Reset => "reset",
            Hit::Cut => "cut_mid_frame",
            Hit::Partition => "partition",
            Hit::PartitionDroppedFrame => "partition_dropped_frame",
            Hit::ConnectTimeout => "connect_timeout",
            Hit::SlowReader => "slow_reader",
            Hit::ServerRestart => "server_restart",
            Hit::ConnectRefused => "connect_refused",
            Hit::StorageError => "storage_error",
            Hit::LogLost => "log_lost",
            Hit::BackendReset => "backend_reset",
            Hit::ServerAhead => "server_ahead",
            Hit::ClientCrash => "client_crash",
            Hit::Offline => "offline",
            Hit::LargeBatch => "large_batch",
            Hit::Burst => "burst",
            Hit::OfflineCommit => "offline_commit",
            Hit::Stall => "watchdog_stall",
            Hit::Silence => "silence_timeout",
            Hit::FileSave => "file_save",
            Hit::FileReplace => "file_replace",
            Hit::FileDelete => "file_delete",
            Hit::Upload => "file_upload",
            Hit::Download => "file_download",
            Hit::RemoteDelete => "file_remote_delete",
            Hit::BlobServerError => "blob_5xx",
            Hit::BlobTimeoutAfterSuccess => "blob_timeout_after_success",
            Hit::BlobCutUpload => "blob_cut_upload",
            Hit::BlobCorruptRead => "blob_corrupt_read",
            Hit::BlobUnreachable => "blob_unreachable",
            Hit::OrphanedObject => "files_orphaned_object",
            Hit::UnreachableAfterDelete => "files_unreachable_after_delete",
        }
    }
}

/// Counters by name (names, so totals from child processes add up without knowing the enum).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hits(pub BTreeMap<String, u64>);

impl Hits {
    /// Counts one hit.
    pub fn count(&mut self, hit: Hit) {
        *self.0.entry(hit.name().to_owned()).or_default() += 1;
    }

    /// Adds another set of counters.
    pub fn add(&mut self, other: &Hits) {
        for (name, count) in &other.0 {
            *self.0.entry(name.clone()).or_default() += count;
        }
    }
}
