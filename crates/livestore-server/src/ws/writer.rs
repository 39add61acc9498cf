//! The writer task of a WebSocket connection: drains the connection's outbound queue into the socket.
//!
//! It feeds everything already queued and then flushes once (fewer syscalls under fan-out), keeps the ack-before-echo
//! order (`ack_order`), turns a live batch's pages into `Chunk` frames, and gives each frame's bytes back (its
//! [`Charge`](crate::outbox::Charge)) once the flush has put it on the wire. A close request (a lagging subscriber, no memory
//! budget left, an expired credential) goes out ahead of whatever is queued. A socket that takes nothing for the
//! write timeout ends the connection.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures_util::{Sink, SinkExt};
use livestore_proto::encode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ack_order::{AckOrder, LiveDecision};
use crate::outbox::{CloseReason, CloseSignal, Outbound};

/// Drains `frames` into `sink` until the queue ends, the socket fails, or a close is written.
pub(super) async fn write_loop<S>(
    mut sink: S,
    mut frames: mpsc::Receiver<Outbound>,
    mut order: AckOrder,
    done: CancellationToken,
    close: CloseSignal,
    write_timeout: Duration,
) where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    let close_requested = close.requested();
    tokio::pin!(close_requested);
    loop {
        let first = tokio::select! {
            biased;
            reason = &mut close_requested => Outbound::Close(reason),
            frame = frames.recv() => match frame {
                Some(frame) => frame,
                None => break,
            },
        };
        let mut next = Some(first);
        // Charges of the frames fed in this round, given back once the flush has put them on the wire.
        let mut written = Vec::new();
        while let Some(frame) = next.take() {
            let ready = match frame {
                Outbound::Live { .. } => match order.live(frame) {
                    LiveDecision::Write(frame) => vec![frame],
                    LiveDecision::Held => Vec::new(),
                    LiveDecision::Overflow => vec![Outbound::Close(CloseReason::RepliesOverdue)],
                },
                Outbound::PushReply { text, push } => {
                    let mut ready = vec![Outbound::Text(text)];
                    ready.extend(order.replied(push));
                    ready
                }
                other => vec![other],
            };
            for frame in ready {
                let (frame, charge) = frame.take_charge();
                written.extend(charge);
                if !write_frame(&mut sink, frame, write_timeout).await {
                    done.cancel();
                    return;
                }
            }
            next = frames.try_recv().ok();
        }
        if !matches!(tokio::time::timeout(write_timeout, sink.flush()).await, Ok(Ok(()))) {
            done.cancel();
            return;
        }
        drop(written);
    }
    let _ = sink.close().await;
    done.cancel();
}

/// Writes one outbound item; false when the connection is finished (closed on purpose or broken). The item, and
/// with it the bytes it holds, is dropped once the socket has taken it.
async fn write_frame<S>(sink: &mut S, frame: Outbound, write_timeout: Duration) -> bool
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    match frame {
        Outbound::Text(text) | Outbound::PushReply { text, .. } | Outbound::Page { text, .. } => {
            feed_text(sink, text, write_timeout).await
        }
        Outbound::Live { request_id, batch, .. } => {
            for page in &batch.pages {
                let chunk = encode::chunk(&request_id, &[page.json.as_str()]);
                if !feed_text(sink, chunk, write_timeout).await {
                    return false;
                }
            }
            true
        }
        Outbound::Close(reason) => {
            let close = Message::Close(Some(CloseFrame {
                code: reason.code(),
                reason: reason.text().into(),
            }));
            let _ = tokio::time::timeout(write_timeout, sink.send(close)).await;
            false
        }
    }
}

async fn feed_text<S>(sink: &mut S, text: String, write_timeout: Duration) -> bool
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    matches!(
        tokio::time::timeout(write_timeout, sink.feed(Message::Text(text.into()))).await,
        Ok(Ok(()))
    )
}
