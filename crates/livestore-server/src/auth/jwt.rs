//! JWT verification: the token's shape (`shape`), its algorithm and key, its signature, and its registered claims.
//!
//! Keys: the HS256 secret (`auth.jwt_secret`), static public keys (`auth.jwt_public_keys`, parsed by `keys`) and the
//! identity provider's JWKS (`auth.jwks_url`, cached by `jwks`). The token's `alg` only selects among what the keys
//! allow: HS256 goes to the secret, every other algorithm to a public key pinned to it (`keys::choose`), so
//! `alg: none` and HS256 tokens "signed" with a public key are refused whatever the token says.
//!
//! Claims: `exp` is required; `nbf` is checked; `iss` and `aud` are required and checked when configured; all with
//! `auth.jwt_leeway_seconds`. Returns the verified claims and the first second the token is refused; which stores
//! they open is the caller's `StoreAccess` rule.

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::jwks::JwksCache;
use super::keys::{self, Choice, VerifyingKey};
use super::{AuthRejection, shape};
use crate::config::AuthConfig;
use crate::metrics::JwksMetrics;

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
    static_keys: Vec<VerifyingKey>,
    jwks: Option<Arc<JwksCache>>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_seconds: u64,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("JwtVerifier")
            .field("hs256", &self.secret.is_some())
            .field("static_keys", &self.static_keys)
            .field("jwks", &self.jwks)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_seconds", &self.leeway_seconds)
            .finish()
    }
}

/// The header members verification looks at.
#[derive(serde::Deserialize)]
struct TokenHeader {
    alg: String,
    kid: Option<String>,
}

impl JwtVerifier {
    /// A verifier for the `[auth]` settings; `None` when no JWT source is configured. Static keys are parsed here,
    /// so a bad one stops the server from starting; the JWKS is fetched by [`JwtVerifier::start`] or on first use.
    pub(crate) fn new(config: &AuthConfig) -> Result<Option<JwtVerifier>, String> {
        if !config.verifies_jwts() {
            return Ok(None);
        }
        let secret =
            config.jwt_secret.as_ref().map(|secret| DecodingKey::from_secret(secret.0.as_bytes()));
        let mut static_keys = Vec::new();
        for (index, text) in config.jwt_public_keys.iter().enumerate() {
            let parsed = keys::parse_configured(text).map_err(|problem| {
                format!("auth.jwt_public_keys[{index}] is {}", problem.message())
            })?;
            static_keys.extend(parsed);
        }
        let jwks = match &config.jwks_url {
            Some(url) => {
                crate::config::check_url("auth.jwks_url", url)?;
                Some(JwksCache::new(url)?)
            }
            None => None,
        };
        Ok(Some(JwtVerifier {
            secret,
            static_keys,
            jwks,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            leeway_seconds: config.jwt_leeway_seconds,
        }))
    }

    /// Starts fetching the JWKS in the background (the startup fetch, then refreshes), counting in `metrics`.
    pub(crate) fn start(&self, metrics: JwksMetrics) {
        if let Some(jwks) = &self.jwks {
            jwks.start(Some(metrics));
        }
    }

