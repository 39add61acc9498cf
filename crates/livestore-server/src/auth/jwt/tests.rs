//! Verification with public keys from the configuration (no network): every algorithm, `alg: none`, HS256 with a
//! public key's bytes, keys of the wrong type, `kid` rules, huge tokens, and the `iss`/`aud`/`nbf`/`exp` rules.

use jsonwebtoken::{Algorithm, Header};
use livestore_testkit::jwt::{TestKey, raw_token, unix_now};
use serde_json::{Value, json};

use super::*;
use crate::config::Secret;
use crate::kinds::RejectionKind;

const ISSUER: &str = "https://idp.example.com/";
const AUDIENCE: &str = "livestore";
const LEEWAY: u64 = 10;

fn verifier_with(keys: &[&str], change: impl FnOnce(&mut AuthConfig)) -> JwtVerifier {
    let mut config = AuthConfig {
        jwt_public_keys: keys.iter().map(|key| (*key).to_owned()).collect(),
        jwt_leeway_seconds: LEEWAY,
        ..AuthConfig::default()
    };
    change(&mut config);
    JwtVerifier::new(&config).unwrap().unwrap()
}

/// Static keys: RSA and EC as PEM (no kid), P-384 and Ed25519 as JWKs (with kid).
fn verifier() -> JwtVerifier {
    let p384 = TestKey::P384.jwk().to_string();
    let ed25519 = TestKey::Ed25519.jwk().to_string();
    verifier_with(
        &[TestKey::Rsa1.public_pem(), TestKey::P256a.public_pem(), &p384, &ed25519],
        |_| {},
    )
}

fn claims() -> Value {
    json!({"sub": "alice", "exp": unix_now() + 600})
}

async fn refusal(verifier: &JwtVerifier, token: &str) -> String {
    let rejection = verifier.verify(token).await.unwrap_err();
    assert_eq!(rejection.kind, RejectionKind::Unauthorized, "{}", rejection.message);
    rejection.message
}

#[tokio::test]
async fn every_public_key_algorithm_verifies() {
    let verifier = verifier();
    for key in [TestKey::Rsa1, TestKey::P256a, TestKey::P384, TestKey::Ed25519] {
        let verified = verifier.verify(&key.sign(&claims())).await.unwrap();
        assert_eq!(verified.claims["sub"], "alice", "{key:?}");
    }
    // RS384 and RS512 with the same RSA key (its type allows the family); tokens without kid work too.
    for algorithm in [Algorithm::RS384, Algorithm::RS512] {
        let token = TestKey::Rsa1.sign_with(&Header::new(algorithm), &claims());
        assert!(verifier.verify(&token).await.is_ok(), "{algorithm:?}");
    }
}

#[tokio::test]
async fn rsa_pss_verifies_with_a_key_pinned_to_it() {
    let mut jwk = TestKey::Rsa2.bare_jwk();
    jwk["kid"] = json!("pss");
    jwk["alg"] = json!("PS256");
    let verifier = verifier_with(&[&jwk.to_string()], |_| {});
    let mut header = Header::new(Algorithm::PS256);
    header.kid = Some("pss".to_owned());
    let token = TestKey::Rsa2.sign_with(&header, &claims());
    assert_eq!(verifier.verify(&token).await.unwrap().claims["sub"], "alice");
    // Pinned to PS256, the same key refuses a PKCS#1 v1.5 signature it could otherwise check.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("pss".to_owned());
    let token = TestKey::Rsa2.sign_with(&header, &claims());
    assert!(
        refusal(&verifier, &token).await.starts_with("token is signed with RS256, but the key")
    );
}

#[tokio::test]
async fn a_changed_or_truncated_signature_or_payload_is_refused_for_every_algorithm() {
    let verifier = verifier();
    for key in [TestKey::Rsa1, TestKey::P256a, TestKey::P384, TestKey::Ed25519] {
        let token = key.sign(&claims());
        let (header, rest) = token.split_once('.').unwrap();
        let (payload, signature) = rest.split_once('.').unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
        bytes[7] ^= 1;
        let flipped = format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(&bytes));
        assert_eq!(refusal(&verifier, &flipped).await, "invalid token signature", "{key:?}");
        let other_payload =
            URL_SAFE_NO_PAD.encode(json!({"sub": "mallory", "exp": unix_now() + 600}).to_string());
        let swapped = format!("{header}.{other_payload}.{signature}");
        assert_eq!(refusal(&verifier, &swapped).await, "invalid token signature", "{key:?}");
        let truncated = format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(&bytes[..8]));
        assert_eq!(refusal(&verifier, &truncated).await, "invalid token signature", "{key:?}");
    }
}

