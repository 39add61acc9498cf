//! Public keys that verify JWTs: JWKs (from a JWKS document or `auth.jwt_public_keys`) and PEM public keys, their
//! material checked before they are trusted, each pinned to the algorithms it may verify, and the choice of the key
//! for a token.
//!
//! The algorithm a key verifies comes from the key, never from the token: `kty`/`crv` decide the family (RSA: RS256,
//! RS384, RS512; P-256: ES256; P-384: ES384; Ed25519: EdDSA), and a JWK's `alg`, when present, narrows it to one
//! (and must agree with the key's type). A token naming another algorithm is refused, so `alg: none` and HS256
//! tokens "signed" with a public key's bytes never meet a key that accepts them. Symmetric (`oct`) keys are refused
//! here: the only HMAC key is `auth.jwt_secret`.
//!
//! `jsonwebtoken`'s own JWK types would do part of this, but its `JwkSet` fails as a whole on one key it does not
//! know (an X25519 key, say) and `DecodingKey::from_jwk` checks neither the curve nor `alg`, so keys are parsed one
//! by one here. Fetching the JWKS is `jwks`; verifying tokens is `jwt`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use serde::Deserialize;

use super::signature::PublicKeyMaterial;

/// Smallest RSA modulus trusted: NIST SP 800-131A disallows shorter keys for signatures.
const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus: the `rsa` crate verifies no larger keys.
const MAX_RSA_BITS: usize = 4096;
/// Nesting allowed in a JWK given as configuration (a JWKS document is checked by `jwks`).
const MAX_JWK_DEPTH: usize = 16;

/// The kinds of public key this server verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    /// For messages: "an RSA key", "an EC P-256 key", ...
    pub(crate) fn describe(self) -> &'static str {
        match self {
            KeyKind::Rsa => "an RSA key",
            KeyKind::P256 => "an EC P-256 key",
            KeyKind::P384 => "an EC P-384 key",
            KeyKind::Ed25519 => "an Ed25519 key",
        }
    }

    /// What the key verifies when its JWK names no `alg` (and always, for a PEM key).
    fn natural_algorithms(self) -> &'static [Algorithm] {
        match self {
            KeyKind::Rsa => &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
            KeyKind::P256 => &[Algorithm::ES256],
            KeyKind::P384 => &[Algorithm::ES384],
            KeyKind::Ed25519 => &[Algorithm::EdDSA],
        }
    }

    /// Whether a JWK of this kind may name `algorithm` in its `alg`.
    fn may_be_pinned_to(self, algorithm: Algorithm) -> bool {
        match self {
            KeyKind::Rsa => matches!(
                algorithm,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            other => other.natural_algorithms().contains(&algorithm),
        }
    }
}

/// A public key, checked, with the algorithms it verifies.
pub(crate) struct VerifyingKey {
    kid: Option<String>,
    kind: KeyKind,
    algorithms: Vec<Algorithm>,
    /// What `jsonwebtoken` needs to check the claims (it verifies nothing with it: `signature` does that).
    decoding: DecodingKey,
    material: PublicKeyMaterial,
}

/// A checked key before its algorithms are pinned.
struct Checked {
    kind: KeyKind,
    decoding: DecodingKey,
    material: PublicKeyMaterial,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// The key id, if it has one.
    pub(crate) fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// What kind of key it is.
    pub(crate) fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The algorithms it verifies.
    pub(crate) fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// Whether it verifies tokens signed with `algorithm`.
    pub(crate) fn accepts(&self, algorithm: Algorithm) -> bool {
        self.algorithms.contains(&algorithm)
    }

    /// The key `jsonwebtoken` checks the claims with.
    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// Whether `signature` signs `message` under `algorithm`, which this key [accepts](Self::accepts).
    pub(crate) fn verifies(&self, algorithm: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.accepts(algorithm) && self.material.verifies(algorithm, message, signature)
    }
}

