//! Key parsing (PEM and JWK for RSA, P-256, P-384 and Ed25519), the checks on key material, algorithm pinning, and
//! the choice of a token's key.

use jsonwebtoken::Algorithm;
use livestore_testkit::jwt::TestKey;
use serde_json::{Value, json};

use super::*;

fn jwk_with(key: TestKey, changes: &Value) -> Value {
    let mut jwk = key.jwk();
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            jwk.as_object_mut().unwrap().remove(name);
        } else {
            jwk[name] = value.clone();
        }
    }
    jwk
}

#[test]
fn pem_public_keys_of_every_supported_type() {
    let cases = [
        (TestKey::Rsa1, KeyKind::Rsa, vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512]),
        (TestKey::P256a, KeyKind::P256, vec![Algorithm::ES256]),
        (TestKey::P384, KeyKind::P384, vec![Algorithm::ES384]),
        (TestKey::Ed25519, KeyKind::Ed25519, vec![Algorithm::EdDSA]),
    ];
    for (test_key, kind, algorithms) in cases {
        let key = parse_pem(test_key.public_pem()).unwrap();
        assert_eq!((key.kind(), key.algorithms(), key.kid()), (kind, &algorithms[..], None));
    }
    // PKCS#1 RSA public keys, as some tools write them.
    use rsa::pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPublicKey as _};
    let private = rsa::RsaPrivateKey::from_pkcs1_pem(TestKey::Rsa2.private_pem()).unwrap();
    let pkcs1 = private.to_public_key().to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    assert!(pkcs1.starts_with("-----BEGIN RSA PUBLIC KEY-----"));
    assert_eq!(parse_pem(&pkcs1).unwrap().kind(), KeyKind::Rsa);
}

#[test]
fn pem_inputs_that_are_not_usable_public_keys() {
    assert_eq!(parse_pem(TestKey::Rsa1024.public_pem()).unwrap_err(), KeyProblem::RsaKeySize);
    for key in [TestKey::Rsa1, TestKey::P256a, TestKey::Ed25519] {
        assert_eq!(parse_pem(key.private_pem()).unwrap_err(), KeyProblem::PrivateKey, "{key:?}");
    }
    let certificate = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    assert_eq!(parse_pem(certificate).unwrap_err(), KeyProblem::Certificate);
    let garbage = "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n";
    assert_eq!(parse_pem(garbage).unwrap_err(), KeyProblem::Unrecognized);
    // A configuration error names the problem, never the key text.
    let message = parse_configured(TestKey::Rsa1.private_pem()).unwrap_err().message();
    assert!(!message.contains("MII"), "{message}");
    assert_eq!(parse_configured("ssh-rsa AAAA").unwrap_err(), KeyProblem::Unrecognized);
}

#[test]
fn jwks_of_every_supported_type_are_pinned_to_their_alg() {
    for test_key in [TestKey::Rsa1, TestKey::P256a, TestKey::P384, TestKey::Ed25519] {
        let key = parse_jwk(&test_key.jwk()).unwrap();
        assert_eq!(key.kid(), Some(test_key.kid()));
        assert_eq!(key.algorithms(), [test_key.algorithm()], "{test_key:?}");
    }
    // Without alg, the key's type decides; an RSA JWK may name a PSS algorithm.
    let bare = parse_jwk(&TestKey::Rsa1.bare_jwk()).unwrap();
    assert_eq!(bare.algorithms(), [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512]);
    assert_eq!(bare.kid(), None);
    let pss = parse_jwk(&jwk_with(TestKey::Rsa1, &json!({"alg": "PS256"}))).unwrap();
    assert_eq!(pss.algorithms(), [Algorithm::PS256]);
    assert!(!pss.accepts(Algorithm::RS256));
    // Padding some publishers add is tolerated.
    let mut padded = TestKey::P256a.jwk();
    padded["x"] = json!(format!("{}=", padded["x"].as_str().unwrap()));
    assert!(parse_jwk(&padded).is_ok());
}