#[tokio::test]
async fn alg_none_and_hmac_with_a_public_key_are_refused() {
    let verifier = verifier();
    let none = raw_token(&json!({"alg": "none", "typ": "JWT"}), &claims(), b"");
    assert_eq!(refusal(&verifier, &none).await, "unsigned tokens (alg none) are refused");
    let none_with_signature = raw_token(&json!({"alg": "none"}), &claims(), b"sig");
    assert_eq!(
        refusal(&verifier, &none_with_signature).await,
        "unsigned tokens (alg none) are refused"
    );
    // The classic confusion attack: HS256 "signed" with the RSA public key's PEM as the HMAC secret.
    let header = Header::new(Algorithm::HS256);
    let confused = jsonwebtoken::encode(
        &header,
        &claims(),
        &jsonwebtoken::EncodingKey::from_secret(TestKey::Rsa1.public_pem().as_bytes()),
    )
    .unwrap();
    assert!(
        refusal(&verifier, &confused)
            .await
            .starts_with("HMAC-signed tokens (HS256) are not accepted")
    );
    // With an HS256 secret configured as well, the public key still is no HMAC key: a bad signature.
    let both = verifier_with(&[TestKey::Rsa1.public_pem()], |config| {
        config.jwt_secret = Some(Secret("a-real-hs256-secret-0123456789-abcdef".into()));
    });
    assert_eq!(refusal(&both, &confused).await, "invalid token signature");
    let es512 = raw_token(&json!({"alg": "ES512"}), &claims(), b"sig");
    assert!(refusal(&verifier, &es512).await.starts_with("token algorithm is not supported"));
}

#[tokio::test]
async fn a_key_of_the_wrong_type_for_the_algorithm_is_refused() {
    let verifier = verifier();
    // Signed by the P-256 key but naming the Ed25519 key.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(TestKey::Ed25519.kid().to_owned());
    let token = TestKey::P256a.sign_with(&header, &claims());
    assert_eq!(
        refusal(&verifier, &token).await,
        "token is signed with ES256, but the key it names (kid) is an Ed25519 key that verifies EdDSA"
    );
    // Naming the right key type but signed by another key of that type.
    let mut header = Header::new(Algorithm::ES384);
    header.kid = Some(TestKey::P384.kid().to_owned());
    let mut forged = TestKey::P384.sign_with(&header, &claims());
    let other = TestKey::P256a.sign(&claims());
    forged.replace_range(forged.rfind('.').unwrap().., &other[other.rfind('.').unwrap()..]);
    assert_eq!(refusal(&verifier, &forged).await, "invalid token signature");
    // An RSA key it does not have.
    let unknown = TestKey::Rsa2.sign_with(&Header::new(Algorithm::RS256), &claims());
    assert_eq!(refusal(&verifier, &unknown).await, "invalid token signature");
}

#[tokio::test]
async fn kid_rules() {
    // A kid no key has: PEM keys (no kid) stand in, so IdP tokens verify against a pasted PEM key.
    let verifier = verifier();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("kid-from-the-identity-provider".into());
    assert!(verifier.verify(&TestKey::Rsa1.sign_with(&header, &claims())).await.is_ok());
    // With JWKs only, an unknown kid is refused.
    let jwks_only = verifier_with(&[&TestKey::P384.jwk().to_string()], |_| {});
    let mut header = Header::new(Algorithm::ES384);
    header.kid = Some("rotated-away".into());
    let token = TestKey::P384.sign_with(&header, &claims());
    assert!(
        refusal(&jwks_only, &token)
            .await
            .starts_with("token is signed by a key this server does not know")
    );
    // No kid, and two keys that verify the algorithm: ambiguous.
    let two_rsa = verifier_with(&[TestKey::Rsa1.public_pem(), TestKey::Rsa2.public_pem()], |_| {});
    let token = TestKey::Rsa1.sign_with(&Header::new(Algorithm::RS256), &claims());
    assert!(
        refusal(&two_rsa, &token).await.starts_with("token has no kid and several configured keys")
    );
    let token = TestKey::Ed25519.sign_with(&Header::new(Algorithm::EdDSA), &claims());
    assert_eq!(
        refusal(&two_rsa, &token).await,
        "token has no kid and no configured key verifies EdDSA"
    );
    // Only an HS256 secret: public-key tokens are refused as before.
    let hmac_only = verifier_with(&[], |config| {
        config.jwt_secret = Some(Secret("a-real-hs256-secret-0123456789-abcdef".into()));
    });
    assert_eq!(
        refusal(&hmac_only, &TestKey::Rsa1.sign(&claims())).await,
        "token must be signed with HS256"
    );
}

