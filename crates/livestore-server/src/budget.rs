//! The process-wide memory budget: bytes held on behalf of clients, reserved before they are held.
//!
//! Request bodies being read, WebSocket messages being received, pushes waiting for their commit, backlog pages and
//! live batches waiting for a slow socket all reserve their bytes here first. When a reservation does not fit, the
//! caller sheds load instead of growing: a new request gets 503, a connection that needs more is closed with 1013
//! ("try again later"), a push gets a retryable error. Live batches that are already committed cannot be refused, so
//! they reserve unconditionally ([`MemoryBudget::force_reserve`]) and push the budget over its limit, which makes the
//! next optional reservations fail until they are written out.
//!
//! Bulk input (request bodies, WebSocket messages being received) may fill only three quarters of the budget; the
//! last quarter is kept for pushes and for frames to clients, so a flood of large uploads cannot stop a
//! well-behaved client's pushes and pulls.
//!
//! A [`Reservation`] gives its bytes back when dropped, so a reservation travels with the bytes it accounts for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::{Metrics, ShedResource};

/// The budget; shared by every connection.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
    metrics: Arc<Metrics>,
}

impl MemoryBudget {
    pub(crate) fn new(limit: u64, metrics: Arc<Metrics>) -> Arc<Self> {
        metrics.memory_budget_bytes.set(i64::try_from(limit).unwrap_or(i64::MAX));
        Arc::new(MemoryBudget { limit, used: AtomicU64::new(0), metrics })
    }

    /// A budget no test or tool can exhaust, for storage opened without a server.
    pub(crate) fn unlimited(metrics: Arc<Metrics>) -> Arc<Self> {
        Self::new(u64::MAX / 2, metrics)
    }

    /// Bytes reserved right now.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Reserves `bytes` if they fit under the limit; otherwise counts a shed of `resource` and returns `None`.
    pub(crate) fn try_reserve(
        self: &Arc<Self>,
        bytes: u64,
        resource: ShedResource,
    ) -> Option<Reservation> {
        let ceiling = match resource {
            ShedResource::RequestBody | ShedResource::WebSocketMessage => self.limit / 4 * 3,
            ShedResource::Push | ShedResource::Outbound => self.limit,
        };
        let mut current = self.used.load(Ordering::Relaxed);
        loop {
            let wanted = current.saturating_add(bytes);
            if wanted > ceiling {
                self.metrics.load_shed(resource);
                return None;
            }
            match self.used.compare_exchange_weak(
                current,
                wanted,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Reservation { budget: self.clone(), bytes }),
                Err(actual) => current = actual,
            }
        }
    }

    /// Reserves `bytes` even past the limit, for bytes that exist already and cannot be refused.
    pub(crate) fn force_reserve(self: &Arc<Self>, bytes: u64) -> Reservation {
        self.used.fetch_add(bytes, Ordering::AcqRel);
        Reservation { budget: self.clone(), bytes }
    }
}

/// Bytes held against the budget until this is dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Reservation {
    /// Reserves `more` bytes on top of this reservation, if they fit.
    pub(crate) fn try_grow(&mut self, more: u64, resource: ShedResource) -> bool {
        match self.budget.try_reserve(more, resource) {
            Some(extra) => {
                self.bytes += extra.bytes;
                std::mem::forget(extra);
                true
            }
            None => false,
        }
    }

    /// The bytes this reservation holds.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_or_are_refused_and_give_back_on_drop() {
        let metrics = Arc::new(Metrics::new());
        let budget = MemoryBudget::new(100, metrics.clone());
        let mut first = budget.try_reserve(60, ShedResource::RequestBody).unwrap();
        assert!(
            budget.try_reserve(16, ShedResource::RequestBody).is_none(),
            "bulk input stops at 3/4"
        );
        assert!(!first.try_grow(16, ShedResource::WebSocketMessage));
        assert!(first.try_grow(15, ShedResource::WebSocketMessage));
        let push =
            budget.try_reserve(25, ShedResource::Push).expect("pushes may use the last quarter");
        assert!(budget.try_reserve(1, ShedResource::Outbound).is_none());
        drop(push);
        assert!(first.try_grow(25, ShedResource::Push));
        assert_eq!((first.bytes(), budget.used()), (100, 100));
        let forced = budget.force_reserve(50);
        assert_eq!(budget.used(), 150);
        assert!(budget.try_reserve(1, ShedResource::Push).is_none());
        drop(first);
        drop(forced);
        assert_eq!(budget.used(), 0);
        let rendered = metrics.render();
        assert!(
            rendered.contains("livestore_load_shed_total{resource=\"request_body\"} 1"),
            "{rendered}"
        );
        assert!(rendered.contains("livestore_load_shed_total{resource=\"websocket_message\"} 1"));
    }
}
