//! The `[hooks] events_url` subscriber: each batch is POSTed as JSON, signed, with an idempotency key.
//!
//! Request: `{"storeId": …, "events": [ … ]}` (the stored events verbatim), `Content-Type: application/json`,
//! `Idempotency-Key: <storeId>:<first>-<last>` and `X-Livestore-Signature: sha256=<hex HMAC-SHA256 of the body
//! keyed with hooks.secret>`. Any 2xx acknowledges. A redirect is not followed and counts as a failure, like any
//! other status, a connection failure or no complete answer within the timeout (`hooks.events_timeout_ms`).
//! Nothing of any client request (headers, cookies, tokens) is ever sent: the request is built from the batch
//! alone. Errors never quote the URL, which may carry a credential.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use sha2::Sha256;

use super::{DeliveryError, EventBatch, EventSink};
use crate::config::Secret;
use crate::error::ServerError;

/// How much of an answer's body is read (so the connection can be reused); the rest is dropped unread.
const ANSWER_BODY_LIMIT: usize = 64 * 1024;

/// POSTs batches to the events URL.
pub(crate) struct WebhookSink {
    url: reqwest::Url,
    signer: Hmac<Sha256>,
    timeout: Duration,
    client: reqwest::Client,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the URL (it may carry a credential) nor the key.
        formatter
            .debug_struct("WebhookSink")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl WebhookSink {
    /// A sink for `url` (already validated by the config), signing with `secret`.
    pub(crate) fn new(url: &str, secret: &Secret, timeout: Duration) -> Result<Self, ServerError> {
        let url: reqwest::Url = url
            .parse()
            .map_err(|_| ServerError::InvalidConfig("hooks.events_url is not a URL".into()))?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|error| {
                ServerError::InvalidConfig(format!(
                    "cannot build the HTTP client for hooks.events_url ({})",
                    error.without_url()
                ))
            })?;
        let signer = Hmac::<Sha256>::new_from_slice(secret.0.as_bytes())
            .expect("HMAC accepts keys of any length");
        Ok(WebhookSink { url, signer, timeout, client })
    }

    fn classify(&self, error: reqwest::Error) -> DeliveryError {
        if error.is_timeout() {
            return DeliveryError::Timeout { timeout_ms: self.timeout.as_millis() as u64 };
        }
        let connect = error.is_connect();
        let reason = describe(&error.without_url());
        if connect {
            DeliveryError::Unreachable { reason }
        } else {
            DeliveryError::Transport { reason }
        }
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub(crate) fn signature(signer: &Hmac<Sha256>, body: &[u8]) -> String {
    let mut mac = signer.clone();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[async_trait::async_trait]
impl EventSink for WebhookSink {
    async fn deliver(&self, batch: &EventBatch) -> Result<(), DeliveryError> {
        let body = batch.to_json();
        let signed = signature(&self.signer, body.as_bytes());
        // Store ids are ASCII letters, digits, '-' and '_', so the key is always a valid header value.
        let key = HeaderValue::from_str(&batch.idempotency_key()).map_err(|_| {
            DeliveryError::Refused { reason: "store id is not a header value".into() }
        })?;
        let request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("livestore/", env!("CARGO_PKG_VERSION")))
            .header("Idempotency-Key", key)
            .header("X-Livestore-Signature", signed)
            .body(body);
        let mut response = request.send().await.map_err(|error| self.classify(error))?;
        let status = response.status();
        // Read a little of the answer so the connection can serve the next batch; a 2xx acknowledged already,
        // whatever happens to its body.
        let mut read = 0;
        while read < ANSWER_BODY_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) | Err(_) => break,
            }
        }
        if status.is_success() {
            Ok(())
        } else if status.is_redirection() {
            Err(DeliveryError::Redirect { status: status.as_u16() })
        } else {
            Err(DeliveryError::Status { status: status.as_u16() })
        }
    }
}

/// An error and its causes on one line.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hex_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let signer = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        assert_eq!(
            signature(&signer, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn debug_shows_neither_url_nor_secret() {
        let sink = WebhookSink::new(
            "https://user:url-password@hooks.example.com/in?token=url-token",
            &Secret("0123456789abcdef0123456789abcdef-secret".into()),
            Duration::from_secs(1),
        )
        .unwrap();
        let debug = format!("{sink:?}");
        assert!(!debug.contains("url-password") && !debug.contains("url-token"), "{debug}");
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
    }
}
