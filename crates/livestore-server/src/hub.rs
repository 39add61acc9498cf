//! Per-store fan-out of accepted batches to live pull subscriptions.
//!
//! A [`StoreHub`] holds a store's committed head and its subscribers under one lock. Only the storage backend
//! creates hubs and publishes to them (SQLite: its writer thread; Postgres: the store's publisher on each node), in
//! commit order, in contiguous batches, and only after the batch is durable. A subscription
//! registers under the same lock and learns the head at that instant: every event up to that head is in the
//! database (the backlog), every later event is buffered in the subscriber's entry until the backlog has been sent.
//! Then [`StoreHub::go_live`] flushes the buffer and from there on `publish` hands each batch straight to the
//! connection's outbound queue. Because every step runs under the hub lock and in commit order, delivery is
//! exactly-once and gap-free without re-reading the database per push, and a live batch costs one queue push per
//! subscriber — no extra task hop on the fan-out path.
//!
//! A subscriber whose connection queue is full (in frames or in bytes, see `outbox`) is dropped and its connection
//! told to close (1013), so the client reconnects and resumes from its cursor instead of silently missing events. A
//! storage backend that loses its database closes every hub the same way ([`Hubs::close_all`]).
//!
//! A batch is paginated once and shared by every subscriber; its bytes are reserved in the memory budget once, when
//! it is built, and given back when the last connection has written it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use livestore_proto::page::{StoredEventRef, paginate};

use crate::budget::MemoryBudget;
use crate::commit_feed::CommitFeed;
use crate::metrics::{LimitHit, Metrics};
use crate::outbox::{CloseReason, CloseSignal, LiveBatch, Outbound, Outbox};
use crate::stored::StoredEvent;

/// How many published batches may wait for a subscriber that is still sending its backlog.
pub(crate) const BACKLOG_BUFFER_BATCHES: usize = 4096;

/// All hubs of this process, by store id.
#[derive(Debug)]
pub(crate) struct Hubs {
    stores: Mutex<HashMap<String, Arc<StoreHub>>>,
    budget: Arc<MemoryBudget>,
    metrics: Arc<Metrics>,
    /// Where backends announce durable heads to the delivery of committed events (`events_out`).
    commits: Arc<CommitFeed>,
}

impl Hubs {
    /// Hubs whose live batches reserve their bytes in `budget`.
    pub(crate) fn new(budget: Arc<MemoryBudget>, metrics: Arc<Metrics>) -> Self {
        Hubs {
            stores: Mutex::new(HashMap::new()),
            budget,
            metrics,
            commits: Arc::new(CommitFeed::default()),
        }
    }

    /// The feed of durable heads: backends announce every commit here (after it is durable), whether or not
    /// anyone pulls the store.
    pub(crate) fn commits(&self) -> &Arc<CommitFeed> {
        &self.commits
    }

    /// Hubs with a budget of their own that nothing exhausts (storage opened without a server, tests).
    pub(crate) fn standalone() -> Self {
        let metrics = Arc::new(Metrics::new());
        Hubs::new(MemoryBudget::unlimited(metrics.clone()), metrics)
    }

    /// Returns the hub of `store_id`, creating it with the writer's authoritative head. Writer only.
    pub(crate) fn ensure(&self, store_id: &str, backend_id: &Arc<str>, head: u64) -> Arc<StoreHub> {
        let mut stores = self.stores.lock().expect("hub registry lock poisoned");
        stores
            .entry(store_id.to_owned())
            .or_insert_with(|| {
                Arc::new(StoreHub {
                    backend_id: backend_id.clone(),
                    budget: self.budget.clone(),
                    metrics: self.metrics.clone(),
                    state: Mutex::new(HubState {
                        head,
                        subscribers: HashMap::new(),
                        next_subscriber_id: 0,
                    }),
                })
            })
            .clone()
    }

