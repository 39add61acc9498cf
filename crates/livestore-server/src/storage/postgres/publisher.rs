//! Per-store publishers: the one path by which committed events reach a store's hub on this node.
//!
//! A node learns that a store moved in two ways: its own writer committed a batch (and holds the events), or a
//! notification says another node committed up to some head. Both only raise the publisher's `target`. The
//! publisher then moves the hub from `hub.head` to `target` in order: a local batch that starts at `hub.head + 1`
//! is published straight from memory, anything else is read from the table first. Only one catch-up task runs per
//! store, and every publish happens under the publisher's lock, so `StoreHub::publish` sees contiguous batches in
//! commit order and each event once, however local commits and notifications interleave (a node also hears its
//! own notifications; they find the work done). A local push is answered once its events are on the hub.
//!
//! The [`Registry`] holds the publishers of the stores opened on this node and the node's availability. Losing
//! the database closes them all together with every hub; nothing is reopened until the database is back.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::Shared;
use crate::error::ServerError;
use crate::hub::{Hubs, StoreHub};
use crate::metrics::Metrics;
use crate::storage::{AppendOutcome, ReadLimit, StoreLog, StoredEvent};

/// Events and bytes read per catch-up round trip (each read becomes one live batch).
const CATCH_UP_READ_LIMIT: ReadLimit = ReadLimit { events: 2_000, bytes: 8 * 1024 * 1024 };
/// Catch-up reads that fail in a row before the store is closed on this node (its clients reconnect).
const CATCH_UP_ATTEMPTS: u32 = 6;

/// Where a committed push's reply goes once its events are published.
pub(super) type Reply = oneshot::Sender<Result<AppendOutcome, ServerError>>;

/// The publishers of this node and whether it serves at all.
#[derive(Debug)]
pub(super) struct Registry {
    hubs: Arc<Hubs>,
    metrics: Arc<Metrics>,
    state: Mutex<RegistryState>,
}

#[derive(Debug)]
struct RegistryState {
    available: bool,
    publishers: HashMap<i64, Arc<Publisher>>,
}

impl Registry {
    pub(super) fn new(hubs: Arc<Hubs>, metrics: Arc<Metrics>) -> Self {
        metrics.database_available.set(0);
        Registry {
            hubs,
            metrics,
            state: Mutex::new(RegistryState { available: false, publishers: HashMap::new() }),
        }
    }

    pub(super) fn is_available(&self) -> bool {
        self.state.lock().expect("registry lock poisoned").available
    }

    /// The database is reachable and this node hears every commit again: serve.
    pub(super) fn set_available(&self) {
        self.state.lock().expect("registry lock poisoned").available = true;
        self.metrics.database_available.set(1);
    }

    /// The database went away: stop serving and close every store, so that nothing stale is ever sent.
    pub(super) fn set_unavailable(&self) {
        let publishers: Vec<Arc<Publisher>> = {
            let mut state = self.state.lock().expect("registry lock poisoned");
            state.available = false;
            state.publishers.drain().map(|(_, publisher)| publisher).collect()
        };
        self.metrics.database_available.set(0);
        for publisher in &publishers {
            publisher.close();
        }
        let closed = self.hubs.close_all(&crate::outbox::CloseReason::DatabaseUnavailable);
        self.metrics.stores_open.set(0);
        tracing::warn!(
            target: "livestore_server::_events::database_lost",
            stores = publishers.len(),
            subscribers = closed,
            "lost the database: closed every live pull; refusing sync requests until it is back"
        );
    }

    /// The publisher of a store, registered (not yet attached to a hub) if this node has not opened it.
    pub(super) fn register(
        &self,
        store_key: i64,
        store_id: &str,
    ) -> Result<Arc<Publisher>, ServerError> {
        let mut state = self.state.lock().expect("registry lock poisoned");
        if !state.available {
            return Err(ServerError::StorageUnavailable);
        }
        Ok(state
            .publishers
            .entry(store_key)
            .or_insert_with(|| {
                Arc::new(Publisher {
                    store_key,
                    store_id: store_id.to_owned(),
                    hubs: self.hubs.clone(),
                    metrics: self.metrics.clone(),
                    state: Mutex::new(PublisherState {
                        hub: None,
                        target: 0,
                        local: BTreeMap::new(),
                        running: false,
                        closed: false,
                    }),
                })
            })
            .clone())
    }

