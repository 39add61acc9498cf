//! `[hooks]` over HTTP: signed JSON calls to the application's backend.
//!
//! [`HttpHooks`] implements [`SyncHooks`] for the configured `connect_url`, `push_url` and `pull_url`. Each call is
//! a POST whose body carries a unique `id` and the send time (`sentAt`, Unix ms) besides the request, signed in
//! `X-Livestore-Signature: sha256=<hex HMAC-SHA256 of the body>` with `hooks.secret` (`wire`). Calls share the
//! process's `hooks.concurrency` slots and must finish within `hooks.timeout_ms`, slot wait included (`client`).
//! Connect decisions are remembered for `hooks.connect_cache_seconds` (`cache`). Every call is counted in
//! `livestore_hook_calls_total{hook,outcome}` and timed in `livestore_hook_seconds{hook}`.
//!
//! A failed call is a [`HookError`]; what the server then does (refuse, or let through with `hooks.fail_open`) is
//! decided by the callers (`auth`, `push`, `pull`). `events_url` is not called from here.

mod cache;
mod client;
mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use self::cache::{CacheKey, ConnectCache};
use self::client::HookClient;
use super::{
    ConnectDecision, ConnectRequest, Decision, HookError, HookKind, PullRequest, PushRequest,
    SyncHooks,
};
use crate::config::HooksConfig;
use crate::metrics::{HookOutcome, Metrics};

/// The hooks of `[hooks]`.
pub struct HttpHooks {
    client: HookClient,
    connect_url: Option<reqwest::Url>,
    push_url: Option<reqwest::Url>,
    pull_url: Option<reqwest::Url>,
    /// `None` when `connect_cache_seconds` is 0.
    cache: Option<ConnectCache>,
    metrics: Arc<Metrics>,
}

/// Says which hooks are configured, never their URLs (a URL may carry a key).
impl std::fmt::Debug for HttpHooks {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HttpHooks")
            .field("connect", &self.connect_url.is_some())
            .field("push", &self.push_url.is_some())
            .field("pull", &self.pull_url.is_some())
            .field("client", &self.client)
            .field("cache", &self.cache.is_some())
            .finish()
    }
}

impl HttpHooks {
    /// Hooks for the configured URLs; `None` when no connect, push or pull URL is set.
    pub(crate) fn new(
        config: &HooksConfig,
        metrics: &Arc<Metrics>,
    ) -> Result<Option<HttpHooks>, String> {
        let parse = |name: &str, url: &Option<String>| -> Result<Option<reqwest::Url>, String> {
            url.as_deref()
                .map(|url| url.parse().map_err(|_| format!("hooks.{name} is not a URL")))
                .transpose()
        };
        let connect_url = parse("connect_url", &config.connect_url)?;
        let push_url = parse("push_url", &config.push_url)?;
        let pull_url = parse("pull_url", &config.pull_url)?;
        if connect_url.is_none() && push_url.is_none() && pull_url.is_none() {
            return Ok(None);
        }
        let Some(secret) = &config.secret else {
            return Err(
                "hooks.secret (LIVESTORE_HOOKS_SECRET) is required with hook URLs".to_owned()
            );
        };
        let timeout = Duration::from_millis(config.timeout_ms);
        let client = HookClient::new(secret.0.as_bytes(), config.concurrency, timeout)?;
        let cache = (config.connect_cache_seconds > 0).then(|| {
            ConnectCache::new(
                Duration::from_secs(config.connect_cache_seconds),
                cache::DEFAULT_CAPACITY,
            )
        });
        Ok(Some(HttpHooks {
            client,
            connect_url,
            push_url,
            pull_url,
            cache,
            metrics: metrics.clone(),
        }))
    }