#[test]
fn jwks_that_are_not_usable_are_refused_with_their_reason() {
    let x25519 =
        json!({"kty": "OKP", "crv": "X25519", "x": "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"});
    let cases = [
        (jwk_with(TestKey::P256a, &json!({"alg": "ES384"})), KeyProblem::AlgorithmMismatch),
        (jwk_with(TestKey::Rsa1, &json!({"alg": "ES256"})), KeyProblem::AlgorithmMismatch),
        (jwk_with(TestKey::Ed25519, &json!({"alg": "ES256"})), KeyProblem::AlgorithmMismatch),
        (jwk_with(TestKey::Rsa1, &json!({"alg": "HS256"})), KeyProblem::UnsupportedAlgorithm),
        (jwk_with(TestKey::Rsa1, &json!({"alg": "none"})), KeyProblem::UnsupportedAlgorithm),
        (jwk_with(TestKey::Rsa1, &json!({"alg": "RSA-OAEP"})), KeyProblem::UnsupportedAlgorithm),
        (jwk_with(TestKey::Rsa1, &json!({"use": "enc"})), KeyProblem::NotForSignatures),
        (jwk_with(TestKey::Rsa1, &json!({"key_ops": ["encrypt"]})), KeyProblem::NotForSignatures),
        (jwk_with(TestKey::Rsa1, &json!({"n": null})), KeyProblem::Malformed),
        (jwk_with(TestKey::Rsa1, &json!({"n": "not base64!"})), KeyProblem::Malformed),
        (jwk_with(TestKey::Rsa1, &json!({"e": "AQ"})), KeyProblem::InvalidKeyMaterial),
        (jwk_with(TestKey::Rsa1, &json!({"kid": 7})), KeyProblem::Malformed),
        (TestKey::Rsa1024.jwk(), KeyProblem::RsaKeySize),
        // P-256 coordinates claimed to be P-384, and a point moved off the curve.
        (
            jwk_with(TestKey::P256a, &json!({"crv": "P-384", "alg": null})),
            KeyProblem::InvalidKeyMaterial,
        ),
        (
            jwk_with(TestKey::P256a, &json!({"y": TestKey::P256b.jwk()["y"]})),
            KeyProblem::InvalidKeyMaterial,
        ),
        (jwk_with(TestKey::P256a, &json!({"crv": "P-521"})), KeyProblem::UnsupportedCurve),
        (x25519, KeyProblem::UnsupportedCurve),
        // The identity point: a small-order Ed25519 key any signature could be forged for.
        (
            json!({"kty": "OKP", "crv": "Ed25519", "x": "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
            KeyProblem::InvalidKeyMaterial,
        ),
        (json!({"kty": "OKP", "crv": "Ed25519", "x": "AQID"}), KeyProblem::InvalidKeyMaterial),
        (json!({"kty": "oct", "k": "c2VjcmV0"}), KeyProblem::Symmetric),
        (json!({"kty": "DSA"}), KeyProblem::UnsupportedType),
        (json!("a string"), KeyProblem::Malformed),
        (json!({"n": "AQAB"}), KeyProblem::Malformed),
    ];
    for (jwk, problem) in cases {
        assert_eq!(parse_jwk(&jwk).unwrap_err(), problem, "{jwk}");
    }
}

#[test]
fn configured_keys_may_be_pem_a_jwk_or_a_whole_jwks() {
    assert_eq!(parse_configured(TestKey::P384.public_pem()).unwrap().len(), 1);
    assert_eq!(parse_configured(&TestKey::Ed25519.jwk().to_string()).unwrap().len(), 1);
    let document = livestore_testkit::jwt::jwks(&[TestKey::Rsa1, TestKey::P256a]);
    assert_eq!(parse_configured(&document).unwrap().len(), 2);
    // Configuration is all or nothing: one bad key in a pasted JWKS is an error.
    let with_bad = json!({"keys": [TestKey::Rsa1.jwk(), {"kty": "oct", "k": "c2VjcmV0"}]});
    assert_eq!(parse_configured(&with_bad.to_string()).unwrap_err(), KeyProblem::Symmetric);
    assert_eq!(parse_configured(r#"{"keys": 1}"#).unwrap_err(), KeyProblem::Malformed);
    assert_eq!(parse_configured("{not json").unwrap_err(), KeyProblem::Malformed);
    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
    assert_eq!(parse_configured(&format!("{{\"a\":{deep}}}")).unwrap_err(), KeyProblem::Malformed);
}

#[test]
fn the_key_for_a_token() {
    let rsa_1 = parse_jwk(&TestKey::Rsa1.jwk()).unwrap();
    let rsa_2 = parse_jwk(&TestKey::Rsa2.jwk()).unwrap();
    let p256 = parse_jwk(&TestKey::P256a.jwk()).unwrap();
    let pem_ec = parse_pem(TestKey::P256b.public_pem()).unwrap();
    let keys = [rsa_1, rsa_2, p256];
    let kid_of = |choice: Choice<'_>| match choice {
        Choice::Key { key, by_kid } => format!("{}:{by_kid}", key.kid().unwrap_or("-")),
        other => format!("{other:?}").split([' ', '(']).next().unwrap().to_owned(),
    };
    let choose_in = |keys: &[VerifyingKey], kid: Option<&str>, algorithm| {
        kid_of(choose(keys.iter(), kid, algorithm))
    };
    assert_eq!(choose_in(&keys, Some("rsa-2"), Algorithm::RS256), "rsa-2:true");
    assert_eq!(choose_in(&keys, Some("rsa-2"), Algorithm::ES256), "WrongType");
    assert_eq!(choose_in(&keys, Some("rsa-2"), Algorithm::HS256), "WrongType");
    assert_eq!(choose_in(&keys, Some("gone"), Algorithm::RS256), "UnknownKid");
    assert_eq!(choose_in(&keys, None, Algorithm::ES256), "p256-1:false");
    assert_eq!(choose_in(&keys, None, Algorithm::RS256), "Ambiguous");
    assert_eq!(choose_in(&keys, None, Algorithm::EdDSA), "NoKeyFits");
    // A key without a kid (a PEM key) stands in for a kid no key has, if it is the only one that fits.
    let with_pem = [parse_jwk(&TestKey::Rsa1.jwk()).unwrap(), pem_ec];
    assert_eq!(choose_in(&with_pem, Some("issuer-kid"), Algorithm::ES256), "-:false");
    assert_eq!(choose_in(&with_pem, Some("issuer-kid"), Algorithm::RS256), "UnknownKid");
    assert_eq!(choose_in(&with_pem, Some("rsa-1"), Algorithm::ES256), "WrongType");
}
