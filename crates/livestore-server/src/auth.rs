//! Who may use which store: static bearer tokens and JWT HS256, checked before a WebSocket upgrade and before any
//! request body is read.
//!
//! The credential travels the way sync-cf clients can send it: as `authToken` inside the sync payload (the
//! double-encoded `payload` query parameter, and the RPC `payload` field of WebSocket requests), or as an
//! `Authorization: Bearer` header where the transport allows headers. A successful check returns a [`Grant`], whose
//! expiry bounds how long an open WebSocket may keep using it. This module never logs a token; rejection messages
//! never echo one.

mod jwt;

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::value::RawValue;

use crate::config::AuthConfig;

/// Seconds of clock difference tolerated on `exp` and `nbf`.
const JWT_LEEWAY_SECONDS: u64 = 5;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    /// 401: missing or invalid credentials.
    Unauthorized,
    /// 403: a valid credential that may not use this store.
    Forbidden,
}

/// A refusal with a message safe to show the client (it never contains the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRejection {
    /// 401 or 403.
    pub kind: RejectionKind,
    /// What is wrong.
    pub message: String,
}

impl AuthRejection {
    fn unauthorized(message: impl Into<String>) -> Self {
        AuthRejection { kind: RejectionKind::Unauthorized, message: message.into() }
    }

    fn forbidden(message: impl Into<String>) -> Self {
        AuthRejection { kind: RejectionKind::Forbidden, message: message.into() }
    }

    /// The HTTP status: 401 or 403.
    pub fn status(&self) -> u16 {
        match self.kind {
            RejectionKind::Unauthorized => 401,
            RejectionKind::Forbidden => 403,
        }
    }
}

/// What a successful check grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Grant {
    /// The first Unix second at which the credential is refused; `None` for credentials that do not expire
    /// (static tokens, no auth). An open WebSocket stops serving at this instant.
    pub expires_at: Option<u64>,
}

/// Checks credentials against the configured tokens and JWT secret.
pub struct Authenticator {
    config: AuthConfig,
    jwt_key: Option<DecodingKey>,
    jwt_validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Authenticator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds an authenticator; with neither tokens nor a secret, every request is allowed.
    pub fn new(config: AuthConfig) -> Self {
        let jwt_key =
            config.jwt_secret.as_ref().map(|secret| DecodingKey::from_secret(secret.0.as_bytes()));
        let mut jwt_validation = Validation::new(Algorithm::HS256);
        jwt_validation.required_spec_claims = HashSet::from(["exp".to_owned()]);
        jwt_validation.leeway = JWT_LEEWAY_SECONDS;
        jwt_validation.validate_nbf = true;
        jwt_validation.validate_aud = false;
        Authenticator { config, jwt_key, jwt_validation }
    }

