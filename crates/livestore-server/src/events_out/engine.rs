//! The delivery task of one subscriber: stand by until this node holds the subscriber's lease, then deliver.
//!
//! While leading, one loop `select!`s over everything that can happen ([`Wake`]): commits announced by the storage
//! backend (the inbox), a finished step, a page of the store scan, a backoff that ended, the periodic scan's
//! timer, the lease lost, shutdown. It starts a step for each ready store (at most
//! [`DeliverySettings::max_in_flight`] at once, one per store), and the [`Schedule`] decides which store goes next
//! and when a failed one retries. The scan walks every store page by page when leadership starts, when a backend
//! says commits may have gone unannounced, and every [`DeliverySettings::scan_interval`] as a safety net; it is
//! never needed for ordinary commits, which the inbox announces.
//!
//! When the lease is lost, steps in flight are aborted at once (another node may already be sending) and the task
//! stands by again. On shutdown, steps in flight get [`DeliverySettings::shutdown_grace`] to finish, so that an
//! acknowledged batch's cursor is committed rather than resent after the restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::schedule::{Finished, Schedule};
use super::step::{StepContext, StepOutcome, step};
use super::{DeliverySettings, Deps, FailureKind, Subscriber};
use crate::commit_feed::Inbox;
use crate::error::ServerError;
use crate::storage::cursors::{Lease, ScanPage};

/// Stores tracked at most before a scan stops adding more (it resumes as they are delivered); announced commits
/// are always tracked. Bounds the bookkeeping a scan can build up when many stores are behind at once.
const SCAN_TRACK_LIMIT: usize = 10_000;
/// The shortest time between two scans that were asked for (commits of stores a node cannot name, a listener that
/// reconnected): a burst of such requests costs one scan.
const MIN_RESCAN_INTERVAL: Duration = Duration::from_secs(1);
/// How long a failed scan waits before it is tried again.
const SCAN_RETRY: Duration = Duration::from_secs(2);

/// Runs the subscriber's delivery until `stop`.
pub(super) async fn run(deps: Arc<Deps>, subscriber: Subscriber, stop: CancellationToken) {
    let inbox = deps.feed.subscribe();
    let name = subscriber.name.clone();
    // Standing by and failing to reach the database are logged once per streak, not every retry.
    let mut standby_logged = false;
    let mut error_logged = false;
    loop {
        let acquired = tokio::select! {
            () = stop.cancelled() => return,
            acquired = deps.cursors.acquire(&name) => acquired,
        };
        match acquired {
            Ok(Some(lease)) => {
                (standby_logged, error_logged) = (false, false);
                tracing::info!(target: "livestore_server::_events::delivery_leader", subscriber = %name,
                    "this node delivers the subscriber's committed events");
                deps.metrics.delivery_leader(&name, true);
                let leading = Leading::new(&deps, &subscriber, &inbox, lease);
                let ended = leading.run(&stop).await;
                inbox.deactivate();
                deps.metrics.delivery_leader(&name, false);
                deps.metrics.delivery_backlog(&name, 0, 0);
                if ended == Ended::Stopped {
                    return;
                }
                tracing::warn!(target: "livestore_server::_events::delivery_lease_lost", subscriber = %name,
                    "lost the delivery lease; standing by (another node may take over)");
            }
            Ok(None) => {
                error_logged = false;
                if !std::mem::replace(&mut standby_logged, true) {
                    tracing::info!(subscriber = %name, "another node delivers the subscriber's events; standing by");
                }
            }
            Err(error) if !std::mem::replace(&mut error_logged, true) => {
                tracing::warn!(subscriber = %name, %error, "cannot take the delivery lease; retrying");
            }
            Err(error) => {
                tracing::debug!(subscriber = %name, %error, "cannot take the delivery lease; retrying");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(deps.settings.leader_retry) => {}
        }
    }
}

/// Why leading ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Stopped,
    LeaseLost,
}

/// Everything that wakes the leading loop.
enum Wake {
    Stop,
    LeaseLost,
    Announced,
    StepDone(Result<(tokio::task::Id, StepOutcome), tokio::task::JoinError>),
    ScanPage(Result<ScanPage, ServerError>),
    RetryDue,
    ScanDue,
}

struct Leading<'a> {
    deps: &'a Deps,
    subscriber: &'a Subscriber,
    inbox: &'a Inbox,
    lease: Arc<dyn Lease>,
    context: StepContext,
    schedule: Schedule,
    steps: JoinSet<StepOutcome>,
    /// The store of each step in flight.
    in_flight: HashMap<tokio::task::Id, Arc<str>>,
    scan: Option<BoxFuture<'static, Result<ScanPage, ServerError>>>,
    /// Where the next scan page starts (0: a new pass).
    scan_position: i64,
    /// A scan was asked for while one ran.
    rescan: bool,
    next_scan: Instant,
    last_pass_started: Instant,
    rng: StdRng,
}

