//! One delivery attempt for one store: read the batch after the cursor, commit its end as pending, hand it to the
//! sink, and on acknowledgement commit the cursor past it.
//!
//! The order is what makes delivery at-least-once and stable: nothing is sent before its end is committed (so a
//! retry, a restart or another node resends exactly the same batch, under the same idempotency key), and the cursor
//! moves only after the sink acknowledged and only by a committed write. A crash between the acknowledgement and
//! that write resends the batch; nothing is ever skipped. Only committed events are readable, so nothing is sent
//! before its commit either.

use std::sync::Arc;

use super::batch::{BATCH_MAX_EVENTS, BATCH_READ_LIMIT, EventBatch, is_contiguous, trim_to_batch};
use super::{DeliveryError, EventSink, FailureKind};
use crate::error::ServerError;
use crate::storage::cursors::{Cursor, CursorWrite, Lease};
use crate::storage::{EventStorage, NO_UPPER_BOUND, ReadLimit, StoredEvent};

/// What a step needs.
#[derive(Clone)]
pub(super) struct StepContext {
    pub(super) log: Arc<dyn EventStorage>,
    pub(super) lease: Arc<dyn Lease>,
    pub(super) sink: Arc<dyn EventSink>,
}

/// How a step ended.
#[derive(Debug)]
pub(super) enum StepOutcome {
    /// The sink acknowledged `events` events; the cursor is committed at `cursor`.
    Delivered { cursor: Cursor, events: usize },
    /// Nothing after the cursor is committed.
    CaughtUp(Cursor),
    /// The attempt failed; `cursor` is what is committed (with the batch's pending end, once written).
    Failed { cursor: Option<Cursor>, failure: StepFailure },
    /// The cursor row did not hold what this node expected.
    Moved,
}

/// Why a step failed.
#[derive(Debug)]
pub(super) enum StepFailure {
    /// The sink did not acknowledge.
    Delivery(DeliveryError),
    /// Reading the events or writing the cursor failed.
    Storage(ServerError),
}

impl StepFailure {
    pub(super) fn kind(&self) -> FailureKind {
        match self {
            StepFailure::Delivery(error) => FailureKind::of(error),
            StepFailure::Storage(_) => FailureKind::Storage,
        }
    }
}

impl std::fmt::Display for StepFailure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepFailure::Delivery(error) => write!(formatter, "{error}"),
            StepFailure::Storage(error) => {
                write!(formatter, "{error}")?;
                let mut source = std::error::Error::source(error);
                while let Some(cause) = source {
                    write!(formatter, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
        }
    }
}

/// Delivers the next batch of `store_id` after `cursor` (loaded first when unknown).
pub(super) async fn step(
    context: &StepContext,
    store_id: &str,
    cursor: Option<Cursor>,
) -> StepOutcome {
    let storage_failure =
        |cursor, error| StepOutcome::Failed { cursor, failure: StepFailure::Storage(error) };
    let cursor = match cursor {
        Some(cursor) => cursor,
        None => match context.lease.load(store_id).await {
            Ok(cursor) => cursor,
            Err(error) => return storage_failure(None, error),
        },
    };
    let events = match read_batch(context, store_id, cursor).await {
        Ok(Some(events)) => events,
        Ok(None) => return StepOutcome::CaughtUp(cursor),
        Err(error) => return storage_failure(Some(cursor), error),
    };
    let last = events.last().map_or(cursor.delivered, |event| event.seq_num);
    match context.lease.begin(store_id, cursor.delivered, last).await {
        Ok(CursorWrite::Written) => {}
        Ok(CursorWrite::Moved) => return StepOutcome::Moved,
        Err(error) => return storage_failure(Some(cursor), error),
    }
    let pending = Cursor { delivered: cursor.delivered, pending: Some(last) };
    let batch = EventBatch::new(store_id, events);
    if let Err(error) = context.sink.deliver(&batch).await {
        return StepOutcome::Failed {
            cursor: Some(pending),
            failure: StepFailure::Delivery(error),
        };
    }
    match context.lease.advance(store_id, cursor.delivered, last).await {
        Ok(CursorWrite::Written) => StepOutcome::Delivered {
            cursor: Cursor { delivered: last, pending: None },
            events: batch.events().len(),
        },
        Ok(CursorWrite::Moved) => StepOutcome::Moved,
        Err(error) => storage_failure(Some(pending), error),
    }
}

/// The batch to send: exactly the pending range when one is committed, else the next events within the batch
/// bounds; `None` when nothing follows the cursor.
async fn read_batch(
    context: &StepContext,
    store_id: &str,
    cursor: Cursor,
) -> Result<Option<Vec<StoredEvent>>, ServerError> {
    // A pending range wider than a batch can only come from a build with other bounds: form a new batch instead.
    let pending = cursor
        .pending
        .filter(|end| *end > cursor.delivered && end - cursor.delivered <= BATCH_MAX_EVENTS as u64);
    let (up_to, limit) = match pending {
        Some(end) => (end, ReadLimit::events((end - cursor.delivered) as usize)),
        None => (NO_UPPER_BOUND, BATCH_READ_LIMIT),
    };
    let mut events = context.log.read_events(store_id, cursor.delivered, up_to, limit).await?;
    if pending.is_none() {
        trim_to_batch(&mut events);
    }
    let complete = match pending {
        Some(end) => events.last().is_some_and(|event| event.seq_num == end),
        None => true,
    };
    if events.is_empty() && pending.is_none() {
        return Ok(None);
    }
    if !complete || !is_contiguous(&events, cursor.delivered) {
        return Err(ServerError::LogDiscontinuity {
            store_id: store_id.to_owned(),
            after: cursor.delivered,
        });
    }
    Ok(Some(events))
}
