//! Who may use which store: static bearer tokens and JWT HS256, checked before a WebSocket upgrade and on every
//! HTTP request.
//!
//! The credential travels the way sync-cf clients can send it: as `authToken` inside the sync payload (the
//! double-encoded `payload` query parameter and the RPC `payload` field), or as an `Authorization: Bearer` header
//! where the transport allows headers. This module never logs a token; rejection messages never echo one.

use std::collections::HashSet;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::value::RawValue;

use crate::config::AuthConfig;

/// Why a request was refused: 401 for missing or invalid credentials, 403 for a valid one that may not use the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRejection {
    /// 401 or 403.
    pub status: u16,
    /// A message safe to show the client (never contains the token).
    pub message: String,
}

impl AuthRejection {
    fn unauthorized(message: impl Into<String>) -> Self {
        AuthRejection { status: 401, message: message.into() }
    }

    fn forbidden(message: impl Into<String>) -> Self {
        AuthRejection { status: 403, message: message.into() }
    }
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
        jwt_validation.leeway = 5;
        jwt_validation.validate_aud = false;
        Authenticator { config, jwt_key, jwt_validation }
    }

    /// Whether credentials are required at all.
    pub fn is_enabled(&self) -> bool {
        self.config.is_enabled()
    }

    /// Authorizes a request for `store_id` carrying an optional sync payload and an optional bearer header.
    pub fn authorize(
        &self,
        store_id: &str,
        sync_payload: Option<&RawValue>,
        bearer: Option<&str>,
    ) -> Result<(), AuthRejection> {
        if !self.is_enabled() {
            return Ok(());
        }
        let from_payload = match sync_payload {
            Some(payload) => token_from_payload(payload)?,
            None => None,
        };
        let Some(token) = from_payload.as_deref().or(bearer) else {
            return Err(AuthRejection::unauthorized(
                "missing credentials: pass syncPayload {\"authToken\": \"...\"} or an Authorization: Bearer header",
            ));
        };
        self.authorize_token(store_id, token)
    }

    /// Authorizes a bare token for `store_id`.
    pub fn authorize_token(&self, store_id: &str, token: &str) -> Result<(), AuthRejection> {
        if !self.is_enabled() {
            return Ok(());
        }
        if let Some(entry) =
            self.config.tokens.iter().find(|entry| constant_time_eq(entry.token(), token))
        {
            return if entry.allows_store(store_id) {
                Ok(())
            } else {
                Err(AuthRejection::forbidden(format!("token is not valid for store {store_id:?}")))
            };
        }
        let Some(key) = &self.jwt_key else {
            return Err(AuthRejection::unauthorized("invalid token"));
        };
        if token.matches('.').count() != 2 {
            return Err(AuthRejection::unauthorized("invalid token"));
        }
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            key,
            &self.jwt_validation,
        )
        .map_err(|error| {
            use jsonwebtoken::errors::ErrorKind;
            match error.kind() {
                ErrorKind::ExpiredSignature => AuthRejection::unauthorized("token expired"),
                ErrorKind::InvalidSignature => {
                    AuthRejection::unauthorized("invalid token signature")
                }
                ErrorKind::MissingRequiredClaim(claim) => {
                    AuthRejection::unauthorized(format!("token lacks the {claim:?} claim"))
                }
                ErrorKind::InvalidAlgorithm => {
                    AuthRejection::unauthorized("token must be signed with HS256")
                }
                _ => AuthRejection::unauthorized("malformed token"),
            }
        })?
        .claims;
        let claim_name = &self.config.jwt_stores_claim;
        let allowed = match claims.get(claim_name) {
            Some(serde_json::Value::String(store)) => store == "*" || store == store_id,
            Some(serde_json::Value::Array(stores)) => stores
                .iter()
                .any(|store| store.as_str().is_some_and(|store| store == "*" || store == store_id)),
            _ => {
                return Err(AuthRejection::forbidden(format!(
                    "token has no {claim_name:?} claim listing store ids"
                )));
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(AuthRejection::forbidden(format!("token is not valid for store {store_id:?}")))
        }
    }
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
        result.map_err(|rejection| match rejection.status {
            403 => livestore_objects::AuthRejection::Forbidden(rejection.message),
            _ => livestore_objects::AuthRejection::Unauthorized(rejection.message),
        })
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
mod tests {
    use jsonwebtoken::{EncodingKey, Header};

    use super::*;
    use crate::config::{Secret, TokenEntry};

    const SECRET: &str = "test-secret-0123456789";

    fn authenticator() -> Authenticator {
        Authenticator::new(AuthConfig {
            tokens: vec![
                TokenEntry::AllStores(Secret("all-token".into())),
                TokenEntry::Scoped { token: Secret("a-token".into()), stores: vec!["a".into()] },
            ],
            jwt_secret: Some(Secret(SECRET.into())),
            jwt_stores_claim: "storeIds".into(),
        })
    }

    fn jwt(claims: &serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn payload(token: &str) -> Box<RawValue> {
        RawValue::from_string(serde_json::json!({ "authToken": token }).to_string()).unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn static_tokens() {
        let auth = authenticator();
        assert!(auth.authorize("z", Some(&payload("all-token")), None).is_ok());
        assert!(auth.authorize("a", None, Some("a-token")).is_ok());
        assert_eq!(auth.authorize("b", Some(&payload("a-token")), None).unwrap_err().status, 403);
        assert_eq!(auth.authorize("a", Some(&payload("wrong")), None).unwrap_err().status, 401);
        assert_eq!(auth.authorize("a", None, None).unwrap_err().status, 401);
    }

    #[test]
    fn jwts() {
        let auth = authenticator();
        let good = jwt(&serde_json::json!({ "exp": now() + 60, "storeIds": ["a", "b"] }), SECRET);
        assert!(auth.authorize("b", Some(&payload(&good)), None).is_ok());
        assert_eq!(auth.authorize("c", Some(&payload(&good)), None).unwrap_err().status, 403);
        let expired = jwt(&serde_json::json!({ "exp": now() - 600, "storeIds": "*" }), SECRET);
        let rejection = auth.authorize("a", Some(&payload(&expired)), None).unwrap_err();
        assert_eq!((rejection.status, rejection.message.as_str()), (401, "token expired"));
        let forged = jwt(
            &serde_json::json!({ "exp": now() + 60, "storeIds": "*" }),
            "another-secret-123456",
        );
        assert_eq!(auth.authorize("a", Some(&payload(&forged)), None).unwrap_err().status, 401);
        let no_exp = jwt(&serde_json::json!({ "storeIds": "*" }), SECRET);
        assert_eq!(auth.authorize("a", Some(&payload(&no_exp)), None).unwrap_err().status, 401);
        let no_claim = jwt(&serde_json::json!({ "exp": now() + 60 }), SECRET);
        assert_eq!(auth.authorize("a", Some(&payload(&no_claim)), None).unwrap_err().status, 403);
    }

    #[test]
    fn rejections_never_echo_the_token() {
        let auth = authenticator();
        let rejection =
            auth.authorize("a", Some(&payload("super-secret-guess")), None).unwrap_err();
        assert!(!rejection.message.contains("super-secret-guess"));
    }
}
