//! The socket under every connection, with two watchdogs hyper and tungstenite do not have.
//!
//! - **Unread writes.** A write (or flush) that stays blocked for `write_timeout` fails the connection. Without it a
//!   client that stops reading a response (a streamed HTTP pull, a file download, a WebSocket) pins the frames queued
//!   for it and its connection task forever.
//! - **Unfinished WebSocket messages.** Once the connection is a WebSocket, the first bytes of a message start a
//!   clock: the message must be complete within `message_timeout`, or the connection fails. tungstenite buffers a
//!   message until its last byte, so a client that sends all but the last bytes of a 4 MiB frame would otherwise pin
//!   4 MiB for as long as it keeps the socket. The bytes of a message being received also reserve their share of
//!   the memory budget (past the first [`FREE_INBOUND_BYTES`]); when the budget is full the connection fails and the
//!   session closes it with 1013.
//!
//! The session marks each complete message ([`ConnectionWatch::message_completed`]); this wrapper only sees bytes,
//! so bytes of the next message that arrive in the same read as the end of the previous one are not counted: at
//! most one read (a few KiB) can sit unwatched. Idle connections cost nothing: no timer exists until a write blocks
//! or a message starts.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::budget::{MemoryBudget, Reservation};
use crate::metrics::{LimitHit, Metrics, ShedResource};

/// Bytes of a WebSocket message that may arrive before it reserves memory budget (small messages never do).
const FREE_INBOUND_BYTES: u64 = 64 * 1024;
/// Reservations for a message being received grow in steps of this size.
const INBOUND_RESERVATION_STEP: u64 = 256 * 1024;

/// Why the socket failed on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IoFailure {
    /// A started WebSocket message was not completed within the message timeout.
    MessageTimeout,
    /// The memory budget had no room for the message being received.
    Budget,
    /// The client left written data unread for the write timeout.
    WriteTimeout,
}

/// Settings and shared state of one connection's watchdogs.
#[derive(Debug)]
pub(crate) struct ConnectionWatch {
    message_timeout: Duration,
    write_timeout: Duration,
    budget: Arc<MemoryBudget>,
    metrics: Arc<Metrics>,
    /// Set by the WebSocket session; before that, hyper reads request bodies (watched by `body_guard`).
    websocket: AtomicBool,
    /// Incremented by the session for each complete message.
    completed_messages: AtomicU64,
    /// An [`IoFailure`] as a number (0 = none), for the session to pick its close code.
    failure: AtomicU8,
}

impl ConnectionWatch {
    pub(crate) fn new(
        message_timeout: Duration,
        write_timeout: Duration,
        budget: Arc<MemoryBudget>,
        metrics: Arc<Metrics>,
    ) -> Self {
        ConnectionWatch {
            message_timeout,
            write_timeout,
            budget,
            metrics,
            websocket: AtomicBool::new(false),
            completed_messages: AtomicU64::new(0),
            failure: AtomicU8::new(0),
        }
    }

    /// The connection was upgraded: from now on, bytes belong to WebSocket messages.
    pub(crate) fn websocket_started(&self) {
        self.websocket.store(true, Ordering::Release);
    }

    /// A whole message arrived: its bytes are no longer pending.
    pub(crate) fn message_completed(&self) {
        self.completed_messages.fetch_add(1, Ordering::AcqRel);
    }

    /// Why the socket failed, if a watchdog failed it.
    pub(crate) fn failure(&self) -> Option<IoFailure> {
        match self.failure.load(Ordering::Acquire) {
            1 => Some(IoFailure::MessageTimeout),
            2 => Some(IoFailure::Budget),
            3 => Some(IoFailure::WriteTimeout),
            _ => None,
        }
    }

    fn fail(&self, failure: IoFailure) -> io::Error {
        let (code, message) = match failure {
            IoFailure::MessageTimeout => {
                self.metrics.limit_hit(LimitHit::MessageTimeout);
                (1, "WebSocket message not completed in time")
            }
            IoFailure::Budget => (2, "memory budget exhausted"),
            IoFailure::WriteTimeout => {
                self.metrics.limit_hit(LimitHit::WriteTimeout);
                (3, "client did not read for the write timeout")
            }
        };
        self.failure.store(code, Ordering::Release);
        io::Error::new(io::ErrorKind::TimedOut, message)
    }
}

/// A socket with the watchdogs; see the module docs.
#[derive(Debug)]
pub(crate) struct GuardedIo<T> {
    inner: T,
    watch: Arc<ConnectionWatch>,
    /// Deadline of the message being received (armed while one is pending).
    read_deadline: Option<Pin<Box<Sleep>>>,
    /// Deadline of a blocked write (armed while writes are blocked).
    write_deadline: Option<Pin<Box<Sleep>>>,
    write_armed: bool,
    /// Bytes read since the last complete message, and the budget they hold.
    pending_bytes: u64,
    reservation: Option<Reservation>,
    reserved: u64,
    seen_completions: u64,
}

impl<T> GuardedIo<T> {
    pub(crate) fn new(inner: T, watch: Arc<ConnectionWatch>) -> Self {
        GuardedIo {
            inner,
            watch,
            read_deadline: None,
            write_deadline: None,
            write_armed: false,
            pending_bytes: 0,
            reservation: None,
            reserved: 0,
            seen_completions: 0,
        }
    }

    /// Forgets the pending message once the session has seen it complete.
    fn catch_up_with_completions(&mut self) {
        let completions = self.watch.completed_messages.load(Ordering::Acquire);
        if completions != self.seen_completions {
            self.seen_completions = completions;
            self.pending_bytes = 0;
            self.reservation = None;
            self.reserved = 0;
            self.read_deadline = None;
        }
    }