/// Why a key is not used. Messages name the problem, never the key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyProblem {
    /// Not a JWK object, a member of the wrong type, or key material that is not base64url.
    Malformed,
    /// `use` is not `sig`, or `key_ops` lacks `verify`: an encryption key.
    NotForSignatures,
    /// A symmetric (`oct`) key.
    Symmetric,
    /// A `kty` other than RSA, EC and OKP.
    UnsupportedType,
    /// A curve other than P-256, P-384 and Ed25519 (P-521, X25519, Ed448, ...).
    UnsupportedCurve,
    /// An `alg` this server does not verify with a public key (`none`, HS*, ES512, encryption algorithms).
    UnsupportedAlgorithm,
    /// An `alg` that does not fit the key's type (ES256 on an RSA key, ES384 on a P-256 key, ...).
    AlgorithmMismatch,
    /// An RSA modulus outside 2048..=4096 bits.
    RsaKeySize,
    /// Key material that is not a valid key: a point off the curve, a weak Ed25519 key, a bad RSA exponent.
    InvalidKeyMaterial,
    /// A PEM private key where a public key belongs.
    PrivateKey,
    /// A PEM certificate: the public key must be given on its own.
    Certificate,
    /// Neither a PEM public key nor JWK JSON.
    Unrecognized,
}

impl KeyProblem {
    /// What is wrong, for logs and configuration errors.
    pub(crate) fn message(self) -> &'static str {
        match self {
            KeyProblem::Malformed => "not a well-formed JWK",
            KeyProblem::NotForSignatures => "an encryption key (use or key_ops), not a signing key",
            KeyProblem::Symmetric => {
                "a symmetric (oct) key; HS256 tokens are verified with auth.jwt_secret only"
            }
            KeyProblem::UnsupportedType => "a key type other than RSA, EC and OKP",
            KeyProblem::UnsupportedCurve => "a curve other than P-256, P-384 and Ed25519",
            KeyProblem::UnsupportedAlgorithm => {
                "an alg other than RS256/384/512, PS256/384/512, ES256, ES384 and EdDSA"
            }
            KeyProblem::AlgorithmMismatch => "an alg that does not fit the key's type or curve",
            KeyProblem::RsaKeySize => "an RSA key outside 2048..=4096 bits",
            KeyProblem::InvalidKeyMaterial => "key material that is not a valid public key",
            KeyProblem::PrivateKey => "a private key; give the public key only",
            KeyProblem::Certificate => {
                "a certificate; give its public key (BEGIN PUBLIC KEY) instead"
            }
            KeyProblem::Unrecognized => {
                "neither a PEM public key (BEGIN PUBLIC KEY) nor JWK JSON ({\"kty\": ...})"
            }
        }
    }
}

/// The JWS algorithm a name stands for, among those `jsonwebtoken` verifies; `None` for `none` and anything else.
pub(crate) fn jws_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The members of a JWK this server reads; unknown members (`x5c`, `x5t`, ...) are ignored.
#[derive(Deserialize)]
struct JwkMembers {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    public_key_use: Option<String>,
    key_ops: Option<Vec<String>>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Parses one JWK (an element of a JWKS document's `keys`).
pub(crate) fn parse_jwk(value: &serde_json::Value) -> Result<VerifyingKey, KeyProblem> {
    let members = JwkMembers::deserialize(value).map_err(|_| KeyProblem::Malformed)?;
    if members.public_key_use.as_deref().is_some_and(|usage| usage != "sig")
        || members.key_ops.as_ref().is_some_and(|ops| !ops.iter().any(|op| op == "verify"))
    {
        return Err(KeyProblem::NotForSignatures);
    }
    let checked = match members.kty.as_str() {
        "RSA" => {
            let (Some(n), Some(e)) = (&members.n, &members.e) else {
                return Err(KeyProblem::Malformed);
            };
            rsa_key(&base64url(n)?, &base64url(e)?)?
        }
        "EC" => {
            let (Some(x), Some(y)) = (&members.x, &members.y) else {
                return Err(KeyProblem::Malformed);
            };
            let mut point = vec![0x04];
            point.extend(base64url(x)?);
            point.extend(base64url(y)?);
            match members.crv.as_deref() {
                Some("P-256") => ec_key(KeyKind::P256, &point)?,
                Some("P-384") => ec_key(KeyKind::P384, &point)?,
                _ => return Err(KeyProblem::UnsupportedCurve),
            }
        }
        "OKP" => match (members.crv.as_deref(), &members.x) {
            (Some("Ed25519"), Some(x)) => ed25519_key(&base64url(x)?)?,
            (Some("Ed25519"), None) => return Err(KeyProblem::Malformed),
            _ => return Err(KeyProblem::UnsupportedCurve),
        },
        "oct" => return Err(KeyProblem::Symmetric),
        _ => return Err(KeyProblem::UnsupportedType),
    };
    let algorithms = pin(checked.kind, members.alg.as_deref())?;
    let Checked { kind, decoding, material } = checked;
    Ok(VerifyingKey { kid: members.kid, kind, algorithms, decoding, material })
}

/// Parses one `auth.jwt_public_keys` entry: a PEM public key, a JWK, or a whole JWKS document (every key of which
/// must be usable: this is configuration, so a bad key is an error rather than skipped).
pub(crate) fn parse_configured(text: &str) -> Result<Vec<VerifyingKey>, KeyProblem> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        return parse_pem(text).map(|key| vec![key]);
    }
    if !text.starts_with('{') {
        return Err(KeyProblem::Unrecognized);
    }
    livestore_proto::json::check_depth(text, MAX_JWK_DEPTH).map_err(|_| KeyProblem::Malformed)?;
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| KeyProblem::Malformed)?;
    match value.get("keys") {
        Some(serde_json::Value::Array(keys)) => keys.iter().map(parse_jwk).collect(),
        Some(_) => Err(KeyProblem::Malformed),
        None => parse_jwk(&value).map(|key| vec![key]),
    }
}

