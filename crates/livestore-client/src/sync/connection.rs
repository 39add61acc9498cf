//! One WebSocket connection of the sync driver: the tokio adapter around [`ConnectionMachine`].
//!
//! It opens the socket (with `TCP_NODELAY`), turns what happens into [`Input`]s and performs the machine's
//! [`Output`]s: it sends frames, sleeps until [`ConnectionMachine::next_deadline`], closes. It decides nothing;
//! every rule of the connection lives in the machine.
//!
//! Frames that have already arrived when one is read are read too (up to [`MAX_COALESCED_FRAMES`]) and handed to
//! the machine as one [`Input::Frames`], which applies consecutive pull pages in one store transaction: during a
//! catch-up the server sends pages faster than one transaction per page can absorb, and a live client sees one
//! frame at a time, so coalescing costs it nothing. The frames the machine asks for while handling one input are
//! written together and flushed once (the acks of a whole batch cost one write).

use std::pin::pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use livestore_core::event::LocalEvent;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};

use super::DriverState;
use super::machine::{Config, ConnectionMachine, Input, Output, SyncStore};
use super::reason::{ConnectionEnd, ErrorSource, TransportFailure};
use crate::error::StoreError;
use crate::store::{ApplyOutcome, Store, UpstreamEvent};

/// At most this many already-arrived frames are handled together. Measured on a 1,000,000-event catch-up:
/// 16-32 pages per transaction beat 64 and 256, where the socket goes unread for so long that the server's
/// sending stalls.
const MAX_COALESCED_FRAMES: usize = 32;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

type Frame = Option<Result<Message, tungstenite::Error>>;

/// Runs one connection until it ends; the caller reconnects or stops.
pub(super) async fn connection(
    store: &Store,
    config: Config,
    url: &str,
    stop: &mut watch::Receiver<bool>,
    state: &watch::Sender<DriverState>,
) -> ConnectionEnd {
    let origin = Instant::now();
    let now = || origin.elapsed();
    let mut store = store.clone();
    let mut machine = ConnectionMachine::new(config, now());
    let mut socket = {
        // Nagle's algorithm would hold a small push back until the previous segment is acknowledged, which with
        // delayed ACKs costs tens of milliseconds per commit.
        let mut connect = pin!(tokio_tungstenite::connect_async_with_config(url, None, true));
        loop {
            let deadline = machine.next_deadline().map_or(origin, |deadline| origin + deadline);
            let input = tokio::select! {
                result = &mut connect => match result {
                    Ok((socket, _response)) => break socket,
                    Err(error) => Input::Closed(TransportFailure::ConnectFailed(ErrorSource::new(error))),
                },
                _ = tokio::time::sleep_until(deadline) => Input::Tick,
                _ = stop.changed() => Input::Stop,
            };
            machine.handle(now(), input, &mut store);
            while let Some(output) = machine.poll_output() {
                if let Output::Ended(end) = output {
                    return end;
                }
            }
        }
    };
    machine.handle(now(), Input::Opened, &mut store);
    let shared = std::sync::Arc::clone(&store.shared);
    let mut sleep = pin!(tokio::time::sleep_until(origin));
    let mut armed = None;
    loop {
        if let Some(end) = perform(&mut machine, &mut socket, &mut store, state, now).await {
            return end;
        }
        let deadline = origin + machine.next_deadline().expect("an open connection has timers");
        if armed != Some(deadline) {
            sleep.as_mut().reset(deadline);
            armed = Some(deadline);
        }
        let input = tokio::select! {
            frame = socket.next() => {
                let (texts, ended) = read_ready_frames(&mut socket, frame);
                if let Some(failure) = ended {
                    // The frames read before the end are handled first, as they arrived.
                    machine.handle(now(), Input::Frames(texts), &mut store);
                    Input::Closed(failure)
                } else {
                    Input::Frames(texts)
                }
            }
            _ = shared.local_commits.notified() => Input::LocalCommit,
            _ = &mut sleep => {
                armed = None;
                Input::Tick
            }
            _ = stop.changed() => Input::Stop,
        };
        machine.handle(now(), input, &mut store);
    }
}

/// Performs the machine's outputs; returns how the connection ended if it did.
///
/// Frames are fed to the socket and flushed once at the end. A failed write is reported to the machine, which
/// drops the frames it still had queued and ends the connection.
async fn perform(
    machine: &mut ConnectionMachine,
    socket: &mut Socket,
    store: &mut Store,
    state: &watch::Sender<DriverState>,
    now: impl Fn() -> Duration,
) -> Option<ConnectionEnd> {
    loop {
        let mut unflushed = false;
        let mut failed = None;
        while let Some(output) = machine.poll_output() {
            let written = match output {
                Output::Send { text, .. } => {
                    unflushed = true;
                    socket.feed(Message::Text(text.into())).await
                }
                Output::Close => {
                    unflushed = false;
                    socket.close(None).await
                }
                Output::Connected => {
                    store.shared.connected.store(true, Ordering::Relaxed);
                    state.send_modify(|state| state.connected = true);
                    Ok(())
                }
                Output::CaughtUp(caught_up) => {
                    state.send_modify(|state| state.caught_up = caught_up);
                    Ok(())
                }
                Output::Ended(end) => return Some(end),
            };
            if let Err(error) = written {
                failed = Some(error);
                break;
            }
        }
        if failed.is_none()
            && unflushed
            && let Err(error) = socket.flush().await
        {
            failed = Some(error);
        }
        let error = failed?;
        let failure = TransportFailure::Send(ErrorSource::new(error));
        machine.handle(now(), Input::Closed(failure), store);
    }
}

/// The text of `first` and of every frame that has already arrived after it, and how the connection ended if
/// it did while reading (to be handled after the frames read before it).
fn read_ready_frames(socket: &mut Socket, first: Frame) -> (Vec<String>, Option<TransportFailure>) {
    let mut texts = Vec::new();
    let mut next = Some(first);
    while let Some(frame) = next.take() {
        match frame {
            None | Some(Ok(Message::Close(_))) => return (texts, Some(TransportFailure::Closed)),
            Some(Err(error)) => {
                return (texts, Some(TransportFailure::Read(ErrorSource::new(error))));
            }
            Some(Ok(Message::Text(text))) => texts.push(text.as_str().to_owned()),
            Some(Ok(Message::Binary(bytes))) => {
                texts.push(String::from_utf8_lossy(&bytes).into_owned())
            }
            Some(Ok(_)) => {}
        }
        if texts.len() < MAX_COALESCED_FRAMES {
            // `now_or_never` polls once: a frame that is already buffered, or nothing.
            next = socket.next().now_or_never();
        }
    }
    (texts, None)
}

/// The real store, called synchronously by the machine (each call is one short SQLite transaction or read).
impl SyncStore for Store {
    fn store_id(&self) -> &str {
        Store::store_id(self)
    }

    fn upstream_cursor(&mut self) -> Result<(u64, Option<String>), StoreError> {
        Store::upstream_cursor(self)
    }

    fn apply_upstream(
        &mut self,
        events: &[UpstreamEvent],
        backend_id: &str,
    ) -> Result<ApplyOutcome, StoreError> {
        Store::apply_upstream(self, events, backend_id)
    }

    fn push_candidates_after(
        &mut self,
        after: u64,
        max: usize,
    ) -> Result<Vec<LocalEvent>, StoreError> {
        Store::push_candidates_after(self, after, max)
    }

    fn reset_local(&mut self) -> Result<(), StoreError> {
        Store::reset_local(self)
    }

    fn shutdown(&mut self) -> Result<(), StoreError> {
        Store::shutdown(self)
    }
}