    /// Accounts `count` bytes just read as part of the message being received.
    fn received(&mut self, count: u64) -> io::Result<()> {
        if count == 0 || !self.watch.websocket.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.pending_bytes == 0 {
            self.read_deadline = Some(Box::pin(tokio::time::sleep_until(
                Instant::now() + self.watch.message_timeout,
            )));
        }
        self.pending_bytes += count;
        if self.pending_bytes > FREE_INBOUND_BYTES + self.reserved {
            let wanted = (self.pending_bytes - FREE_INBOUND_BYTES - self.reserved)
                .div_ceil(INBOUND_RESERVATION_STEP)
                * INBOUND_RESERVATION_STEP;
            let granted = match &mut self.reservation {
                Some(reservation) => reservation.try_grow(wanted, ShedResource::WebSocketMessage),
                None => match self.watch.budget.try_reserve(wanted, ShedResource::WebSocketMessage)
                {
                    Some(reservation) => {
                        self.reservation = Some(reservation);
                        true
                    }
                    None => false,
                },
            };
            if !granted {
                return Err(self.watch.fail(IoFailure::Budget));
            }
            self.reserved += wanted;
        }
        Ok(())
    }

    /// After the inner socket answered `Pending` to a write: arms the write deadline, fails once it passed.
    fn write_blocked(&mut self, context: &mut Context<'_>) -> io::Result<()> {
        let deadline = Instant::now() + self.watch.write_timeout;
        if !self.write_armed {
            self.write_armed = true;
            match &mut self.write_deadline {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.write_deadline = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let sleep = self.write_deadline.as_mut().expect("armed above");
        if sleep.as_mut().poll(context).is_ready() {
            return Err(self.watch.fail(IoFailure::WriteTimeout));
        }
        Ok(())
    }

    fn finish_write<R>(
        &mut self,
        context: &mut Context<'_>,
        result: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match result {
            Poll::Pending => match self.write_blocked(context) {
                Ok(()) => Poll::Pending,
                Err(error) => Poll::Ready(Err(error)),
            },
            ready => {
                self.write_armed = false;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.catch_up_with_completions();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(context, buf) {
            Poll::Ready(Ok(())) => {
                let count = (buf.filled().len() - before) as u64;
                Poll::Ready(this.received(count))
            }
            Poll::Pending => {
                if let Some(deadline) = &mut this.read_deadline {
                    ready!(deadline.as_mut().poll(context));
                    return Poll::Ready(Err(this.watch.fail(IoFailure::MessageTimeout)));
                }
                Poll::Pending
            }
            failed => failed,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(context, buf);
        self.finish_write(context, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(context, bufs);
        self.finish_write(context, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(context);
        self.finish_write(context, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(context);
        self.finish_write(context, result)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn watch(budget_bytes: u64) -> (Arc<ConnectionWatch>, Arc<MemoryBudget>) {
        let metrics = Arc::new(Metrics::new());
        let budget = MemoryBudget::new(budget_bytes, metrics.clone());
        let watch = Arc::new(ConnectionWatch::new(
            Duration::from_secs(5),
            Duration::from_secs(5),
            budget.clone(),
            metrics,
        ));
        (watch, budget)
    }

    #[tokio::test(start_paused = true)]
    async fn an_unfinished_message_times_out_but_an_idle_socket_does_not() {
        let (watch, _) = watch(1 << 30);
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut guarded = GuardedIo::new(server, watch.clone());
        let mut client = client;
        watch.websocket_started();
        let mut buffer = vec![0u8; 1024];
        // Idle for a long time: nothing armed, the read stays pending.
        let idle = tokio::time::timeout(Duration::from_secs(60), guarded.read(&mut buffer)).await;
        assert!(idle.is_err());
        client.write_all(b"first half of a message").await.unwrap();
        assert!(guarded.read(&mut buffer).await.unwrap() > 0);
        let error = guarded.read(&mut buffer).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(watch.failure(), Some(IoFailure::MessageTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn completed_messages_disarm_the_clock() {
        let (watch, _) = watch(1 << 30);
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut guarded = GuardedIo::new(server, watch.clone());
        watch.websocket_started();
        let mut buffer = vec![0u8; 1024];
        client.write_all(b"a whole message").await.unwrap();
        assert!(guarded.read(&mut buffer).await.unwrap() > 0);
        watch.message_completed();
        let idle = tokio::time::timeout(Duration::from_secs(60), guarded.read(&mut buffer)).await;
        assert!(idle.is_err(), "no message pending, no deadline");
        assert_eq!(watch.failure(), None);
    }

    #[tokio::test]
    async fn a_message_larger_than_the_budget_fails_the_socket_and_gives_the_budget_back() {
        let (watch, budget) = watch(1024 * 1024);
        let (mut client, server) = tokio::io::duplex(4 << 20);
        let mut guarded = GuardedIo::new(server, watch.clone());
        watch.websocket_started();
        client.write_all(&vec![b'x'; 2 << 20]).await.unwrap();
        let mut buffer = vec![0u8; 64 * 1024];
        let error = loop {
            match guarded.read(&mut buffer).await {
                Ok(_) => continue,
                Err(error) => break error,
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(watch.failure(), Some(IoFailure::Budget));
        assert!(budget.used() <= 1024 * 1024);
        drop(guarded);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_reads_times_out() {
        let (watch, _) = watch(1 << 30);
        let (_client, server) = tokio::io::duplex(1024);
        let mut guarded = GuardedIo::new(server, watch.clone());
        let error = guarded.write_all(&vec![0u8; 64 * 1024]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(watch.failure(), Some(IoFailure::WriteTimeout));
    }
}
