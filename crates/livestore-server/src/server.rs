//! Starting, running and stopping the server: storage, listener, router, the delivery of committed events, and
//! graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::app;
use crate::auth::Authenticator;
use crate::budget::MemoryBudget;
use crate::config::ServerConfig;
use crate::error::ServerError;
use crate::events_out::webhook::WebhookSink;
use crate::events_out::{
    DeliverySettings, Deps, EventSink, EventsOut, Subscriber, WEBHOOK_SUBSCRIBER,
};
use crate::hooks::http::HttpHooks;
use crate::hooks::{NoHooks, SyncHooks};
use crate::http_error::HttpError;
use crate::http_server::ConnectionSettings;
use crate::hub::Hubs;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::static_site::StaticSite;
use crate::storage::{self, EventStorage};

/// How long shutdown waits for open HTTP requests to finish, and then for sockets to take their close frames.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A bound, not yet running, server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: AppStateHandle,
    files: livestore_objects::FileServices,
    events_out: EventsOut,
}

/// Configures a [`Server`] before it binds: `Server::builder(config).hooks(my_hooks).bind().await`.
pub struct ServerBuilder {
    config: ServerConfig,
    hooks: Option<Arc<dyn SyncHooks>>,
    sinks: Vec<(String, Arc<dyn EventSink>)>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field("rust_hooks", &self.hooks.is_some())
            .field(
                "event_sinks",
                &self.sinks.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ServerBuilder {
    /// Decides connects, pushes and pulls with hooks written in Rust. `[hooks]` then must not name a connect, push
    /// or pull URL (binding fails with [`ServerError::InvalidConfig`]); its `forward_headers` and `fail_open` apply
    /// to these hooks too.
    pub fn hooks(mut self, hooks: Arc<dyn SyncHooks>) -> ServerBuilder {
        self.hooks = Some(hooks);
        self
    }

    /// Delivers every committed event to `sink` as well, the way `[hooks] events_url` gets them: at least once, in
    /// order per store, one batch per store at a time, retried until acknowledged (see [`crate::events_out`]).
    /// `name` (1 to 64 of `a-z`, `0-9`, `-`, `_`; not `"webhook"`, which is `events_url`'s) keys the sink's durable
    /// cursors: the same name resumes after a restart where the sink stopped, a new one starts at the beginning of
    /// every log. On Postgres, one node at a time delivers to the sink.
    pub fn event_sink(mut self, name: &str, sink: Arc<dyn EventSink>) -> ServerBuilder {
        self.sinks.push((name.to_owned(), sink));
        self
    }

    /// Validates the config, opens storage and binds the listener.
    pub async fn bind(self) -> Result<Server, ServerError> {
        Server::bind_with(self).await
    }
}

/// The hooks the server asks: the embedder's Rust hooks, `[hooks]` over HTTP, or none; never both kinds.
fn choose_hooks(
    config: &ServerConfig,
    rust_hooks: Option<Arc<dyn SyncHooks>>,
    metrics: &Arc<Metrics>,
) -> Result<Arc<dyn SyncHooks>, ServerError> {
    let http = HttpHooks::new(&config.hooks, metrics).map_err(ServerError::InvalidConfig)?;
    match (rust_hooks, http) {
        (Some(_), Some(_)) => Err(ServerError::InvalidConfig(
            "hooks written in Rust (ServerBuilder::hooks) and [hooks] connect_url, push_url or pull_url both \
             decide who may connect, push and pull; configure one or the other"
                .to_owned(),
        )),
        (Some(rust), None) => Ok(rust),
        (None, Some(http)) => Ok(Arc::new(http)),
        (None, None) => Ok(Arc::new(NoHooks)),
    }
}

/// `AppState` holds trait objects without `Debug`; this wrapper keeps `Server: Debug` honest.
struct AppStateHandle(AppState);

impl std::fmt::Debug for AppStateHandle {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("AppState")
    }
}

impl Server {
    /// Validates the config, opens storage and binds the listener. Hooks come from `[hooks]` (over HTTP), if any;
    /// [`Server::builder`] takes hooks written in Rust instead.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        Server::builder(config).bind().await
    }

