//! A connection's outbound queue, bounded in frames and in bytes, and what goes into it.
//!
//! Everything a connection sends passes through one queue drained by its writer. The queue is bounded twice: in
//! frames (`limits.outbound_queue_frames`, a tokio channel) and in bytes (`limits.outbound_queue_bytes`, a
//! semaphore of byte permits). Frames that carry events hold their bytes' permits ([`Charge`]) until the writer has
//! handed them to the socket, so a client that stops reading pins at most the byte bound, whatever the size of its
//! events:
//! - a backlog page waits for room (the pull task is paused; nothing more is read from storage for it) and also
//!   reserves its bytes in the process-wide memory budget; when that is full the connection is closed with 1013;
//! - a live batch must be taken at once (the hub delivers under its lock): no room means the subscriber is lagging,
//!   and its connection is closed with 1013 so the client resumes from its cursor. Live batches are shared by every
//!   subscriber, so they reserve their bytes in the memory budget once, when they are built (`hub`).
//!
//! Small frames (replies, pongs, close frames) take no byte permits; the frame bound limits them.

use std::sync::Arc;

use livestore_proto::page::Page;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::budget::{MemoryBudget, Reservation};
use crate::metrics::ShedResource;

/// Why the server closes a WebSocket, with the close code each reason gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The server shuts down or restarts (1012): clients reconnect.
    ServerShutdown,
    /// A frame that is not a protocol message (1007), with the decoder's message.
    InvalidFrame(String),
    /// A message over `max_message_bytes` (1009).
    MessageTooBig(usize),
    /// A started message not completed within the body read timeout (1008).
    MessageTimeout,
    /// One pull more than allowed on one connection (1008).
    TooManyPulls(usize),
    /// The connection's credential expired (1008); the client must come back with a fresh one.
    CredentialExpired,
    /// A live subscriber whose queue was full (1013): the client resumes from its cursor.
    Lagging,
    /// Replies to this connection's pushes did not come while live batches piled up (1013).
    RepliesOverdue,
    /// The memory budget had no room for what this connection needed (1013).
    Overloaded,
    /// The database went away; the node serves again once it is back (1013).
    DatabaseUnavailable,
    /// One store's log could not be followed; the client resumes from its cursor (1013).
    StoreLogUnavailable,
    /// Storage failed while serving a live pull (1011).
    StorageError,
    /// The pull hook could not decide about a live pull (1013): the client reconnects and it is asked again.
    HookUnavailable,
}

impl CloseReason {
    /// The WebSocket close code.
    pub(crate) fn code(&self) -> u16 {
        match self {
            CloseReason::ServerShutdown => 1012,
            CloseReason::InvalidFrame(_) => 1007,
            CloseReason::MessageTooBig(_) => 1009,
            CloseReason::MessageTimeout
            | CloseReason::TooManyPulls(_)
            | CloseReason::CredentialExpired => 1008,
            CloseReason::Lagging
            | CloseReason::RepliesOverdue
            | CloseReason::Overloaded
            | CloseReason::DatabaseUnavailable
            | CloseReason::StoreLogUnavailable
            | CloseReason::HookUnavailable => 1013,
            CloseReason::StorageError => 1011,
        }
    }

    /// The close frame's reason text (at most 123 bytes, as the protocol requires).
    pub(crate) fn text(&self) -> String {
        let text = match self {
            CloseReason::ServerShutdown => "server shutting down".to_owned(),
            CloseReason::InvalidFrame(message) => message.clone(),
            CloseReason::MessageTooBig(limit) => format!("message exceeds {limit} bytes"),
            CloseReason::MessageTimeout => {
                "message not completed within the read timeout".to_owned()
            }
            CloseReason::TooManyPulls(limit) => {
                format!("more than {limit} pulls on one connection")
            }
            CloseReason::CredentialExpired => "credentials expired".to_owned(),
            CloseReason::Lagging => "subscriber lagging".to_owned(),
            CloseReason::RepliesOverdue => "push replies overdue".to_owned(),
            CloseReason::Overloaded => "server at its memory budget; retry later".to_owned(),
            CloseReason::DatabaseUnavailable => "database unavailable".to_owned(),
            CloseReason::StoreLogUnavailable => "store log unavailable".to_owned(),
            CloseReason::StorageError => "storage error".to_owned(),
            CloseReason::HookUnavailable => "pull hook unavailable; retry later".to_owned(),
        };
        truncate(&text, 120)
    }
}

fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Asks a connection's writer to close it now, ahead of whatever is queued (a full queue cannot take a close frame).
/// The first reason given wins.
#[derive(Debug, Clone, Default)]
pub(crate) struct CloseSignal {
    reason: Arc<std::sync::OnceLock<CloseReason>>,
    token: tokio_util::sync::CancellationToken,
}

impl CloseSignal {
    /// Requests the close.
    pub(crate) fn close(&self, reason: CloseReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Resolves once a close was requested, with its reason.
    pub(crate) async fn requested(&self) -> CloseReason {
        self.token.cancelled().await;
        self.reason.get().cloned().unwrap_or(CloseReason::Lagging)
    }

    /// Whether a close was requested.
    pub(crate) fn is_requested(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// Bytes a queued frame holds until the writer has handed it to the socket.
#[derive(Debug, Default)]
pub(crate) struct Charge {
    _connection: Option<OwnedSemaphorePermit>,
    _budget: Option<Reservation>,
}

impl Outbound {
    /// The frame without its charge, and the charge: the writer keeps the charge until the socket has flushed the
    /// frame, so bytes sitting in the WebSocket's write buffer still count against the connection's bound.
    pub(crate) fn take_charge(self) -> (Outbound, Option<Charge>) {
        match self {
            Outbound::Page { text, _charge } => {
                (Outbound::Page { text, _charge: Charge::default() }, Some(_charge))
            }
            Outbound::Live { request_id, batch, _charge } => {
                (Outbound::Live { request_id, batch, _charge: Charge::default() }, Some(_charge))
            }
            other => (other, None),
        }
    }
}

/// A frame on its way to a client connection.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A text frame (one JSON message).
    Text(String),
    /// A backlog page and the bytes it holds (given back when the frame is dropped, after the socket took it).
    Page { text: String, _charge: Charge },
    /// Close the connection.
    Close(CloseReason),
    /// A live batch for one subscription; the connection's writer turns its pages into `Chunk` frames.
    Live { request_id: Arc<str>, batch: Arc<LiveBatch>, _charge: Charge },
    /// A push's `Exit` frame on a WebSocket; `push` identifies it to the writer's ack-before-echo ordering.
    PushReply { text: String, push: u64 },
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The connection is gone.
    Closed,
    /// The memory budget has no room; the connection is being closed with 1013.
    Overloaded,
    /// The subscriber's queue is full; the connection is being closed with 1013.
    Full,
}

/// The sending side of a connection's queue; cheap to clone (one per pull and per hub subscription).
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    frames: mpsc::Sender<Outbound>,
    /// Byte permits of this connection (`None`: only the frame bound applies).
    bytes: Option<Arc<Semaphore>>,
    max_bytes: usize,
    budget: Arc<MemoryBudget>,
}

impl Outbox {
    /// A queue of `max_frames` frames and `max_bytes` bytes, and its receiving end.
    pub(crate) fn new(
        max_frames: usize,
        max_bytes: Option<usize>,
        budget: Arc<MemoryBudget>,
    ) -> (Outbox, mpsc::Receiver<Outbound>) {
        let (frames, receiver) = mpsc::channel(max_frames);
        let bytes = max_bytes.map(|bytes| Arc::new(Semaphore::new(bytes)));
        (Outbox { frames, bytes, max_bytes: max_bytes.unwrap_or(usize::MAX), budget }, receiver)
    }

    /// Queues a small frame, waiting for a free slot.
    pub(crate) async fn send(&self, frame: Outbound) -> Result<(), SendError> {
        self.frames.send(frame).await.map_err(|_| SendError::Closed)
    }

    /// Queues a frame if a slot is free right now (for closing from synchronous code).
    pub(crate) fn try_send(&self, frame: Outbound) -> Result<(), SendError> {
        self.frames.try_send(frame).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }

    /// Reserves `bytes` of a page about to be queued in the memory budget (`Overloaded` when there is no room).
    pub(crate) fn reserve(&self, bytes: usize) -> Result<Reservation, SendError> {
        self.budget.try_reserve(bytes as u64, ShedResource::Outbound).ok_or(SendError::Overloaded)
    }

    /// Queues a backlog page whose bytes are `reserved` already: waits for the connection's byte permits (the
    /// client must make room), then for a slot.
    pub(crate) async fn send_page(
        &self,
        text: String,
        reserved: Reservation,
    ) -> Result<(), SendError> {
        let connection = match &self.bytes {
            Some(semaphore) => Some(
                Arc::clone(semaphore)
                    .acquire_many_owned(self.permits(text.len()))
                    .await
                    .map_err(|_| SendError::Closed)?,
            ),
            None => None,
        };
        let charge = Charge { _connection: connection, _budget: Some(reserved) };
        self.send(Outbound::Page { text, _charge: charge }).await
    }

