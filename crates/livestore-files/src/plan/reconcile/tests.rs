//! Every row state of the filesync model → the expected plan, with plain data.

use super::*;
use crate::plan::Inflight;
use crate::plan::test_support::{download, hash, upload};

fn path(byte: u8) -> String {
    format!("livestore-filesync-files/s/{}", hash(byte))
}

fn key(byte: u8) -> String {
    format!("s/{}", hash(byte))
}

/// An active row with content `byte`, uploaded when `uploaded`.
fn row(id: &str, byte: u8, uploaded: bool) -> FileRow {
    FileRow {
        id: id.to_owned(),
        path: path(byte),
        remote_key: if uploaded { key(byte) } else { String::new() },
        content_hash: hash(byte).to_string(),
        deleted_at: None,
        state: None,
        content_in_use: false,
        object_in_use: false,
    }
}

fn state(
    id: &str,
    byte: u8,
    local: bool,
    download: TransferStatus,
    upload: TransferStatus,
    error: &str,
) -> LocalFileState {
    LocalFileState {
        file_id: id.to_owned(),
        path: path(byte),
        local_hash: if local { hash(byte).to_string() } else { String::new() },
        download_status: download,
        upload_status: upload,
        last_sync_error: error.to_owned(),
    }
}

fn with_state(mut row: FileRow, state: LocalFileState) -> FileRow {
    row.state = Some(state);
    row
}

fn deleted(mut row: FileRow) -> FileRow {
    row.deleted_at = Some(1);
    row
}

fn here(bytes: &[u8]) -> LocalView {
    LocalView {
        present: bytes.iter().map(|byte| (hash(*byte), 10)).collect(),
        pinned: BTreeSet::new(),
    }
}

fn remote(rows: &[FileRow], local: &LocalView, schedule: &Schedule) -> ReconcilePlan {
    reconcile(rows, local, schedule, false, &[])
}

use TransferStatus::{Done, Error, InProgress, Queued};

#[test]
fn saved_here_and_not_uploaded_queues_one_upload() {
    let plan = remote(&[row("a", 1, false)], &here(&[1]), &Schedule::default());
    assert_eq!(plan.work.uploads, [upload("a", 1, 10)]);
    assert_eq!(plan.writes, [StateWrite::Upsert(state("a", 1, true, Done, Queued, ""))]);
    assert!(plan.work.downloads.is_empty() && plan.local_deletes.is_empty());
}

#[test]
fn uploaded_and_here_is_settled_and_unchanged_state_is_not_rewritten() {
    let plan = remote(&[row("a", 1, true)], &here(&[1]), &Schedule::default());
    assert_eq!(plan.writes, [StateWrite::Upsert(state("a", 1, true, Done, Done, ""))]);
    assert!(plan.work.is_empty());

    let settled = with_state(row("a", 1, true), state("a", 1, true, Done, Done, ""));
    assert_eq!(remote(&[settled], &here(&[1]), &Schedule::default()), ReconcilePlan::default());
}

#[test]
fn uploaded_elsewhere_and_missing_here_queues_one_download() {
    let plan = remote(&[row("a", 1, true)], &here(&[]), &Schedule::default());
    let mut expected = download("a", 1);
    expected.size = None;
    assert_eq!(plan.work.downloads, [expected]);
    assert_eq!(plan.writes, [StateWrite::Upsert(state("a", 1, false, Queued, Done, ""))]);
}

#[test]
fn awaiting_remote_rows_show_no_state() {
    let stale = with_state(row("a", 1, false), state("a", 1, false, Queued, Done, ""));
    let plan = remote(&[row("b", 2, false), stale], &here(&[]), &Schedule::default());
    assert_eq!(plan.work.awaiting_remote, ["a".to_owned(), "b".to_owned()].into());
    assert_eq!(plan.writes, [StateWrite::Remove { file_id: "a".into() }]);
    assert!(plan.work.is_empty());
}

#[test]
fn errors_keep_their_status_and_message() {
    let failed = with_state(row("a", 1, false), state("a", 1, true, Done, Error, "HTTP 500"));
    let plan = remote(&[failed], &here(&[1]), &Schedule::default());
    // Still queued (retried after its backoff), and the row is left as it is.
    assert_eq!(plan.work.uploads.len(), 1);
    assert!(plan.writes.is_empty());

    let failed = with_state(row("b", 2, true), state("b", 2, false, Error, Done, "timeout"));
    let plan = remote(&[failed], &here(&[]), &Schedule::default());
    assert_eq!(plan.work.downloads.len(), 1);
    assert!(plan.writes.is_empty());
}

#[test]
fn in_progress_stays_only_while_its_transfer_runs() {
    let running = with_state(row("a", 1, false), state("a", 1, true, Done, InProgress, ""));
    let mut schedule = Schedule::default();
    schedule.running.insert((TransferKind::Upload, "a".into()), Inflight::new(&upload("a", 1, 10)));
    assert!(remote(std::slice::from_ref(&running), &here(&[1]), &schedule).writes.is_empty());
    // After a crash nothing runs: the row is queued again.
    let plan = remote(&[running], &here(&[1]), &Schedule::default());
    assert_eq!(plan.writes, [StateWrite::Upsert(state("a", 1, true, Done, Queued, ""))]);
}

#[test]
fn unknown_status_text_from_another_client_counts_as_pending() {
    let other = TransferStatus::Other("paused".into());
    let odd = with_state(row("a", 1, true), state("a", 1, false, other, Done, ""));
    let plan = remote(&[odd], &here(&[]), &Schedule::default());
    assert_eq!(plan.work.downloads.len(), 1);
    assert_eq!(plan.writes, [StateWrite::Upsert(state("a", 1, false, Queued, Done, ""))]);
}