    /// A server to configure further before it binds, e.g. with [`ServerBuilder::hooks`] or
    /// [`ServerBuilder::event_sink`].
    pub fn builder(config: ServerConfig) -> ServerBuilder {
        ServerBuilder { config, hooks: None, sinks: Vec::new() }
    }

    /// Like [`Server::bind`], and delivers every committed event to `sink` as well (see
    /// [`ServerBuilder::event_sink`]).
    pub async fn bind_with_sink(
        config: ServerConfig,
        name: &str,
        sink: Arc<dyn EventSink>,
    ) -> Result<Server, ServerError> {
        Server::builder(config).event_sink(name, sink).bind().await
    }

    async fn bind_with(builder: ServerBuilder) -> Result<Server, ServerError> {
        let ServerBuilder { config, hooks: rust_hooks, sinks } = builder;
        config.validate_for(rust_hooks.as_ref().is_some_and(|hooks| hooks.wants_connect()))?;
        let mut subscribers = Vec::with_capacity(sinks.len() + 1);
        if let (Some(url), Some(secret)) = (&config.hooks.events_url, &config.hooks.secret) {
            let timeout = Duration::from_millis(config.hooks.events_timeout_ms);
            let sink: Arc<dyn EventSink> = Arc::new(WebhookSink::new(url, secret, timeout)?);
            subscribers.push(Subscriber::new(WEBHOOK_SUBSCRIBER, sink)?);
        }
        for (name, sink) in sinks {
            if name == WEBHOOK_SUBSCRIBER {
                return Err(ServerError::InvalidConfig(format!(
                    "the event sink name {WEBHOOK_SUBSCRIBER:?} belongs to [hooks] events_url; pick another"
                )));
            }
            subscribers.push(Subscriber::new(&name, sink)?);
        }
        EventsOut::check_names(&subscribers)?;
        let metrics = Arc::new(Metrics::new());
        let hooks = choose_hooks(&config, rust_hooks, &metrics)?;
        let budget = MemoryBudget::new(config.limits.memory_budget_bytes, metrics.clone());
        let hubs = Arc::new(Hubs::new(budget.clone(), metrics.clone()));
        if let Some(url) = &config.database_url {
            tracing::info!(database = %url.redacted(), "event log in Postgres");
        }
        let opened = storage::open_with(&config, hubs.clone(), metrics.clone()).await?;
        let storage = opened.log;
        let events_out = EventsOut::new(
            Deps {
                log: storage.clone(),
                cursors: opened.cursors,
                feed: hubs.commits().clone(),
                metrics: metrics.clone(),
                settings: DeliverySettings::from_hooks(&config.hooks),
            },
            subscribers,
        );
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|source| ServerError::Bind { addr: config.addr, source })?;
        let auth = Authenticator::new(
            &config.auth,
            hooks,
            config.hooks.forwarded_header_names(),
            config.hooks.fail_open,
        )
        .map_err(ServerError::InvalidConfig)?;
        // The identity provider's keys are fetched in the background: one that is down does not stop the start.
        auth.start_key_refresh(&metrics);
        let auth = Arc::new(auth);
        let files = livestore_objects::FileServices::start(config.files_config(), auth.clone())
            .await
            .map_err(|error| ServerError::Files(Box::new(error)))?;
        if !auth.is_enabled() {
            tracing::warn!(
                "authentication is off: any local process can read and write every store; browsers may call only \
                 from loopback origins (and cors.allowed_origins), and only requests for a loopback Host are served"
            );
        }
        let static_site = match &config.static_dir {
            Some(dir) => {
                let site = StaticSite::open(dir).map_err(|error| {
                    ServerError::InvalidConfig(format!("static_dir {}: {error}", dir.display()))
                })?;
                tracing::info!(dir = %dir.display(), "serving static files under /");
                Some(Arc::new(site))
            }
            None => None,
        };
        let cookie_sessions = auth.hooks().wants_connect()
            && config.hooks.forwarded_header_names().iter().any(|name| name == "cookie");
        let state = AppState {
            storage,
            hubs,
            metrics,
            auth,
            limits: config.limits.clone(),
            budget,
            hooks_fail_open: config.hooks.fail_open,
            cookie_sessions,
            read_slots: Arc::new(tokio::sync::Semaphore::new(crate::pull::backlog_read_slots())),
            allowed_origins: config.cors.allowed_origins.clone().into(),
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            static_site,
            files: files.clone(),
        };
        Ok(Server { listener, state: AppStateHandle(state), files, events_out })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound TCP listener has a local address")
    }

    /// The file services (signer and, by default, the embedded object store with its credentials).
    pub fn files(&self) -> &livestore_objects::FileServices {
        &self.files
    }

    /// Serves until `shutdown` resolves, then closes every socket with 1012 and flushes storage.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let addr = self.local_addr();
        let state = self.state.0;
        self.events_out.start();
        let token = state.shutdown.clone();
        let router = app(state.clone(), self.files.router()).layer(
            axum::middleware::from_fn_with_state(state.storage.clone(), refuse_while_unavailable),
        );
        tracing::info!(target: "livestore_server::_events::listening", %addr, "listening");
        // axum::serve plus TCP_NODELAY, the header timeout and the socket watchdogs (see `http_server`).
        let settings = ConnectionSettings {
            header_read_timeout: Duration::from_secs(state.limits.header_read_timeout_seconds),
            message_timeout: Duration::from_secs(state.limits.body_read_timeout_seconds),
            write_timeout: Duration::from_secs(state.limits.write_timeout_seconds),
            budget: state.budget.clone(),
            metrics: state.metrics.clone(),
        };
        let serving = crate::http_server::serve(
            self.listener,
            router,
            settings,
            SHUTDOWN_GRACE,
            async move {
                shutdown.await;
                tracing::info!("shutting down: closing sockets so clients reconnect");
                token.cancel();
            },
        );
        let result = serving.await.map_err(ServerError::Serve);
        state.shutdown.cancel();
        state.sessions.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, state.sessions.wait()).await.is_err() {
            tracing::warn!("some connections did not close within {SHUTDOWN_GRACE:?}");
        }
        // Before storage: batches in flight get their grace period and their cursors committed.
        self.events_out.shutdown().await;
        state.storage.shutdown().await;
        tracing::info!("stopped");
        result
    }
}

