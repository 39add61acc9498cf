//! The invariants: cheap ones as the run goes (every append, every delivered ack, after every client step), the
//! expensive ones once at quiescence. The first failure is returned as a [`Violation`] and stops the seed.
//!
//! Events are recognised by their operation tag (`schema::op_tag`), not their sequence number, which rebases
//! change. The checker keeps only what it needs to judge: the tags in the server log, the tags each client
//! committed since its last backend reset, and the backend id each client last had. It reads the store and the
//! server but never changes them, except for the `rebuild` at quiescence that the state check needs.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::Duration;

use livestore_client::{EventSeqNum, LocalEvent, Store};

use crate::client::SimClient;
use crate::error::{Invariant, Violation};
use crate::net::AckNote;
use crate::schema::todos_rows;
use crate::server::{LoggedEvent, Server};

/// What the checks remember between steps.
#[derive(Debug)]
pub struct Checker {
    /// Operation tag → sequence number, for the server log of the current generation.
    server_ops: BTreeMap<String, u64>,
    /// Per client: tags committed since its last backend reset.
    committed: Vec<BTreeSet<String>>,
    /// Per client: the backend id it had after its last step.
    backend: Vec<Option<String>>,
}

impl Checker {
    /// A checker for `clients` clients.
    pub fn new(clients: usize) -> Self {
        Checker {
            server_ops: BTreeMap::new(),
            committed: vec![BTreeSet::new(); clients],
            backend: vec![None; clients],
        }
    }

    /// After the server appended `range` of its log: still chained, and no tag twice.
    pub fn on_append(
        &mut self,
        now: Duration,
        server: &Server,
        range: Range<usize>,
    ) -> Result<(), Violation> {
        let log = server.log();
        for index in range {
            let event = &log[index].encoded;
            let expected = index as u64 + 1;
            if event.seq_num.0 != expected || event.parent_seq_num.0 != expected - 1 {
                return Err(Violation::new(
                    Invariant::ServerLogChained,
                    now,
                    format!(
                        "log position {expected} holds seqNum {} with parent {} ({})",
                        event.seq_num.0, event.parent_seq_num.0, log[index].json
                    ),
                ));
            }
            if let Some(op) = &log[index].op
                && let Some(first) = self.server_ops.insert(op.clone(), expected)
            {
                return Err(Violation::new(
                    Invariant::ExactlyOnce,
                    now,
                    format!("event {op} is in the server log twice: at {first} and at {expected}"),
                ));
            }
        }
        Ok(())
    }

    /// The server lost its log: nothing of the old generation is expected any more.
    pub fn on_log_lost(&mut self) {
        self.server_ops.clear();
    }

    /// A client received a push acknowledgement: the events must be in the server log (unless it was lost since).
    pub fn on_ack_delivered(
        &self,
        now: Duration,
        client: usize,
        note: &AckNote,
        server: &Server,
    ) -> Result<(), Violation> {
        if note.generation != server.generation() {
            return Ok(());
        }
        match note.ops.iter().find(|op| !self.server_ops.contains_key(*op)) {
            None => Ok(()),
            Some(op) => Err(Violation::new(
                Invariant::AckedIsDurable,
                now,
                format!(
                    "client {client} saw {op} acknowledged, but the server log does not have it"
                ),
            )),
        }
    }

    /// Client `client` committed events with these tags.
    pub fn on_commit(&mut self, client: usize, tags: Vec<String>) {
        self.committed[client].extend(tags);
    }

    /// Client `client` wiped its data after a backend change: its earlier commits are gone by design.
    pub fn on_backend_reset(&mut self, client: usize) {
        self.committed[client].clear();
    }