    /// The hub of `store_id`, if the writer has opened the store in this process.
    pub(crate) fn get(&self, store_id: &str) -> Option<Arc<StoreHub>> {
        self.stores.lock().expect("hub registry lock poisoned").get(store_id).cloned()
    }

    /// Number of stores opened in this process.
    pub(crate) fn store_count(&self) -> usize {
        self.stores.lock().expect("hub registry lock poisoned").len()
    }

    /// Forgets every hub and closes the connection of every subscriber (1013, so clients reconnect, possibly to
    /// another node). For a storage backend that can no longer vouch for the heads it published: after this, the
    /// next pull of a store opens it afresh from the database. Returns how many subscribers were closed.
    pub(crate) fn close_all(&self, reason: &CloseReason) -> usize {
        let hubs: Vec<Arc<StoreHub>> = {
            let mut stores = self.stores.lock().expect("hub registry lock poisoned");
            stores.drain().map(|(_, hub)| hub).collect()
        };
        hubs.iter().map(|hub| hub.close_subscribers(reason)).sum()
    }

    /// Like [`Hubs::close_all`], for one store.
    pub(crate) fn close_store(&self, store_id: &str, reason: &CloseReason) -> usize {
        let hub = self.stores.lock().expect("hub registry lock poisoned").remove(store_id);
        hub.map_or(0, |hub| hub.close_subscribers(reason))
    }
}

/// Where a subscriber's live batches go: its connection's queue, under its request id.
#[derive(Debug, Clone)]
pub(crate) struct SubscriberTarget {
    pub(crate) request_id: Arc<str>,
    pub(crate) out: Outbox,
    /// Makes the connection close with 1013 when this subscriber cannot keep up.
    pub(crate) close: CloseSignal,
}

#[derive(Debug)]
enum Phase {
    /// The backlog is being sent; live batches wait here.
    Backlog(Vec<Arc<LiveBatch>>),
    /// Live batches go straight to the connection.
    Live { last_sent: u64 },
}

#[derive(Debug)]
struct Subscriber {
    target: SubscriberTarget,
    phase: Phase,
}

/// One store's head and live subscribers.
#[derive(Debug)]
pub(crate) struct StoreHub {
    backend_id: Arc<str>,
    budget: Arc<MemoryBudget>,
    metrics: Arc<Metrics>,
    state: Mutex<HubState>,
}

#[derive(Debug)]
struct HubState {
    head: u64,
    subscribers: HashMap<u64, Subscriber>,
    next_subscriber_id: u64,
}

/// The subscriber could not keep up and was dropped; its connection is closing.
#[derive(Debug)]
pub(crate) struct Lagging;

impl StoreHub {
    /// The store's `backendId`.
    pub(crate) fn backend_id(&self) -> &Arc<str> {
        &self.backend_id
    }

    /// The committed head.
    pub(crate) fn head(&self) -> u64 {
        self.state.lock().expect("hub lock poisoned").head
    }

    /// Whether anyone listens. (Writers must not decide on pagination with it: see [`StoreHub::publish_with`].)
    #[cfg(test)]
    pub(crate) fn has_subscribers(&self) -> bool {
        !self.state.lock().expect("hub lock poisoned").subscribers.is_empty()
    }

    /// Registers a subscriber in backlog phase; batches after the returned head are kept for it.
    pub(crate) fn subscribe(self: &Arc<Self>, target: SubscriberTarget) -> Subscription {
        let mut state = self.state.lock().expect("hub lock poisoned");
        let id = state.next_subscriber_id;
        state.next_subscriber_id += 1;
        state.subscribers.insert(id, Subscriber { target, phase: Phase::Backlog(Vec::new()) });
        Subscription { hub: self.clone(), id, head_at_subscribe: state.head }
    }

