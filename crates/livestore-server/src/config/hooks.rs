//! `[hooks]`: the application's backend, called over HTTP. `connect_url` decides who may connect (before a
//! WebSocket upgrade, and for every HTTP-transport request), `push_url` every batch before it is admitted,
//! `pull_url` every pull as it starts; `events_url` receives committed events. Every call is signed with `secret`.

use serde::Deserialize;

use super::secrets::Secret;

/// Default `timeout_ms`.
pub(crate) const DEFAULT_HOOK_TIMEOUT_MS: u64 = 1_000;
/// Default `events_timeout_ms`: a receiver has 15 s to answer, as with Svix.
pub(crate) const DEFAULT_EVENTS_TIMEOUT_MS: u64 = 15_000;
/// Default `events_retry_max_ms`: the longest wait between two attempts at a failing receiver.
pub(crate) const DEFAULT_EVENTS_RETRY_MAX_MS: u64 = 60_000;

/// Hook settings; every URL is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HooksConfig {
    /// Decides connections: `{"storeId","payload","headers","remoteAddr","transport"}` in, allow or deny out.
    pub connect_url: Option<String>,
    /// Decides each pushed batch before admission.
    pub push_url: Option<String>,
    /// Decides each pull as it starts.
    pub pull_url: Option<String>,
    /// Receives committed events, at least once, in order per store (docs/events-webhook.md).
    pub events_url: Option<String>,
    /// How long `events_url` may take to answer a batch before the attempt counts as failed (and is retried).
    pub events_timeout_ms: u64,
    /// The longest wait between two attempts to deliver a batch to a failing `events_url` (the waits double up to
    /// it, with jitter; delivery never gives up).
    pub events_retry_max_ms: u64,
    /// Key of the `X-Livestore-Signature` HMAC on every call (env `LIVESTORE_HOOKS_SECRET`).
    pub secret: Option<Secret>,
    /// How long a connect, push or pull hook may take before the server gives up (fail closed).
    pub timeout_ms: u64,
    /// Request headers passed to the connect hook (lower case), e.g. `["cookie"]`; the push and pull hooks see the
    /// identity the connect hook vouched for instead. Never sent to `events_url`.
    pub forward_headers: Vec<String>,
    /// Hook calls in flight at once, process-wide; more wait, and give up at the timeout.
    pub concurrency: usize,
    /// Seconds a connect decision is reused for the same store, payload and forwarded headers (0: never).
    pub connect_cache_seconds: u64,
    /// Let requests through when a hook cannot be reached or answers garbage (default: refuse them).
    pub fail_open: bool,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            connect_url: None,
            push_url: None,
            pull_url: None,
            events_url: None,
            events_timeout_ms: DEFAULT_EVENTS_TIMEOUT_MS,
            events_retry_max_ms: DEFAULT_EVENTS_RETRY_MAX_MS,
            secret: None,
            timeout_ms: DEFAULT_HOOK_TIMEOUT_MS,
            forward_headers: Vec::new(),
            concurrency: 64,
            connect_cache_seconds: 5,
            fail_open: false,
        }
    }
}

impl HooksConfig {
    /// Whether any hook URL is configured.
    pub fn any(&self) -> bool {
        self.connect_url.is_some()
            || self.push_url.is_some()
            || self.pull_url.is_some()
            || self.events_url.is_some()
    }

