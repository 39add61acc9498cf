//! Which queued jobs start now: prioritized downloads first, then the queues front to back, within the download
//! limit, the upload slots and the delete limit; jobs whose content is moving or whose backoff has not passed wait.
//!
//! Uploads are counted in slots: at most `max_uploads` upload tasks run, and each sends one body at a time, so the
//! limit is also the number of bodies in flight. Files up to [`SMALL_UPLOAD_BYTES`] travel in groups that share a
//! slot and one batched signing call; a larger file has a slot to itself. When few files wait, they are spread
//! over the free slots instead of filling one group, so a handful of files still moves in parallel.

use std::time::Instant;

use super::{Inflight, Job, Schedule, TransferId, WorkLists};
use crate::status::TransferKind;

/// Files up to this size are uploaded in groups, their bodies read into memory (one chunk's worth at most).
pub(crate) const SMALL_UPLOAD_BYTES: u64 = crate::local::CHUNK_BYTES as u64;
/// Most files in one upload group, i.e. in one `sign/uploads` call.
pub(crate) const MAX_GROUP_FILES: usize = 64;

/// The concurrency limits and the size threshold that decides how a file uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_downloads: usize,
    pub max_uploads: usize,
    pub max_deletes: usize,
    /// Files at least this large take the general (multipart) path.
    pub multipart_threshold: u64,
}

/// What one launch starts. Every job in it is registered as running in the [`Schedule`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LaunchPlan {
    pub downloads: Vec<Job>,
    /// Each group takes one upload slot; a group of one is a file too large to group but small enough for one
    /// PUT. Every member has a known size.
    pub upload_groups: Vec<Vec<Job>>,
    /// Files for the general upload path (multipart, or a local copy whose size is unknown): one slot each.
    pub uploads_alone: Vec<Job>,
    pub deletes: Vec<String>,
}

impl LaunchPlan {
    /// Whether nothing starts.
    pub(crate) fn is_empty(&self) -> bool {
        self.downloads.is_empty()
            && self.upload_groups.is_empty()
            && self.uploads_alone.is_empty()
            && self.deletes.is_empty()
    }
}

/// Picks what starts at `now`, takes it out of `work` and registers it in `schedule` (running transfers, moving
/// content, used upload slots, running deletes). The caller only launches while online.
pub fn launch(
    work: &mut WorkLists,
    schedule: &mut Schedule,
    limits: &Limits,
    now: Instant,
) -> LaunchPlan {
    let mut plan = LaunchPlan {
        downloads: pick_downloads(work, schedule, limits.max_downloads, now),
        ..LaunchPlan::default()
    };
    pick_uploads(work, schedule, limits, now, &mut plan);
    for key in &work.deletes {
        if schedule.deletes_running.len() >= limits.max_deletes {
            break;
        }
        if schedule.deletes_running.contains(key)
            || schedule.delete_failures.get(key).is_some_and(|failure| failure.next_at > now)
        {
            continue;
        }
        schedule.deletes_running.insert(key.clone());
        plan.deletes.push(key.clone());
    }
    plan
}

/// A job may start unless it or its content is moving, or it waits for its backoff.
fn startable(schedule: &Schedule, kind: TransferKind, job: &Job, now: Instant) -> bool {
    let id: TransferId = (kind, job.file_id.clone());
    !schedule.running.contains_key(&id)
        && !schedule.hashes_moving.contains(&job.hash)
        && schedule.failures.get(&id).is_none_or(|failure| failure.next_at <= now)
}

fn register(schedule: &mut Schedule, kind: TransferKind, job: &Job) {
    schedule.running.insert((kind, job.file_id.clone()), Inflight::new(job));
    schedule.hashes_moving.insert(job.hash);
}

