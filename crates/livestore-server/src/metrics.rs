//! Prometheus metrics served at `/metrics`: connections, stores, appended events, rejected pushes, pull latency,
//! the memory budget and every limit a client ran into, what the embedded object store stored, how fetching the
//! identity provider's signing keys (JWKS) goes, the calls to the application's hooks over HTTP (outcome and
//! latency), and how the delivery of committed events to their subscribers keeps up (`metrics/events_out`).

mod events_out;

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
    /// The memory budget had no room for the push; the client retries.
    Overloaded,
    /// The push hook refused it, or could not decide.
    Hook,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RejectLabels {
    reason: &'static str,
}

/// What could not get room in the memory budget (and was refused: 503, close 1013, a retryable push error).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) enum ShedResource {
    /// A request body (sync HTTP transport, signer, object store upload).
    RequestBody,
    /// A WebSocket message being received.
    WebSocketMessage,
    /// A push waiting for its commit.
    Push,
    /// A backlog page waiting for the client to read it.
    Outbound,
}

impl ShedResource {
    fn label(self) -> &'static str {
        match self {
            ShedResource::RequestBody => "request_body",
            ShedResource::WebSocketMessage => "websocket_message",
            ShedResource::Push => "push",
            ShedResource::Outbound => "outbound",
        }
    }
}

/// A per-connection bound a client ran into.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) enum LimitHit {
    /// Request headers did not arrive within `header_read_timeout_seconds` (connection closed).
    HeaderTimeout,
    /// A request body did not arrive in time (408, or the connection closed).
    BodyTimeout,
    /// A request body over its size limit (413).
    BodyTooLarge,
    /// A started WebSocket message did not complete in time (close 1008).
    MessageTimeout,
    /// A WebSocket message over `max_message_bytes` (close 1009).
    MessageTooLarge,
    /// A client left written data unread for `write_timeout_seconds` (connection closed).
    WriteTimeout,
    /// A subscriber's outbound queue was full in bytes or frames (close 1013).
    OutboundQueue,
    /// One pull more than `max_pulls_per_connection` (close 1008).
    TooManyPulls,
    /// A connection's credential expired while it was open (close 1008, pushes refused).
    CredentialExpired,
    /// A browser request from an origin that may not call this server (403).
    Origin,
    /// A request for a `Host` that is not this server's loopback name, without auth (403; DNS rebinding).
    Host,
}

impl LimitHit {
    fn label(self) -> &'static str {
        match self {
            LimitHit::HeaderTimeout => "header_timeout",
            LimitHit::BodyTimeout => "body_timeout",
            LimitHit::BodyTooLarge => "body_too_large",
            LimitHit::MessageTimeout => "message_timeout",
            LimitHit::MessageTooLarge => "message_too_large",
            LimitHit::WriteTimeout => "write_timeout",
            LimitHit::OutboundQueue => "outbound_queue",
            LimitHit::TooManyPulls => "too_many_pulls",
            LimitHit::CredentialExpired => "credential_expired",
            LimitHit::Origin => "origin",
            LimitHit::Host => "host",
        }
    }
}

/// How one fetch of the JWKS document ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) enum JwksFetchOutcome {
    /// A document with at least one usable key; the key set was replaced.
    Ok,
    /// No answer: connection refused, DNS, TLS, timeout, or the body broke off.
    Unreachable,
    /// An answer with a status other than 200 (redirects are not followed).
    BadStatus,
    /// A 200 whose body is not a usable JWKS: too large, not JSON, too deep, no `keys` array, no usable key.
    BadDocument,
}