#[tokio::test]
async fn huge_tokens_are_refused_before_any_key_work() {
    let verifier = verifier();
    let mut big = claims();
    big["pad"] = json!("x".repeat(10_000));
    assert_eq!(refusal(&verifier, &TestKey::Rsa1.sign(&big)).await, "token too large");
}

#[tokio::test]
async fn issuer_and_audience_are_required_when_configured() {
    let verifier = verifier_with(&[TestKey::P256a.public_pem()], |config| {
        config.jwt_issuer = Some(ISSUER.into());
        config.jwt_audience = Some(AUDIENCE.into());
    });
    let sign = |changes: Value| {
        let mut claims =
            json!({"sub": "alice", "exp": unix_now() + 600, "iss": ISSUER, "aud": AUDIENCE});
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        TestKey::P256a.sign(&claims)
    };
    assert!(verifier.verify(&sign(json!({}))).await.is_ok());
    assert!(verifier.verify(&sign(json!({"aud": ["other", AUDIENCE]}))).await.is_ok());
    let cases = [
        (
            json!({"iss": "https://evil.example.com/"}),
            "token issuer (iss) is not the one this server trusts",
        ),
        (json!({"iss": null}), "token lacks the \"iss\" claim"),
        (json!({"aud": "another-app"}), "token audience (aud) does not include this server's"),
        (json!({"aud": ["a", "b"]}), "token audience (aud) does not include this server's"),
        (json!({"aud": null}), "token lacks the \"aud\" claim"),
    ];
    for (changes, message) in cases {
        assert_eq!(refusal(&verifier, &sign(changes.clone())).await, message, "{changes}");
    }
    // Unconfigured, iss and aud are not looked at.
    let open = verifier_with(&[TestKey::P256a.public_pem()], |_| {});
    assert!(open.verify(&sign(json!({"iss": "anyone", "aud": "anything"}))).await.is_ok());
}

#[tokio::test]
async fn expiry_and_not_before_with_the_leeway() {
    let verifier = verifier();
    let now = unix_now();
    let sign = |claims: Value| TestKey::Ed25519.sign(&claims);
    let verified = verifier.verify(&sign(json!({"exp": now + 100}))).await.unwrap();
    assert_eq!(verified.expires_at, Some(now + 100 + LEEWAY + 1));
    // Within the leeway an expired token still works; its expiry says when it stops.
    let verified = verifier.verify(&sign(json!({"exp": now - LEEWAY / 2}))).await.unwrap();
    assert_eq!(verified.expires_at, Some(now - LEEWAY / 2 + LEEWAY + 1));
    assert_eq!(refusal(&verifier, &sign(json!({"exp": now - LEEWAY - 5}))).await, "token expired");
    assert_eq!(
        refusal(&verifier, &sign(json!({"sub": "x"}))).await,
        "token lacks the \"exp\" claim"
    );
    assert_eq!(
        refusal(&verifier, &sign(json!({"exp": "tomorrow"}))).await,
        "token lacks the \"exp\" claim"
    );
    assert!(
        verifier.verify(&sign(json!({"exp": now + 100, "nbf": now + LEEWAY / 2}))).await.is_ok()
    );
    assert_eq!(
        refusal(&verifier, &sign(json!({"exp": now + 100, "nbf": now + LEEWAY + 60}))).await,
        "token not valid yet (nbf)"
    );
    // A fractional NumericDate rounds the way the check does.
    let verified = verifier.verify(&sign(json!({"exp": (now + 100) as f64 + 0.4}))).await.unwrap();
    assert_eq!(verified.expires_at, Some(now + 100 + LEEWAY + 1));
}

#[test]
fn a_bad_configured_key_stops_the_start_without_quoting_it() {
    let config = AuthConfig {
        jwt_public_keys: vec![
            TestKey::P256a.public_pem().into(),
            TestKey::Rsa1.private_pem().into(),
        ],
        ..AuthConfig::default()
    };
    let error = JwtVerifier::new(&config).unwrap_err();
    assert_eq!(error, "auth.jwt_public_keys[1] is a private key; give the public key only");
    let config = AuthConfig {
        jwks_url: Some("http://idp.example.com/jwks".into()),
        ..AuthConfig::default()
    };
    assert!(JwtVerifier::new(&config).unwrap_err().contains("must use https"));
}
