//! Per-store fan-out of accepted batches to live pull subscriptions.
//!
//! A [`StoreHub`] holds a store's committed head and its subscribers under one lock. Only the storage writer
//! creates hubs and publishes to them, in commit order, and it does so after the batch is durable. A subscription
//! registers under the same lock and learns the head at that instant: every event up to that head is in the
//! database (the backlog), every later event will arrive through its channel. That is what makes delivery
//! exactly-once and gap-free without re-reading the database per push.
//!
//! A subscriber whose channel is full is dropped from the hub; its task sees the closed channel and closes the
//! client's socket, so the client reconnects and resumes from its cursor instead of silently missing events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use livestore_proto::page::Page;
use tokio::sync::mpsc;

/// How many published batches may wait for one slow subscriber before it is disconnected.
pub(crate) const SUBSCRIBER_QUEUE_BATCHES: usize = 1024;

/// One accepted push, paginated once and shared by every subscriber.
#[derive(Debug)]
pub(crate) struct LiveBatch {
    pub(crate) first_seq_num: u64,
    pub(crate) last_seq_num: u64,
    pub(crate) pages: Vec<Page>,
}

/// All hubs of this process, by store id.
#[derive(Debug, Default)]
pub(crate) struct Hubs {
    stores: Mutex<HashMap<String, Arc<StoreHub>>>,
}

impl Hubs {
    /// Returns the hub of `store_id`, creating it with the writer's authoritative head. Writer only.
    pub(crate) fn ensure(&self, store_id: &str, backend_id: &Arc<str>, head: u64) -> Arc<StoreHub> {
        let mut stores = self.stores.lock().expect("hub registry lock poisoned");
        stores
            .entry(store_id.to_owned())
            .or_insert_with(|| {
                Arc::new(StoreHub {
                    backend_id: backend_id.clone(),
                    state: Mutex::new(HubState { head, subscribers: HashMap::new(), next_subscriber_id: 0 }),
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
}

/// One store's head and live subscribers.
#[derive(Debug)]
pub(crate) struct StoreHub {
    backend_id: Arc<str>,
    state: Mutex<HubState>,
}

#[derive(Debug)]
struct HubState {
    head: u64,
    subscribers: HashMap<u64, mpsc::Sender<Arc<LiveBatch>>>,
    next_subscriber_id: u64,
}

impl StoreHub {
    /// The store's `backendId`.
    pub(crate) fn backend_id(&self) -> &Arc<str> {
        &self.backend_id
    }

    /// The committed head.
    pub(crate) fn head(&self) -> u64 {
        self.state.lock().expect("hub lock poisoned").head
    }

    /// Whether anyone listens; the writer skips pagination when nobody does.
    pub(crate) fn has_subscribers(&self) -> bool {
        !self.state.lock().expect("hub lock poisoned").subscribers.is_empty()
    }

    /// Registers a subscriber; batches after the returned head arrive on its channel.
    pub(crate) fn subscribe(self: &Arc<Self>) -> Subscription {
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_QUEUE_BATCHES);
        let mut state = self.state.lock().expect("hub lock poisoned");
        let id = state.next_subscriber_id;
        state.next_subscriber_id += 1;
        state.subscribers.insert(id, sender);
        Subscription { hub: self.clone(), id, head_at_subscribe: state.head, receiver }
    }

    /// Advances the head and hands the batch to every subscriber. Writer only, in commit order.
    pub(crate) fn publish(&self, last_seq_num: u64, batch: Option<Arc<LiveBatch>>) {
        let mut state = self.state.lock().expect("hub lock poisoned");
        state.head = last_seq_num;
        if let Some(batch) = batch {
            // A full or closed channel drops the subscriber; its task then closes the client's socket.
            state.subscribers.retain(|_, sender| sender.try_send(batch.clone()).is_ok());
        }
    }

    fn unsubscribe(&self, id: u64) {
        self.state.lock().expect("hub lock poisoned").subscribers.remove(&id);
    }
}

/// A live pull's registration; dropping it unsubscribes.
#[derive(Debug)]
pub(crate) struct Subscription {
    hub: Arc<StoreHub>,
    id: u64,
    /// Every event up to here is durable and must come from the backlog.
    pub(crate) head_at_subscribe: u64,
    /// Batches after `head_at_subscribe`, in order. `None` means this subscriber was dropped for lagging.
    pub(crate) receiver: mpsc::Receiver<Arc<LiveBatch>>,
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
        Arc::new(LiveBatch { first_seq_num: first, last_seq_num: last, pages: Vec::new() })
    }

    #[test]
    fn subscribers_see_batches_after_their_head_only() {
        let hubs = Hubs::default();
        let hub = hubs.ensure("s", &Arc::from("b"), 3);
        hub.publish(4, Some(batch(4, 4)));
        let mut subscription = hub.subscribe();
        assert_eq!(subscription.head_at_subscribe, 4);
        hub.publish(6, Some(batch(5, 6)));
        let received = subscription.receiver.try_recv().unwrap();
        assert_eq!((received.first_seq_num, received.last_seq_num), (5, 6));
        assert!(subscription.receiver.try_recv().is_err());
    }

    #[test]
    fn lagging_subscribers_are_dropped_and_dropping_unsubscribes() {
        let hubs = Hubs::default();
        let hub = hubs.ensure("s", &Arc::from("b"), 0);
        let mut lagging = hub.subscribe();
        for seq in 1..=(SUBSCRIBER_QUEUE_BATCHES as u64 + 1) {
            hub.publish(seq, Some(batch(seq, seq)));
        }
        assert!(!hub.has_subscribers());
        let mut received = 0;
        while let Ok(_batch) = lagging.receiver.try_recv() {
            received += 1;
        }
        assert_eq!(received, SUBSCRIBER_QUEUE_BATCHES);
        assert!(matches!(lagging.receiver.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
        let other = hub.subscribe();
        drop(other);
        assert!(!hub.has_subscribers());
    }
}