impl JwksFetchOutcome {
    fn label(self) -> &'static str {
        match self {
            JwksFetchOutcome::Ok => "ok",
            JwksFetchOutcome::Unreachable => "unreachable",
            JwksFetchOutcome::BadStatus => "bad_status",
            JwksFetchOutcome::BadDocument => "bad_document",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The JWKS cache's metrics. The default is a set not registered anywhere (an authenticator built without a
/// server); [`Metrics`] holds the registered one.
#[derive(Debug, Clone, Default)]
pub(crate) struct JwksMetrics {
    fetches: Family<OutcomeLabels, Counter>,
    keys: Gauge,
}

impl JwksMetrics {
    /// Counts a fetch.
    pub(crate) fn fetched(&self, outcome: JwksFetchOutcome) {
        self.fetches.get_or_create(&OutcomeLabels { outcome: outcome.label() }).inc();
    }

    /// Records how many usable keys the cache holds.
    pub(crate) fn set_keys(&self, count: usize) {
        self.keys.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Fetches counted with `outcome`.
    #[cfg(test)]
    pub(crate) fn fetch_count(&self, outcome: JwksFetchOutcome) -> u64 {
        self.fetches.get_or_create(&OutcomeLabels { outcome: outcome.label() }).get()
    }

    /// The usable-keys gauge.
    #[cfg(test)]
    pub(crate) fn key_count(&self) -> i64 {
        self.keys.get()
    }
}

/// How one call to a hook over HTTP ended (`livestore_hook_calls_total{outcome}`).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) enum HookOutcome {
    /// It allowed.
    Allow,
    /// It refused.
    Deny,
    /// It did not answer within `hooks.timeout_ms` (or no call slot freed up in time).
    Timeout,
    /// It could not be reached, or answered with an error status or a redirect.
    Failed,
    /// It answered something that is not a decision.
    BadAnswer,
    /// A connect decision was reused from the cache; no call was made.
    Cached,
}

impl HookOutcome {
    fn label(self) -> &'static str {
        match self {
            HookOutcome::Allow => "allow",
            HookOutcome::Deny => "deny",
            HookOutcome::Timeout => "timeout",
            HookOutcome::Failed => "failed",
            HookOutcome::BadAnswer => "bad_answer",
            HookOutcome::Cached => "cached",
        }
    }
}

fn hook_label(hook: crate::kinds::HookKind) -> &'static str {
    match hook {
        crate::kinds::HookKind::Connect => "connect",
        crate::kinds::HookKind::Push => "push",
        crate::kinds::HookKind::Pull => "pull",
        crate::kinds::HookKind::Events => "events",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookCallLabels {
    hook: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    hook: &'static str,
}

/// Builds each `livestore_hook_seconds` histogram: 1 ms to about 33 s.
fn hook_latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

/// The server's metrics; cheap to update from any task or thread.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) websocket_connections: Gauge,
    /// Open HTTP connections (a connection upgraded to a WebSocket counts in `websocket_connections` instead).
    pub(crate) http_connections: Gauge,
    pub(crate) live_subscriptions: Gauge,
    pub(crate) stores_open: Gauge,
    pub(crate) events_appended: Counter,
    pub(crate) http_requests: Counter,
    pushes_rejected: Family<RejectLabels, Counter>,
    pub(crate) pull_backlog_seconds: Histogram,
    /// Postgres only: 1 while the database is reachable and this node serves, 0 during an outage.
    pub(crate) database_available: Gauge,
    /// Postgres only: how often this node lost its database.
    pub(crate) database_outages: Counter,
    /// Postgres only: events read back from the table to publish (mostly other nodes' commits).
    pub(crate) catch_up_events: Counter,
    /// Embedded object store: objects, parts and body bytes stored (brought up to date at each scrape).
    objects_stored: Counter,
    object_parts_stored: Counter,
    object_bytes_stored: Counter,
    /// Serializes [`Metrics::observe_object_store`], so two scrapes at once cannot add the same difference twice.
    object_store_observation: std::sync::Mutex<()>,
    /// The memory budget's limit and what is reserved (the latter brought up to date at each scrape).
    pub(crate) memory_budget_bytes: Gauge,
    memory_reserved_bytes: Gauge,
    load_shed: Family<ResourceLabels, Counter>,
    limit_hits: Family<LimitLabels, Counter>,
    connects_refused: Family<RejectLabels, Counter>,
    hook_calls: Family<HookCallLabels, Counter>,
    hook_seconds: Family<HookLabels, Histogram, fn() -> Histogram>,
    events_out: events_out::EventsOutMetrics,
    /// Fetches of `auth.jwks_url` and the keys they yielded.
    pub(crate) jwks: JwksMetrics,
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
        let http_connections = Gauge::default();
        registry.register(
            "http_connections",
            "Open HTTP connections, busy or idle (upgraded ones count as WebSocket connections)",
            http_connections.clone(),
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
        let database_available = Gauge::default();
        registry.register(
            "database_available",
            "1 while the Postgres database is reachable (always 1 on SQLite)",
            database_available.clone(),
        );
        database_available.set(1);
        let database_outages = Counter::default();
        registry.register(
            "database_outages",
            "Times this node lost its Postgres database and closed its sync connections",
            database_outages.clone(),
        );
        let catch_up_events = Counter::default();
        registry.register(
            "catch_up_events",
            "Events read back from Postgres to publish to live pulls (mostly other nodes' commits)",
            catch_up_events.clone(),
        );
        let objects_stored = Counter::default();
        registry.register(
            "objects_stored",
            "Objects the embedded object store stored (PutObject)",
            objects_stored.clone(),
        );
        let object_parts_stored = Counter::default();
        registry.register(
            "object_parts_stored",
            "Multipart parts the embedded object store stored (UploadPart)",
            object_parts_stored.clone(),
        );
        let object_bytes_stored = Counter::default();
        registry.register(
            "object_bytes_stored",
            "Body bytes the embedded object store stored (objects and parts)",
            object_bytes_stored.clone(),
        );
        let memory_budget_bytes = Gauge::default();
        registry.register(
            "memory_budget_bytes",
            "The memory budget for bytes held on behalf of clients (limits.memory_budget_bytes)",
            memory_budget_bytes.clone(),
        );
        let memory_reserved_bytes = Gauge::default();
        registry.register(
            "memory_reserved_bytes",
            "Bytes reserved in the memory budget: request bodies, WebSocket messages, pushes, queued frames",
            memory_reserved_bytes.clone(),
        );
        let load_shed = Family::<ResourceLabels, Counter>::default();
        registry.register(
            "load_shed",
            "Requests, messages, pushes and pages refused because the memory budget was full, by resource",
            load_shed.clone(),
        );
        let limit_hits = Family::<LimitLabels, Counter>::default();
        registry.register(
            "limit_hits",
            "Times a client ran into a per-connection bound, by limit",
            limit_hits.clone(),
        );
        let connects_refused = Family::<RejectLabels, Counter>::default();
        registry.register(
            "connects_refused",
            "WebSocket connections and HTTP-transport requests refused before they were served, by reason",
            connects_refused.clone(),
        );
        let jwks = JwksMetrics::default();
        registry.register(
            "jwks_fetches",
            "Fetches of the identity provider's signing keys (auth.jwks_url), by outcome",
            jwks.fetches.clone(),
        );
        registry.register(
            "jwks_keys",
            "Usable signing keys from the last good JWKS document",
            jwks.keys.clone(),
        );
        let hook_calls = Family::<HookCallLabels, Counter>::default();
        registry.register(
            "hook_calls",
            "Calls to the connect, push and pull hooks over HTTP, by hook and outcome (cached: no call made)",
            hook_calls.clone(),
        );
        let hook_seconds = Family::<HookLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            hook_latency_histogram,
        );
        registry.register(
            "hook_seconds",
            "Time from asking a hook over HTTP to its decision (waiting for a call slot included)",
            hook_seconds.clone(),
        );
        let events_out = events_out::EventsOutMetrics::register(&mut registry);
        Metrics {
            events_out,
            registry,
            hook_calls,
            hook_seconds,
            jwks,
            connects_refused,
            memory_budget_bytes,
            memory_reserved_bytes,
            load_shed,
            limit_hits,
            objects_stored,
            object_parts_stored,
            object_bytes_stored,
            object_store_observation: std::sync::Mutex::new(()),
            database_available,
            database_outages,
            catch_up_events,
            websocket_connections,
            http_connections,
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
            RejectReason::Overloaded => "overloaded",
            RejectReason::Hook => "hook",
        };
        self.pushes_rejected.get_or_create(&RejectLabels { reason }).inc();
    }

