//! Verifying a JWS signature made with a public key (RSA, ECDSA P-256/P-384, Ed25519), with `ring`.
//!
//! Why not `jsonwebtoken`'s own verification: its RustCrypto backend takes about 250 µs per RS256 token and 360 µs
//! per ES256 token on our benchmark machine, which capped authenticated connects at half the unauthenticated rate;
//! `ring`'s constant-time, assembly-backed verifiers take a small fraction of that (BENCHMARKS.md, "auth"). The
//! key material was already checked when the key was parsed (`keys`); the registered claims are still checked by
//! `jsonwebtoken` afterwards, and HS256 (a cheap HMAC) stays with it.

use jsonwebtoken::Algorithm;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm};

/// The bytes of a public key, in the form `ring` verifies with.
#[derive(Clone)]
pub(crate) enum PublicKeyMaterial {
    /// Big-endian modulus (without leading zeros) and exponent.
    Rsa { modulus: Vec<u8>, exponent: Vec<u8> },
    /// An uncompressed SEC1 point (`04 || x || y`) on P-256 or P-384.
    Ec { point: Vec<u8> },
    /// The 32 bytes of an Ed25519 key.
    Ed25519 { key: [u8; 32] },
}

impl PublicKeyMaterial {
    /// Whether `signature` (the token's decoded third segment) signs `message` (`header.payload`, as sent) under
    /// `algorithm`. The caller chose this key for `algorithm` (`keys::choose`), so a mismatch here is a refusal.
    pub(crate) fn verifies(&self, algorithm: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        match self {
            PublicKeyMaterial::Rsa { modulus, exponent } => {
                let Some(parameters) = rsa_parameters(algorithm) else { return false };
                RsaPublicKeyComponents { n: modulus, e: exponent }
                    .verify(parameters, message, signature)
                    .is_ok()
            }
            PublicKeyMaterial::Ec { point } => {
                let verifier: &dyn VerificationAlgorithm = match algorithm {
                    // JWS (RFC 7518 §3.4) carries ECDSA signatures as fixed-width r || s, not DER.
                    Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
                    Algorithm::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
                    _ => return false,
                };
                UnparsedPublicKey::new(verifier, point).verify(message, signature).is_ok()
            }
            PublicKeyMaterial::Ed25519 { key } => {
                algorithm == Algorithm::EdDSA
                    && UnparsedPublicKey::new(&signature::ED25519, key)
                        .verify(message, signature)
                        .is_ok()
            }
        }
    }
}

/// `ring`'s RSA parameters for a JWS algorithm. The 2048-bit floor matches the one `keys` enforces.
fn rsa_parameters(algorithm: Algorithm) -> Option<&'static signature::RsaParameters> {
    Some(match algorithm {
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}
