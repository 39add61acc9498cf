//! How the signer decides who may touch which keys.
//!
//! The signer only knows bearer tokens and store ids; what a token means is
//! decided by a [`TokenAuthority`] supplied by the embedding server (the sync
//! server plugs in its own authenticator: static tokens, JWT HS256 with a
//! store-id claim, or a loopback-only no-auth mode). This module provides the
//! trait, the bearer-token extraction shared by all routes, and two small
//! authorities used by tests and simple deployments.
//!
//! The embedded object store does not use this module: it authenticates S3
//! requests by SigV4 signature only (see `store::sigv4`).

use std::collections::{HashMap, HashSet};

use axum::http::HeaderMap;

/// Who calls the signer: the bearer token (from `Authorization: Bearer <token>` or the upstream-compatible
/// `X-Worker-Auth` header, `None` when absent) and the request's headers (for authorities that decide by a session
/// cookie through the application's backend).
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The bearer token, if any.
    pub bearer: Option<&'a str>,
    /// All request headers.
    pub headers: &'a HeaderMap,
}

/// Decides whether a caller may touch keys of a store.
///
/// Called once per signer request, after the key was validated, with the
/// store id taken from the key's first segment. Implementations must be cheap
/// (the signer aims at thousands of signatures per second on one core), so
/// anything slow (key fetching, database lookups) belongs in a cache; they are
/// asynchronous so that a cache miss (a rotated signing key, a call to the
/// application's backend) can be awaited.
pub trait TokenAuthority: Send + Sync + 'static {
    /// May `caller` touch keys of `store_id`? `store_id` is the key's first
    /// segment, which filesync clients build with
    /// [`sanitize_store_id`](crate::sanitize_store_id).
    fn authorize<'a>(
        &'a self,
        caller: Caller<'a>,
        store_id: &'a str,
    ) -> AuthFuture<'a, Result<(), AuthRejection>>;

    /// Whether `caller` could be allowed at all, for some store. Called before a signer request's body is read
    /// (the store is only known from the body), so a client without a valid token cannot make the signer read and
    /// hold its body. The default accepts every request here and leaves the decision to
    /// [`authorize`](Self::authorize); authorities that can tell a valid token from an invalid one should say so.
    fn authenticate<'a>(&'a self, caller: Caller<'a>) -> AuthFuture<'a, Result<(), AuthRejection>> {
        let _ = caller;
        Box::pin(std::future::ready(Ok(())))
    }
}

/// A boxed future, as [`TokenAuthority`]'s methods return.
pub type AuthFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Closures are authorities too, which keeps small embeddings short.
impl<F> TokenAuthority for F
where
    F: Fn(Option<&str>, &str) -> Result<(), AuthRejection> + Send + Sync + 'static,
{
    fn authorize<'a>(
        &'a self,
        caller: Caller<'a>,
        store_id: &'a str,
    ) -> AuthFuture<'a, Result<(), AuthRejection>> {
        Box::pin(std::future::ready(self(caller.bearer, store_id)))
    }
}

/// A refusal, carrying the message sent as `{"error": message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRejection {
    /// 401: no token, or a token that is not valid at all (unknown, expired,
    /// bad signature).
    Unauthorized(String),
    /// 403: a valid token that does not grant this store.
    Forbidden(String),
}

/// Static bearer tokens, each granting a list of store ids or every store.
#[derive(Debug, Clone, Default)]
pub struct StaticTokens {
    /// token -> granted store ids; `None` grants every store.
    grants: HashMap<String, Option<HashSet<String>>>,
}

impl StaticTokens {
    /// An authority that knows no tokens (every request is 401).
    pub fn new() -> Self {
        Self::default()
    }

    /// Grants `token` access to the listed stores only.
    #[must_use]
    pub fn with_token<I, S>(mut self, token: impl Into<String>, store_ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let stores = store_ids.into_iter().map(Into::into).collect();
        self.grants.insert(token.into(), Some(stores));
        self
    }

