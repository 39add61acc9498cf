//! Committed events as a [`Stream`] for a program that embeds the server.
//!
//! [`event_channel`] returns a [`ChannelSink`] to hand to [`crate::Server::bind_with_sink`] and an [`EventStream`]
//! of [`Delivery`] items. Each delivery holds one batch; [`Delivery::ack`] acknowledges it, which moves the
//! subscriber's durable cursor past it (the cursor write is committed right after), and only then is the store's
//! next batch delivered. [`Delivery::reject`], or dropping a delivery unacknowledged, makes it a failed attempt:
//! the same batch comes again after the backoff. Batches of different stores may be outstanding together (up to
//! the delivery's parallelism), so acknowledge each as soon as it is handled.
//!
//! ```no_run
//! # async fn run() -> Result<(), livestore_server::ServerError> {
//! use futures_util::StreamExt;
//! use livestore_server::events_out::event_channel;
//! use livestore_server::{Server, ServerConfig};
//!
//! let (sink, mut events) = event_channel(16);
//! let server = Server::bind_with_sink(ServerConfig::default(), "indexer", std::sync::Arc::new(sink)).await?;
//! tokio::spawn(async move {
//!     while let Some(delivery) = events.next().await {
//!         let batch = delivery.batch();
//!         println!("{}: events {}..={}", batch.store_id(), batch.first_seq_num(), batch.last_seq_num());
//!         delivery.ack();
//!     }
//! });
//! server.run_until(async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::{mpsc, oneshot};

use super::{DeliveryError, EventBatch, EventSink};

/// A sink whose batches arrive on the paired [`EventStream`].
#[derive(Debug, Clone)]
pub struct ChannelSink {
    sender: mpsc::Sender<Delivery>,
}

/// Batches of committed events, each to be acknowledged.
#[derive(Debug)]
pub struct EventStream {
    receiver: mpsc::Receiver<Delivery>,
}

/// One batch handed to an [`EventStream`]'s consumer; acknowledge it with [`Delivery::ack`].
#[derive(Debug)]
pub struct Delivery {
    batch: EventBatch,
    answer: Option<oneshot::Sender<Result<(), DeliveryError>>>,
}

/// A sink and the stream its batches arrive on; at most `capacity` deliveries wait unread (at least one).
pub fn event_channel(capacity: usize) -> (ChannelSink, EventStream) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    (ChannelSink { sender }, EventStream { receiver })
}

impl Delivery {
    /// The batch.
    pub fn batch(&self) -> &EventBatch {
        &self.batch
    }

    /// Acknowledges the batch: the cursor moves past it and the store's next batch follows.
    pub fn ack(mut self) {
        self.answer(Ok(()));
    }

    /// Refuses the batch: it is delivered again after the backoff.
    pub fn reject(mut self, reason: impl Into<String>) {
        self.answer(Err(DeliveryError::Refused { reason: reason.into() }));
    }

    fn answer(&mut self, answer: Result<(), DeliveryError>) {
        if let Some(sender) = self.answer.take() {
            let _ = sender.send(answer);
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.answer(Err(DeliveryError::Refused {
            reason: "the delivery was dropped without an acknowledgement".into(),
        }));
    }
}

impl Stream for EventStream {
    type Item = Delivery;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Delivery>> {
        self.receiver.poll_recv(context)
    }
}

#[async_trait::async_trait]
impl EventSink for ChannelSink {
    async fn deliver(&self, batch: &EventBatch) -> Result<(), DeliveryError> {
        let (answer, answered) = oneshot::channel();
        let delivery = Delivery { batch: batch.clone(), answer: Some(answer) };
        self.sender.send(delivery).await.map_err(|_| DeliveryError::Closed)?;
        answered.await.map_err(|_| DeliveryError::Closed)?
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::storage::StoredEvent;

    fn batch() -> EventBatch {
        let event =
            StoredEvent { seq_num: 1, encoded_json: "{}".into(), created_at: String::new() };
        EventBatch::new("s", vec![event])
    }

    #[tokio::test]
    async fn deliveries_answer_the_sink() {
        let (sink, mut stream) = event_channel(1);
        let acked = tokio::spawn({
            let sink = sink.clone();
            async move { sink.deliver(&batch()).await }
        });
        stream.next().await.unwrap().ack();
        acked.await.unwrap().unwrap();

        let rejected = tokio::spawn({
            let sink = sink.clone();
            async move { sink.deliver(&batch()).await }
        });
        stream.next().await.unwrap().reject("not now");
        assert!(
            matches!(rejected.await.unwrap(), Err(DeliveryError::Refused { reason }) if reason == "not now")
        );

        let dropped = tokio::spawn({
            let sink = sink.clone();
            async move { sink.deliver(&batch()).await }
        });
        drop(stream.next().await.unwrap());
        assert!(matches!(dropped.await.unwrap(), Err(DeliveryError::Refused { .. })));

        drop(stream);
        assert!(matches!(sink.deliver(&batch()).await, Err(DeliveryError::Closed)));
    }
}