    /// Makes one call with the body `body()` builds and parses its answer, counting failures and timing the call;
    /// the caller counts the decision.
    async fn ask<T>(
        &self,
        hook: HookKind,
        url: &reqwest::Url,
        body: impl FnOnce() -> Vec<u8>,
        parse: impl FnOnce(&[u8]) -> Result<T, String>,
    ) -> Result<T, HookError> {
        let started = Instant::now();
        let result = match self.client.call(hook, url, body).await {
            Ok(answer) => parse(&answer).map_err(|reason| HookError::BadAnswer { hook, reason }),
            Err(error) => Err(error),
        };
        self.metrics.hook_latency(hook, started.elapsed());
        if let Err(error) = &result {
            let outcome = match error {
                HookError::Timeout { .. } => HookOutcome::Timeout,
                HookError::Failed { .. } => HookOutcome::Failed,
                HookError::BadAnswer { .. } => HookOutcome::BadAnswer,
            };
            self.metrics.hook_call(hook, outcome);
        }
        tracing::debug!(
            %hook,
            elapsed_ms = started.elapsed().as_millis(),
            ok = result.is_ok(),
            "hook called"
        );
        result
    }

    /// Counts a push or pull decision and logs a refusal's reason (the client gets it too).
    fn counted(&self, hook: HookKind, store_id: &str, decision: Decision) -> Decision {
        match &decision {
            Decision::Allow => self.metrics.hook_call(hook, HookOutcome::Allow),
            Decision::Deny { reason } => {
                self.metrics.hook_call(hook, HookOutcome::Deny);
                tracing::info!(%hook, store_id, reason, "hook refused");
            }
        }
        decision
    }
}

#[async_trait::async_trait]
impl SyncHooks for HttpHooks {
    fn wants_connect(&self) -> bool {
        self.connect_url.is_some()
    }

    fn wants_push(&self) -> bool {
        self.push_url.is_some()
    }

    fn wants_pull(&self) -> bool {
        self.pull_url.is_some()
    }

    async fn connect(&self, request: ConnectRequest) -> Result<ConnectDecision, HookError> {
        let hook = HookKind::Connect;
        let Some(url) = &self.connect_url else {
            return SyncHooks::connect(&super::NoHooks, request).await;
        };
        let key = self.cache.as_ref().map(|_| CacheKey::of(&request));
        if let (Some(cache), Some(key)) = (&self.cache, &key)
            && let Some(decision) = cache.get(key, Instant::now())
        {
            self.metrics.hook_call(hook, HookOutcome::Cached);
            return Ok(decision);
        }
        let body = || wire::connect_body(&wire::Envelope::new(), &request);
        let decision = self.ask(hook, url, body, wire::parse_connect_answer).await?;
        match &decision {
            ConnectDecision::Allow { .. } => self.metrics.hook_call(hook, HookOutcome::Allow),
            ConnectDecision::Deny { reason } => {
                self.metrics.hook_call(hook, HookOutcome::Deny);
                tracing::info!(%hook, store_id = request.store_id, reason, "hook refused");
            }
        }
        if let (Some(cache), Some(key)) = (&self.cache, key) {
            cache.insert(key, decision.clone(), Instant::now(), crate::identity::unix_now());
        }
        Ok(decision)
    }

    async fn push(&self, request: PushRequest<'_>) -> Result<Decision, HookError> {
        let Some(url) = &self.push_url else { return Ok(Decision::Allow) };
        let body = || wire::push_body(&wire::Envelope::new(), &request);
        let decision = self.ask(HookKind::Push, url, body, wire::parse_decision).await?;
        Ok(self.counted(HookKind::Push, request.store_id, decision))
    }

    async fn pull(&self, request: PullRequest<'_>) -> Result<Decision, HookError> {
        let Some(url) = &self.pull_url else { return Ok(Decision::Allow) };
        let body = || wire::pull_body(&wire::Envelope::new(), &request);
        let decision = self.ask(HookKind::Pull, url, body, wire::parse_decision).await?;
        Ok(self.counted(HookKind::Pull, request.store_id, decision))
    }
}

#[cfg(test)]
mod tests;
