//! One pull request from start to end: backlog pages, then (for live pulls) the hand-over to live delivery.
//!
//! A live pull registers with the store's hub first, which fixes the head `H` that splits "read from the database"
//! from "arrives live"; it sends `(cursor, H]` from storage page by page, then asks the hub to go live, which
//! flushes whatever was published meanwhile and from then on queues each batch straight to the connection. The
//! per-subscription sequencing rules (ascending, exactly once, no gaps) are enforced in `hub`.
//! Live pulls never end with an `Exit`; to make a client retry, the connection is closed. (The pull hook, asked by
//! the transports before a pull starts, may refuse a live pull with an `Exit` before it has sent anything.)

use std::sync::Arc;
use std::time::Instant;

use livestore_proto::encode;
use livestore_proto::page::{PageBuilder, StoredEventRef, empty_page};
use livestore_proto::rpc::PullCursor;
use tokio::sync::Semaphore;

use crate::hooks::{Decision, HookKind, Verdict, guarded};
use crate::hub::{Hubs, SubscriberTarget};
use crate::metrics::Metrics;
use crate::outbox::{CloseReason, CloseSignal, Outbound, Outbox};
use crate::storage::{EventStorage, ReadLimit, StoreLog};

/// How many pulls may read from storage and paginate at once, process-wide: twice the cores, at least 4. Events
/// just read are not in the memory budget yet (their size is unknown until read), so this bounds them: at most
/// this many reads of [`BACKLOG_READ_LIMIT`] (plus one event each), and their pages, exist outside the budget.
pub(crate) fn backlog_read_slots() -> usize {
    std::thread::available_parallelism().map_or(4, |cores| (cores.get() * 2).max(4))
}

/// What one storage read returns at most while streaming a backlog: 2,000 events, and no more once 1 MiB is read.
/// The byte bound matters with large events: a read held by a pull whose client stops reading is memory that client
/// pins (a hundred 1 MB events were 100 MB per slow reader).
const BACKLOG_READ_LIMIT: ReadLimit = ReadLimit { events: 2_000, bytes: 1024 * 1024 };

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
    /// The process's backlog read slots: how many pulls may hold a storage read's events at once.
    pub(crate) read_slots: Arc<Semaphore>,
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
    let mut read_after = after;
    while read_after < up_to {
        let frames = read_frames(job, backend_id, &mut read_after, up_to).await?;
        if !send_frames(job, frames).await {
            return Ok(None);
        }
    }
    Ok(Some(up_to))
}

/// Reads the next events after `read_after` (moving it on) and turns them into `Chunk` frames, holding one of the
/// process's backlog read slots meanwhile. Nothing is awaited between the read and the frames, and the events are
/// gone once the frames exist, so what a pull holds while its client makes room is one read's frames, which
/// [`send_frames`] reserves in the memory budget.
async fn read_frames(
    job: &PullJob,
    backend_id: &str,
    read_after: &mut u64,
    up_to: u64,
) -> Result<Vec<String>, String> {
    let _slot =
        job.read_slots.acquire().await.map_err(|_| "the server is shutting down".to_owned())?;
    let events = job
        .storage
        .read_events(&job.store_id, *read_after, up_to, BACKLOG_READ_LIMIT)
        .await
        .map_err(|error| error.to_string())?;
    let Some(last) = events.last() else {
        return Err(format!(
            "the log of {} ends at {read_after}, before its head {up_to}",
            job.store_id
        ));
    };
    *read_after = last.seq_num;
    // Each read ends its last page, so no page waits in a builder (outside the budget) while the client makes room.
    // Reads are 1 MiB, so this adds at most one short page per MiB of backlog.
    let mut builder = PageBuilder::new(backend_id, up_to);
    let mut frames = Vec::new();
    for event in events {
        let page = builder.add(StoredEventRef {
            seq_num: event.seq_num,
            encoded_json: &event.encoded_json,
            created_at: &event.created_at,
        });
        if let Some(page) = page {
            frames.push(encode::chunk_of_page(&job.request_id, page.json));
        }
    }
    if let Some(page) = builder.finish() {
        frames.push(encode::chunk_of_page(&job.request_id, page.json));
    }
    Ok(frames)
}

/// Reserves `frames` in the memory budget and queues them one by one; false when the pull must stop (the
/// connection is gone, or it is being closed because the budget had no room).
async fn send_frames(job: &PullJob, frames: Vec<String>) -> bool {
    let mut reserved = Vec::with_capacity(frames.len());
    for frame in frames {
        match job.out.reserve(frame.len()) {
            Ok(reservation) => reserved.push((frame, reservation)),
            Err(_) => {
                job.close.close(CloseReason::Overloaded);
                return false;
            }
        }
    }
    for (frame, reservation) in reserved {
        if job.out.send_page(frame, reservation).await.is_err() {
            return false;
        }
    }
    true
}

/// Queues one frame (the empty page of an up-to-date pull).
async fn send_frame(job: &PullJob, frame: String) -> bool {
    send_frames(job, vec![frame]).await
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

/// Asks the pull hook about a pull as it starts, if there is one.
pub(crate) async fn ask_pull_hook(
    state: &crate::state::AppState,
    store_id: &str,
    identity: &crate::identity::Identity,
    cursor: Option<u64>,
    live: bool,
) -> Verdict {
    let hooks = state.auth.hooks();
    if !hooks.wants_pull() {
        return Verdict::Proceed;
    }
    let request = crate::hooks::PullRequest { store_id, identity, cursor, live };
    match guarded(HookKind::Pull, hooks.pull(request)).await {
        Ok(Decision::Allow) => Verdict::Proceed,
        Ok(Decision::Deny { reason }) => {
            Verdict::Refused(encode::unknown_error(&format!("pull refused: {reason}")))
        }
        Err(error) if state.hooks_fail_open => {
            tracing::warn!(%error, "pull hook failed; letting the pull through (hooks.fail_open)");
            Verdict::Proceed
        }
        Err(error) => {
            tracing::warn!(%error, "pull hook failed; refusing the pull");
            Verdict::Undecided(encode::unknown_error(
                "pull not started: the server cannot decide about it right now",
            ))
        }
    }
}
