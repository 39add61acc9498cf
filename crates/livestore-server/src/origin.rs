//! Which web pages may talk to the server: browser origins and, without authentication, the `Host` they name.
//!
//! Without credentials configured the server listens on loopback only, but a loopback server is still in reach of
//! every web page its user visits: a page can send requests to `http://127.0.0.1:8787` (simple requests need no
//! preflight, and WebSockets none at all), and through DNS rebinding it can even read the answers under its own
//! origin, with a `Host` header naming the attacker's domain. So in no-auth mode a request is served only if
//! - its `Host` is a loopback name or address (`localhost`, `*.localhost`, `127.0.0.0/8`, `[::1]`), and
//! - its `Origin`, if any, is a loopback origin or one listed in `cors.allowed_origins`.
//!
//! With authentication the token is the credential and any origin may call, unless `cors.allowed_origins` lists
//! the only ones allowed. When the connect hook decides by cookies (`hooks.forward_headers` has `cookie`), a
//! browser sends the user's cookies with any page's requests, so then only the server's own origin and the listed
//! ones may call (cross-site WebSocket hijacking). Refusals are 403 with the reason, counted in
//! `livestore_limit_hits_total`.
//!
//! Listed origins get credentialed CORS on every route: `Access-Control-Allow-Origin` is the origin itself,
//! `Access-Control-Allow-Credentials: true`, and a preflight's requested headers are echoed (a `*` does not count
//! for credentialed requests), so a web app on another origin can call the sync HTTP transport and the signer with
//! its session cookie.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http_error::HttpError;
use crate::metrics::{LimitHit, Metrics};

/// The policy, built once from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct OriginPolicy {
    /// No credentials configured: loopback hosts and origins only (plus the allowed origins).
    pub(crate) no_auth: bool,
    /// The connect hook sees cookies: only the server's own origin and the listed ones may call.
    pub(crate) cookie_auth: bool,
    pub(crate) allowed_origins: Arc<[String]>,
    pub(crate) metrics: Arc<Metrics>,
}

/// What an allowed request gets on its way back.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    /// Nothing special.
    Plainly,
    /// A listed origin: credentialed CORS for it.
    Listed(String),
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Host,
    Origin,
}

impl OriginPolicy {
    fn check(&self, headers: &HeaderMap) -> Result<Allowed, Refusal> {
        if self.no_auth
            && let Some(host) = headers.get(header::HOST)
            && !host.to_str().is_ok_and(is_loopback_authority)
        {
            return Err(Refusal::Host);
        }
        let Some(origin) = headers.get(header::ORIGIN) else { return Ok(Allowed::Plainly) };
        let origin = origin.to_str().map_err(|_| Refusal::Origin)?;
        if self.allowed_origins.iter().any(|allowed| allowed == origin) {
            return Ok(Allowed::Listed(origin.to_owned()));
        }
        if self.no_auth {
            return if is_loopback_origin(origin) {
                Ok(Allowed::Plainly)
            } else {
                Err(Refusal::Origin)
            };
        }
        if self.cookie_auth {
            let same_origin = headers
                .get(header::HOST)
                .and_then(|host| host.to_str().ok())
                .is_some_and(|host| origin_authority(origin) == Some(host));
            return if same_origin { Ok(Allowed::Plainly) } else { Err(Refusal::Origin) };
        }
        if self.allowed_origins.is_empty() { Ok(Allowed::Plainly) } else { Err(Refusal::Origin) }
    }
}

/// Refuses requests the policy does not allow (403), before any route sees them.
pub(crate) async fn guard_origins(
    State(policy): State<OriginPolicy>,
    request: Request,
    next: Next,
) -> Response {
    let requested_headers = request.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();
    match policy.check(request.headers()) {
        Ok(Allowed::Plainly) => next.run(request).await,
        Ok(Allowed::Listed(origin)) => {
            let mut response = next.run(request).await;
            credentialed_cors(response.headers_mut(), &origin, requested_headers);
            response
        }
        Err(refusal) => {
            let (limit, error) = match refusal {
                Refusal::Host => (LimitHit::Host, HttpError::HostRefused),
                Refusal::Origin => (LimitHit::Origin, HttpError::OriginRefused),
            };
            policy.metrics.limit_hit(limit);
            tracing::debug!(?refusal, "refused a request by its Host or Origin");
            error.into_response()
        }
    }
}

/// Credentialed CORS headers for a listed origin, replacing whatever wildcard a route's own CORS layer set.
fn credentialed_cors(
    headers: &mut HeaderMap,
    origin: &str,
    requested_headers: Option<HeaderValue>,
) {
    let Ok(origin) = HeaderValue::from_str(origin) else { return };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(requested) = requested_headers
        && headers.contains_key(header::ACCESS_CONTROL_ALLOW_HEADERS)
    {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
    }
}