/// Parses a PEM public key: SPKI (`BEGIN PUBLIC KEY`: RSA, P-256, P-384 or Ed25519) or PKCS#1
/// (`BEGIN RSA PUBLIC KEY`). A PEM key has no `kid` and verifies its type's natural algorithms.
pub(crate) fn parse_pem(text: &str) -> Result<VerifyingKey, KeyProblem> {
    use ed25519_dalek::pkcs8::DecodePublicKey as _;
    use rsa::pkcs1::DecodeRsaPublicKey as _;
    use rsa::traits::PublicKeyParts as _;

    let label = text.lines().next().unwrap_or_default();
    if label.contains("PRIVATE KEY") {
        return Err(KeyProblem::PrivateKey);
    }
    if label.contains("CERTIFICATE") {
        return Err(KeyProblem::Certificate);
    }
    let checked = if label.contains("BEGIN RSA PUBLIC KEY") {
        let key = rsa::RsaPublicKey::from_pkcs1_pem(text).map_err(|_| KeyProblem::Unrecognized)?;
        rsa_key(&key.n().to_bytes_be(), &key.e().to_bytes_be())?
    } else if let Ok(key) = rsa::RsaPublicKey::from_public_key_pem(text) {
        rsa_key(&key.n().to_bytes_be(), &key.e().to_bytes_be())?
    } else if let Ok(key) = p256::PublicKey::from_public_key_pem(text) {
        ec_key(KeyKind::P256, key.to_encoded_point(false).as_bytes())?
    } else if let Ok(key) = p384::PublicKey::from_public_key_pem(text) {
        ec_key(KeyKind::P384, key.to_encoded_point(false).as_bytes())?
    } else if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_pem(text) {
        ed25519_key(key.as_bytes())?
    } else {
        return Err(KeyProblem::Unrecognized);
    };
    let Checked { kind, decoding, material } = checked;
    Ok(VerifyingKey { kid: None, kind, algorithms: pin(kind, None)?, decoding, material })
}

/// The algorithms a key of `kind` verifies, narrowed by its JWK's `alg`.
fn pin(kind: KeyKind, alg: Option<&str>) -> Result<Vec<Algorithm>, KeyProblem> {
    let Some(name) = alg else { return Ok(kind.natural_algorithms().to_vec()) };
    let algorithm = jws_algorithm(name).ok_or(KeyProblem::UnsupportedAlgorithm)?;
    if matches!(algorithm, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        return Err(KeyProblem::UnsupportedAlgorithm);
    }
    if !kind.may_be_pinned_to(algorithm) {
        return Err(KeyProblem::AlgorithmMismatch);
    }
    Ok(vec![algorithm])
}

