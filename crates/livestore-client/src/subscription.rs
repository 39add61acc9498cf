//! Subscriptions: queries re-run when a table they read changes, delivered to callbacks or async streams.
//!
//! The tables a query reads are found once, when subscribing ([`crate::db::query::tables_read`]); the tables a
//! commit wrote come from SQLite's update hook. After each committed batch every subscription whose tables
//! intersect the written ones is re-run once, and notified only if its rows changed. Callbacks run after the
//! store's lock is released, so they may query or commit.

use std::collections::BTreeSet;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use futures_util::Stream;

use crate::db::query::Row;
use crate::error::StoreError;
use crate::schema::Query;

pub(crate) type RowsCallback = Arc<dyn Fn(&[Row]) + Send + Sync>;

pub(crate) struct SubscriptionEntry {
    pub(crate) query: Query,
    pub(crate) tables: BTreeSet<String>,
    pub(crate) last_rows: Vec<Row>,
    pub(crate) callback: RowsCallback,
}

impl fmt::Debug for SubscriptionEntry {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SubscriptionEntry")
            .field("query", &self.query)
            .field("tables", &self.tables)
            .finish()
    }
}

/// What a dropped handle tells: implemented by the store, so this module names no store type.
pub(crate) trait Unsubscribe: Send + Sync {
    /// Ends subscription `id`.
    fn unsubscribe(&self, id: u64);
}

/// Keeps a subscription alive; dropping it unsubscribes.
#[must_use = "dropping the handle ends the subscription"]
pub struct SubscriptionHandle {
    pub(crate) store: Weak<dyn Unsubscribe>,
    pub(crate) id: u64,
}

impl fmt::Debug for SubscriptionHandle {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("SubscriptionHandle").field("id", &self.id).finish()
    }
}

impl Drop for SubscriptionHandle {
    fn drop(&mut self) {
        if let Some(shared) = self.store.upgrade() {
            shared.unsubscribe(self.id);
        }
    }
}

/// An async stream of query results: the current result first, then one item per commit batch that changed it.
pub struct SubscriptionStream<T> {
    pub(crate) receiver: tokio::sync::mpsc::UnboundedReceiver<Result<Vec<T>, StoreError>>,
    pub(crate) _handle: SubscriptionHandle,
}

impl<T> fmt::Debug for SubscriptionStream<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("SubscriptionStream").field("handle", &self._handle).finish()
    }
}

impl<T> Stream for SubscriptionStream<T> {
    type Item = Result<Vec<T>, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(context)
    }
}
