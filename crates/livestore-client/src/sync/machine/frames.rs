//! Server frames into store calls: pull chunks become pages (applied in one store call when consecutive),
//! push results update the push bookkeeping, a `backendId` mismatch applies the policy.
//!
//! Decoding is here because it is pure; the frames arrive as text from whichever transport the caller has.

use std::sync::Arc;
use std::time::Duration;

use livestore_core::event::LocalEvent;
use livestore_core::seq_num::EventSeqNum;
use livestore_proto::client::{self as wire, PageInfo, RpcFailure, ServerMessage};
use livestore_proto::pull_chunk::{PullItemRef, decode_pull_chunk};
use serde_json::value::RawValue;

use super::{ConnectionMachine, FrameKind, SyncStore, store_stop};
use crate::error::StoreError;
use crate::intern::{Interner, intern};
use crate::store::UpstreamEvent;
use crate::sync::BackendIdPolicy;
use crate::sync::reason::{ConnectionEnd, EndReason, ErrorSource, StopReason};

/// Pull pages turned into store input, owning their data.
struct Page {
    backend_id: String,
    no_more: bool,
    events: Vec<UpstreamEvent>,
}

impl ConnectionMachine {
    /// Handles frames in order; consecutive pull pages are applied together, and each chunk is acked.
    pub(super) fn handle_frames(
        &mut self,
        now: Duration,
        texts: Vec<String>,
        store: &mut impl SyncStore,
    ) -> Result<(), ConnectionEnd> {
        let mut pages = Vec::new();
        let mut strings = Interner::default();
        let mut acks = 0;
        for text in texts {
            // The common case, a chunk of pull pages, in one borrowing pass; anything else the general way.
            if let Some(chunk) = decode_pull_chunk(&text)
                && chunk.request_id == self.pull_id
            {
                acks += 1;
                pages.extend(chunk.pages.into_iter().map(|page| {
                    Page {
                        backend_id: page.backend_id.into_owned(),
                        no_more: page.page_info == PageInfo::NoMore,
                        events: page
                            .batch
                            .iter()
                            .map(|item| upstream_from_ref(item, &mut strings))
                            .collect(),
                    }
                }));
                continue;
            }
            let message = match wire::decode_server_message(&text) {
                Ok(message) => message,
                Err(error) => {
                    // A frame we cannot read is skipped; the watchdog reconnects if it mattered.
                    tracing::warn!(target: "livestore_client::_events::bad_frame", %error, "ignoring malformed server frame");
                    continue;
                }
            };
            match message {
                ServerMessage::Chunk { request_id, values } if request_id == self.pull_id => {
                    acks += 1;
                    for value in values {
                        let page = wire::decode_pull_response(&value).map_err(|error| {
                            ConnectionEnd::Retry(EndReason::MalformedPullPage(ErrorSource::new(
                                error,
                            )))
                        })?;
                        pages.push(Page {
                            no_more: page.page_info == PageInfo::NoMore,
                            events: page
                                .batch
                                .into_iter()
                                .map(|item| upstream_from_owned(item, &mut strings))
                                .collect(),
                            backend_id: page.backend_id,
                        });
                    }
                }
                other => {
                    self.apply_pages(std::mem::take(&mut pages), store)?;
                    self.handle_message(now, other, store)?;
                }
            }
        }
        self.apply_pages(pages, store)?;
        for _ in 0..acks {
            let ack = wire::ack(&self.pull_id);
            self.send(FrameKind::Ack, ack);
        }
        Ok(())
    }

    /// Everything but pull pages.
    fn handle_message(
        &mut self,
        now: Duration,
        message: ServerMessage,
        store: &mut impl SyncStore,
    ) -> Result<(), ConnectionEnd> {
        match message {
            ServerMessage::Pong | ServerMessage::Chunk { .. } => Ok(()),
            ServerMessage::Defect(defect) => {
                Err(ConnectionEnd::Retry(EndReason::ServerDefect(defect)))
            }
            ServerMessage::Exit { request_id, result } if request_id == self.pull_id => {
                match result {
                    Err(RpcFailure::BackendIdMismatch { expected, received }) => {
                        // On the wire `expected` is the server's id and `received` ours.
                        Err(self.backend_mismatch(store, received, expected))
                    }
                    Err(failure) => {
                        Err(ConnectionEnd::Retry(EndReason::LivePullEnded(Some(failure))))
                    }
                    Ok(()) => Err(ConnectionEnd::Retry(EndReason::LivePullEnded(None))),
                }
            }
            ServerMessage::Exit { request_id, result } => {
                // An answer to anything but the push in flight (there is only one) is stale.
                let Some(push) = self.push_in_flight.take_if(|push| push.request_id == request_id)
                else {
                    return Ok(());
                };
                match result {
                    Ok(()) => {
                        self.accepted_through = self.accepted_through.max(push.last_global);
                        self.accepted_at.get_or_insert(now);
                        Ok(())
                    }
                    Err(RpcFailure::ServerAhead { .. }) => {
                        self.accepted_through = 0;
                        self.accepted_at = None;
                        // Wait for the page that carries what we are behind on, unless it already arrived while
                        // the push was in flight (then the pending events are rebased and can go out right away).
                        if self.pages_applied == self.pages_at_push {
                            self.parked_since = Some(now);
                        }
                        Ok(())
                    }
                    Err(RpcFailure::BackendIdMismatch { expected, received }) => {
                        Err(self.backend_mismatch(store, received, expected))
                    }
                    Err(failure) => Err(ConnectionEnd::Retry(EndReason::PushFailed(failure))),
                }
            }
            _ => Ok(()),
        }
    }

