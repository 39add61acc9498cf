//! Unit tests of the authenticator: static tokens, JWT validation rules, bearer parsing, the connect hook.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::*;
use crate::config::Secret;
use crate::hooks::{ConnectDecision, ConnectRequest, SyncHooks, TransportKind};

const SECRET: &str = "test-secret-0123456789-abcdefghij";

fn config() -> AuthConfig {
    AuthConfig {
        tokens: vec![
            TokenEntry::AllStores(Secret("all-token".into())),
            TokenEntry::Scoped { token: Secret("a-token".into()), stores: vec!["a".into()] },
        ],
        jwt_secret: Some(Secret(SECRET.into())),
        jwt_leeway_seconds: JWT_LEEWAY_SECONDS,
        ..AuthConfig::default()
    }
}

const JWT_LEEWAY_SECONDS: u64 = 5;

fn authenticator() -> Authenticator {
    Authenticator::from_config(&config()).unwrap()
}

/// `admit` for a WebSocket to `store_id` with this payload and headers.
async fn admit(
    auth: &Authenticator,
    store_id: &str,
    payload: Option<&RawValue>,
    headers: &HeaderMap,
) -> Result<Identity, AuthRejection> {
    auth.admit(ConnectContext {
        store_id,
        payload,
        headers,
        remote_addr: None,
        transport: TransportKind::Ws,
    })
    .await
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    headers
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

fn status(result: Result<Identity, AuthRejection>) -> RejectionKind {
    result.unwrap_err().kind
}

#[tokio::test]
async fn static_tokens() {
    let auth = authenticator();
    let none = HeaderMap::new();
    let identity = admit(&auth, "z", Some(&payload("all-token")), &none).await.unwrap();
    assert_eq!((identity.source, identity.expires_at), (IdentitySource::StaticToken, None));
    assert!(admit(&auth, "a", None, &bearer("a-token")).await.is_ok());
    assert_eq!(
        status(admit(&auth, "b", Some(&payload("a-token")), &none).await),
        RejectionKind::Forbidden
    );
    assert_eq!(
        status(admit(&auth, "a", Some(&payload("wrong")), &none).await),
        RejectionKind::Unauthorized
    );
    assert_eq!(status(admit(&auth, "a", None, &none).await), RejectionKind::Unauthorized);
    assert!(auth.authenticate_token("a-token").await.is_ok());
    assert_eq!(status(auth.authenticate_token("wrong").await), RejectionKind::Unauthorized);
}

#[tokio::test]
async fn jwts() {
    let auth = authenticator();
    let now = unix_now();
    let good =
        jwt(&serde_json::json!({ "exp": now + 60, "sub": "ann", "storeIds": ["a", "b"] }), SECRET);
    let identity = auth.authorize_token("b", &good).await.unwrap();
    assert_eq!(identity.expires_at, Some(now + 60 + JWT_LEEWAY_SECONDS + 1));
    assert_eq!((identity.subject.as_deref(), identity.source), (Some("ann"), IdentitySource::Jwt));
    assert_eq!(status(auth.authorize_token("c", &good).await), RejectionKind::Forbidden);
    let expired = jwt(&serde_json::json!({ "exp": now - 600, "storeIds": "*" }), SECRET);
    let rejection = auth.authorize_token("a", &expired).await.unwrap_err();
    assert_eq!(
        (rejection.kind, rejection.message.as_str()),
        (RejectionKind::Unauthorized, "token expired")
    );
    let forged =
        jwt(&serde_json::json!({ "exp": now + 60, "storeIds": "*" }), "another-secret-123456");
    assert_eq!(status(auth.authorize_token("a", &forged).await), RejectionKind::Unauthorized);
    let no_exp = jwt(&serde_json::json!({ "storeIds": "*" }), SECRET);
    assert_eq!(status(auth.authorize_token("a", &no_exp).await), RejectionKind::Unauthorized);
    let no_claim = jwt(&serde_json::json!({ "exp": now + 60 }), SECRET);
    let rejection = auth.authorize_token("a", &no_claim).await.unwrap_err();
    assert_eq!(
        (rejection.kind, rejection.message.as_str()),
        (RejectionKind::Forbidden, "token has no \"storeIds\" claim listing store ids")
    );
}

#[tokio::test]
async fn nbf_crit_duplicates_and_size_are_refused() {
    let auth = authenticator();
    let now = unix_now();
    let not_yet =
        jwt(&serde_json::json!({ "exp": now + 600, "nbf": now + 300, "storeIds": "*" }), SECRET);
    let rejection = auth.authorize_token("a", &not_yet).await.unwrap_err();
    assert_eq!(rejection.message, "token not valid yet (nbf)");
    let claims = format!(r#"{{"exp":{},"storeIds":"*"}}"#, now + 600);
    let crit = raw_jwt(r#"{"alg":"HS256","typ":"JWT","crit":["x"]}"#, &claims, SECRET);
    assert!(auth.authorize_token("a", &crit).await.unwrap_err().message.contains("crit"));
    // Correctly signed, so only the duplicate check can refuse them.
    let duplicate_claim = raw_jwt(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &format!(r#"{{"exp":{},"storeIds":["a"],"storeIds":"*"}}"#, now + 600),
        SECRET,
    );
    assert_eq!(
        auth.authorize_token("b", &duplicate_claim).await.unwrap_err().message,
        "token repeats a header field or claim"
    );
    let plain = raw_jwt(r#"{"alg":"HS256","typ":"JWT"}"#, &claims, SECRET);
    assert!(auth.authorize_token("b", &plain).await.is_ok(), "the hand-signed form is accepted");
    let none = raw_jwt(r#"{"alg":"none","typ":"JWT"}"#, &claims, SECRET);
    assert_eq!(status(auth.authorize_token("a", &none).await), RejectionKind::Unauthorized);
    let huge = jwt(
        &serde_json::json!({ "exp": now + 600, "storeIds": "*", "pad": "x".repeat(10_000) }),
        SECRET,
    );
    assert_eq!(auth.authorize_token("a", &huge).await.unwrap_err().message, "token too large");
}

#[tokio::test]
async fn rejections_never_echo_the_token() {
    let auth = authenticator();
    let rejection = admit(&auth, "a", Some(&payload("super-secret-guess")), &HeaderMap::new())
        .await
        .unwrap_err();
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

/// A connect hook written in Rust, as an embedder would: it decides by a cookie, counts its calls, and can fail.
struct CookieHook {
    calls: std::sync::atomic::AtomicUsize,
    fail: bool,
}

#[async_trait::async_trait]
impl SyncHooks for CookieHook {
    fn wants_connect(&self) -> bool {
        true
    }

    async fn connect(
        &self,
        request: ConnectRequest,
    ) -> Result<ConnectDecision, crate::hooks::HookError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.fail {
            return Err(crate::hooks::HookError::Failed {
                hook: crate::kinds::HookKind::Connect,
                reason: "connection refused".into(),
            });
        }
        match request.headers.get("cookie").map(String::as_str) {
            Some("session=ann") => Ok(ConnectDecision::Allow {
                subject: Some("ann".into()),
                claims: serde_json::json!({"role": "editor"}).as_object().unwrap().clone(),
                expires_at: Some(unix_now() + 100),
            }),
            _ => Ok(ConnectDecision::Deny { reason: "not logged in".into() }),
        }
    }
}

fn with_hook(fail: bool, fail_open: bool) -> (Authenticator, Arc<CookieHook>) {
    let hook = Arc::new(CookieHook { calls: std::sync::atomic::AtomicUsize::new(0), fail });
    let auth =
        Authenticator::new(&config(), hook.clone(), vec!["cookie".into()], fail_open).unwrap();
    (auth, hook)
}

#[tokio::test]
async fn the_connect_hook_decides_after_the_credential() {
    let (auth, hook) = with_hook(false, false);
    let mut cookie = HeaderMap::new();
    cookie.insert(header::COOKIE, "session=ann".parse().unwrap());
    let identity = admit(&auth, "any", None, &cookie).await.unwrap();
    assert_eq!(identity.subject.as_deref(), Some("ann"));
    assert_eq!(identity.source, IdentitySource::ConnectHook);
    assert_eq!(identity.claims["role"], "editor");
    let mut stranger = HeaderMap::new();
    stranger.insert(header::COOKIE, "session=eve".parse().unwrap());
    let rejection = admit(&auth, "any", None, &stranger).await.unwrap_err();
    assert_eq!(
        (rejection.kind, rejection.message.as_str()),
        (RejectionKind::Forbidden, "not logged in")
    );
    // A wrong credential is refused before the hook is asked; a good one's expiry and the hook's combine.
    let calls = hook.calls.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        status(admit(&auth, "a", Some(&payload("wrong")), &cookie).await),
        RejectionKind::Unauthorized
    );
    assert_eq!(hook.calls.load(std::sync::atomic::Ordering::SeqCst), calls);
    let short = jwt(&serde_json::json!({ "exp": unix_now() + 10, "storeIds": "*" }), SECRET);
    let identity = admit(&auth, "a", Some(&payload(&short)), &cookie).await.unwrap();
    assert!(identity.expires_at.unwrap() <= unix_now() + 10 + JWT_LEEWAY_SECONDS + 1);
}

#[tokio::test]
async fn a_failing_connect_hook_refuses_unless_told_to_fail_open() {
    let (closed, _) = with_hook(true, false);
    let rejection = admit(&closed, "s", None, &HeaderMap::new()).await.unwrap_err();
    assert_eq!(rejection.kind, RejectionKind::Unavailable);
    let (open, _) = with_hook(true, true);
    assert!(admit(&open, "s", None, &HeaderMap::new()).await.is_ok());
}