fn pick_downloads(
    work: &mut WorkLists,
    schedule: &mut Schedule,
    limit: usize,
    now: Instant,
) -> Vec<Job> {
    let mut picked = Vec::new();
    let mut running =
        schedule.running.keys().filter(|(kind, _)| *kind == TransferKind::Download).count();
    // Prioritized downloads first (few: the ones an app asked a URL for).
    let prioritized: Vec<String> = schedule.prioritized.iter().cloned().collect();
    for id in prioritized {
        if running >= limit {
            break;
        }
        if let Some(position) = work.downloads.iter().position(|job| job.file_id == id)
            && startable(schedule, TransferKind::Download, &work.downloads[position], now)
        {
            let job = work.downloads.remove(position).expect("the position was just found");
            register(schedule, TransferKind::Download, &job);
            running += 1;
            picked.push(job);
        }
    }
    // Then the queue front to back. A job that cannot start now goes to the back; each job is looked at once per
    // launch, so the cost is bounded by what starts plus what waits.
    let waiting = work.downloads.len();
    let mut looked_at = 0;
    while running < limit && looked_at < waiting {
        looked_at += 1;
        let Some(job) = work.downloads.pop_front() else { break };
        if startable(schedule, TransferKind::Download, &job, now) {
            register(schedule, TransferKind::Download, &job);
            running += 1;
            picked.push(job);
        } else {
            work.downloads.push_back(job);
        }
    }
    picked
}