    fn get(&self, store_key: i64) -> Option<Arc<Publisher>> {
        self.state.lock().expect("registry lock poisoned").publishers.get(&store_key).cloned()
    }

    fn remove(&self, publisher: &Arc<Publisher>) {
        let mut state = self.state.lock().expect("registry lock poisoned");
        if state
            .publishers
            .get(&publisher.store_key)
            .is_some_and(|known| Arc::ptr_eq(known, publisher))
        {
            state.publishers.remove(&publisher.store_key);
        }
    }

    /// Another node (or this one) committed `store_key` up to `head`.
    pub(super) fn notified(shared: &Arc<Shared>, store_key: i64, head: u64) {
        if let Some(publisher) = shared.registry.get(store_key) {
            publisher.advance(shared, head, None);
        }
    }

    /// This node's writer committed `events`; `reply` is answered once they are on the hub (at once when the
    /// store has no hub here: nobody on this node listens, and a later open reads the head from the database).
    pub(super) fn committed(
        shared: &Arc<Shared>,
        store_key: i64,
        events: Vec<StoredEvent>,
        reply: Reply,
    ) {
        let head = events.last().map_or(0, |event| event.seq_num);
        match shared.registry.get(store_key) {
            Some(publisher) => publisher.advance(shared, head, Some(LocalCommit { events, reply })),
            None => {
                let _ = reply.send(Ok(AppendOutcome::Appended { head }));
            }
        }
    }
}

/// One store's path to its hub on this node.
#[derive(Debug)]
pub(super) struct Publisher {
    store_key: i64,
    store_id: String,
    hubs: Arc<Hubs>,
    metrics: Arc<Metrics>,
    state: Mutex<PublisherState>,
}

#[derive(Debug)]
struct PublisherState {
    /// Set once the store is opened; until then only `target` moves.
    hub: Option<Arc<StoreHub>>,
    /// The highest head known to be committed.
    target: u64,
    /// This node's committed batches not yet on the hub, by first seqNum.
    local: BTreeMap<u64, LocalCommit>,
    /// A catch-up task is running; it alone publishes until it ends.
    running: bool,
    /// The store was closed on this node (database lost or unreadable); nothing is published any more.
    closed: bool,
}

#[derive(Debug)]
pub(super) struct LocalCommit {
    events: Vec<StoredEvent>,
    reply: Reply,
}

impl LocalCommit {
    fn first(&self) -> u64 {
        self.events.first().expect("a committed batch is non-empty").seq_num
    }

    fn last(&self) -> u64 {
        self.events.last().expect("a committed batch is non-empty").seq_num
    }

    fn answer(self) {
        let head = self.last();
        let _ = self.reply.send(Ok(AppendOutcome::Appended { head }));
    }
}

impl Publisher {
    /// The store's identity and head on this node, once attached.
    pub(super) fn log(&self) -> Option<StoreLog> {
        let state = self.state.lock().expect("publisher lock poisoned");
        state
            .hub
            .as_ref()
            .map(|hub| StoreLog { backend_id: hub.backend_id().clone(), head: hub.head() })
    }

    /// Creates the hub at `head` (read from the database after registration) and catches up to what was notified
    /// meanwhile.
    pub(super) fn attach(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        backend_id: &Arc<str>,
        head: u64,
    ) -> Result<StoreLog, ServerError> {
        let mut state = self.state.lock().expect("publisher lock poisoned");
        if state.closed {
            return Err(ServerError::StorageUnavailable);
        }
        let hub = state
            .hub
            .get_or_insert_with(|| self.hubs.ensure(&self.store_id, backend_id, head))
            .clone();
        self.metrics.stores_open.set(self.hubs.store_count() as i64);
        state.target = state.target.max(head);
        self.wake_if_behind(&mut state, &hub, shared);
        Ok(StoreLog { backend_id: hub.backend_id().clone(), head: hub.head() })
    }