#[test]
fn rows_sharing_content_get_one_transfer_and_each_its_state() {
    let rows = [row("a", 1, false), row("b", 1, false), row("c", 2, true), row("d", 2, true)];
    let plan = remote(&rows, &here(&[1]), &Schedule::default());
    assert_eq!(plan.work.uploads.len(), 1);
    assert_eq!(plan.work.uploads[0].file_id, "a");
    assert_eq!(plan.work.downloads.len(), 1);
    assert_eq!(plan.work.downloads[0].file_id, "c");
    assert_eq!(plan.writes.len(), 4);
}

#[test]
fn a_deleted_row_loses_its_copy_state_and_object() {
    let gone = deleted(with_state(row("a", 1, true), state("a", 1, true, Done, Done, "")));
    let plan = reconcile(&[gone], &here(&[1]), &Schedule::default(), false, &["old".into()]);
    assert_eq!(
        plan.writes,
        [StateWrite::QueueRemoteDelete { key: key(1) }, StateWrite::Remove { file_id: "a".into() }]
    );
    assert_eq!(plan.local_deletes, [hash(1)]);
    assert_eq!(plan.forget, ["a"]);
    assert_eq!(plan.work.deletes, ["old".to_owned(), key(1)]);
}

#[test]
fn a_deleted_row_keeps_what_others_still_use() {
    let mut shared = deleted(with_state(row("a", 1, true), state("a", 1, true, Done, Done, "")));
    shared.content_in_use = true;
    shared.object_in_use = true;
    let plan = remote(&[shared], &here(&[1]), &Schedule::default());
    assert_eq!(plan.writes, [StateWrite::Remove { file_id: "a".into() }]);
    assert!(plan.local_deletes.is_empty() && plan.work.deletes.is_empty());

    // Moving or pinned content stays too; a row this device never uploaded queues no remote delete.
    let not_uploaded_here =
        deleted(with_state(row("b", 2, true), state("b", 2, true, Done, Error, "x")));
    let mut schedule = Schedule::default();
    schedule.hashes_moving.insert(hash(2));
    let mut local = here(&[2, 3]);
    local.pinned.insert(hash(3));
    let pinned = deleted(row("c", 3, false));
    let plan = remote(&[not_uploaded_here, pinned], &local, &schedule);
    assert!(plan.local_deletes.is_empty());
    assert!(plan.work.deletes.is_empty());
    assert_eq!(plan.forget, ["b", "c"]);
}

#[test]
fn local_only_mode_settles_what_is_here_and_forgets_the_rest() {
    let missing = with_state(row("b", 2, false), state("b", 2, true, Done, Done, ""));
    let plan = reconcile(
        &[row("a", 1, false), missing],
        &here(&[1]),
        &Schedule::default(),
        true,
        &["ignored".into()],
    );
    assert_eq!(
        plan.writes,
        [
            StateWrite::Upsert(state("a", 1, true, Done, Done, "")),
            StateWrite::Remove { file_id: "b".into() }
        ]
    );
    assert_eq!(plan.work, WorkLists::default());
}

#[test]
fn an_invalid_content_hash_is_reported_on_the_row() {
    let mut bad = row("a", 1, true);
    bad.content_hash = "nope".into();
    let plan = remote(&[bad], &here(&[]), &Schedule::default());
    let StateWrite::Upsert(state) = &plan.writes[0] else { panic!("{plan:?}") };
    assert_eq!((&state.download_status, &state.upload_status), (&Error, &Done));
    assert!(state.last_sync_error.contains("not a SHA-256"));
    assert!(plan.work.is_empty());
}

#[test]
fn a_partial_merge_replaces_only_the_rows_it_read() {
    let mut current = WorkLists::default();
    current.uploads.extend([upload("a", 1, 10), upload("b", 2, 10)]);
    current.awaiting_remote.insert("c".into());
    current.deletes = vec!["k".into()];
    let mut derived = WorkLists::default();
    derived.uploads.push_back(upload("a", 3, 10));
    let only: BTreeSet<String> = ["a".to_owned(), "c".to_owned()].into();
    merge_work(&mut current, derived, Some(&only), &mut VecDeque::new(), &BTreeSet::new());
    let uploads: Vec<(&str, ContentHash)> =
        current.uploads.iter().map(|job| (job.file_id.as_str(), job.hash)).collect();
    assert_eq!(uploads, [("b", hash(2)), ("a", hash(3))]);
    assert!(current.awaiting_remote.is_empty());
    assert!(current.deletes.is_empty());
}

#[test]
fn an_asked_for_download_survives_a_reconcile_until_its_bytes_are_here() {
    let mut current = WorkLists::default();
    current.downloads.extend([download("evicted", 1), download("plain", 2)]);
    let mut prioritized: VecDeque<String> = ["evicted".to_owned()].into();
    // A full reconcile sees both rows settled (evicted: done/done without bytes).
    merge_work(&mut current, WorkLists::default(), None, &mut prioritized, &BTreeSet::new());
    assert_eq!(current.downloads, [download("evicted", 1)]);
    assert_eq!(prioritized, ["evicted"]);
    // Once the bytes are here, the download and its priority go.
    let arrived: BTreeSet<ContentHash> = [hash(1)].into();
    merge_work(&mut current, WorkLists::default(), None, &mut prioritized, &arrived);
    assert!(current.downloads.is_empty() && prioritized.is_empty());
}
