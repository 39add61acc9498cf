//! How the delivery of committed events learns of new commits without polling.
//!
//! Storage backends call [`CommitFeed::committed`] once a batch is durable (SQLite: the writer thread, after the
//! commit; Postgres: the writer after its commit, and the listener for every node's `NOTIFY`). The feed marks the
//! store in each active [`Inbox`] (one per subscriber of committed events that delivers on this node) and wakes
//! its delivery task. An inbox keeps one entry per store with the highest head heard, so a burst of commits costs
//! one wake-up and a map entry, never a queue of notifications.
//!
//! A backend that may have missed commits (a Postgres node whose listener reconnected, or a notification for a
//! store it cannot name) calls [`CommitFeed::missed`], which asks every inbox for a scan of the stores' heads.
//! Without subscribers all of this is one atomic load per commit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Where committed heads are announced; shared by the storage backend and the delivery tasks.
#[derive(Debug, Default)]
pub(crate) struct CommitFeed {
    /// Whether any inbox exists; read first so a server without subscribers pays nothing more.
    has_inboxes: AtomicBool,
    inboxes: Mutex<Vec<Arc<Inbox>>>,
}

impl CommitFeed {
    /// A new inbox, inactive until its delivery task leads.
    pub(crate) fn subscribe(&self) -> Arc<Inbox> {
        let inbox = Arc::new(Inbox::default());
        self.inboxes.lock().expect("commit feed lock poisoned").push(inbox.clone());
        self.has_inboxes.store(true, Ordering::Release);
        inbox
    }

    /// `store_id`'s log is durable up to `head`.
    pub(crate) fn committed(&self, store_id: &str, head: u64) {
        if !self.has_inboxes.load(Ordering::Acquire) {
            return;
        }
        for inbox in self.inboxes.lock().expect("commit feed lock poisoned").iter() {
            inbox.committed(store_id, head);
        }
    }

    /// Commits may have gone unannounced: every inbox should scan the stores' heads.
    pub(crate) fn missed(&self) {
        if !self.has_inboxes.load(Ordering::Acquire) {
            return;
        }
        for inbox in self.inboxes.lock().expect("commit feed lock poisoned").iter() {
            inbox.missed();
        }
    }
}

/// One subscriber's view of the feed on this node.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    /// Only the node that delivers collects commits; the others would hold entries nobody reads.
    active: AtomicBool,
    heads: Mutex<HashMap<String, u64>>,
    rescan: AtomicBool,
    wake: Notify,
}

/// What an inbox collected since it was last taken.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Announced {
    /// Stores and the highest head announced for each.
    pub(crate) heads: HashMap<String, u64>,
    /// Whether commits may have been missed (scan the stores).
    pub(crate) rescan: bool,
}

impl Inbox {
    /// Starts collecting (the delivery task leads from here on); what it scans after this covers the rest.
    pub(crate) fn activate(&self) {
        self.active.store(true, Ordering::Release);
    }

    /// Stops collecting and forgets what was collected.
    pub(crate) fn deactivate(&self) {
        self.active.store(false, Ordering::Release);
        self.heads.lock().expect("inbox lock poisoned").clear();
        self.rescan.store(false, Ordering::Release);
    }

    /// Resolves once something was announced since the last [`Inbox::take`] (or at once if it already was).
    pub(crate) async fn changed(&self) {
        self.wake.notified().await;
    }

    /// Everything announced so far, leaving the inbox empty.
    pub(crate) fn take(&self) -> Announced {
        let heads = std::mem::take(&mut *self.heads.lock().expect("inbox lock poisoned"));
        Announced { heads, rescan: self.rescan.swap(false, Ordering::AcqRel) }
    }

    fn committed(&self, store_id: &str, head: u64) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        {
            let mut heads = self.heads.lock().expect("inbox lock poisoned");
            match heads.get_mut(store_id) {
                Some(known) => *known = (*known).max(head),
                None => {
                    heads.insert(store_id.to_owned(), head);
                }
            }
        }
        self.wake.notify_one();
    }

    fn missed(&self) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        self.rescan.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inboxes_collect_the_highest_head_once_active() {
        let feed = CommitFeed::default();
        feed.committed("ignored", 1);
        let inbox = feed.subscribe();
        feed.committed("before-activation", 3);
        assert_eq!(inbox.take(), Announced::default(), "an inactive inbox collects nothing");
        inbox.activate();
        feed.committed("a", 2);
        feed.committed("a", 5);
        feed.committed("a", 4);
        feed.committed("b", 1);
        inbox.changed().await;
        let announced = inbox.take();
        assert_eq!(announced.heads, HashMap::from([("a".into(), 5), ("b".into(), 1)]));
        assert!(!announced.rescan);
        feed.missed();
        inbox.changed().await;
        assert!(inbox.take().rescan);
        feed.committed("c", 1);
        inbox.deactivate();
        assert_eq!(inbox.take(), Announced::default(), "deactivation forgets");
    }
}
