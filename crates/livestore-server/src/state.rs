//! What every request handler shares: storage, hubs, metrics, the authenticator, limits and budgets. Its own
//! module so the router (`app`) and the transports it calls (`ws`, `http_transport`, `pull`, `push`) all depend on
//! it without depending on each other.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::budget::MemoryBudget;
use crate::config::Limits;
use crate::hub::Hubs;
use crate::metrics::Metrics;
use crate::static_site::StaticSite;
use crate::storage::EventStorage;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) storage: Arc<dyn EventStorage>,
    pub(crate) hubs: Arc<Hubs>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) limits: Limits,
    /// Bytes held on behalf of clients (bodies, messages, pushes, queued frames).
    pub(crate) budget: Arc<MemoryBudget>,
    /// Backlog read slots shared by every pull (`pull::BACKLOG_READ_SLOTS`).
    pub(crate) read_slots: Arc<tokio::sync::Semaphore>,
    /// The connect hook decides by cookies (`hooks.forward_headers` has `cookie`).
    pub(crate) cookie_sessions: bool,
    /// `hooks.fail_open`: a push or pull hook that cannot decide lets the request through.
    pub(crate) hooks_fail_open: bool,
    /// Browser origins allowed besides loopback ones (no auth) or instead of any (with auth, when non-empty).
    pub(crate) allowed_origins: Arc<[String]>,
    /// Cancelled when the server shuts down; every socket then closes with 1012.
    pub(crate) shutdown: CancellationToken,
    /// Tracks WebSocket sessions so shutdown can wait for their close frames.
    pub(crate) sessions: TaskTracker,
    /// `--static-dir`: answers GET and HEAD requests that are not for the sync endpoint or another route.
    pub(crate) static_site: Option<Arc<StaticSite>>,
    /// The file services, whose embedded store's counts `/metrics` reports.
    pub(crate) files: livestore_objects::FileServices,
}