    /// After a step of client `client`: heads in order, backend id only the server's current one.
    pub fn after_client_step(
        &mut self,
        now: Duration,
        client: &SimClient,
        server: &Server,
    ) -> Result<(), Violation> {
        let Some(store) = &client.store else { return Ok(()) };
        let index = client.index;
        let status = store
            .sync_status()
            .map_err(|error| Violation::store(index, now, "sync_status", &error))?;
        let (local, upstream) = (parse_head(&status.local_head), parse_head(&status.upstream_head));
        if upstream.is_greater_than(local) {
            return Err(Violation::new(
                Invariant::UpstreamNotAheadOfLocal,
                now,
                format!("client {index}: upstream head {upstream} is ahead of local head {local}"),
            ));
        }
        if status.backend_id != self.backend[index] {
            if let Some(adopted) = &status.backend_id
                && adopted != server.backend_id()
            {
                return Err(Violation::new(
                    Invariant::BackendIdStable,
                    now,
                    format!(
                        "client {index} adopted backend {adopted:?} (had {:?}) while the server's is {:?}",
                        self.backend[index],
                        server.backend_id()
                    ),
                ));
            }
            self.backend[index] = status.backend_id;
        }
        Ok(())
    }

    /// The client's synced prefix equals the server log's (checked when a connection ends and at restart:
    /// it reads the whole eventlog, too slow for every step).
    pub fn synced_prefix(
        &self,
        now: Duration,
        client: &SimClient,
        server: &Server,
    ) -> Result<(), Violation> {
        match &client.store {
            Some(store) => synced_prefix(now, client.index, store, server),
            None => Ok(()),
        }
    }

