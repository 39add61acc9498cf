//! One pull request from start to end: backlog pages, then (for live pulls) the hand-over to live delivery.
//!
//! A live pull registers with the store's hub first, which fixes the head `H` that splits "read from the database"
//! from "arrives live"; it sends `(cursor, H]` from storage page by page, then asks the hub to go live, which
//! flushes whatever was published meanwhile and from then on queues each batch straight to the connection. The
//! per-subscription sequencing rules (ascending, exactly once, no gaps) are enforced in `hub`.
//! Live pulls never end with an `Exit`; to make a client retry, the connection is closed.

use std::sync::Arc;
use std::time::Instant;

use livestore_proto::encode;
use livestore_proto::page::{PageBuilder, StoredEventRef, empty_page};
use livestore_proto::rpc::PullCursor;
use crate::hub::{Hubs, SubscriberTarget};
use crate::metrics::Metrics;
use crate::outbox::{CloseReason, CloseSignal, Outbound, Outbox, SendError};
use crate::storage::{EventStorage, StoreLog};

/// Most events read from storage per round trip while streaming a backlog.
const BACKLOG_READ_BATCH: usize = 2_000;
/// Bytes one storage read aims at: with large events, 2,000 of them would be tens of megabytes per pull. The next
/// read's count follows the average event size seen so far.
const BACKLOG_READ_BYTES: usize = 2 * 1024 * 1024;
/// Events in the first read, before the average size is known.
const BACKLOG_FIRST_READ: usize = 100;

/// What a pull needs; built by a transport.
pub(crate) struct PullJob {
    pub(crate) storage: Arc<dyn EventStorage>,
    pub(crate) hubs: Arc<Hubs>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) store_id: String,
    pub(crate) request_id: String,
    pub(crate) cursor: Option<PullCursor>,
    pub(crate) live: bool,
    pub(crate) out: Outbox,
    /// Closes the connection ahead of its queue: for a subscriber that cannot keep up, or no memory budget left.
    pub(crate) close: CloseSignal,
}

/// Runs a pull until its backlog is sent (non-live), or until the connection goes away (live).
pub(crate) async fn run_pull(job: PullJob) {
    let started = Instant::now();
    // A store whose hub exists was opened by the writer before; its hub holds the authoritative identity.
    let known = job
        .hubs
        .get(&job.store_id)
        .map(|hub| StoreLog { backend_id: hub.backend_id().clone(), head: hub.head() });
    let opened = match known {
        Some(log) => Ok(log),
        None => job.storage.open_store(&job.store_id).await,
    };
    let log = match opened {
        Ok(log) => log,
        Err(error) => {
            tracing::error!(store_id = %job.store_id, error = %error, "cannot open store for pull");
            fail(&job, &error.to_string()).await;
            return;
        }
    };
    if let Some(cursor) = &job.cursor
        && cursor.backend_id != *log.backend_id
    {
        let error = encode::backend_id_mismatch_error(&log.backend_id, &cursor.backend_id);
        let _ = job.out.send(Outbound::Text(encode::exit_fail(&job.request_id, &error))).await;
        return;
    }
    // The store's hub: `open_store` created it, unless the database went away since and the hubs were closed.
    let Some(hub) = job.hubs.get(&job.store_id) else {
        fail(&job, "the store's log is unavailable; retry").await;
        return;
    };
    let subscription = job.live.then(|| {
        hub.subscribe(SubscriberTarget {
            request_id: Arc::from(job.request_id.as_str()),
            out: job.out.clone(),
            close: job.close.clone(),
        })
    });
    let target_head = subscription
        .as_ref()
        .map_or_else(|| hub.head(), |subscription| subscription.head_at_subscribe);
    let cursor_seq_num = job.cursor.as_ref().map_or(0, |cursor| cursor.event_sequence_number.0);

    let sent_up_to = match send_backlog(&job, &log.backend_id, cursor_seq_num, target_head).await {
        Ok(Some(sent_up_to)) => sent_up_to.max(cursor_seq_num),
        Ok(None) => return,
        Err(message) => {
            fail(&job, &message).await;
            return;
        }
    };
    job.metrics.pull_backlog_seconds.observe(started.elapsed().as_secs_f64());
    let Some(subscription) = subscription else {
        let _ = job.out.send(Outbound::Text(encode::exit_stream_done(&job.request_id))).await;
        return;
    };
    if hub.go_live(&subscription, sent_up_to).is_err() {
        tracing::warn!(store_id = %job.store_id, "subscriber fell behind while catching up; closing its connection");
        return;
    }
    // From here the hub delivers straight to the connection; this task only keeps the registration alive until the
    // client interrupts the pull or the connection ends (both abort the task, which unsubscribes).
    job.metrics.live_subscriptions.inc();
    let _decrement = DecrementOnDrop(job.metrics.clone());
    std::future::pending::<()>().await;
}

