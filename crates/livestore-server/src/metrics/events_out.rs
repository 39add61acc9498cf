//! Metrics of the delivery of committed events (`events_out`), per subscriber (`events_url` is `webhook`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Metrics;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubscriberLabels {
    subscriber: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryFailureLabels {
    subscriber: String,
    kind: &'static str,
}

/// The delivery of committed events, per subscriber.
#[derive(Debug, Default)]
pub(crate) struct EventsOutMetrics {
    delivered_events: Family<SubscriberLabels, Counter>,
    delivered_batches: Family<SubscriberLabels, Counter>,
    failures: Family<DeliveryFailureLabels, Counter>,
    lag_events: Family<SubscriberLabels, Gauge>,
    stores_behind: Family<SubscriberLabels, Gauge>,
    leader: Family<SubscriberLabels, Gauge>,
}

impl EventsOutMetrics {
    /// The families, registered in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = EventsOutMetrics::default();
        registry.register(
            "events_out_delivered_events",
            "Committed events a subscriber acknowledged (each counted once, when its cursor moved past it)",
            metrics.delivered_events.clone(),
        );
        registry.register(
            "events_out_delivered_batches",
            "Batches of committed events a subscriber acknowledged",
            metrics.delivered_batches.clone(),
        );
        registry.register(
            "events_out_failures",
            "Failed delivery attempts of committed events, by subscriber and kind (each is retried)",
            metrics.failures.clone(),
        );
        registry.register(
            "events_out_lag_events",
            "Committed events not yet acknowledged by the subscriber (reported by the node that delivers)",
            metrics.lag_events.clone(),
        );
        registry.register(
            "events_out_stores_behind",
            "Stores with committed events the subscriber has not acknowledged (on the node that delivers)",
            metrics.stores_behind.clone(),
        );
        registry.register(
            "events_out_leader",
            "1 while this node delivers the subscriber's events (on Postgres, one node at a time)",
            metrics.leader.clone(),
        );
        metrics
    }
}

impl Metrics {
    /// A subscriber acknowledged a batch of `events` committed events.
    pub(crate) fn events_delivered(&self, subscriber: &str, events: usize) {
        let labels = SubscriberLabels { subscriber: subscriber.to_owned() };
        self.events_out.delivered_events.get_or_create(&labels).inc_by(events as u64);
        self.events_out.delivered_batches.get_or_create(&labels).inc();
    }

    /// A delivery attempt failed.
    pub(crate) fn delivery_failed(&self, subscriber: &str, kind: crate::kinds::FailureKind) {
        let labels =
            DeliveryFailureLabels { subscriber: subscriber.to_owned(), kind: kind.label() };
        self.events_out.failures.get_or_create(&labels).inc();
    }

    /// How far behind a subscriber is, as its delivering node sees it.
    pub(crate) fn delivery_backlog(&self, subscriber: &str, lag_events: u64, stores_behind: usize) {
        let labels = SubscriberLabels { subscriber: subscriber.to_owned() };
        self.events_out
            .lag_events
            .get_or_create(&labels)
            .set(i64::try_from(lag_events).unwrap_or(i64::MAX));
        self.events_out
            .stores_behind
            .get_or_create(&labels)
            .set(i64::try_from(stores_behind).unwrap_or(i64::MAX));
    }

    /// Whether this node delivers a subscriber's events.
    pub(crate) fn delivery_leader(&self, subscriber: &str, leader: bool) {
        let labels = SubscriberLabels { subscriber: subscriber.to_owned() };
        self.events_out.leader.get_or_create(&labels).set(i64::from(leader));
    }
}
