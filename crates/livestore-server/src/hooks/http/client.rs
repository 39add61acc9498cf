//! One signed POST to a hook and its answer's bytes, within the call's time and size bounds.
//!
//! The whole call (waiting for one of the process's `hooks.concurrency` call slots, connecting, sending, and
//! reading the answer) must finish within `hooks.timeout_ms`. Redirects are not followed (a 3xx fails the call: a
//! moved hook is a configuration error, and following it would send identities elsewhere); any status other than
//! 2xx fails it; the answer is read chunk by chunk and refused past [`MAX_ANSWER_BYTES`], whatever its
//! `Content-Length` claims. Proxies from the environment are not used: the hooks are the operator's own backend.
//!
//! Errors describe the failure (a status, "connection refused") without the URL, which may carry a key, and without
//! the answer's text; parsing the answer is `wire`'s job.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::wire::{MAX_ANSWER_BYTES, SIGNATURE_HEADER, signature};
use crate::hooks::{HookError, HookKind};

/// Sends hook calls; shared by every hook of one server.
pub(crate) struct HookClient {
    http: reqwest::Client,
    secret: Vec<u8>,
    slots: Arc<Semaphore>,
    timeout: Duration,
}

impl std::fmt::Debug for HookClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HookClient")
            .field("timeout", &self.timeout)
            .field("slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

impl HookClient {
    /// A client signing with `secret`, allowing `concurrency` calls at once, each within `timeout`.
    pub(crate) fn new(
        secret: &[u8],
        concurrency: usize,
        timeout: Duration,
    ) -> Result<HookClient, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("livestore-rs/", env!("CARGO_PKG_VERSION"), " hooks"))
            .build()
            .map_err(|error| format!("cannot set up the HTTP client for hooks: {error}"))?;
        Ok(HookClient {
            http,
            secret: secret.to_vec(),
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            timeout,
        })
    }

    /// Posts the body `body()` builds to `url`, signed, and returns the answer's bytes (a 2xx answer within the
    /// limits). The body is built once a call slot is free, so at most `concurrency` bodies (a push's is about as
    /// large as the push) exist at once, however many calls wait.
    pub(crate) async fn call(
        &self,
        hook: HookKind,
        url: &reqwest::Url,
        body: impl FnOnce() -> Vec<u8>,
    ) -> Result<Vec<u8>, HookError> {
        match tokio::time::timeout(self.timeout, self.exchange(hook, url, body)).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out(hook)),
        }
    }

    async fn exchange(
        &self,
        hook: HookKind,
        url: &reqwest::Url,
        body: impl FnOnce() -> Vec<u8>,
    ) -> Result<Vec<u8>, HookError> {
        let failed = |reason: String| HookError::Failed { hook, reason };
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| failed("the server is shutting down".to_owned()))?;
        let body = body();
        let signed = signature(&self.secret, &body);
        let response = self
            .http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signed)
            .body(body)
            .send()
            .await
            .map_err(|error| self.transport_error(hook, error))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(failed(format!(
                "it answered {status}, a redirect (hook calls do not follow redirects: configure the final URL)"
            )));
        }
        if !status.is_success() {
            return Err(failed(format!("it answered {status}")));
        }
        read_answer(response).await.map_err(|error| match error {
            ReadError::TooLarge => HookError::BadAnswer {
                hook,
                reason: format!("the answer exceeds {MAX_ANSWER_BYTES} bytes"),
            },
            ReadError::Transport(error) => self.transport_error(hook, error),
        })
    }

    fn timed_out(&self, hook: HookKind) -> HookError {
        let timeout_ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        HookError::Timeout { hook, timeout_ms }
    }

    /// Describes a failed exchange by its causes, without the URL.
    fn transport_error(&self, hook: HookKind, error: reqwest::Error) -> HookError {
        if error.is_timeout() {
            return self.timed_out(hook);
        }
        let error = error.without_url();
        let mut reason = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            reason.push_str(": ");
            reason.push_str(&cause.to_string());
            source = cause.source();
        }
        HookError::Failed { hook, reason }
    }
}

enum ReadError {
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads the body chunk by chunk, stopping as soon as it grows past [`MAX_ANSWER_BYTES`].
async fn read_answer(mut response: reqwest::Response) -> Result<Vec<u8>, ReadError> {
    if response.content_length().is_some_and(|length| length > MAX_ANSWER_BYTES as u64) {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Transport)? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