/// The `host[:port]` of an `http(s)://host[:port]` origin.
fn origin_authority(origin: &str) -> Option<&str> {
    let (scheme, authority) = origin.split_once("://")?;
    (matches!(scheme, "http" | "https") && !authority.contains('/')).then_some(authority)
}

/// `host[:port]` naming a loopback host.
fn is_loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        // `[::1]:8787`
        Some(rest) => match rest.split_once(']') {
            Some((address, _)) => address,
            None => return false,
        },
        None => authority.rsplit_once(':').map_or(authority, |(host, port)| {
            if port.bytes().all(|byte| byte.is_ascii_digit()) { host } else { authority }
        }),
    };
    is_loopback_host(host)
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|address| address.is_loopback())
}

/// `scheme://host[:port]` with a loopback host.
fn is_loopback_origin(origin: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else { return false };
    matches!(scheme, "http" | "https")
        && !authority.contains('/')
        && is_loopback_authority(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(no_auth: bool, allowed: &[&str]) -> OriginPolicy {
        OriginPolicy {
            no_auth,
            cookie_auth: false,
            allowed_origins: allowed.iter().map(|origin| (*origin).to_owned()).collect(),
            metrics: Arc::new(Metrics::new()),
        }
    }

    fn headers(host: Option<&str>, origin: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(host) = host {
            headers.insert(header::HOST, host.parse().unwrap());
        }
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, origin.parse().unwrap());
        }
        headers
    }

    #[test]
    fn no_auth_serves_loopback_hosts_and_origins_only() {
        let policy = policy(true, &["https://app.example.com"]);
        for host in [
            "127.0.0.1:8787",
            "localhost:8787",
            "LOCALHOST",
            "[::1]:8787",
            "127.1.2.3",
            "app.localhost:1",
        ] {
            assert_eq!(policy.check(&headers(Some(host), None)), Ok(Allowed::Plainly), "{host}");
        }
        for host in
            ["evil.example:8787", "192.168.1.5:8787", "[::2]:1", "localhost.evil.com", "10.0.0.1"]
        {
            assert_eq!(policy.check(&headers(Some(host), None)), Err(Refusal::Host), "{host}");
        }
        for origin in [
            "http://localhost:5173",
            "http://127.0.0.1:8787",
            "https://[::1]",
            "https://app.example.com",
        ] {
            assert!(
                policy.check(&headers(Some("127.0.0.1:8787"), Some(origin))).is_ok(),
                "{origin}"
            );
        }
        for origin in [
            "https://evil.example",
            "null",
            "http://localhost.evil.com",
            "file://",
            "http://192.168.0.2:8787",
        ] {
            let result = policy.check(&headers(Some("127.0.0.1:8787"), Some(origin)));
            assert_eq!(result, Err(Refusal::Origin), "{origin}");
        }
    }

    #[test]
    fn with_auth_any_origin_unless_a_list_is_given() {
        let open = policy(false, &[]);
        assert_eq!(
            open.check(&headers(Some("sync.example.com"), Some("https://evil.example"))),
            Ok(Allowed::Plainly)
        );
        let listed = policy(false, &["https://app.example.com"]);
        assert_eq!(
            listed.check(&headers(Some("sync.example.com"), Some("https://app.example.com"))),
            Ok(Allowed::Listed("https://app.example.com".into()))
        );
        assert_eq!(
            listed.check(&headers(Some("sync.example.com"), Some("https://evil.example"))),
            Err(Refusal::Origin)
        );
        assert_eq!(
            listed.check(&headers(Some("sync.example.com"), None)),
            Ok(Allowed::Plainly),
            "non-browser clients"
        );
    }

    #[test]
    fn cookie_sessions_admit_only_the_servers_own_origin_and_listed_ones() {
        let cookies =
            OriginPolicy { cookie_auth: true, ..policy(false, &["https://app.example.com"]) };
        let host = Some("sync.example.com");
        assert_eq!(
            cookies.check(&headers(host, Some("https://sync.example.com"))),
            Ok(Allowed::Plainly)
        );
        assert!(matches!(
            cookies.check(&headers(host, Some("https://app.example.com"))),
            Ok(Allowed::Listed(_))
        ));
        assert_eq!(
            cookies.check(&headers(host, Some("https://evil.example"))),
            Err(Refusal::Origin)
        );
        assert_eq!(cookies.check(&headers(host, None)), Ok(Allowed::Plainly));
    }

    #[test]
    fn listed_origins_get_credentialed_cors() {
        let mut response = HeaderMap::new();
        response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        response.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("*"));
        credentialed_cors(
            &mut response,
            "https://app.example.com",
            Some(HeaderValue::from_static("content-type,x-livestore-store-id")),
        );
        assert_eq!(response[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(response[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(
            response[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "content-type,x-livestore-store-id"
        );
        assert_eq!(response[header::VARY], "Origin");
    }
}
