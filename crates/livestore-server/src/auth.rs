//! Who may use which store: static bearer tokens, JWTs and the connect hook, checked before a WebSocket upgrade
//! and before any request body is read.
//!
//! The credential travels the way sync-cf clients can send it: as `authToken` inside the sync payload (the
//! double-encoded `payload` query parameter, and the RPC `payload` field of WebSocket requests), or as an
//! `Authorization: Bearer` header where the transport allows headers. A verified credential, the connect hook's
//! answer, or both, make an [`Identity`]; its expiry bounds how long an open WebSocket may keep using it, and the
//! push and pull hooks see it. This module never logs a token; rejection messages never echo one.

mod jwks;
mod jwt;
mod keys;
mod shape;
mod signature;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, header};
use serde_json::value::RawValue;

use crate::config::{AuthConfig, StoreAccess, TokenEntry};
use crate::hooks::{ConnectDecision, ConnectRequest, SyncHooks, TransportKind};
pub use crate::identity::{Identity, IdentitySource};
pub(crate) use crate::identity::{time_until, unix_now};
pub use crate::kinds::RejectionKind;

/// A refusal with a message safe to show the client (it never contains the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRejection {
    /// Unauthorized, forbidden, or undecided (`http_error` maps each to its status).
    pub kind: RejectionKind,
    /// What is wrong.
    pub message: String,
}

impl AuthRejection {
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        AuthRejection { kind: RejectionKind::Unauthorized, message: message.into() }
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        AuthRejection { kind: RejectionKind::Forbidden, message: message.into() }
    }
}

/// What a connection or request presents, to [`Authenticator::admit`].
#[derive(Debug, Clone, Copy)]
pub struct ConnectContext<'a> {
    /// The store it wants.
    pub store_id: &'a str,
    /// The sync payload from the URL.
    pub payload: Option<&'a RawValue>,
    /// The request's headers.
    pub headers: &'a HeaderMap,
    /// The peer.
    pub remote_addr: Option<SocketAddr>,
    /// WebSocket or HTTP.
    pub transport: TransportKind,
}

/// Checks credentials and asks the connect hook.
pub struct Authenticator {
    tokens: Vec<TokenEntry>,
    jwt: Option<jwt::JwtVerifier>,
    store_access: StoreAccess,
    hooks: Arc<dyn SyncHooks>,
    forward_headers: Vec<String>,
    fail_open: bool,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Authenticator")
            .field("tokens", &self.tokens)
            .field("jwt", &self.jwt)
            .field("store_access", &self.store_access)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds an authenticator from `[auth]` and the hooks (with their forwarded header names and failure policy).
    pub fn new(
        config: &AuthConfig,
        hooks: Arc<dyn SyncHooks>,
        forward_headers: Vec<String>,
        fail_open: bool,
    ) -> Result<Self, String> {
        Ok(Authenticator {
            tokens: config.tokens.clone(),
            jwt: jwt::JwtVerifier::new(config)?,
            store_access: config.store_access()?,
            hooks,
            forward_headers,
            fail_open,
        })
    }

    /// An authenticator from `[auth]` alone (no hooks), for tests and simple embeddings.
    pub fn from_config(config: &AuthConfig) -> Result<Self, String> {
        Self::new(config, Arc::new(crate::hooks::NoHooks), Vec::new(), false)
    }

    /// Starts fetching the identity provider's keys (`auth.jwks_url`) in the background, counting in `metrics`.
    /// Without this call the keys are fetched on first use.
    pub(crate) fn start_key_refresh(&self, metrics: &crate::metrics::Metrics) {
        if let Some(jwt) = &self.jwt {
            jwt.start(metrics.jwks.clone());
        }
    }

    /// Whether requests need a credential or the connect hook's consent (false: no-auth mode).
    pub fn is_enabled(&self) -> bool {
        !self.tokens.is_empty() || self.jwt.is_some() || self.hooks.wants_connect()
    }

    /// The hooks this server asks.
    pub fn hooks(&self) -> &Arc<dyn SyncHooks> {
        &self.hooks
    }