impl<'a> Leading<'a> {
    fn new(
        deps: &'a Deps,
        subscriber: &'a Subscriber,
        inbox: &'a Inbox,
        lease: Arc<dyn Lease>,
    ) -> Self {
        let context = StepContext {
            log: deps.log.clone(),
            lease: lease.clone(),
            sink: subscriber.sink.clone(),
        };
        let now = Instant::now();
        Leading {
            deps,
            subscriber,
            inbox,
            lease,
            context,
            schedule: Schedule::default(),
            steps: JoinSet::new(),
            in_flight: HashMap::new(),
            scan: None,
            scan_position: 0,
            rescan: false,
            next_scan: now,
            last_pass_started: now,
            rng: StdRng::from_rng(&mut rand::rng()),
        }
    }

    async fn run(mut self, stop: &CancellationToken) -> Ended {
        let lost = self.lease.lost();
        // Collect announcements before the first scan reads, so a commit is either scanned or announced.
        self.inbox.activate();
        loop {
            self.start_steps();
            self.report();
            match self.next_wake(stop, &lost).await {
                Wake::Stop => {
                    self.finish_in_flight().await;
                    return Ended::Stopped;
                }
                Wake::LeaseLost => {
                    self.steps.abort_all();
                    return Ended::LeaseLost;
                }
                Wake::Announced => self.take_announcements(),
                Wake::StepDone(joined) => self.step_done(joined),
                Wake::ScanPage(page) => self.scan_done(page),
                Wake::RetryDue => self.schedule.release_due(Instant::now()),
                Wake::ScanDue => self.start_scan(),
            }
        }
    }

    async fn next_wake(&mut self, stop: &CancellationToken, lost: &CancellationToken) -> Wake {
        let next_retry = self.schedule.next_retry();
        let scanning = self.scan.is_some();
        tokio::select! {
            () = stop.cancelled() => Wake::Stop,
            () = lost.cancelled() => Wake::LeaseLost,
            () = self.inbox.changed() => Wake::Announced,
            Some(joined) = self.steps.join_next_with_id() => Wake::StepDone(joined),
            page = async { self.scan.as_mut().expect("guarded by `scanning`").await }, if scanning => {
                self.scan = None;
                Wake::ScanPage(page)
            }
            () = sleep_until(next_retry) => Wake::RetryDue,
            () = tokio::time::sleep_until(self.next_scan), if !scanning => Wake::ScanDue,
        }
    }

    fn start_steps(&mut self) {
        while self.steps.len() < self.deps.settings.max_in_flight {
            let Some((store_id, cursor)) = self.schedule.next_ready() else { return };
            let context = self.context.clone();
            let step_store = store_id.clone();
            let handle = self.steps.spawn(async move { step(&context, &step_store, cursor).await });
            self.in_flight.insert(handle.id(), store_id);
        }
    }

    fn step_done(
        &mut self,
        joined: Result<(tokio::task::Id, StepOutcome), tokio::task::JoinError>,
    ) {
        let (id, outcome) = match joined {
            Ok(done) => done,
            Err(error) => {
                // Only a sink can panic here; its store retries like after any other failure.
                tracing::error!(subscriber = %self.subscriber.name, %error, "a delivery step panicked");
                let store_id = self.in_flight.remove(&error.id());
                if let Some(store_id) = store_id {
                    self.failed(&store_id, None, FailureKind::Refused, &"the sink panicked");
                }
                return;
            }
        };
        let Some(store_id) = self.in_flight.remove(&id) else { return };
        let now = Instant::now();
        match outcome {
            StepOutcome::Delivered { cursor, events } => {
                self.deps.metrics.events_delivered(&self.subscriber.name, events);
                self.schedule
                    .finished(&store_id, Finished::Delivered(cursor), now, |_| Duration::ZERO);
            }
            StepOutcome::CaughtUp(cursor) => {
                self.schedule
                    .finished(&store_id, Finished::CaughtUp(cursor), now, |_| Duration::ZERO);
            }
            StepOutcome::Failed { cursor, failure } => {
                self.failed(&store_id, cursor, failure.kind(), &failure);
            }
            StepOutcome::Moved => {
                tracing::warn!(subscriber = %self.subscriber.name, store_id = %store_id,
                    "the delivery cursor moved under this node; reloading it");
                self.deps.metrics.delivery_failed(&self.subscriber.name, FailureKind::Moved);
                let (policy, rng) = (self.deps.settings.retry, &mut self.rng);
                self.schedule.finished(&store_id, Finished::Moved, now, |failures| {
                    policy.delay(failures, rng)
                });
            }
        }
    }