    /// The quiescence checks, for every client.
    pub fn at_quiescence(
        &self,
        now: Duration,
        clients: &[SimClient],
        server: &Server,
    ) -> Result<(), Violation> {
        let mut reference_rows: Option<(usize, String)> = None;
        for client in clients {
            let store = client.store.as_ref().ok_or_else(|| {
                Violation::new(Invariant::Liveness, now, format!("client {} is down", client.index))
            })?;
            self.pending_and_heads(now, client.index, store, server)?;
            converged(now, client.index, store, server)?;
            self.no_lost_commit(now, client.index)?;
            let rows = state_matches_rebuild(now, client.index, store)?;
            match &reference_rows {
                None => reference_rows = Some((client.index, rows)),
                Some((first, first_rows)) if *first_rows != rows => {
                    return Err(Violation::new(
                        Invariant::StateMatchesRebuild,
                        now,
                        format!(
                            "clients {first} and {} have the same eventlog but different todos:\n  {first_rows}\n  {rows}",
                            client.index
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn pending_and_heads(
        &self,
        now: Duration,
        index: usize,
        store: &Store,
        server: &Server,
    ) -> Result<(), Violation> {
        let status = store
            .sync_status()
            .map_err(|error| Violation::store(index, now, "sync_status", &error))?;
        let upstream = parse_head(&status.upstream_head);
        if status.pending_synced_count > 0 || upstream.global != server.log().len() as u64 {
            return Err(Violation::new(
                Invariant::NothingPending,
                now,
                format!(
                    "client {index}: {} pending, upstream head {upstream}, server head e{}",
                    status.pending_synced_count,
                    server.log().len()
                ),
            ));
        }
        Ok(())
    }

    fn no_lost_commit(&self, now: Duration, index: usize) -> Result<(), Violation> {
        match self.committed[index].iter().find(|op| !self.server_ops.contains_key(*op)) {
            None => Ok(()),
            Some(op) => Err(Violation::new(
                Invariant::NoLostCommit,
                now,
                format!("client {index} committed {op}, which never reached the server log"),
            )),
        }
    }
}

/// The client's eventlog equals the server log: same length, same events, same order.
fn converged(now: Duration, index: usize, store: &Store, server: &Server) -> Result<(), Violation> {
    let events =
        synced_events(store).map_err(|error| Violation::store(index, now, "events", &error))?;
    let log = server.log();
    let mismatch = if events.len() != log.len() {
        Some((
            events.len().min(log.len()) + 1,
            format!("{} events locally, {} on the server", events.len(), log.len()),
        ))
    } else {
        first_difference(&events, log)
    };
    match mismatch {
        None => Ok(()),
        Some((position, detail)) => Err(Violation::new(
            Invariant::Converged,
            now,
            format!("client {index} differs from the server at position {position}: {detail}"),
        )),
    }
}

/// The client's eventlog without its client-only events (the filesync `localFileState` writes, say), which never
/// leave the device and so are never in the server log.
fn synced_events(store: &Store) -> Result<Vec<LocalEvent>, livestore_client::StoreError> {
    Ok(store.events()?.into_iter().filter(|event| !event.client_only).collect())
}

/// The events of `local` that the server confirmed (up to the upstream head) equal the server log's prefix.
fn synced_prefix(
    now: Duration,
    index: usize,
    store: &Store,
    server: &Server,
) -> Result<(), Violation> {
    let store_error = |doing: &str, error| Violation::store(index, now, doing, &error);
    let (upstream, backend) =
        store.upstream_cursor().map_err(|error| store_error("upstream_cursor", error))?;
    if backend.as_deref() != Some(server.backend_id()) {
        // Synced with a log the server lost: the client resets when it next connects.
        return Ok(());
    }
    let events = synced_events(store).map_err(|error| store_error("events", error))?;
    let confirmed: Vec<LocalEvent> =
        events.into_iter().take_while(|event| event.seq_num.global <= upstream).collect();
    let log = server.log();
    let mismatch = if confirmed.len() as u64 != upstream || log.len() < confirmed.len() {
        Some((
            confirmed.len() + 1,
            format!(
                "{} confirmed events locally for upstream head e{upstream}, {} on the server",
                confirmed.len(),
                log.len()
            ),
        ))
    } else {
        first_difference(&confirmed, &log[..confirmed.len()])
    };
    match mismatch {
        None => Ok(()),
        Some((position, detail)) => Err(Violation::new(
            Invariant::SyncedPrefix,
            now,
            format!(
                "client {index}'s synced prefix differs from the server at position {position}: {detail}"
            ),
        )),
    }
}

/// The first position (1-based) where two equally long runs of events differ, and how.
fn first_difference(local: &[LocalEvent], log: &[LoggedEvent]) -> Option<(usize, String)> {
    local.iter().zip(log).enumerate().find_map(|(position, (local, remote))| {
        let remote = &remote.encoded;
        let remote_args = remote.args.as_ref().map_or("{}", |args| args.get());
        let same = local.seq_num.global == remote.seq_num.0
            && local.parent_seq_num.global == remote.parent_seq_num.0
            && *local.name == remote.name
            && *local.args_json == *remote_args
            && *local.client_id == remote.client_id
            && *local.session_id == remote.session_id;
        (!same).then(|| {
            (
                position + 1,
                format!(
                    "local {} {} {} vs server {}",
                    local.seq_num,
                    local.name,
                    local.args_json,
                    remote.to_json()
                ),
            )
        })
    })
}

/// The materialized `todos` equal a rebuild from the eventlog; returns the rows.
fn state_matches_rebuild(now: Duration, index: usize, store: &Store) -> Result<String, Violation> {
    let store_error = |doing: &str, error| Violation::store(index, now, doing, &error);
    let before = todos_rows(store).map_err(|error| store_error("query todos", error))?;
    store.rebuild().map_err(|error| store_error("rebuild", error))?;
    let after = todos_rows(store).map_err(|error| store_error("query todos", error))?;
    if before != after {
        return Err(Violation::new(
            Invariant::StateMatchesRebuild,
            now,
            format!(
                "client {index}: todos differ from a rebuild of its eventlog:\n  live:    {before}\n  rebuilt: {after}"
            ),
        ));
    }
    Ok(before)
}

/// A head as `SyncStatus` prints it (`e4`, `e4+1r2`).
fn parse_head(text: &str) -> EventSeqNum {
    text.parse().unwrap_or_else(|_| panic!("SyncStatus heads always parse, got {text:?}"))
}
