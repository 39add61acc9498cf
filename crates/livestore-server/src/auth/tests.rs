//! Unit tests of the authenticator: static tokens, JWT validation rules, bearer parsing.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};

use super::*;
use crate::config::{Secret, TokenEntry};

const SECRET: &str = "test-secret-0123456789-abcdefghij";

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

/// A token signed over a hand-written header and claims (to repeat members or add `crit`).
fn raw_jwt(header: &str, claims: &str, secret: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

fn payload(token: &str) -> Box<RawValue> {
    RawValue::from_string(serde_json::json!({ "authToken": token }).to_string()).unwrap()
}

fn status(result: Result<Grant, AuthRejection>) -> u16 {
    result.unwrap_err().status()
}

#[test]
fn static_tokens() {
    let auth = authenticator();
    assert_eq!(auth.authorize("z", Some(&payload("all-token")), None), Ok(Grant::default()));
    assert!(auth.authorize("a", None, Some("a-token")).is_ok());
    assert_eq!(status(auth.authorize("b", Some(&payload("a-token")), None)), 403);
    assert_eq!(status(auth.authorize("a", Some(&payload("wrong")), None)), 401);
    assert_eq!(status(auth.authorize("a", None, None)), 401);
    assert!(auth.authenticate_token("a-token").is_ok());
    assert_eq!(status(auth.authenticate_token("wrong")), 401);
}

#[test]
fn jwts() {
    let auth = authenticator();
    let now = unix_now();
    let good = jwt(&serde_json::json!({ "exp": now + 60, "storeIds": ["a", "b"] }), SECRET);
    let grant = auth.authorize("b", Some(&payload(&good)), None).unwrap();
    assert_eq!(grant.expires_at, Some(now + 60 + JWT_LEEWAY_SECONDS + 1));
    assert_eq!(status(auth.authorize("c", Some(&payload(&good)), None)), 403);
    let expired = jwt(&serde_json::json!({ "exp": now - 600, "storeIds": "*" }), SECRET);
    let rejection = auth.authorize("a", Some(&payload(&expired)), None).unwrap_err();
    assert_eq!((rejection.status(), rejection.message.as_str()), (401, "token expired"));
    let forged =
        jwt(&serde_json::json!({ "exp": now + 60, "storeIds": "*" }), "another-secret-123456");
    assert_eq!(status(auth.authorize("a", Some(&payload(&forged)), None)), 401);
    let no_exp = jwt(&serde_json::json!({ "storeIds": "*" }), SECRET);
    assert_eq!(status(auth.authorize("a", Some(&payload(&no_exp)), None)), 401);
    let no_claim = jwt(&serde_json::json!({ "exp": now + 60 }), SECRET);
    assert_eq!(status(auth.authorize("a", Some(&payload(&no_claim)), None)), 403);
}

#[test]
fn nbf_crit_duplicates_and_size_are_refused() {
    let auth = authenticator();
    let now = unix_now();
    let not_yet =
        jwt(&serde_json::json!({ "exp": now + 600, "nbf": now + 300, "storeIds": "*" }), SECRET);
    let rejection = auth.authorize_token("a", &not_yet).unwrap_err();
    assert_eq!(rejection.message, "token not valid yet (nbf)");
    let claims = format!(r#"{{"exp":{},"storeIds":"*"}}"#, now + 600);
    let crit = raw_jwt(r#"{"alg":"HS256","typ":"JWT","crit":["x"]}"#, &claims, SECRET);
    assert!(auth.authorize_token("a", &crit).unwrap_err().message.contains("crit"));
    // Correctly signed, so only the duplicate check can refuse them.
    let duplicate_claim = raw_jwt(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &format!(r#"{{"exp":{},"storeIds":["a"],"storeIds":"*"}}"#, now + 600),
        SECRET,
    );
    assert_eq!(
        auth.authorize_token("b", &duplicate_claim).unwrap_err().message,
        "token repeats a header field or claim"
    );
    let plain = raw_jwt(r#"{"alg":"HS256","typ":"JWT"}"#, &claims, SECRET);
    assert!(auth.authorize_token("b", &plain).is_ok(), "the hand-signed form is accepted");
    let none = raw_jwt(r#"{"alg":"none","typ":"JWT"}"#, &claims, SECRET);
    assert_eq!(status(auth.authorize_token("a", &none)), 401);
    let huge = jwt(
        &serde_json::json!({ "exp": now + 600, "storeIds": "*", "pad": "x".repeat(10_000) }),
        SECRET,
    );
    assert_eq!(auth.authorize_token("a", &huge).unwrap_err().message, "token too large");
}

#[test]
fn rejections_never_echo_the_token() {
    let auth = authenticator();
    let rejection = auth.authorize("a", Some(&payload("super-secret-guess")), None).unwrap_err();
    assert!(!rejection.message.contains("super-secret-guess"));
}

#[test]
fn bearer_scheme_is_case_insensitive() {
    let mut headers = HeaderMap::new();
    assert_eq!(bearer_token(&headers), None);
    for value in ["Bearer abc", "bearer abc", "BEARER  abc ", " Bearer abc"] {
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("abc"), "{value:?}");
    }
    for value in ["Basic abc", "Bearer", "Bearer   ", "Bearerabc"] {
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        assert_eq!(bearer_token(&headers), None, "{value:?}");
    }
}
