//! Committed events out: at-least-once, per-store ordered delivery of every committed event to subscribers.
//!
//! A subscriber is a named [`EventSink`]: the `[hooks] events_url` webhook (`webhook`, subscriber name
//! `"webhook"`) or a sink a program that embeds the server passes to [`crate::Server::bind_with_sink`] (for example
//! the channel adapter of `channel`, a [`futures_util::Stream`] of batches with an explicit acknowledgement).
//! docs/events-webhook.md describes the contract for receivers.
//!
//! How it works:
//! - **After the commit, never before, never in the way.** Storage backends announce durable heads to a commit
//!   feed (`commit_feed`) after the commit; the delivery reads only committed events, on its own tasks, so a push is never
//!   delayed by it.
//! - **Durable cursors.** Per subscriber and store, a cursor row (`storage::cursors`) records what was acknowledged
//!   and the end of the batch being sent. `step` commits the end before sending and the cursor after the
//!   acknowledgement, so batches and their idempotency keys survive retries, restarts and `kill -9`.
//! - **Order.** One batch per store in flight (`schedule`), stores in parallel up to
//!   [`DeliverySettings::max_in_flight`].
//! - **Retries.** Exponential backoff with jitter, capped, forever (`backoff`); nothing is dropped or skipped.
//! - **One deliverer.** On Postgres, a subscriber's lease (an advisory lock) makes one node deliver; the others
//!   stand by and take over when it goes (`engine`).
//! - **Bounded.** Batches are bounded in events and bytes (`batch`), reads likewise, and at most
//!   `max_in_flight` batches exist at once.

pub(crate) mod backoff;
pub(crate) mod batch;
pub mod channel;
mod engine;
mod schedule;
mod step;
pub(crate) mod webhook;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::backoff::{DEFAULT_RETRY_INITIAL, RetryPolicy};
pub use self::batch::{BATCH_MAX_BYTES, BATCH_MAX_EVENTS, EventBatch};
pub use self::channel::{ChannelSink, Delivery, EventStream, event_channel};
use crate::commit_feed::CommitFeed;
use crate::error::ServerError;
pub(crate) use crate::kinds::FailureKind;
use crate::metrics::Metrics;
use crate::storage::EventStorage;
use crate::storage::cursors::CursorStore;

/// The subscriber name of `[hooks] events_url`.
pub const WEBHOOK_SUBSCRIBER: &str = "webhook";

/// Longest subscriber name.
const MAX_SUBSCRIBER_NAME_BYTES: usize = 64;

/// Receives committed events, one batch at a time per store, in order.
///
/// [`EventSink::deliver`] is called with the next batch of a store only after the previous one was acknowledged
/// (returned `Ok`); batches of different stores may be delivered concurrently. An `Err` is retried later with the
/// same batch, forever, with backoff. After a crash a batch may be delivered again (at-least-once): use
/// [`EventBatch::idempotency_key`], or the events' sequence numbers, to recognise it. A call may take as long as it
/// likes, but the store's next batch waits for it.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Delivers one batch; `Ok` acknowledges it and moves the subscriber's cursor past it.
    async fn deliver(&self, batch: &EventBatch) -> Result<(), DeliveryError>;
}

/// Why a sink did not acknowledge a batch (it is retried).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The receiver did not answer within the delivery timeout.
    #[error("no answer within {timeout_ms} ms")]
    Timeout {
        /// The timeout.
        timeout_ms: u64,
    },
    /// The receiver could not be reached (connection refused, DNS, TLS).
    #[error("cannot connect: {reason}")]
    Unreachable {
        /// What failed; never the URL (it may carry a credential).
        reason: String,
    },
    /// The request or its response broke off.
    #[error("the request failed: {reason}")]
    Transport {
        /// What failed; never the URL.
        reason: String,
    },
    /// The receiver answered with a redirect, which is not followed: a redirect is a failure.
    #[error("answered {status}, a redirect, which is not followed")]
    Redirect {
        /// The status.
        status: u16,
    },
    /// The receiver answered with a status other than 2xx or 3xx.
    #[error("answered {status}")]
    Status {
        /// The status.
        status: u16,
    },
    /// The sink refused the batch (an embedder's sink, or a delivery dropped without acknowledgement).
    #[error("refused: {reason}")]
    Refused {
        /// Why.
        reason: String,
    },
    /// The sink's consumer is gone (an [`EventStream`] was dropped).
    #[error("the consumer of the events is gone")]
    Closed,
}

impl FailureKind {
    pub(crate) fn of(error: &DeliveryError) -> Self {
        match error {
            DeliveryError::Timeout { .. } => FailureKind::Timeout,
            DeliveryError::Unreachable { .. } => FailureKind::Unreachable,
            DeliveryError::Transport { .. } => FailureKind::Transport,
            DeliveryError::Redirect { .. } => FailureKind::Redirect,
            DeliveryError::Status { .. } => FailureKind::Status,
            DeliveryError::Refused { .. } => FailureKind::Refused,
            DeliveryError::Closed => FailureKind::Closed,
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Unreachable => "unreachable",
            FailureKind::Transport => "transport",
            FailureKind::Redirect => "redirect",
            FailureKind::Status => "status",
            FailureKind::Refused => "refused",
            FailureKind::Closed => "closed",
            FailureKind::Storage => "storage",
            FailureKind::Moved => "moved",
        }
    }
}

