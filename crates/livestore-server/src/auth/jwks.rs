//! The identity provider's signing keys, fetched from `auth.jwks_url` and cached.
//!
//! - **When it fetches.** At startup (in the background: an identity provider that is down does not stop the server
//!   from starting), then again when the document's `Cache-Control: max-age` runs out (clamped to 30 s..1 h, 10 min
//!   without one), and when a token names a `kid` the cache does not hold: keys rotate, and a new key signs tokens
//!   before the cache would expire.
//! - **Single flight, cooldown.** Concurrent verifications that miss share one fetch and all see its result; a
//!   missing `kid` triggers no fetch within 30 s of the previous one, so tokens with made-up `kid`s cannot make the
//!   server hammer the identity provider. The one exception: if the very first fetch failed (the identity provider
//!   was down at startup), the first token that needs a key fetches at once.
//! - **Outages.** A fetch that fails (unreachable, a status other than 200, a document that is not a usable JWKS)
//!   keeps the last good keys, logs a warning without the document, and is retried 30 s later. A document replaces
//!   the keys only if it holds at least one usable key; keys it cannot use (an encryption key, an X25519 key) are
//!   skipped one by one.
//! - **Bounds.** 5 s for the whole fetch, no redirects, at most 512 KiB, JSON nesting checked before parsing; the URL
//!   is `https` or loopback `http` (checked with the configuration).
//!
//! Parsing and pinning each key is `keys`; choosing the key for a token is `jwt`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::keys::{self, KeyProblem, VerifyingKey};
use crate::metrics::{JwksFetchOutcome, JwksMetrics};

/// Longest a fetch may take, connection to last byte.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest document accepted; real ones are a few KiB.
pub(crate) const MAX_DOCUMENT_BYTES: usize = 512 * 1024;
/// Nesting allowed in a document (`{"keys": [{"x5c": [...]}]}` is three levels).
const MAX_DOCUMENT_DEPTH: usize = 16;
/// No fetch for a missing `kid` within this long of the previous fetch; also the retry delay after a failure.
pub(crate) const COOLDOWN: Duration = Duration::from_secs(30);
/// How long keys are used without a refresh when the document sets no `max-age`.
pub(crate) const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);
/// `max-age` is clamped to this range.
pub(crate) const MIN_MAX_AGE: Duration = Duration::from_secs(30);
/// See [`MIN_MAX_AGE`].
pub(crate) const MAX_MAX_AGE: Duration = Duration::from_secs(3600);

/// The cached keys of one JWKS URL.
pub(crate) struct JwksCache {
    url: reqwest::Url,
    client: reqwest::Client,
    state: RwLock<CacheState>,
    /// Held for the duration of a fetch: the single flight.
    fetching: tokio::sync::Mutex<()>,
    metrics: OnceLock<JwksMetrics>,
    refresher_started: AtomicBool,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("JwksCache")
            .field("url", &display_url(&self.url))
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct CacheState {
    keys: Arc<Vec<VerifyingKey>>,
    /// Fetches completed, successful or not: a verification that saw a different count knows a fetch happened.
    attempts: u64,
    /// When the cooldown for missing-`kid` fetches started; `None` until a fetch counts for it.
    cooldown_from: Option<Instant>,
    /// When the background refresher fetches next.
    refresh_at: Instant,
}

/// The keys at one moment, and which fetch they came from.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// The usable keys (empty until a fetch succeeded).
    pub(crate) keys: Arc<Vec<VerifyingKey>>,
    attempts: u64,
}

/// Why a fetch failed; logged, never shown to clients.
#[derive(Debug)]
enum FetchFailure {
    Unreachable(reqwest::Error),
    BadStatus(u16),
    BadDocument(DocumentProblem),
}

impl FetchFailure {
    fn outcome(&self) -> JwksFetchOutcome {
        match self {
            FetchFailure::Unreachable(_) => JwksFetchOutcome::Unreachable,
            FetchFailure::BadStatus(_) => JwksFetchOutcome::BadStatus,
            FetchFailure::BadDocument(_) => JwksFetchOutcome::BadDocument,
        }
    }
}

impl std::fmt::Display for FetchFailure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // `without_url` at construction: the error's own text never repeats the URL (which may carry a query).
            // Its causes say what actually failed (refused, timed out, a TLS error).
            FetchFailure::Unreachable(error) => {
                write!(formatter, "unreachable: {error}")?;
                let mut cause = std::error::Error::source(error);
                while let Some(error) = cause {
                    write!(formatter, ": {error}")?;
                    cause = error.source();
                }
                Ok(())
            }
            FetchFailure::BadStatus(status) => write!(formatter, "answered with status {status}"),
            FetchFailure::BadDocument(problem) => write!(formatter, "{}", problem.message()),
        }
    }
}

