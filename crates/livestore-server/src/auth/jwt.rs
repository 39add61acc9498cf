//! JWT verification: the token's shape (`shape`), its signature with the configured key (an HS256 secret today),
//! and its registered claims (`exp`, `nbf` with a leeway). Returns the verified claims; which stores they open is
//! decided by the caller's `StoreAccess` rule.

use std::collections::HashSet;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::{AuthRejection, shape};
use crate::config::AuthConfig;

/// A token that passed every check.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedToken {
    /// Its claims.
    pub(crate) claims: serde_json::Map<String, serde_json::Value>,
    /// The first Unix second at which it is refused (`exp` + leeway + 1).
    pub(crate) expires_at: Option<u64>,
}

/// Verifies JWTs with the configured keys.
pub(crate) struct JwtVerifier {
    secret: Option<DecodingKey>,
    leeway_seconds: u64,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("JwtVerifier")
            .field("leeway_seconds", &self.leeway_seconds)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// A verifier for the `[auth]` settings; `None` when no JWT source is configured.
    pub(crate) fn new(config: &AuthConfig) -> Result<Option<JwtVerifier>, String> {
        if !config.verifies_jwts() {
            return Ok(None);
        }
        let secret =
            config.jwt_secret.as_ref().map(|secret| DecodingKey::from_secret(secret.0.as_bytes()));
        Ok(Some(JwtVerifier { secret, leeway_seconds: config.jwt_leeway_seconds }))
    }

    /// Verifies `token`: shape, signature, `exp` (required) and `nbf`.
    #[expect(clippy::unused_async, reason = "keys fetched from a JWKS URL will be awaited here")]
    pub(crate) async fn verify(&self, token: &str) -> Result<VerifiedToken, AuthRejection> {
        shape::check_structure(token)
            .map_err(|problem| AuthRejection::unauthorized(problem.message()))?;
        let Some(key) = &self.secret else {
            return Err(AuthRejection::unauthorized("invalid token"));
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims = HashSet::from(["exp".to_owned()]);
        validation.leeway = self.leeway_seconds;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            key,
            &validation,
        )
        .map_err(|error| AuthRejection::unauthorized(error_message(&error)))?
        .claims;
        let expires_at = claims
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .map(|exp| exp + self.leeway_seconds + 1);
        Ok(VerifiedToken { claims, expires_at })
    }
}

fn error_message(error: &jsonwebtoken::errors::Error) -> String {
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