/// A named sink. The name keys its cursors, so a sink that keeps its name resumes where it stopped.
#[derive(Clone)]
pub(crate) struct Subscriber {
    pub(crate) name: Arc<str>,
    pub(crate) sink: Arc<dyn EventSink>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Subscriber").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Subscriber {
    /// A subscriber named `name`: 1 to 64 of `a-z`, `0-9`, `-`, `_`.
    pub(crate) fn new(name: &str, sink: Arc<dyn EventSink>) -> Result<Self, ServerError> {
        let valid = !name.is_empty()
            && name.len() <= MAX_SUBSCRIBER_NAME_BYTES
            && name.bytes().all(|byte| {
                byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_'
            });
        if !valid {
            return Err(ServerError::InvalidConfig(format!(
                "event sink name {:?} is not 1 to {MAX_SUBSCRIBER_NAME_BYTES} of a-z, 0-9, '-', '_'",
                name.chars().take(MAX_SUBSCRIBER_NAME_BYTES).collect::<String>()
            )));
        }
        Ok(Subscriber { name: Arc::from(name), sink })
    }
}

/// Timings and bounds of the delivery.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeliverySettings {
    /// Backoff after failures.
    pub(crate) retry: RetryPolicy,
    /// How often every store is checked for events the announcements missed.
    pub(crate) scan_interval: Duration,
    /// How often a standby node tries to take the lease.
    pub(crate) leader_retry: Duration,
    /// Batches in flight at once per subscriber (one per store).
    pub(crate) max_in_flight: usize,
    /// How long shutdown waits for batches in flight.
    pub(crate) shutdown_grace: Duration,
}

impl DeliverySettings {
    /// The defaults, with the retry cap of `[hooks] events_retry_max_ms`.
    pub(crate) fn from_hooks(hooks: &crate::config::HooksConfig) -> Self {
        let max = Duration::from_millis(hooks.events_retry_max_ms);
        DeliverySettings {
            retry: RetryPolicy { initial: DEFAULT_RETRY_INITIAL.min(max), max },
            ..DeliverySettings::default()
        }
    }
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            retry: RetryPolicy { initial: DEFAULT_RETRY_INITIAL, max: Duration::from_secs(60) },
            // A safety net only (commits are announced), so it may be slow: one pass every half minute.
            scan_interval: Duration::from_secs(30),
            // A standby takes over within about this long after the delivering node's session ends.
            leader_retry: Duration::from_secs(2),
            // Enough parallelism to keep up with many busy stores over a slow receiver; with batches of at most
            // BATCH_MAX_BYTES (held once as events, once as the request body) it bounds the memory of batches in
            // flight to about 32 MB per subscriber, plus single events over the bound, which travel alone.
            max_in_flight: 16,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// What every delivery task of this server shares.
pub(crate) struct Deps {
    pub(crate) log: Arc<dyn EventStorage>,
    pub(crate) cursors: Arc<dyn CursorStore>,
    pub(crate) feed: Arc<CommitFeed>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) settings: DeliverySettings,
}

/// The delivery tasks of a server: one per subscriber, started with the server and stopped before its storage.
pub(crate) struct EventsOut {
    deps: Arc<Deps>,
    subscribers: Vec<Subscriber>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl std::fmt::Debug for EventsOut {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("EventsOut").field("subscribers", &self.subscribers).finish()
    }
}

impl EventsOut {
    /// Refuses two subscribers with one name: they would share cursors.
    pub(crate) fn check_names(subscribers: &[Subscriber]) -> Result<(), ServerError> {
        for (index, subscriber) in subscribers.iter().enumerate() {
            if subscribers[..index].iter().any(|other| other.name == subscriber.name) {
                return Err(ServerError::InvalidConfig(format!(
                    "two event sinks are named {:?}",
                    subscriber.name
                )));
            }
        }
        Ok(())
    }

    /// Delivery for `subscribers` (see [`EventsOut::check_names`]); nothing runs until [`EventsOut::start`].
    pub(crate) fn new(deps: Deps, subscribers: Vec<Subscriber>) -> Self {
        EventsOut {
            deps: Arc::new(deps),
            subscribers,
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// Starts one delivery task per subscriber.
    pub(crate) fn start(&self) {
        for subscriber in &self.subscribers {
            self.tasks.spawn(engine::run(self.deps.clone(), subscriber.clone(), self.stop.clone()));
        }
        self.tasks.close();
    }

    /// Stops every task; batches in flight get a grace period to be acknowledged.
    pub(crate) async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests;