    /// Applies consecutive pull pages in one store call (pages of one backend; a change of backend splits them).
    fn apply_pages(
        &mut self,
        pages: Vec<Page>,
        store: &mut impl SyncStore,
    ) -> Result<(), ConnectionEnd> {
        let mut pages = pages.into_iter().peekable();
        while let Some(first) = pages.next() {
            let backend_id = first.backend_id;
            let mut no_more = first.no_more;
            let mut count = 1;
            let mut events = first.events;
            while let Some(page) = pages.next_if(|page| page.backend_id == backend_id) {
                no_more |= page.no_more;
                count += 1;
                events.extend(page.events);
            }
            self.apply_events(store, &events, &backend_id)?;
            self.pages_applied += count;
            if no_more {
                self.backlog_done = true;
            }
        }
        Ok(())
    }

    fn apply_events(
        &mut self,
        store: &mut impl SyncStore,
        events: &[UpstreamEvent],
        backend_id: &str,
    ) -> Result<(), ConnectionEnd> {
        match store.apply_upstream(events, backend_id) {
            Ok(outcome) => {
                if outcome.rebased > 0 {
                    self.accepted_through = 0;
                }
                let (head, _) = store.upstream_cursor().map_err(store_stop)?;
                if self.accepted_through <= head {
                    self.accepted_through = 0;
                    self.accepted_at = None;
                }
                // Any pulled page ends a `ServerAheadError` wait: it carries what we were behind on.
                self.parked_since = None;
                Ok(())
            }
            Err(StoreError::BackendIdMismatch { expected, received }) => {
                Err(self.backend_mismatch(store, expected, received))
            }
            Err(error @ StoreError::Shutdown) => Err(store_stop(error)),
            Err(error) => {
                Err(ConnectionEnd::Retry(EndReason::PullPageRefused(ErrorSource::new(error))))
            }
        }
    }

    /// The server's log (`received`) is not the one this store synced with (`expected`): apply the policy.
    fn backend_mismatch(
        &self,
        store: &mut impl SyncStore,
        expected: String,
        received: String,
    ) -> ConnectionEnd {
        let policy = self.config.backend_id_policy;
        tracing::warn!(target: "livestore_client::_events::backend_id_mismatch", expected, received, ?policy, "backend id mismatch");
        match policy {
            BackendIdPolicy::Reset => match store.reset_local() {
                Ok(()) => ConnectionEnd::Retry(EndReason::BackendReset { expected, received }),
                Err(error) => ConnectionEnd::Retry(EndReason::ResetFailed(ErrorSource::new(error))),
            },
            BackendIdPolicy::Shutdown | BackendIdPolicy::Ignore => {
                if policy == BackendIdPolicy::Shutdown {
                    // Already shut down is as good; the driver stops either way.
                    let _ = store.shutdown();
                }
                ConnectionEnd::Stop(StopReason::BackendIdMismatch { policy, expected, received })
            }
        }
    }
}

fn upstream_from_ref(item: &PullItemRef<'_>, strings: &mut Interner) -> UpstreamEvent {
    let event = &item.event_encoded;
    UpstreamEvent {
        event: LocalEvent {
            seq_num: EventSeqNum::from_global(event.seq_num.0),
            parent_seq_num: EventSeqNum::from_global(event.parent_seq_num.0),
            name: intern(&mut strings.name, &event.name),
            args_json: Arc::from(event.args.map_or("{}", RawValue::get)),
            client_id: intern(&mut strings.client_id, &event.client_id),
            session_id: intern(&mut strings.session_id, &event.session_id),
            client_only: false,
        },
        metadata_json: Some(item.metadata.get().to_owned()),
    }
}

fn upstream_from_owned(item: wire::PullItem, strings: &mut Interner) -> UpstreamEvent {
    let event = item.event_encoded;
    UpstreamEvent {
        event: LocalEvent {
            seq_num: EventSeqNum::from_global(event.seq_num.0),
            parent_seq_num: EventSeqNum::from_global(event.parent_seq_num.0),
            name: intern(&mut strings.name, &event.name),
            args_json: Arc::from(event.args.as_ref().map_or("{}", |raw| raw.get())),
            client_id: intern(&mut strings.client_id, &event.client_id),
            session_id: intern(&mut strings.session_id, &event.session_id),
            client_only: false,
        },
        metadata_json: Some(item.metadata.get().to_owned()),
    }
}