fn pick_uploads(
    work: &mut WorkLists,
    schedule: &mut Schedule,
    limits: &Limits,
    now: Instant,
    plan: &mut LaunchPlan,
) {
    let free_slots = limits.max_uploads.saturating_sub(schedule.upload_slots);
    let mut small: Vec<Job> = Vec::new();
    let mut large: Vec<Job> = Vec::new();
    let waiting = work.uploads.len();
    let mut looked_at = 0;
    while looked_at < waiting {
        let slots_used =
            large.len() + plan.uploads_alone.len() + small.len().div_ceil(MAX_GROUP_FILES);
        let last_group_has_room = !small.len().is_multiple_of(MAX_GROUP_FILES);
        if slots_used >= free_slots && !last_group_has_room {
            break;
        }
        looked_at += 1;
        let Some(job) = work.uploads.pop_front() else { break };
        if !startable(schedule, TransferKind::Upload, &job, now) {
            work.uploads.push_back(job);
            continue;
        }
        match job.size {
            Some(size) if size <= SMALL_UPLOAD_BYTES => {
                register(schedule, TransferKind::Upload, &job);
                small.push(job);
            }
            // Only a small file may join the last group once every slot is taken.
            _ if slots_used >= free_slots => work.uploads.push_back(job),
            Some(size) if size < limits.multipart_threshold => {
                register(schedule, TransferKind::Upload, &job);
                large.push(job);
            }
            _ => {
                register(schedule, TransferKind::Upload, &job);
                plan.uploads_alone.push(job);
            }
        }
    }
    plan.upload_groups = large.into_iter().map(|job| vec![job]).collect();
    let small_slots =
        free_slots.saturating_sub(plan.upload_groups.len() + plan.uploads_alone.len());
    if !small.is_empty() {
        // Spread over the free slots (a few files move in parallel), at most `MAX_GROUP_FILES` per group.
        let groups = small_slots.clamp(1, small.len());
        let per_group = small.len().div_ceil(groups);
        let mut members = small.into_iter().peekable();
        while members.peek().is_some() {
            plan.upload_groups.push(members.by_ref().take(per_group).collect());
        }
    }
    schedule.upload_slots += plan.upload_groups.len() + plan.uploads_alone.len();
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::plan::Failure;
    use crate::plan::test_support::{download, hash, upload};

    const LIMITS: Limits = Limits {
        max_downloads: 2,
        max_uploads: 2,
        max_deletes: 2,
        multipart_threshold: 100 * 1024 * 1024,
    };

    fn ids(jobs: &[Job]) -> Vec<&str> {
        jobs.iter().map(|job| job.file_id.as_str()).collect()
    }

    #[test]
    fn downloads_start_up_to_the_limit_prioritized_first() {
        let now = Instant::now();
        let mut work = WorkLists::default();
        work.downloads.extend([download("a", 1), download("b", 2), download("c", 3)]);
        let mut schedule = Schedule::default();
        schedule.prioritized.push_front("c".into());
        let plan = launch(&mut work, &mut schedule, &LIMITS, now);
        assert_eq!(ids(&plan.downloads), ["c", "a"]);
        assert_eq!(ids(work.downloads.make_contiguous()), ["b"]);
        assert!(schedule.running.contains_key(&(TransferKind::Download, "c".to_owned())));
        assert!(schedule.hashes_moving.contains(&hash(3)));
        // Full: nothing more starts until one ends.
        assert!(launch(&mut work, &mut schedule, &LIMITS, now).downloads.is_empty());
    }

    #[test]
    fn one_transfer_per_content_and_backoff_is_respected() {
        let now = Instant::now();
        let mut work = WorkLists::default();
        // Two rows with the same content, and one waiting for its retry.
        work.downloads.extend([download("a", 1), download("b", 1), download("c", 2)]);
        let mut schedule = Schedule::default();
        schedule.failures.insert(
            (TransferKind::Download, "c".into()),
            Failure { attempts: 1, next_at: now + Duration::from_secs(1), error: "x".into() },
        );
        let plan = launch(&mut work, &mut schedule, &LIMITS, now);
        assert_eq!(ids(&plan.downloads), ["a"]);
        assert_eq!(ids(work.downloads.make_contiguous()), ["b", "c"]);
        // Once the backoff passed, the retry starts; "b" still waits for "a"'s content.
        let plan = launch(&mut work, &mut schedule, &LIMITS, now + Duration::from_secs(1));
        assert_eq!(ids(&plan.downloads), ["c"]);
    }

    #[test]
    fn small_uploads_share_slots_and_large_ones_take_one_each() {
        let now = Instant::now();
        let mut work = WorkLists::default();
        work.uploads.extend((0..5).map(|index| upload(&format!("s{index}"), index, 10)));
        let mut schedule = Schedule::default();
        let plan = launch(&mut work, &mut schedule, &LIMITS, now);
        // Five small files spread over both free slots.
        let sizes: Vec<usize> = plan.upload_groups.iter().map(Vec::len).collect();
        assert_eq!(sizes, [3, 2]);
        assert_eq!(schedule.upload_slots, 2);
        assert!(work.uploads.is_empty());

        let mut work = WorkLists::default();
        work.uploads.extend([
            upload("big", 1, 50 * 1024 * 1024),
            upload("huge", 2, 200 * 1024 * 1024),
            upload("another", 3, 50 * 1024 * 1024),
            upload("tiny", 4, 1),
        ]);
        let mut schedule = Schedule::default();
        let plan = launch(&mut work, &mut schedule, &LIMITS, now);
        assert_eq!(plan.upload_groups.len(), 1);
        assert_eq!(ids(&plan.upload_groups[0]), ["big"]);
        assert_eq!(ids(&plan.uploads_alone), ["huge"]);
        // Every slot is taken: the large file waits, and the small one cannot start a group of its own.
        assert_eq!(ids(work.uploads.make_contiguous()), ["another", "tiny"]);
    }

    #[test]
    fn an_upload_of_unknown_size_takes_the_general_path() {
        let now = Instant::now();
        let mut work = WorkLists::default();
        let mut job = upload("u", 1, 0);
        job.size = None;
        work.uploads.push_back(job);
        let plan = launch(&mut work, &mut Schedule::default(), &LIMITS, now);
        assert_eq!(ids(&plan.uploads_alone), ["u"]);
    }

    #[test]
    fn deletes_start_within_their_limit_unless_waiting_for_a_retry() {
        let now = Instant::now();
        let mut work = WorkLists {
            deletes: vec!["k1".into(), "k2".into(), "k3".into()],
            ..WorkLists::default()
        };
        let mut schedule = Schedule::default();
        schedule.delete_failures.insert(
            "k1".into(),
            Failure { attempts: 2, next_at: now + Duration::from_secs(2), error: "x".into() },
        );
        let plan = launch(&mut work, &mut schedule, &LIMITS, now);
        assert_eq!(plan.deletes, ["k2", "k3"]);
        assert!(launch(&mut work, &mut schedule, &LIMITS, now).deletes.is_empty());
    }
}