    /// Grants `token` access to every store.
    #[must_use]
    pub fn with_admin_token(mut self, token: impl Into<String>) -> Self {
        self.grants.insert(token.into(), None);
        self
    }
}

impl StaticTokens {
    fn check(&self, bearer: Option<&str>, store_id: Option<&str>) -> Result<(), AuthRejection> {
        let Some(token) = bearer else {
            return Err(AuthRejection::Unauthorized("Unauthorized: missing bearer token".into()));
        };
        match (self.grants.get(token), store_id) {
            (None, _) => Err(AuthRejection::Unauthorized("Unauthorized: unknown token".into())),
            (Some(_), None) | (Some(None), Some(_)) => Ok(()),
            (Some(Some(stores)), Some(store_id)) if stores.contains(store_id) => Ok(()),
            (Some(Some(_)), Some(store_id)) => Err(AuthRejection::Forbidden(format!(
                "Forbidden: token does not grant store '{store_id}'"
            ))),
        }
    }
}

impl TokenAuthority for StaticTokens {
    fn authenticate<'a>(&'a self, caller: Caller<'a>) -> AuthFuture<'a, Result<(), AuthRejection>> {
        Box::pin(std::future::ready(self.check(caller.bearer, None)))
    }

    fn authorize<'a>(
        &'a self,
        caller: Caller<'a>,
        store_id: &'a str,
    ) -> AuthFuture<'a, Result<(), AuthRejection>> {
        Box::pin(std::future::ready(self.check(caller.bearer, Some(store_id))))
    }
}

/// Lets every request through. Only for loopback development servers: the
/// embedding server is responsible for refusing it on public listeners.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl TokenAuthority for AllowAll {
    fn authorize<'a>(
        &'a self,
        _caller: Caller<'a>,
        _store_id: &'a str,
    ) -> AuthFuture<'a, Result<(), AuthRejection>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The caller's token: `Authorization: Bearer <token>` (scheme matched
/// case-insensitively, token trimmed), else the `X-Worker-Auth` header that
/// the upstream Worker helpers also accept. Empty tokens count as absent.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let from_authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|token| !token.is_empty());
    from_authorization.or_else(|| {
        headers
            .get("x-worker-auth")
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|token| !token.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_tokens_grant_by_store() {
        let authority = StaticTokens::new().with_token("t1", ["s1"]).with_admin_token("root");
        let headers = HeaderMap::new();
        let caller = |bearer| Caller { bearer, headers: &headers };
        assert_eq!(authority.authorize(caller(Some("t1")), "s1").await, Ok(()));
        assert!(matches!(
            authority.authorize(caller(Some("t1")), "s2").await,
            Err(AuthRejection::Forbidden(_))
        ));
        assert!(matches!(
            authority.authorize(caller(Some("zz")), "s1").await,
            Err(AuthRejection::Unauthorized(_))
        ));
        assert!(matches!(
            authority.authorize(caller(None), "s1").await,
            Err(AuthRejection::Unauthorized(_))
        ));
        assert_eq!(authority.authorize(caller(Some("root")), "anything").await, Ok(()));
        assert_eq!(authority.authenticate(caller(Some("t1"))).await, Ok(()));
        assert!(matches!(
            authority.authenticate(caller(Some("zz"))).await,
            Err(AuthRejection::Unauthorized(_))
        ));
        assert!(matches!(
            authority.authenticate(caller(None)).await,
            Err(AuthRejection::Unauthorized(_))
        ));
    }

    #[test]
    fn bearer_extraction() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert("authorization", "bearer  abc ".parse().expect("header"));
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert("authorization", "Basic abc".parse().expect("header"));
        headers.insert("x-worker-auth", "w".parse().expect("header"));
        assert_eq!(bearer_token(&headers), Some("w"));
    }
}