    /// Verifies `token`: shape, algorithm and key, signature, `exp` (required), `nbf`, and `iss`/`aud` when
    /// configured.
    pub(crate) async fn verify(&self, token: &str) -> Result<VerifiedToken, AuthRejection> {
        shape::check_structure(token)
            .map_err(|problem| AuthRejection::unauthorized(problem.message()))?;
        let header = token_header(token)?;
        let Some(algorithm) = keys::jws_algorithm(&header.alg) else {
            return Err(AuthRejection::unauthorized(if header.alg == "none" {
                "unsigned tokens (alg none) are refused"
            } else {
                "token algorithm is not supported (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA, HS256)"
            }));
        };
        let claims = if matches!(algorithm, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
        {
            let Some(secret) = &self.secret else {
                return Err(AuthRejection::unauthorized(
                    "HMAC-signed tokens (HS256) are not accepted here: tokens must be signed by the identity \
                     provider's keys",
                ));
            };
            if algorithm != Algorithm::HS256 {
                return Err(AuthRejection::unauthorized("token must be signed with HS256"));
            }
            self.decode(token, secret, algorithm, Signature::Unchecked)?
        } else {
            self.verify_with_public_key(token, header.kid.as_deref(), algorithm).await?
        };
        let expires_at = claims.get("exp").and_then(unix_seconds).map(|exp| {
            // Accepted while now <= exp + leeway (jsonwebtoken), so refused from the second after.
            exp.saturating_add(self.leeway_seconds).saturating_add(1)
        });
        Ok(VerifiedToken { claims, expires_at })
    }

    /// Finds the public key for the token (fetching the JWKS again if no key fits and a fetch is allowed) and
    /// verifies with it.
    async fn verify_with_public_key(
        &self,
        token: &str,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<serde_json::Map<String, serde_json::Value>, AuthRejection> {
        if self.static_keys.is_empty() && self.jwks.is_none() {
            return Err(AuthRejection::unauthorized("token must be signed with HS256"));
        }
        let Some(jwks) = &self.jwks else {
            let choice = keys::choose(self.static_keys.iter(), kid, algorithm);
            return self.decode_with_choice(token, choice, algorithm);
        };
        jwks.start(None);
        let snapshot = jwks.snapshot();
        let choice =
            keys::choose(self.static_keys.iter().chain(snapshot.keys.iter()), kid, algorithm);
        // A key the token names may have rotated in since the last fetch; a key without a kid standing in is
        // only the fallback for a token whose kid the JWKS does not know either.
        let missing = match choice {
            Choice::UnknownKid | Choice::NoKeyFits => true,
            Choice::Key { by_kid, .. } => kid.is_some() && !by_kid,
            Choice::WrongType(_) | Choice::Ambiguous => false,
        };
        if !missing {
            return self.decode_with_choice(token, choice, algorithm);
        }
        jwks.refetch_for_missing_key(&snapshot).await;
        let fresh = jwks.snapshot();
        let choice = keys::choose(self.static_keys.iter().chain(fresh.keys.iter()), kid, algorithm);
        self.decode_with_choice(token, choice, algorithm)
    }

    fn decode_with_choice(
        &self,
        token: &str,
        choice: Choice<'_>,
        algorithm: Algorithm,
    ) -> Result<serde_json::Map<String, serde_json::Value>, AuthRejection> {
        let name = algorithm_name(algorithm);
        match choice {
            Choice::Key { key, .. } => {
                let (message, signature) = signing_input(token)?;
                if !key.verifies(algorithm, message, &signature) {
                    return Err(AuthRejection::unauthorized("invalid token signature"));
                }
                self.decode(token, key.decoding_key(), algorithm, Signature::Verified)
            }
            Choice::WrongType(key) => Err(AuthRejection::unauthorized(format!(
                "token is signed with {name}, but the key it names (kid) is {} that verifies {}",
                key.kind().describe(),
                key.algorithms()
                    .iter()
                    .map(|algorithm| algorithm_name(*algorithm))
                    .collect::<Vec<_>>()
                    .join("/"),
            ))),
            Choice::UnknownKid => Err(AuthRejection::unauthorized(
                "token is signed by a key this server does not know (its kid is not among the identity provider's \
                 keys)",
            )),
            Choice::NoKeyFits => Err(AuthRejection::unauthorized(format!(
                "token has no kid and no configured key verifies {name}"
            ))),
            Choice::Ambiguous => Err(AuthRejection::unauthorized(format!(
                "token has no kid and several configured keys verify {name}; the token must name its key (kid)"
            ))),
        }
    }

    /// Checks the registered claims, and the signature with `key` (which verifies `algorithm`) unless it was
    /// already verified.
    fn decode(
        &self,
        token: &str,
        key: &DecodingKey,
        algorithm: Algorithm,
        signature: Signature,
    ) -> Result<serde_json::Map<String, serde_json::Value>, AuthRejection> {
        let mut validation = Validation::new(algorithm);
        if signature == Signature::Verified {
            // `signature` verified it with ring just now (jsonwebtoken's backend is several times slower); the
            // claims are still checked below. The replacement the deprecation names checks no claims at all.
            #[allow(deprecated)]
            validation.insecure_disable_signature_validation();
        }
        validation.required_spec_claims = HashSet::from(["exp".to_owned()]);
        validation.leeway = self.leeway_seconds;
        validation.validate_nbf = true;
        validation.validate_aud = self.audience.is_some();
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        if let Some(audience) = &self.audience {
            validation.set_audience(&[audience]);
            validation.required_spec_claims.insert("aud".to_owned());
        }
        jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|error| AuthRejection::unauthorized(error_message(&error)))
    }
}

/// Whether [`JwtVerifier::decode`] still has to check the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signature {
    Unchecked,
    Verified,
}

/// The JWS signing input (`header.payload`, as sent) and the decoded signature.
fn signing_input(token: &str) -> Result<(&[u8], Vec<u8>), AuthRejection> {
    let malformed = || AuthRejection::unauthorized("malformed token");
    let (message, signature) = token.rsplit_once('.').ok_or_else(malformed)?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| malformed())?;
    Ok((message.as_bytes(), signature))
}

/// The token's header (its shape was checked: three base64url segments, the first a JSON object).
fn token_header(token: &str) -> Result<TokenHeader, AuthRejection> {
    let malformed = || AuthRejection::unauthorized("malformed token");
    let segment = token.split('.').next().ok_or_else(malformed)?;
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| malformed())?;
    serde_json::from_slice(&bytes).map_err(|_| malformed())
}

/// A NumericDate as whole seconds, rounded like `jsonwebtoken` does; `None` if negative or not a number.
fn unix_seconds(value: &serde_json::Value) -> Option<u64> {
    match value.as_u64() {
        Some(seconds) => Some(seconds),
        None => {
            value.as_f64().filter(|seconds| seconds.is_finite() && *seconds >= 0.0).map(|seconds| {
                // Saturates at u64::MAX for huge values, which is what the expiry means then.
                seconds.round() as u64
            })
        }
    }
}

fn algorithm_name(algorithm: Algorithm) -> String {
    format!("{algorithm:?}")
}

fn error_message(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "token expired".to_owned(),
        ErrorKind::ImmatureSignature => "token not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidSignature => "invalid token signature".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("token lacks the {claim:?} claim"),
        ErrorKind::InvalidIssuer => {
            "token issuer (iss) is not the one this server trusts".to_owned()
        }
        ErrorKind::InvalidAudience => {
            "token audience (aud) does not include this server's".to_owned()
        }
        ErrorKind::InvalidClaimFormat(claim) => format!("token claim {claim:?} has the wrong type"),
        ErrorKind::InvalidAlgorithm => "token algorithm does not match its key".to_owned(),
        _ => "malformed token".to_owned(),
    }
}

#[cfg(test)]
mod tests;