/// Why a JWKS document is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DocumentProblem {
    TooLarge,
    NotJson,
    TooDeep,
    NotAnObject,
    KeysNotAnArray,
    NoUsableKey,
}

impl DocumentProblem {
    pub(crate) fn message(self) -> &'static str {
        match self {
            DocumentProblem::TooLarge => "the document is larger than 512 KiB",
            DocumentProblem::NotJson => "the document is not JSON",
            DocumentProblem::TooDeep => "the document nests too deeply",
            DocumentProblem::NotAnObject => "the document is not a JSON object",
            DocumentProblem::KeysNotAnArray => "the document has no \"keys\" array",
            DocumentProblem::NoUsableKey => "the document holds no usable signing key",
        }
    }
}

/// A usable document's keys, and the keys skipped (with their `kid`, if any).
#[derive(Debug)]
pub(crate) struct ParsedDocument {
    pub(crate) keys: Vec<VerifyingKey>,
    pub(crate) skipped: Vec<(Option<String>, KeyProblem)>,
}

impl JwksCache {
    /// A cache for `url` (already checked to be `https` or loopback `http`); nothing is fetched until
    /// [`JwksCache::start`] or the first verification.
    pub(crate) fn new(url: &str) -> Result<Arc<JwksCache>, String> {
        let url: reqwest::Url = url.parse().map_err(|_| "auth.jwks_url is not a URL".to_owned())?;
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("livestore/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| format!("cannot build the HTTP client for auth.jwks_url: {error}"))?;
        let state = CacheState {
            keys: Arc::new(Vec::new()),
            attempts: 0,
            cooldown_from: None,
            refresh_at: Instant::now(),
        };
        Ok(Arc::new(JwksCache {
            url,
            client,
            state: RwLock::new(state),
            fetching: tokio::sync::Mutex::new(()),
            metrics: OnceLock::new(),
            refresher_started: AtomicBool::new(false),
        }))
    }

    /// Starts the background refresher (its first fetch is the startup fetch), counting in `metrics` if given.
    /// Idempotent; the first verification calls it too, for caches no server started.
    pub(crate) fn start(self: &Arc<Self>, metrics: Option<JwksMetrics>) {
        if let Some(metrics) = metrics {
            // Fails only if the cache already counts somewhere, which is as good.
            let _ = self.metrics.set(metrics);
        }
        if !self.refresher_started.swap(true, Ordering::SeqCst) {
            tokio::spawn(refresh_loop(Arc::downgrade(self)));
        }
    }

    /// The keys now.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let state = self.read_state();
        Snapshot { keys: state.keys.clone(), attempts: state.attempts }
    }

    /// A verification found no key in `seen`: fetch, unless a fetch completed since `seen` was taken (its result is
    /// the answer) or the cooldown is on. Concurrent callers wait for the same fetch.
    pub(crate) async fn refetch_for_missing_key(&self, seen: &Snapshot) {
        let _single_flight = self.fetching.lock().await;
        {
            let state = self.read_state();
            if state.attempts != seen.attempts {
                return;
            }
            if let Some(from) = state.cooldown_from
                && from.elapsed() < COOLDOWN
            {
                tracing::debug!(
                    "a token names a key the JWKS did not hold; fetched less than 30 s ago"
                );
                return;
            }
        }
        self.fetch_and_store().await;
    }

    /// The refresher's turn: fetch if the keys are due for a refresh.
    async fn refresh_if_due(&self) {
        let _single_flight = self.fetching.lock().await;
        if Instant::now() < self.read_state().refresh_at {
            return;
        }
        self.fetch_and_store().await;
    }