    /// Queues a live batch now or never: no free slot or byte permits means the subscriber is lagging.
    pub(crate) fn try_send_live(
        &self,
        request_id: Arc<str>,
        batch: Arc<LiveBatch>,
    ) -> Result<(), SendError> {
        let connection = match &self.bytes {
            Some(semaphore) => Some(
                Arc::clone(semaphore)
                    .try_acquire_many_owned(self.permits(batch.bytes))
                    .map_err(|_| SendError::Full)?,
            ),
            None => None,
        };
        let charge = Charge { _connection: connection, _budget: None };
        self.try_send(Outbound::Live { request_id, batch, _charge: charge })
    }

    /// Permits for `bytes`: a frame larger than the whole bound takes all of it and goes alone.
    fn permits(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.clamp(1, self.max_bytes)).unwrap_or(u32::MAX)
    }
}

/// One accepted push, paginated once and shared by every subscriber.
#[derive(Debug)]
pub(crate) struct LiveBatch {
    pub(crate) first_seq_num: u64,
    pub(crate) last_seq_num: u64,
    pub(crate) pages: Vec<Page>,
    /// The pages' JSON bytes: what each connection's byte bound counts for this batch.
    pub(crate) bytes: usize,
    _reservation: Option<Reservation>,
}

impl LiveBatch {
    pub(crate) fn new(
        first_seq_num: u64,
        last_seq_num: u64,
        pages: Vec<Page>,
        budget: &Arc<MemoryBudget>,
    ) -> Self {
        let bytes = pages.iter().map(|page| page.json.len()).sum();
        // Committed events cannot be refused: the reservation may take the budget over its limit, which sheds the
        // next optional work (new bodies, backlog pages) instead.
        let reservation = budget.force_reserve(bytes as u64);
        LiveBatch { first_seq_num, last_seq_num, pages, bytes, _reservation: Some(reservation) }
    }

    /// A batch of `bytes` bytes without pages, for tests of queues and ordering.
    #[cfg(test)]
    pub(crate) fn for_test(first_seq_num: u64, last_seq_num: u64, bytes: usize) -> Self {
        LiveBatch { first_seq_num, last_seq_num, pages: Vec::new(), bytes, _reservation: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn batch(bytes: usize) -> Arc<LiveBatch> {
        Arc::new(LiveBatch::for_test(1, 1, bytes))
    }

    #[tokio::test]
    async fn live_batches_are_bounded_in_bytes_and_released_when_written() {
        let budget = MemoryBudget::new(1 << 30, Arc::new(Metrics::new()));
        let (outbox, mut receiver) = Outbox::new(64, Some(1000), budget);
        outbox.try_send_live(Arc::from("r"), batch(600)).unwrap();
        assert_eq!(outbox.try_send_live(Arc::from("r"), batch(600)), Err(SendError::Full));
        let written = receiver.recv().await.unwrap();
        drop(written);
        outbox.try_send_live(Arc::from("r"), batch(600)).unwrap();
        // A batch larger than the whole bound goes alone.
        drop(receiver.recv().await.unwrap());
        outbox.try_send_live(Arc::from("r"), batch(5000)).unwrap();
    }

    #[tokio::test]
    async fn pages_wait_for_room_and_are_shed_when_the_budget_is_full() {
        let budget = MemoryBudget::new(2000, Arc::new(Metrics::new()));
        let (outbox, mut receiver) = Outbox::new(64, Some(1000), budget.clone());
        let page = |text: String| {
            let outbox = outbox.clone();
            async move {
                let reserved = outbox.reserve(text.len())?;
                outbox.send_page(text, reserved).await
            }
        };
        page("x".repeat(800)).await.unwrap();
        let waiting = tokio::spawn(page("y".repeat(800)));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the second page waits for the first to be written");
        assert_eq!(budget.used(), 1600, "a waiting page holds its budget");
        drop(receiver.recv().await.unwrap());
        waiting.await.unwrap().unwrap();
        assert_eq!(budget.used(), 800);
        let _hog = budget.try_reserve(1100, ShedResource::Push).unwrap();
        drop(receiver.recv().await.unwrap());
        assert_eq!(budget.used(), 1100);
        assert_eq!(page("z".repeat(901)).await, Err(SendError::Overloaded));
        assert_eq!(budget.used(), 1100, "nothing stays reserved for a refused page");
    }
}