    /// Ends the backlog phase: sends what was buffered after `sent_up_to`, then delivers live.
    pub(crate) fn go_live(
        &self,
        subscription: &Subscription,
        sent_up_to: u64,
    ) -> Result<(), Lagging> {
        let mut state = self.state.lock().expect("hub lock poisoned");
        let Some(subscriber) = state.subscribers.get_mut(&subscription.id) else {
            return Err(Lagging);
        };
        let Phase::Backlog(buffered) =
            std::mem::replace(&mut subscriber.phase, Phase::Live { last_sent: sent_up_to })
        else {
            return Ok(());
        };
        for batch in buffered {
            if deliver(subscriber, &batch).is_err() {
                let subscriber = state.subscribers.remove(&subscription.id).expect("present above");
                self.metrics.limit_hit(LimitHit::OutboundQueue);
                subscriber.target.close.close(CloseReason::Lagging);
                return Err(Lagging);
            }
        }
        Ok(())
    }

    /// Advances the head and hands the batch to every subscriber. Writer only, in commit order. (Writers use
    /// [`StoreHub::publish_with`]; this form lets tests script interleavings.)
    #[cfg(test)]
    pub(crate) fn publish(&self, last_seq_num: u64, batch: Option<Arc<LiveBatch>>) {
        let mut state = self.state.lock().expect("hub lock poisoned");
        self.publish_locked(&mut state, last_seq_num, batch);
    }

    /// Like [`StoreHub::publish`], building the batch only if someone listens, decided under the hub lock.
    ///
    /// Checking `has_subscribers` first and publishing after is racy: a pull that subscribes in between learns the
    /// old head, reads its backlog up to it, and would never get this batch (found by the chaos test: a client
    /// connected, nothing pending, stuck below the head until the next push revealed the gap).
    pub(crate) fn publish_with(&self, last_seq_num: u64, build: impl FnOnce() -> Arc<LiveBatch>) {
        let mut state = self.state.lock().expect("hub lock poisoned");
        let batch = (!state.subscribers.is_empty()).then(build);
        self.publish_locked(&mut state, last_seq_num, batch);
    }

    fn publish_locked(
        &self,
        state: &mut HubState,
        last_seq_num: u64,
        batch: Option<Arc<LiveBatch>>,
    ) {
        state.head = last_seq_num;
        let Some(batch) = batch else {
            // Without the batch, whoever listens now cannot be served gap-free: make them resume from their cursor.
            for (_, subscriber) in state.subscribers.drain() {
                subscriber.target.close.close(CloseReason::Lagging);
            }
            return;
        };
        state.subscribers.retain(|_, subscriber| {
            let kept = match &mut subscriber.phase {
                Phase::Backlog(buffered) if buffered.len() < BACKLOG_BUFFER_BATCHES => {
                    buffered.push(batch.clone());
                    true
                }
                Phase::Backlog(_) => false,
                Phase::Live { .. } => deliver(subscriber, &batch).is_ok(),
            };
            if !kept {
                self.metrics.limit_hit(LimitHit::OutboundQueue);
                subscriber.target.close.close(CloseReason::Lagging);
            }
            kept
        });
    }

    /// Publishes stored events read back or just committed: `events` must continue the head without a gap.
    /// Pages are built only when someone listens.
    pub(crate) fn publish_events(&self, events: &[StoredEvent]) {
        let (Some(first), Some(last)) = (events.first(), events.last()) else { return };
        self.publish_with(last.seq_num, || {
            let pages = paginate(
                &self.backend_id,
                events.iter().map(|event| StoredEventRef {
                    seq_num: event.seq_num,
                    encoded_json: &event.encoded_json,
                    created_at: &event.created_at,
                }),
            );
            Arc::new(LiveBatch::new(first.seq_num, last.seq_num, pages, &self.budget))
        });
    }