    /// Counts a connection or HTTP request refused by the authenticator or the connect hook.
    pub(crate) fn connect_refused(&self, kind: crate::kinds::RejectionKind) {
        let reason = match kind {
            crate::kinds::RejectionKind::Unauthorized => "unauthorized",
            crate::kinds::RejectionKind::Forbidden => "forbidden",
            crate::kinds::RejectionKind::Unavailable => "unavailable",
        };
        self.connects_refused.get_or_create(&RejectLabels { reason }).inc();
    }

    /// Counts a hook call (or a cached decision) by how it ended.
    pub(crate) fn hook_call(&self, hook: crate::kinds::HookKind, outcome: HookOutcome) {
        let labels = HookCallLabels { hook: hook_label(hook), outcome: outcome.label() };
        self.hook_calls.get_or_create(&labels).inc();
    }

    /// Records how long a hook call took to decide (or fail).
    pub(crate) fn hook_latency(&self, hook: crate::kinds::HookKind, elapsed: std::time::Duration) {
        let labels = HookLabels { hook: hook_label(hook) };
        self.hook_seconds.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// Counts a refusal for lack of memory budget.
    pub(crate) fn load_shed(&self, resource: ShedResource) {
        self.load_shed.get_or_create(&ResourceLabels { resource: resource.label() }).inc();
    }

    /// Counts a client running into a per-connection bound.
    pub(crate) fn limit_hit(&self, limit: LimitHit) {
        self.limit_hits.get_or_create(&LimitLabels { limit: limit.label() }).inc();
    }

    /// Brings the reserved-bytes gauge up to date.
    pub(crate) fn observe_budget(&self, reserved: u64) {
        self.memory_reserved_bytes.set(i64::try_from(reserved).unwrap_or(i64::MAX));
    }

    /// Moves the object store counters up to the store's own counts (they only grow, so the difference is what
    /// happened since the last scrape). `None` (an external store) leaves them at zero.
    pub(crate) fn observe_object_store(&self, stats: Option<livestore_objects::StoredStats>) {
        let Some(stats) = stats else { return };
        let _serialized =
            self.object_store_observation.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (counter, value) in [
            (&self.objects_stored, stats.objects),
            (&self.object_parts_stored, stats.parts),
            (&self.object_bytes_stored, stats.bytes),
        ] {
            counter.inc_by(value.saturating_sub(counter.get()));
        }
    }

    /// The OpenMetrics text exposition.
    pub(crate) fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("encoding metrics into a String cannot fail");
        text
    }
}