    /// The credential a request carries: `authToken` of the sync payload, else the bearer header. `Ok(None)` when
    /// there is none; an error for a payload whose `authToken` is not a string.
    pub fn credential<'a>(
        sync_payload: Option<&RawValue>,
        bearer: Option<&'a str>,
    ) -> Result<Option<std::borrow::Cow<'a, str>>, AuthRejection> {
        let from_payload = match sync_payload {
            Some(payload) => token_from_payload(payload)?,
            None => None,
        };
        Ok(from_payload.map(std::borrow::Cow::Owned).or(bearer.map(std::borrow::Cow::Borrowed)))
    }

    /// Decides a connection or HTTP request: verifies the credential it carries (a wrong one is refused before the
    /// hook is asked), then asks the connect hook, if there is one.
    pub async fn admit(&self, context: ConnectContext<'_>) -> Result<Identity, AuthRejection> {
        if !self.is_enabled() {
            return Ok(Identity::default());
        }
        let bearer = bearer_token(context.headers);
        let verified = match Self::credential(context.payload, bearer)? {
            Some(token) => Some(self.authorize_token(context.store_id, &token).await?),
            None => None,
        };
        if !self.hooks.wants_connect() {
            return verified.ok_or_else(|| {
                AuthRejection::unauthorized(
                    "missing credentials: pass syncPayload {\"authToken\": \"...\"} or an Authorization: Bearer header",
                )
            });
        }
        let request = ConnectRequest {
            store_id: context.store_id.to_owned(),
            payload: context.payload.map(|payload| payload.to_owned()),
            headers: self.forwarded(context.headers),
            remote_addr: context.remote_addr,
            transport: context.transport,
            identity: verified.clone(),
        };
        match self.hooks.connect(request).await {
            // An allow that has already run out would let an HTTP request through and have a socket closed as
            // soon as it opened: it is a refusal.
            Ok(ConnectDecision::Allow { expires_at: Some(expires_at), .. })
                if expires_at <= unix_now() =>
            {
                Err(AuthRejection::forbidden("access expired"))
            }
            Ok(ConnectDecision::Allow { subject, claims, expires_at }) => {
                Ok(merge(verified, subject, claims, expires_at))
            }
            Ok(ConnectDecision::Deny { reason }) => Err(AuthRejection::forbidden(reason)),
            Err(error) if self.fail_open => {
                tracing::warn!(%error, "connect hook failed; letting the request through (hooks.fail_open)");
                Ok(verified.unwrap_or_default())
            }
            Err(error) => {
                tracing::warn!(%error, "connect hook failed; refusing the request");
                Err(AuthRejection {
                    kind: RejectionKind::Unavailable,
                    message:
                        "the server cannot decide about this connection right now; retry shortly"
                            .to_owned(),
                })
            }
        }
    }

    /// Verifies a bare token and checks it may use `store_id`.
    pub async fn authorize_token(
        &self,
        store_id: &str,
        token: &str,
    ) -> Result<Identity, AuthRejection> {
        let (identity, stores) = self.verify(token).await?;
        let allowed = match &stores {
            Some(stores) => stores.iter().any(|store| store == "*" || store == store_id),
            None => self.store_access.allows(&identity.claims, store_id),
        };
        if allowed {
            return Ok(identity);
        }
        if stores.is_none()
            && let StoreAccess::Claim(name) = &self.store_access
            && !identity.claims.get(name).is_some_and(|value| value.is_string() || value.is_array())
        {
            return Err(AuthRejection::forbidden(format!(
                "token has no {name:?} claim listing store ids"
            )));
        }
        Err(AuthRejection::forbidden(format!("token is not valid for store {store_id:?}")))
    }

    /// Checks that a token is valid for some store, before a request whose store is only known from its body is
    /// read (the signer).
    pub async fn authenticate_token(&self, token: &str) -> Result<Identity, AuthRejection> {
        self.verify(token).await.map(|(identity, _)| identity)
    }

    /// Verifies a token: a static one (with the stores it lists, `None` meaning "decided by the claims"), or a JWT.
    async fn verify(&self, token: &str) -> Result<(Identity, Option<Vec<String>>), AuthRejection> {
        if let Some(entry) = self.tokens.iter().find(|entry| constant_time_eq(entry.token(), token))
        {
            let stores = match entry {
                TokenEntry::AllStores(_) => vec!["*".to_owned()],
                TokenEntry::Scoped { stores, .. } => stores.clone(),
            };
            let identity = Identity { source: IdentitySource::StaticToken, ..Identity::default() };
            return Ok((identity, Some(stores)));
        }
        let Some(jwt) = &self.jwt else {
            return Err(AuthRejection::unauthorized("invalid token"));
        };
        let verified = jwt.verify(token).await?;
        let subject =
            verified.claims.get("sub").and_then(serde_json::Value::as_str).map(str::to_owned);
        let identity = Identity {
            subject,
            claims: verified.claims,
            expires_at: verified.expires_at,
            source: IdentitySource::Jwt,
        };
        Ok((identity, None))
    }

    /// The request headers the hooks may see.
    fn forwarded(&self, headers: &HeaderMap) -> std::collections::BTreeMap<String, String> {
        self.forward_headers
            .iter()
            .filter_map(|name| {
                let values: Vec<&str> = headers
                    .get_all(name.as_str())
                    .iter()
                    .filter_map(|value| value.to_str().ok())
                    .collect();
                (!values.is_empty()).then(|| (name.clone(), values.join(", ")))
            })
            .collect()
    }
}