    /// Checks URLs, the secret, ranges and header names.
    pub fn validate(&self) -> Result<(), String> {
        for (name, url) in [
            ("hooks.connect_url", &self.connect_url),
            ("hooks.push_url", &self.push_url),
            ("hooks.pull_url", &self.pull_url),
            ("hooks.events_url", &self.events_url),
        ] {
            if let Some(url) = url {
                check_url(name, url)?;
            }
        }
        match &self.secret {
            Some(secret) => secret.check_strength("hooks.secret")?,
            None if self.any() => {
                return Err("hooks.secret (LIVESTORE_HOOKS_SECRET) is required with hook URLs: every hook call \
                            is signed with it so the backend can tell it came from this server"
                    .to_owned());
            }
            None => {}
        }
        if !(10..=60_000).contains(&self.timeout_ms) {
            return Err(format!(
                "hooks.timeout_ms = {} is out of range: allowed 10..=60000 ms",
                self.timeout_ms
            ));
        }
        if !(100..=120_000).contains(&self.events_timeout_ms) {
            return Err(format!(
                "hooks.events_timeout_ms = {} is out of range: allowed 100..=120000 ms",
                self.events_timeout_ms
            ));
        }
        if !(100..=3_600_000).contains(&self.events_retry_max_ms) {
            return Err(format!(
                "hooks.events_retry_max_ms = {} is out of range: allowed 100..=3600000 ms",
                self.events_retry_max_ms
            ));
        }
        if !(1..=4_096).contains(&self.concurrency) {
            return Err(format!(
                "hooks.concurrency = {} is out of range: allowed 1..=4096",
                self.concurrency
            ));
        }
        if self.connect_cache_seconds > 300 {
            return Err(format!(
                "hooks.connect_cache_seconds = {} is out of range: allowed 0..=300 s",
                self.connect_cache_seconds
            ));
        }
        for name in &self.forward_headers {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
            if !valid {
                return Err(format!("hooks.forward_headers: {name:?} is not a header name"));
            }
        }
        Ok(())
    }

    /// The forwarded header names, lower case.
    pub fn forwarded_header_names(&self) -> Vec<String> {
        self.forward_headers.iter().map(|name| name.to_ascii_lowercase()).collect()
    }
}

/// An `http(s)://` URL with a host; plain `http` only to a loopback host (a hook call carries identities and
/// batches, and its answer decides who may write).
pub(crate) fn check_url(setting: &str, raw: &str) -> Result<(), String> {
    let url: url::Url = raw.parse().map_err(|_| format!("{setting} is not a URL"))?;
    let Some(host) = url.host() else { return Err(format!("{setting} has no host")) };
    let loopback = match host {
        url::Host::Domain(name) => name == "localhost" || name.ends_with(".localhost"),
        url::Host::Ipv4(address) => address.is_loopback(),
        url::Host::Ipv6(address) => address.is_loopback(),
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(format!(
            "{setting} must use https unless it points at a loopback address (the call carries identities, and \
             its answer decides who may write)"
        )),
        _ => Err(format!("{setting} must be an http(s) URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_are_checked() {
        HooksConfig::default().validate().unwrap();
        let with = |connect: &str| HooksConfig {
            connect_url: Some(connect.to_owned()),
            secret: Some(Secret("0123456789abcdef0123456789abcdef".to_owned())),
            ..HooksConfig::default()
        };
        with("http://127.0.0.1:9000/connect").validate().unwrap();
        with("https://app.example.com/hooks/connect").validate().unwrap();
        assert!(
            with("http://app.example.com/connect")
                .validate()
                .unwrap_err()
                .contains("must use https")
        );
        assert!(with("ftp://127.0.0.1/x").validate().is_err());
        let unsigned = HooksConfig { secret: None, ..with("http://127.0.0.1/x") };
        assert!(unsigned.validate().unwrap_err().contains("hooks.secret"));
        let slow = HooksConfig { timeout_ms: 0, ..with("http://127.0.0.1/x") };
        assert!(slow.validate().unwrap_err().contains("allowed 10..=60000 ms"));
        let headers =
            HooksConfig { forward_headers: vec!["coo kie".into()], ..with("http://127.0.0.1/x") };
        assert!(headers.validate().unwrap_err().contains("not a header name"));
        let events = |timeout, retry_max| HooksConfig {
            events_url: Some("http://127.0.0.1:9000/events".into()),
            events_timeout_ms: timeout,
            events_retry_max_ms: retry_max,
            ..with("http://127.0.0.1/x")
        };
        events(DEFAULT_EVENTS_TIMEOUT_MS, DEFAULT_EVENTS_RETRY_MAX_MS).validate().unwrap();
        assert!(events(99, 1_000).validate().unwrap_err().contains("events_timeout_ms"));
        assert!(events(1_000, 3_600_001).validate().unwrap_err().contains("events_retry_max_ms"));
        let unsigned_events = HooksConfig {
            events_url: Some("http://127.0.0.1:9000/events".into()),
            ..HooksConfig::default()
        };
        assert!(unsigned_events.validate().unwrap_err().contains("hooks.secret"));
    }
}