/// Keeps the live-subscription gauge right when a live pull task is aborted.
struct DecrementOnDrop(Arc<Metrics>);

impl Drop for DecrementOnDrop {
    fn drop(&mut self) {
        self.0.live_subscriptions.dec();
    }
}

/// Sends `(after, up_to]` as pages; returns the last sequence number sent, or `None` if the client is gone.
async fn send_backlog(
    job: &PullJob,
    backend_id: &str,
    after: u64,
    up_to: u64,
) -> Result<Option<u64>, String> {
    if after >= up_to {
        return Ok(send_frame(job, encode::chunk(&job.request_id, &[empty_page(backend_id).json]))
            .await
            .then_some(after));
    }
    let mut builder = PageBuilder::new(backend_id, up_to);
    let mut read_after = after;
    let mut read_limit = BACKLOG_FIRST_READ;
    while read_after < up_to {
        let events = job
            .storage
            .read_events(&job.store_id, read_after, up_to, read_limit)
            .await
            .map_err(|error| error.to_string())?;
        let read_bytes: usize = events.iter().map(|event| event.encoded_json.len()).sum();
        let average_bytes = (read_bytes / events.len().max(1)).max(1);
        read_limit = (BACKLOG_READ_BYTES / average_bytes).clamp(1, BACKLOG_READ_BATCH);
        let Some(last) = events.last() else {
            return Err(format!(
                "the log of {} ends at {read_after}, before its head {up_to}",
                job.store_id
            ));
        };
        read_after = last.seq_num;
        for event in &events {
            let page = builder.add(StoredEventRef {
                seq_num: event.seq_num,
                encoded_json: &event.encoded_json,
                created_at: &event.created_at,
            });
            if let Some(page) = page
                && !send_frame(job, encode::chunk(&job.request_id, &[page.json])).await
            {
                return Ok(None);
            }
        }
    }
    if let Some(page) = builder.finish()
        && !send_frame(job, encode::chunk(&job.request_id, &[page.json])).await
    {
        return Ok(None);
    }
    Ok(Some(up_to))
}

/// Queues a backlog page; false when the pull must stop (the connection is gone, or it is closed for lack of memory
/// budget).
async fn send_frame(job: &PullJob, frame: String) -> bool {
    match job.out.send_page(frame).await {
        Ok(()) => true,
        Err(SendError::Overloaded) => {
            job.close.close(CloseReason::Overloaded);
            false
        }
        Err(SendError::Closed | SendError::Full) => false,
    }
}

/// Reports a failure: live pulls must not end with an `Exit`, so they close the socket instead.
async fn fail(job: &PullJob, message: &str) {
    if job.live {
        let _ = job.out.send(Outbound::Close(CloseReason::StorageError)).await;
    } else {
        let error = encode::unknown_error(message);
        let _ = job.out.send(Outbound::Text(encode::exit_fail(&job.request_id, &error))).await;
    }
}