/// The identity of a connection the connect hook allowed: the hook's subject and claims where it gave them, the
/// verified credential's otherwise, and the earlier of both expiries.
fn merge(
    verified: Option<Identity>,
    subject: Option<String>,
    claims: serde_json::Map<String, serde_json::Value>,
    expires_at: Option<u64>,
) -> Identity {
    let base = verified.unwrap_or_default();
    let expires_at = match (base.expires_at, expires_at) {
        (Some(first), Some(second)) => Some(first.min(second)),
        (first, second) => first.or(second),
    };
    Identity {
        subject: subject.or(base.subject),
        claims: if claims.is_empty() { base.claims } else { claims },
        expires_at,
        source: IdentitySource::ConnectHook,
    }
}

/// The bearer token of an `Authorization` header, if any: the scheme is matched case-insensitively (RFC 9110
/// §11.1), surrounding whitespace ignored, an empty token counts as none.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The file services ask the same authenticator: a signer request with a bearer token is decided by it, one
/// without by the connect hook (with `transport: "signer"` and the key's store), so a web app that signs in with a
/// session cookie can upload files too.
impl livestore_objects::TokenAuthority for Authenticator {
    fn authorize<'a>(
        &'a self,
        caller: livestore_objects::Caller<'a>,
        store_id: &'a str,
    ) -> livestore_objects::AuthFuture<'a, Result<(), livestore_objects::AuthRejection>> {
        Box::pin(async move {
            if !self.is_enabled() {
                return Ok(());
            }
            let result = match caller.bearer {
                Some(token) => self.authorize_token(store_id, token).await.map(|_| ()),
                None if self.hooks.wants_connect() => {
                    let context = ConnectContext {
                        store_id,
                        payload: None,
                        headers: caller.headers,
                        remote_addr: None,
                        transport: TransportKind::Signer,
                    };
                    self.admit(context).await.map(|_| ())
                }
                None => Err(AuthRejection::unauthorized(MISSING_BEARER)),
            };
            result.map_err(to_objects_rejection)
        })
    }

    fn authenticate<'a>(
        &'a self,
        caller: livestore_objects::Caller<'a>,
    ) -> livestore_objects::AuthFuture<'a, Result<(), livestore_objects::AuthRejection>> {
        Box::pin(async move {
            if !self.is_enabled() {
                return Ok(());
            }
            let result = match caller.bearer {
                Some(token) => self.authenticate_token(token).await.map(|_| ()),
                // Without a token only the connect hook can decide, and only once the body names the store; a
                // request without any of the forwarded headers (no session cookie) cannot pass it and is refused
                // before its body is read.
                None if self.hooks.wants_connect()
                    && !self.forwarded(caller.headers).is_empty() =>
                {
                    Ok(())
                }
                None => Err(AuthRejection::unauthorized(MISSING_BEARER)),
            };
            result.map_err(to_objects_rejection)
        })
    }
}

const MISSING_BEARER: &str = "missing credentials: pass an Authorization: Bearer header";

fn to_objects_rejection(rejection: AuthRejection) -> livestore_objects::AuthRejection {
    match rejection.kind {
        RejectionKind::Forbidden => livestore_objects::AuthRejection::Forbidden(rejection.message),
        RejectionKind::Unauthorized | RejectionKind::Unavailable => {
            livestore_objects::AuthRejection::Unauthorized(rejection.message)
        }
    }
}

/// Extracts `authToken` from a sync payload; a payload without it yields `None`, a non-string one is an error.
fn token_from_payload(payload: &RawValue) -> Result<Option<String>, AuthRejection> {
    #[derive(serde::Deserialize)]
    struct WithToken {
        #[serde(rename = "authToken")]
        auth_token: Option<serde_json::Value>,
    }
    match serde_json::from_str::<WithToken>(payload.get()) {
        Ok(WithToken { auth_token: None }) => Ok(None),
        Ok(WithToken { auth_token: Some(serde_json::Value::String(token)) }) => Ok(Some(token)),
        Ok(WithToken { auth_token: Some(_) }) => {
            Err(AuthRejection::unauthorized("authToken must be a string"))
        }
        // A payload that is not an object (e.g. a bare string) carries no token of ours.
        Err(_) => Ok(None),
    }
}

/// Compares secrets without an early exit, so response timing does not reveal how much of a token matched.
fn constant_time_eq(expected: &str, given: &str) -> bool {
    let (expected, given) = (expected.as_bytes(), given.as_bytes());
    let mut difference = expected.len() ^ given.len();
    for (index, byte) in given.iter().enumerate() {
        difference |= usize::from(expected.get(index).copied().unwrap_or(0) ^ byte);
    }
    difference == 0
}

#[cfg(test)]
mod tests;