    /// Drops every subscriber, asking each connection to close; returns how many there were.
    fn close_subscribers(&self, reason: &CloseReason) -> usize {
        let subscribers: Vec<Subscriber> = {
            let mut state = self.state.lock().expect("hub lock poisoned");
            state.subscribers.drain().map(|(_, subscriber)| subscriber).collect()
        };
        for subscriber in &subscribers {
            if subscriber.target.out.try_send(Outbound::Close(reason.clone())).is_err() {
                // A full queue: the close signal closes the connection ahead of its queued frames.
                subscriber.target.close.close(reason.clone());
            }
        }
        subscribers.len()
    }

    fn unsubscribe(&self, id: u64) {
        self.state.lock().expect("hub lock poisoned").subscribers.remove(&id);
    }
}

/// Queues one batch for a live subscriber, skipping what it already has; a gap or a full queue is an error.
fn deliver(subscriber: &mut Subscriber, batch: &Arc<LiveBatch>) -> Result<(), Lagging> {
    let Phase::Live { last_sent } = &mut subscriber.phase else { return Ok(()) };
    if batch.last_seq_num <= *last_sent {
        return Ok(());
    }
    if batch.first_seq_num != *last_sent + 1 {
        tracing::error!(
            last_sent = *last_sent,
            first = batch.first_seq_num,
            "live batch does not follow the last delivered event; closing so the client resumes"
        );
        return Err(Lagging);
    }
    subscriber
        .target
        .out
        .try_send_live(subscriber.target.request_id.clone(), batch.clone())
        .map_err(|_| Lagging)?;
    *last_sent = batch.last_seq_num;
    Ok(())
}