/// While storage cannot vouch for the log (Postgres lost), sync requests and `/healthz` get 503, so clients and
/// load balancers go to another node. Metrics and the file services keep answering.
async fn refuse_while_unavailable(
    State(storage): State<Arc<dyn EventStorage>>,
    request: Request,
    next: Next,
) -> Response {
    let uri = request.uri();
    let refused = !storage.is_available()
        && (uri.path() == "/healthz"
            || uri.query().is_some_and(|query| query.contains("storeId=")));
    if refused {
        return HttpError::StorageUnavailable.into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    /// A connect hook in Rust, as an embedder writes one.
    struct Gatekeeper;

    impl SyncHooks for Gatekeeper {
        fn wants_connect(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn rust_hooks_and_hook_urls_do_not_mix() {
        let data = tempfile::tempdir().unwrap();
        let mut config = ServerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: data.path().join("data"),
            ..ServerConfig::default()
        };
        config.hooks.push_url = Some("http://127.0.0.1:9/push".into());
        config.hooks.secret = Some(Secret("hook-secret-0123456789abcdef0123456789".into()));
        let error = Server::builder(config.clone()).hooks(Arc::new(Gatekeeper)).bind().await;
        let message = error.unwrap_err().to_string();
        assert!(
            message.contains("ServerBuilder::hooks") && message.contains("push_url"),
            "{message}"
        );
        assert!(!data.path().join("data").exists(), "refused before storage was opened");
        config.hooks.push_url = None;
        let server = Server::builder(config).hooks(Arc::new(Gatekeeper)).bind().await.unwrap();
        assert!(server.state.0.auth.hooks().wants_connect());
    }

    #[test]
    fn a_rust_connect_hook_counts_as_authentication_for_a_public_address() {
        let config =
            ServerConfig { addr: "0.0.0.0:8787".parse().unwrap(), ..ServerConfig::default() };
        assert!(config.validate().is_err(), "no credentials and no connect hook");
        config.validate_for(true).unwrap();
    }
}