/// An RSA key from its big-endian modulus and exponent.
fn rsa_key(modulus: &[u8], exponent: &[u8]) -> Result<Checked, KeyProblem> {
    let significant =
        modulus.iter().position(|&byte| byte != 0).map_or(&[][..], |at| &modulus[at..]);
    let bits = significant.first().map_or(0, |&top| {
        (significant.len() - 1) * 8 + (8 - usize::try_from(top.leading_zeros()).unwrap_or(8))
    });
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(KeyProblem::RsaKeySize);
    }
    // The same checks the verifier makes (exponent range, modulus size), made once here rather than per token.
    rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(significant),
        rsa::BigUint::from_bytes_be(exponent),
    )
    .map_err(|_| KeyProblem::InvalidKeyMaterial)?;
    Ok(Checked {
        kind: KeyKind::Rsa,
        decoding: DecodingKey::from_rsa_raw_components(significant, exponent),
        material: PublicKeyMaterial::Rsa {
            modulus: significant.to_vec(),
            exponent: exponent.to_vec(),
        },
    })
}

/// An EC key from its SEC1-encoded point, which must lie on the curve.
fn ec_key(kind: KeyKind, point: &[u8]) -> Result<Checked, KeyProblem> {
    let valid = match kind {
        KeyKind::P256 => p256::PublicKey::from_sec1_bytes(point).is_ok(),
        KeyKind::P384 => p384::PublicKey::from_sec1_bytes(point).is_ok(),
        KeyKind::Rsa | KeyKind::Ed25519 => false,
    };
    if !valid {
        return Err(KeyProblem::InvalidKeyMaterial);
    }
    Ok(Checked {
        kind,
        decoding: DecodingKey::from_ec_der(point),
        material: PublicKeyMaterial::Ec { point: point.to_vec() },
    })
}

/// An Ed25519 key from its 32 bytes; weak (small-order) keys are refused, since signatures under them prove nothing.
fn ed25519_key(bytes: &[u8]) -> Result<Checked, KeyProblem> {
    let bytes: &[u8; 32] = bytes.try_into().map_err(|_| KeyProblem::InvalidKeyMaterial)?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(bytes)
        .map_err(|_| KeyProblem::InvalidKeyMaterial)?;
    if key.is_weak() {
        return Err(KeyProblem::InvalidKeyMaterial);
    }
    Ok(Checked {
        kind: KeyKind::Ed25519,
        decoding: DecodingKey::from_ed_der(bytes),
        material: PublicKeyMaterial::Ed25519 { key: *bytes },
    })
}

/// Decodes a JWK member: base64url without padding (RFC 7518 §2), tolerating padding some publishers add.
fn base64url(text: &str) -> Result<Vec<u8>, KeyProblem> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).map_err(|_| KeyProblem::Malformed)
}

/// The key chosen to verify a token.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Choice<'k> {
    /// This key verifies the token's algorithm; `by_kid` when the token's `kid` named it.
    Key { key: &'k VerifyingKey, by_kid: bool },
    /// The key the token's `kid` names verifies other algorithms.
    WrongType(&'k VerifyingKey),
    /// No key has the token's `kid`, and no key without a `kid` stands in.
    UnknownKid,
    /// The token has no `kid` and no key verifies its algorithm.
    NoKeyFits,
    /// No `kid` decides between several keys that verify the token's algorithm.
    Ambiguous,
}

/// Chooses the key for a token with `kid` (if any) signed with `algorithm`: the key with that `kid`; else, if
/// exactly one key without a `kid` verifies the algorithm (a PEM key, say), that one. A token without a `kid` gets
/// the one key that verifies its algorithm, if there is exactly one.
pub(crate) fn choose<'k>(
    keys: impl Iterator<Item = &'k VerifyingKey> + Clone,
    kid: Option<&str>,
    algorithm: Algorithm,
) -> Choice<'k> {
    if let Some(kid) = kid {
        let mut named = keys.clone().filter(|key| key.kid() == Some(kid)).peekable();
        if let Some(&first) = named.peek() {
            return match named.find(|key| key.accepts(algorithm)) {
                Some(key) => Choice::Key { key, by_kid: true },
                None => Choice::WrongType(first),
            };
        }
    }
    let mut fitting = keys
        .filter(|key| kid.is_none() || key.kid().is_none())
        .filter(|key| key.accepts(algorithm));
    match (fitting.next(), fitting.next()) {
        (Some(key), None) => Choice::Key { key, by_kid: false },
        (Some(_), Some(_)) => Choice::Ambiguous,
        (None, _) if kid.is_some() => Choice::UnknownKid,
        (None, _) => Choice::NoKeyFits,
    }
}

#[cfg(test)]
mod tests;