/// A live pull's registration; dropping it unsubscribes.
#[derive(Debug)]
pub(crate) struct Subscription {
    hub: Arc<StoreHub>,
    id: u64,
    /// Every event up to here is durable and must come from the backlog.
    pub(crate) head_at_subscribe: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: u64, last: u64) -> Arc<LiveBatch> {
        Arc::new(LiveBatch::for_test(first, last, 10))
    }

    fn target(capacity: usize) -> (SubscriberTarget, tokio::sync::mpsc::Receiver<Outbound>) {
        let budget = MemoryBudget::unlimited(Arc::new(Metrics::new()));
        let (out, receiver) = Outbox::new(capacity, Some(1 << 20), budget);
        (
            SubscriberTarget { request_id: Arc::from("1"), out, close: CloseSignal::default() },
            receiver,
        )
    }

    fn received_ranges(receiver: &mut tokio::sync::mpsc::Receiver<Outbound>) -> Vec<(u64, u64)> {
        let mut ranges = Vec::new();
        while let Ok(Outbound::Live { batch, .. }) = receiver.try_recv() {
            ranges.push((batch.first_seq_num, batch.last_seq_num));
        }
        ranges
    }

    #[test]
    fn backlog_then_buffered_then_live_without_duplicates() {
        let hubs = Hubs::standalone();
        let hub = hubs.ensure("s", &Arc::from("b"), 3);
        let (target, mut receiver) = target(16);
        let subscription = hub.subscribe(target);
        assert_eq!(subscription.head_at_subscribe, 3);
        hub.publish(5, Some(batch(4, 5)));
        hub.publish(6, Some(batch(6, 6)));
        assert!(
            received_ranges(&mut receiver).is_empty(),
            "nothing live before the backlog is sent"
        );
        // The backlog reader happened to see event 4 and 5 already (it read up to 5).
        hub.go_live(&subscription, 5).unwrap();
        hub.publish(7, Some(batch(7, 7)));
        assert_eq!(received_ranges(&mut receiver), [(6, 6), (7, 7)]);
    }

    #[test]
    fn a_full_queue_drops_the_subscriber_and_signals_its_connection() {
        let hubs = Hubs::standalone();
        let hub = hubs.ensure("s", &Arc::from("b"), 0);
        let (target, _receiver) = target(1);
        let lagging = target.close.clone();
        let subscription = hub.subscribe(target);
        hub.go_live(&subscription, 0).unwrap();
        hub.publish(1, Some(batch(1, 1)));
        assert!(!lagging.is_requested());
        hub.publish(2, Some(batch(2, 2)));
        assert!(lagging.is_requested());
        assert!(!hub.has_subscribers());
    }

    #[test]
    fn closing_all_hubs_asks_every_subscriber_connection_to_close() {
        let hubs = Hubs::standalone();
        let hub = hubs.ensure("s", &Arc::from("b"), 0);
        let (roomy, mut roomy_receiver) = target(4);
        let (full, _full_receiver) = target(1);
        let full_lagging = full.close.clone();
        let _roomy = hub.subscribe(roomy);
        let full_subscription = hub.subscribe(full);
        hub.go_live(&full_subscription, 0).unwrap();
        hub.publish(1, Some(batch(1, 1)));
        assert_eq!(hubs.close_all(&CloseReason::DatabaseUnavailable), 2);
        assert!(matches!(
            roomy_receiver.try_recv(),
            Ok(Outbound::Close(CloseReason::DatabaseUnavailable))
        ));
        // No room for a Close frame: the close signal closes the connection instead.
        assert!(full_lagging.is_requested());
        assert_eq!(hubs.store_count(), 0);
        assert!(hubs.get("s").is_none());
    }

    #[test]
    fn published_events_continue_the_head() {
        let hubs = Hubs::standalone();
        let hub = hubs.ensure("s", &Arc::from("b"), 2);
        let (target, mut receiver) = target(4);
        let subscription = hub.subscribe(target);
        hub.go_live(&subscription, 2).unwrap();
        let event = |seq_num| StoredEvent {
            seq_num,
            encoded_json: format!(
                r#"{{"name":"v1.E","seqNum":{seq_num},"parentSeqNum":{},"clientId":"c","sessionId":"s"}}"#,
                seq_num - 1
            ),
            created_at: "2026-01-01T00:00:00.000Z".into(),
        };
        hub.publish_events(&[event(3), event(4)]);
        hub.publish_events(&[]);
        assert_eq!(hub.head(), 4);
        assert_eq!(received_ranges(&mut receiver), [(3, 4)]);
    }

    /// Found by the chaos test: a pull that subscribed after the writer saw no subscribers, and before it published
    /// without a batch, stayed below the head until another push came.
    #[test]
    fn a_pull_subscribing_during_a_publish_gets_the_batch_or_reconnects() {
        let hubs = Hubs::standalone();
        let hub = hubs.ensure("s", &Arc::from("b"), 0);
        // The old interleaving: the writer looked (nobody), a pull subscribed, the writer published no batch. The
        // pull cannot be served gap-free, so its connection is told to close and the client resumes.
        let (late, _late_receiver) = target(4);
        let late_lagging = late.close.clone();
        let _late = hub.subscribe(late);
        hub.publish(1, None);
        assert!(late_lagging.is_requested());
        assert!(!hub.has_subscribers());
        // `publish_with` decides under the lock: a subscriber present at publish time gets the batch.
        let (target, mut receiver) = target(4);
        let subscription = hub.subscribe(target);
        assert_eq!(subscription.head_at_subscribe, 1);
        let mut built = false;
        hub.publish_with(2, || {
            built = true;
            batch(2, 2)
        });
        assert!(built);
        hub.go_live(&subscription, 1).unwrap();
        assert_eq!(received_ranges(&mut receiver), [(2, 2)]);
        // And nobody listening means no pagination at all.
        drop(subscription);
        hub.publish_with(3, || panic!("no subscriber, no pages"));
        assert_eq!(hub.head(), 3);
    }

    #[test]
    fn dropping_a_subscription_unsubscribes() {
        let hubs = Hubs::standalone();
        let hub = hubs.ensure("s", &Arc::from("b"), 0);
        let (target, _receiver) = target(1);
        drop(hub.subscribe(target));
        assert!(!hub.has_subscribers());
    }
}
