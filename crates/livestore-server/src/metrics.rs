//! Prometheus metrics served at `/metrics`: connections, stores, appended events, rejected pushes, pull latency.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Why a push was not appended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) enum RejectReason {
    ServerAhead,
    BackendIdMismatch,
    InvalidBatch,
    Unauthorized,
    StorageError,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RejectLabels {
    reason: &'static str,
}

/// The server's metrics; cheap to update from any task or thread.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) websocket_connections: Gauge,
    pub(crate) live_subscriptions: Gauge,
    pub(crate) stores_open: Gauge,
    pub(crate) events_appended: Counter,
    pub(crate) http_requests: Counter,
    pushes_rejected: Family<RejectLabels, Counter>,
    pub(crate) pull_backlog_seconds: Histogram,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("livestore");
        let websocket_connections = Gauge::default();
        registry.register(
            "websocket_connections",
            "Open WebSocket sync connections",
            websocket_connections.clone(),
        );
        let live_subscriptions = Gauge::default();
        registry.register(
            "live_subscriptions",
            "Live pull subscriptions",
            live_subscriptions.clone(),
        );
        let stores_open = Gauge::default();
        registry.register("stores_open", "Stores opened by this process", stores_open.clone());
        let events_appended = Counter::default();
        registry.register("events_appended", "Events durably appended", events_appended.clone());
        let http_requests = Counter::default();
        registry.register(
            "http_sync_requests",
            "HTTP-transport sync requests",
            http_requests.clone(),
        );
        let pushes_rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "pushes_rejected",
            "Pushes not appended, by reason",
            pushes_rejected.clone(),
        );
        let pull_backlog_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "pull_backlog_seconds",
            "Time from a pull request to its last backlog page",
            pull_backlog_seconds.clone(),
        );
        Metrics {
            registry,
            websocket_connections,
            live_subscriptions,
            stores_open,
            events_appended,
            http_requests,
            pushes_rejected,
            pull_backlog_seconds,
        }
    }

    pub(crate) fn push_rejected(&self, reason: RejectReason) {
        let reason = match reason {
            RejectReason::ServerAhead => "server_ahead",
            RejectReason::BackendIdMismatch => "backend_id_mismatch",
            RejectReason::InvalidBatch => "invalid_batch",
            RejectReason::Unauthorized => "unauthorized",
            RejectReason::StorageError => "storage_error",
        };
        self.pushes_rejected.get_or_create(&RejectLabels { reason }).inc();
    }

    /// The OpenMetrics text exposition.
    pub(crate) fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("encoding metrics into a String cannot fail");
        text
    }
}