    fn failed(
        &mut self,
        store_id: &str,
        cursor: Option<crate::storage::cursors::Cursor>,
        kind: FailureKind,
        why: &dyn std::fmt::Display,
    ) {
        self.deps.metrics.delivery_failed(&self.subscriber.name, kind);
        let (policy, rng) = (self.deps.settings.retry, &mut self.rng);
        let mut wait = Duration::ZERO;
        let mut attempt = 0;
        self.schedule.finished(store_id, Finished::Failed(cursor), Instant::now(), |failures| {
            attempt = failures;
            wait = policy.delay(failures, rng);
            wait
        });
        // Every failure is counted; the log gets the first ones of a run and then every power of two.
        if attempt.is_power_of_two() {
            tracing::warn!(subscriber = %self.subscriber.name, store_id, kind = kind.label(), attempt,
                retry_in_ms = wait.as_millis() as u64, "delivery failed: {why}; retrying");
        } else {
            tracing::debug!(subscriber = %self.subscriber.name, store_id, kind = kind.label(), attempt,
                "delivery failed: {why}; retrying");
        }
    }

    fn take_announcements(&mut self) {
        let announced = self.inbox.take();
        for (store_id, head) in announced.heads {
            self.schedule.announce(&store_id, head);
        }
        if announced.rescan {
            self.request_scan();
        }
    }

    /// Commits may have gone unannounced: scan soon (now, unless a pass started less than a second ago).
    fn request_scan(&mut self) {
        if self.scan.is_some() {
            self.rescan = true;
        } else {
            self.next_scan = self.next_scan.min(self.last_pass_started + MIN_RESCAN_INTERVAL);
        }
    }

    fn start_scan(&mut self) {
        let now = Instant::now();
        if self.scan_position == 0 {
            self.last_pass_started = now;
        }
        self.next_scan = now + self.deps.settings.scan_interval;
        self.scan = Some(self.lease.scan(self.scan_position));
    }

    fn scan_done(&mut self, page: Result<ScanPage, ServerError>) {
        let now = Instant::now();
        let page = match page {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(subscriber = %self.subscriber.name, %error, "scanning the stores failed; retrying");
                self.deps.metrics.delivery_failed(&self.subscriber.name, FailureKind::Storage);
                self.next_scan = now + SCAN_RETRY;
                return;
            }
        };
        for store in page.stores {
            if store.head < store.cursor.delivered {
                // A log restored from an older backup under newer cursors: its next events would reuse sequence
                // numbers the subscriber already has. Nothing safe can be sent; an operator has to look.
                tracing::error!(subscriber = %self.subscriber.name, store_id = %store.store_id, head = store.head,
                    delivered = store.cursor.delivered, "the delivery cursor is ahead of the store's log");
                self.deps.metrics.delivery_failed(&self.subscriber.name, FailureKind::Storage);
            } else if store.is_behind() {
                self.schedule.scanned(&store);
            }
        }
        match page.next_after {
            Some(after) => {
                self.scan_position = after;
                if self.schedule.len() < SCAN_TRACK_LIMIT {
                    self.start_scan();
                } else {
                    // Enough work queued; carry on with the pass once some of it is done.
                    self.next_scan = now + MIN_RESCAN_INTERVAL;
                }
            }
            None => {
                self.scan_position = 0;
                if std::mem::take(&mut self.rescan) {
                    self.next_scan = now.max(self.last_pass_started + MIN_RESCAN_INTERVAL);
                }
            }
        }
    }

    fn report(&self) {
        self.deps.metrics.delivery_backlog(
            &self.subscriber.name,
            self.schedule.lag(),
            self.schedule.len(),
        );
    }

    /// Lets steps in flight finish (their cursors commit) within the grace period, then aborts the rest.
    async fn finish_in_flight(&mut self) {
        let grace = self.deps.settings.shutdown_grace;
        let drained = tokio::time::timeout(grace, async {
            while let Some(joined) = self.steps.join_next_with_id().await {
                if let Ok((_, StepOutcome::Delivered { events, .. })) = joined {
                    self.deps.metrics.events_delivered(&self.subscriber.name, events);
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(subscriber = %self.subscriber.name, "deliveries still in flight at shutdown were cut; \
                they are resent after the restart");
            self.steps.abort_all();
        }
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl DeliverySettings {
    /// Settings for tests: fast retries and scans.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        DeliverySettings {
            retry: super::backoff::RetryPolicy {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(200),
            },
            ..DeliverySettings::default()
        }
    }
}
