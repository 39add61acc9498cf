//! Signing keys for tests of JWT verification, the way identity providers sign: RSA, EC P-256/P-384 and Ed25519.
//!
//! The keys are fixed files under `jwt/keys/` (generated once with OpenSSL, used by tests only, never by a
//! deployment): generating RSA keys in unoptimized test builds takes seconds, and fixed keys make failures replay.
//! Each [`TestKey`] gives its public key as PEM and as a JWK, and signs tokens; [`jwks`] builds the JSON document an
//! identity provider publishes. [`crate::JwksServer`] serves such documents.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use serde_json::{Value, json};

/// A fixed key pair for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TestKey {
    /// RSA 2048, signs RS256.
    Rsa1,
    /// Another RSA 2048 (a rotated-in key), signs RS256.
    Rsa2,
    /// RSA 1024: too small to be trusted.
    Rsa1024,
    /// EC P-256, signs ES256.
    P256a,
    /// Another EC P-256, signs ES256.
    P256b,
    /// EC P-384, signs ES384.
    P384,
    /// Ed25519, signs EdDSA.
    Ed25519,
}

impl TestKey {
    /// Every key.
    pub const ALL: [TestKey; 7] = [
        TestKey::Rsa1,
        TestKey::Rsa2,
        TestKey::Rsa1024,
        TestKey::P256a,
        TestKey::P256b,
        TestKey::P384,
        TestKey::Ed25519,
    ];

