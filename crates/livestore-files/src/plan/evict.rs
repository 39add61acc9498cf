//! The local byte budget as a choice: given the local copies (size, last use), how the active rows use each
//! content, and what is protected, pick least recently used copies to remove until the budget holds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use crate::layout::ContentHash;

/// How long content the application asked for (`resolve_file_url`, `prioritize_download`) is safe from eviction,
/// so a file fetched back for a reader is not evicted again at once.
pub(crate) const REQUESTED_CONTENT_PROTECTION: Duration = Duration::from_secs(60);
/// Content no active row uses is evicted only once it is this old: a save may be about to commit its row.
const UNREFERENCED_GRACE: Duration = Duration::from_secs(60);

/// One local copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalCopy {
    pub(crate) hash: ContentHash,
    pub(crate) size: u64,
    /// Last use (reads touch it).
    pub(crate) modified: SystemTime,
}

/// The copies to remove, least recently used first, until at most `budget` bytes remain.
///
/// `not_uploaded` maps each content hash used by active rows to how many of them have no `remoteKey` yet: only
/// content with 0 is safe (every row can download it again). Content no active row uses is safe once it is older
/// than a minute (by `now`). `protected` content (moving, pinned by a save, recently asked for) is never chosen.
pub(crate) fn evict(
    copies: &[LocalCopy],
    budget: u64,
    not_uploaded: &BTreeMap<String, i64>,
    protected: &BTreeSet<ContentHash>,
    now: SystemTime,
) -> Vec<LocalCopy> {
    let mut used: u64 = copies.iter().map(|copy| copy.size).sum();
    if used <= budget {
        return Vec::new();
    }
    let mut by_age: Vec<&LocalCopy> = copies.iter().collect();
    // Ties broken by hash, so the choice does not depend on the order the directory was listed in.
    by_age.sort_by_key(|copy| (copy.modified, copy.hash));
    let mut chosen = Vec::new();
    for copy in by_age {
        if used <= budget {
            break;
        }
        let safe = match not_uploaded.get(&copy.hash.to_string()) {
            Some(count) => *count == 0,
            None => now.duration_since(copy.modified).unwrap_or_default() > UNREFERENCED_GRACE,
        };
        if !safe || protected.contains(&copy.hash) {
            continue;
        }
        used = used.saturating_sub(copy.size);
        chosen.push(copy.clone());
    }
    chosen
}

/// Drops requests older than [`REQUESTED_CONTENT_PROTECTION`]; what remains is protected from eviction.
pub(crate) fn forget_old_requests(requested: &mut BTreeMap<ContentHash, Instant>, now: Instant) {
    requested.retain(|_, at| now.saturating_duration_since(*at) < REQUESTED_CONTENT_PROTECTION);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::test_support::hash;

    fn copy(byte: u8, size: u64, age_secs: u64, now: SystemTime) -> LocalCopy {
        LocalCopy { hash: hash(byte), size, modified: now - Duration::from_secs(age_secs) }
    }

    fn uploaded(bytes: &[u8]) -> BTreeMap<String, i64> {
        bytes.iter().map(|byte| (hash(*byte).to_string(), 0)).collect()
    }

    fn chosen(plan: &[LocalCopy]) -> Vec<ContentHash> {
        plan.iter().map(|copy| copy.hash).collect()
    }

    #[test]
    fn nothing_is_evicted_within_the_budget() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let copies = [copy(1, 10, 500, now), copy(2, 10, 400, now)];
        assert!(evict(&copies, 20, &uploaded(&[1, 2]), &BTreeSet::new(), now).is_empty());
    }

    #[test]
    fn least_recently_used_uploaded_copies_go_first_until_the_budget_holds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let copies = [copy(1, 10, 100, now), copy(2, 10, 300, now), copy(3, 10, 200, now)];
        let plan = evict(&copies, 15, &uploaded(&[1, 2, 3]), &BTreeSet::new(), now);
        assert_eq!(chosen(&plan), [hash(2), hash(3)]);
    }

    #[test]
    fn content_a_row_has_not_uploaded_stays() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let copies = [copy(1, 10, 300, now), copy(2, 10, 100, now)];
        let mut uses = uploaded(&[2]);
        // Two rows share content 1, one of them not uploaded: its copy is the only source.
        uses.insert(hash(1).to_string(), 1);
        assert_eq!(chosen(&evict(&copies, 10, &uses, &BTreeSet::new(), now)), [hash(2)]);
    }

    #[test]
    fn unreferenced_content_goes_only_once_it_is_old() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let copies = [copy(1, 10, 30, now), copy(2, 10, 120, now)];
        let plan = evict(&copies, 0, &BTreeMap::new(), &BTreeSet::new(), now);
        assert_eq!(chosen(&plan), [hash(2)]);
    }

    #[test]
    fn protected_content_is_never_chosen_and_requests_expire() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let copies = [copy(1, 10, 300, now), copy(2, 10, 200, now), copy(3, 10, 100, now)];
        let protected: BTreeSet<ContentHash> = [hash(1), hash(2)].into();
        let plan = evict(&copies, 0, &uploaded(&[1, 2, 3]), &protected, now);
        assert_eq!(chosen(&plan), [hash(3)]);

        let start = Instant::now();
        let mut requested: BTreeMap<ContentHash, Instant> =
            [(hash(1), start), (hash(2), start + Duration::from_secs(30))].into();
        forget_old_requests(&mut requested, start + Duration::from_secs(61));
        assert_eq!(requested.keys().copied().collect::<Vec<_>>(), [hash(2)]);
    }

    #[test]
    fn equal_ages_are_ordered_by_hash() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let copies = [copy(9, 10, 100, now), copy(4, 10, 100, now)];
        let plan = evict(&copies, 10, &uploaded(&[4, 9]), &BTreeSet::new(), now);
        assert_eq!(chosen(&plan), [hash(4)]);
    }
}