    /// Raises the target (and queues a local batch); publishes at once when the batch continues the hub and no
    /// catch-up runs, otherwise makes sure a catch-up task runs.
    fn advance(self: &Arc<Self>, shared: &Arc<Shared>, head: u64, local: Option<LocalCommit>) {
        let mut state = self.state.lock().expect("publisher lock poisoned");
        state.target = state.target.max(head);
        let Some(hub) = state.hub.clone().filter(|_| !state.closed) else {
            // Not attached (the head read at attach covers it) or closed: durable either way.
            drop(state);
            if let Some(local) = local {
                local.answer();
            }
            return;
        };
        if let Some(local) = local {
            if local.last() <= hub.head() {
                drop(state);
                local.answer();
                return;
            }
            if !state.running && local.first() <= hub.head() + 1 {
                publish_tail(&hub, &local.events);
                self.wake_if_behind(&mut state, &hub, shared);
                drop(state);
                local.answer();
                return;
            }
            state.local.insert(local.first(), local);
        }
        self.wake_if_behind(&mut state, &hub, shared);
    }

    fn wake_if_behind(
        self: &Arc<Self>,
        state: &mut PublisherState,
        hub: &Arc<StoreHub>,
        shared: &Arc<Shared>,
    ) {
        if !state.running && hub.head() < state.target {
            state.running = true;
            tokio::spawn(self.clone().catch_up(shared.clone(), hub.clone()));
        }
    }

    /// Moves the hub to the target: local batches from memory, the rest from the table.
    async fn catch_up(self: Arc<Self>, shared: Arc<Shared>, hub: Arc<StoreHub>) {
        let mut failures = 0;
        loop {
            let (after, up_to) = {
                let mut state = self.state.lock().expect("publisher lock poisoned");
                if state.closed {
                    state.running = false;
                    return;
                }
                self.publish_local(&mut state, &hub);
                let head = hub.head();
                if head >= state.target {
                    state.running = false;
                    return;
                }
                let next_local = state.local.keys().next().map_or(u64::MAX, |first| first - 1);
                (head, state.target.min(next_local))
            };
            let read =
                shared.readers.read_events(self.store_key, after, up_to, CATCH_UP_READ_LIMIT);
            let problem = match read.await {
                Ok(events) if is_continuation(&events, after) => {
                    let mut state = self.state.lock().expect("publisher lock poisoned");
                    if state.closed {
                        state.running = false;
                        return;
                    }
                    hub.publish_events(&events);
                    self.metrics.catch_up_events.inc_by(events.len() as u64);
                    failures = 0;
                    continue;
                }
                Ok(events) => format!(
                    "expected events after {after} up to {up_to}, the table returned {} starting at {:?}",
                    events.len(),
                    events.first().map(|event| event.seq_num)
                ),
                Err(error) => error.to_string(),
            };
            failures += 1;
            if failures >= CATCH_UP_ATTEMPTS {
                tracing::error!(store_id = %self.store_id, problem, "cannot catch up; closing the store on this node");
                shared.registry.remove(&self);
                self.close();
                self.hubs
                    .close_store(&self.store_id, &crate::outbox::CloseReason::StoreLogUnavailable);
                self.metrics.stores_open.set(self.hubs.store_count() as i64);
                return;
            }
            tracing::warn!(store_id = %self.store_id, problem, failures, "catch-up read failed; retrying");
            tokio::time::sleep(Duration::from_millis(50 << failures)).await;
        }
    }

    /// Publishes queued local batches that continue the hub (the part above its head, when a table read already
    /// covered the start of one); answers them.
    fn publish_local(&self, state: &mut PublisherState, hub: &StoreHub) {
        while let Some(entry) = state.local.first_entry() {
            if *entry.key() > hub.head() + 1 {
                return;
            }
            let local = entry.remove();
            publish_tail(hub, &local.events);
            local.answer();
        }
    }

    /// Stops publishing for good; queued local batches are durable, so their pushes are answered as appended.
    fn close(&self) {
        let local = {
            let mut state = self.state.lock().expect("publisher lock poisoned");
            state.closed = true;
            state.hub = None;
            std::mem::take(&mut state.local)
        };
        for (_, commit) in local {
            commit.answer();
        }
    }
}

/// Publishes the events of a batch above the hub's head.
fn publish_tail(hub: &StoreHub, events: &[StoredEvent]) {
    let head = hub.head();
    let start = events.partition_point(|event| event.seq_num <= head);
    hub.publish_events(&events[start..]);
}

/// Whether `events` starts right after `after` and has no holes.
fn is_continuation(events: &[StoredEvent], after: u64) -> bool {
    !events.is_empty()
        && events.iter().enumerate().all(|(index, event)| event.seq_num == after + 1 + index as u64)
}