    /// Fetches and stores the outcome; the caller holds `fetching`.
    async fn fetch_and_store(&self) {
        let started = Instant::now();
        let result = fetch(&self.client, &self.url).await;
        let metrics = self.metrics.get_or_init(JwksMetrics::default);
        let url = display_url(&self.url);
        let mut state = self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.attempts += 1;
        match result {
            Ok((document, max_age)) => {
                metrics.fetched(JwksFetchOutcome::Ok);
                metrics.set_keys(document.keys.len());
                log_new_keys(&url, &state.keys, &document);
                state.keys = Arc::new(document.keys);
                state.cooldown_from = Some(started);
                state.refresh_at = started + max_age;
            }
            Err(failure) => {
                metrics.fetched(failure.outcome());
                let kept = state.keys.len();
                if kept == 0 {
                    tracing::warn!(%url, %failure, "cannot fetch the JWKS; tokens signed by the identity provider are refused until it answers (retrying)");
                } else {
                    tracing::warn!(%url, %failure, kept, "cannot refresh the JWKS; keeping the keys fetched before (retrying)");
                }
                // The identity provider being down at startup does not start the cooldown: the first token that
                // needs a key fetches again rather than waiting for the retry.
                if state.attempts > 1 {
                    state.cooldown_from = Some(started);
                }
                state.refresh_at = started + COOLDOWN;
            }
        }
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, CacheState> {
        self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Refreshes the keys when they are due, until the cache is dropped.
async fn refresh_loop(cache: Weak<JwksCache>) {
    loop {
        let Some(refresh_at) = cache.upgrade().map(|cache| cache.read_state().refresh_at) else {
            return;
        };
        tokio::time::sleep_until(refresh_at).await;
        let Some(cache) = cache.upgrade() else { return };
        cache.refresh_if_due().await;
    }
}

/// One GET of the document: its keys and how long to use them.
async fn fetch(
    client: &reqwest::Client,
    url: &reqwest::Url,
) -> Result<(ParsedDocument, Duration), FetchFailure> {
    let mut response = client
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|error| FetchFailure::Unreachable(error.without_url()))?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(FetchFailure::BadStatus(response.status().as_u16()));
    }
    let max_age = max_age(response.headers());
    if response.content_length().is_some_and(|length| length > MAX_DOCUMENT_BYTES as u64) {
        return Err(FetchFailure::BadDocument(DocumentProblem::TooLarge));
    }
    let mut body = Vec::new();
    while let Some(chunk) =
        response.chunk().await.map_err(|error| FetchFailure::Unreachable(error.without_url()))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(FetchFailure::BadDocument(DocumentProblem::TooLarge));
        }
        body.extend_from_slice(&chunk);
    }
    let document = parse_document(&body).map_err(FetchFailure::BadDocument)?;
    Ok((document, max_age))
}

/// Parses a JWKS document key by key: a key this server cannot use is skipped, not fatal.
pub(crate) fn parse_document(body: &[u8]) -> Result<ParsedDocument, DocumentProblem> {
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err(DocumentProblem::TooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|_| DocumentProblem::NotJson)?;
    livestore_proto::json::check_depth(text, MAX_DOCUMENT_DEPTH)
        .map_err(|_| DocumentProblem::TooDeep)?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|_| DocumentProblem::NotJson)?;
    let object = value.as_object().ok_or(DocumentProblem::NotAnObject)?;
    let entries = object
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or(DocumentProblem::KeysNotAnArray)?;
    let mut document = ParsedDocument { keys: Vec::new(), skipped: Vec::new() };
    for entry in entries {
        match keys::parse_jwk(entry) {
            Ok(key) => document.keys.push(key),
            Err(problem) => {
                let kid = entry.get("kid").and_then(serde_json::Value::as_str).map(str::to_owned);
                document.skipped.push((kid, problem));
            }
        }
    }
    if document.keys.is_empty() {
        return Err(DocumentProblem::NoUsableKey);
    }
    Ok(document)
}

/// How long to use a document: its `Cache-Control: max-age` (`no-cache`/`no-store` meaning as briefly as allowed),
/// clamped to [`MIN_MAX_AGE`]..=[`MAX_MAX_AGE`]; [`DEFAULT_MAX_AGE`] without one.
pub(crate) fn max_age(headers: &reqwest::header::HeaderMap) -> Duration {
    let mut seconds = None;
    let mut no_cache = false;
    let directives = headers
        .get_all(reqwest::header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim);
    for directive in directives {
        match directive.split_once('=') {
            Some((name, value)) if name.trim().eq_ignore_ascii_case("max-age") => {
                seconds = value.trim().trim_matches('"').parse::<u64>().ok().or(seconds);
            }
            None if directive.eq_ignore_ascii_case("no-cache")
                || directive.eq_ignore_ascii_case("no-store") =>
            {
                no_cache = true;
            }
            _ => {}
        }
    }
    let age = if no_cache { Some(0) } else { seconds };
    age.map_or(DEFAULT_MAX_AGE, Duration::from_secs).clamp(MIN_MAX_AGE, MAX_MAX_AGE)
}

/// Logs a new key set when its key ids differ from the old one's (a rotation), with the keys skipped and why.
fn log_new_keys(url: &str, old: &[VerifyingKey], document: &ParsedDocument) {
    let kids = |keys: &[VerifyingKey]| -> Vec<String> {
        keys.iter().map(|key| key.kid().unwrap_or("(no kid)").to_owned()).collect()
    };
    let new_kids = kids(&document.keys);
    if kids(old) == new_kids {
        tracing::debug!(%url, keys = new_kids.len(), "JWKS refreshed; same keys");
        return;
    }
    tracing::info!(%url, kids = ?new_kids, "JWKS keys loaded");
    for (kid, problem) in &document.skipped {
        tracing::warn!(%url, kid = kid.as_deref().unwrap_or("(no kid)"), problem = problem.message(), "JWKS key skipped");
    }
}

/// The URL without user info, query or fragment, for logs.
fn display_url(url: &reqwest::Url) -> String {
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

#[cfg(test)]
mod tests;