    /// Whether credentials are required at all.
    pub fn is_enabled(&self) -> bool {
        self.config.is_enabled()
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

    /// Authorizes a request for `store_id` carrying an optional sync payload and an optional bearer header.
    pub fn authorize(
        &self,
        store_id: &str,
        sync_payload: Option<&RawValue>,
        bearer: Option<&str>,
    ) -> Result<Grant, AuthRejection> {
        if !self.is_enabled() {
            return Ok(Grant::default());
        }
        let Some(token) = Self::credential(sync_payload, bearer)? else {
            return Err(AuthRejection::unauthorized(
                "missing credentials: pass syncPayload {\"authToken\": \"...\"} or an Authorization: Bearer header",
            ));
        };
        self.authorize_token(store_id, &token)
    }

    /// Authorizes a bare token for `store_id`.
    pub fn authorize_token(&self, store_id: &str, token: &str) -> Result<Grant, AuthRejection> {
        let (grant, stores) = self.verify(token)?;
        if stores.allows(store_id) {
            Ok(grant)
        } else {
            Err(AuthRejection::forbidden(format!("token is not valid for store {store_id:?}")))
        }
    }

    /// Checks that a token is valid for some store, before a request whose store is only known from its body is
    /// read (the signer).
    pub fn authenticate_token(&self, token: &str) -> Result<Grant, AuthRejection> {
        self.verify(token).map(|(grant, _)| grant)
    }

    /// Verifies a token and returns what it grants.
    fn verify(&self, token: &str) -> Result<(Grant, StoreGrant<'_>), AuthRejection> {
        if !self.is_enabled() {
            return Ok((Grant::default(), StoreGrant::All));
        }
        if let Some(entry) =
            self.config.tokens.iter().find(|entry| constant_time_eq(entry.token(), token))
        {
            let stores = match entry {
                crate::config::TokenEntry::AllStores(_) => StoreGrant::All,
                crate::config::TokenEntry::Scoped { stores, .. } => StoreGrant::Listed(stores),
            };
            return Ok((Grant::default(), stores));
        }
        let Some(key) = &self.jwt_key else {
            return Err(AuthRejection::unauthorized("invalid token"));
        };
        jwt::check_structure(token)
            .map_err(|problem| AuthRejection::unauthorized(problem.message()))?;
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            key,
            &self.jwt_validation,
        )
        .map_err(|error| AuthRejection::unauthorized(jwt_error_message(&error)))?
        .claims;
        // The first second at which the token is refused (it is accepted while `now <= exp + leeway`).
        let expires_at = claims.get("exp").and_then(serde_json::Value::as_u64);
        let grant = Grant { expires_at: expires_at.map(|exp| exp + JWT_LEEWAY_SECONDS + 1) };
        let claim_name = &self.config.jwt_stores_claim;
        let stores = match claims.get(claim_name) {
            Some(serde_json::Value::String(store)) => StoreGrant::Claim(vec![store.clone()]),
            Some(serde_json::Value::Array(stores)) => StoreGrant::Claim(
                stores.iter().filter_map(|store| store.as_str().map(str::to_owned)).collect(),
            ),
            _ => {
                return Err(AuthRejection::forbidden(format!(
                    "token has no {claim_name:?} claim listing store ids"
                )));
            }
        };
        Ok((grant, stores))
    }
}

/// The stores a verified credential may use.
enum StoreGrant<'a> {
    All,
    Listed(&'a [String]),
    Claim(Vec<String>),
}

impl StoreGrant<'_> {
    fn allows(&self, store_id: &str) -> bool {
        let listed =
            |stores: &[String]| stores.iter().any(|store| store == "*" || store == store_id);
        match self {
            StoreGrant::All => true,
            StoreGrant::Listed(stores) => listed(stores),
            StoreGrant::Claim(stores) => listed(stores),
        }
    }
}

fn jwt_error_message(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "token expired".to_owned(),
        ErrorKind::ImmatureSignature => "token not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidSignature => "invalid token signature".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("token lacks the {claim:?} claim"),
        ErrorKind::InvalidAlgorithm => "token must be signed with HS256".to_owned(),
        _ => "malformed token".to_owned(),
    }
}

/// Seconds since the Unix epoch, for comparing with a [`Grant`]'s expiry.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

/// How long until the Unix second `expires_at` begins (zero if it has).
pub(crate) fn time_until(expires_at: u64) -> std::time::Duration {
    (UNIX_EPOCH + std::time::Duration::from_secs(expires_at))
        .duration_since(SystemTime::now())
        .unwrap_or_default()
}

/// The bearer token of an `Authorization` header, if any: the scheme is matched case-insensitively (RFC 9110
/// §11.1), surrounding whitespace ignored, an empty token counts as none.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The file services ask the same authenticator, with the bearer token of the signer request.
impl livestore_objects::TokenAuthority for Authenticator {
    fn authorize(
        &self,
        bearer: Option<&str>,
        store_id: &str,
    ) -> Result<(), livestore_objects::AuthRejection> {
        let result = match bearer {
            Some(token) => self.authorize_token(store_id, token),
            None => self.authorize(store_id, None, None),
        };
        result.map(|_| ()).map_err(to_objects_rejection)
    }

    fn authenticate(&self, bearer: Option<&str>) -> Result<(), livestore_objects::AuthRejection> {
        if !self.is_enabled() {
            return Ok(());
        }
        match bearer {
            Some(token) => self.authenticate_token(token).map(|_| ()).map_err(to_objects_rejection),
            None => Err(livestore_objects::AuthRejection::Unauthorized(
                "missing credentials: pass an Authorization: Bearer header".to_owned(),
            )),
        }
    }
}

fn to_objects_rejection(rejection: AuthRejection) -> livestore_objects::AuthRejection {
    match rejection.kind {
        RejectionKind::Forbidden => livestore_objects::AuthRejection::Forbidden(rejection.message),
        RejectionKind::Unauthorized => {
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