    /// The `kid` its JWK and its tokens carry.
    pub fn kid(self) -> &'static str {
        match self {
            TestKey::Rsa1 => "rsa-1",
            TestKey::Rsa2 => "rsa-2",
            TestKey::Rsa1024 => "rsa-1024",
            TestKey::P256a => "p256-1",
            TestKey::P256b => "p256-2",
            TestKey::P384 => "p384",
            TestKey::Ed25519 => "ed25519",
        }
    }

    /// The algorithm it signs with.
    pub fn algorithm(self) -> Algorithm {
        match self {
            TestKey::Rsa1 | TestKey::Rsa2 | TestKey::Rsa1024 => Algorithm::RS256,
            TestKey::P256a | TestKey::P256b => Algorithm::ES256,
            TestKey::P384 => Algorithm::ES384,
            TestKey::Ed25519 => Algorithm::EdDSA,
        }
    }

    /// The private key: PKCS#1 PEM for RSA, PKCS#8 PEM otherwise.
    pub fn private_pem(self) -> &'static str {
        match self {
            TestKey::Rsa1 => include_str!("jwt/keys/rsa-1.pem"),
            TestKey::Rsa2 => include_str!("jwt/keys/rsa-2.pem"),
            TestKey::Rsa1024 => include_str!("jwt/keys/rsa-1024.pem"),
            TestKey::P256a => include_str!("jwt/keys/p256-1.pem"),
            TestKey::P256b => include_str!("jwt/keys/p256-2.pem"),
            TestKey::P384 => include_str!("jwt/keys/p384.pem"),
            TestKey::Ed25519 => include_str!("jwt/keys/ed25519.pem"),
        }
    }

    /// The public key as an SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_pem(self) -> &'static str {
        match self {
            TestKey::Rsa1 => include_str!("jwt/keys/rsa-1.pub.pem"),
            TestKey::Rsa2 => include_str!("jwt/keys/rsa-2.pub.pem"),
            TestKey::Rsa1024 => include_str!("jwt/keys/rsa-1024.pub.pem"),
            TestKey::P256a => include_str!("jwt/keys/p256-1.pub.pem"),
            TestKey::P256b => include_str!("jwt/keys/p256-2.pub.pem"),
            TestKey::P384 => include_str!("jwt/keys/p384.pub.pem"),
            TestKey::Ed25519 => include_str!("jwt/keys/ed25519.pub.pem"),
        }
    }

    /// The public key as a JWK with `kid`, `alg` and `use`, as identity providers publish it.
    pub fn jwk(self) -> Value {
        let mut jwk = self.bare_jwk();
        jwk["kid"] = json!(self.kid());
        jwk["alg"] = json!(algorithm_name(self.algorithm()));
        jwk["use"] = json!("sig");
        jwk
    }

    /// The public key as a JWK with only its type and key material (no `kid`, `alg` or `use`).
    pub fn bare_jwk(self) -> Value {
        let pem = self.private_pem();
        match self {
            TestKey::Rsa1 | TestKey::Rsa2 | TestKey::Rsa1024 => {
                use rsa::pkcs1::DecodeRsaPrivateKey;
                use rsa::traits::PublicKeyParts;
                let key = rsa::RsaPrivateKey::from_pkcs1_pem(pem).expect("fixture RSA key parses");
                json!({"kty": "RSA", "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be())})
            }
            TestKey::P256a | TestKey::P256b => {
                use p256::pkcs8::DecodePrivateKey;
                let key = p256::SecretKey::from_pkcs8_pem(pem).expect("fixture P-256 key parses");
                let point = key.public_key().to_encoded_point(false);
                let (x, y) = (point.x().expect("uncompressed"), point.y().expect("uncompressed"));
                json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)})
            }
            TestKey::P384 => {
                use p384::pkcs8::DecodePrivateKey;
                let key = p384::SecretKey::from_pkcs8_pem(pem).expect("fixture P-384 key parses");
                let point = key.public_key().to_encoded_point(false);
                let (x, y) = (point.x().expect("uncompressed"), point.y().expect("uncompressed"));
                json!({"kty": "EC", "crv": "P-384", "x": b64(x), "y": b64(y)})
            }
            TestKey::Ed25519 => {
                use ed25519_dalek::pkcs8::DecodePrivateKey;
                let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
                    .expect("fixture Ed25519 key parses");
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(key.verifying_key().as_bytes())})
            }
        }
    }

    /// The key jsonwebtoken signs with.
    pub fn encoding_key(self) -> EncodingKey {
        let der = pem_to_der(self.private_pem());
        match self.algorithm() {
            Algorithm::RS256 => EncodingKey::from_rsa_der(&der),
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_der(&der),
            _ => EncodingKey::from_ed_der(&der),
        }
    }

    /// A token over `claims`, signed with this key's algorithm, naming the key in `kid`.
    pub fn sign(self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm());
        header.kid = Some(self.kid().to_owned());
        self.sign_with(&header, claims)
    }

    /// A token over `claims` with this header (e.g. without `kid`, or claiming another algorithm of this key's
    /// family).
    pub fn sign_with(self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &self.encoding_key()).expect("a fixture key signs")
    }
}

/// A JWKS document (`{"keys": [...]}`) with these keys' [`TestKey::jwk`]s.
pub fn jwks(keys: &[TestKey]) -> String {
    json!({ "keys": keys.iter().map(|key| key.jwk()).collect::<Vec<_>>() }).to_string()
}

/// A token whose header and claims are given as written (to forge `alg: none` or other headers), with `signature`
/// as its third segment.
pub fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

/// Seconds since the Unix epoch, for `exp`, `nbf` and `iat`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// The JOSE name of an algorithm (`RS256`, `EdDSA`, ...).
pub fn algorithm_name(algorithm: Algorithm) -> String {
    format!("{algorithm:?}")
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The DER bytes inside a PEM file with one block.
fn pem_to_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
    STANDARD.decode(body).expect("fixture PEM is base64")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_signs_and_verifies_with_its_jwk() {
        for key in TestKey::ALL {
            let claims = json!({"sub": "alice", "exp": unix_now() + 60});
            let token = key.sign(&claims);
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk()).unwrap();
            let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
            let verified = jsonwebtoken::decode::<Value>(
                &token,
                &decoding,
                &jsonwebtoken::Validation::new(key.algorithm()),
            );
            assert_eq!(verified.unwrap().claims["sub"], "alice", "{key:?}");
        }
    }
}
