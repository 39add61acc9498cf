//! The JWKS cache against a real endpoint on 127.0.0.1 (`livestore_testkit::JwksServer`, counting fetches):
//! documents good and bad, single flight, the missing-`kid` cooldown, rotation, `max-age`, outages, and a startup
//! without the identity provider. Time is moved forward with tokio's clock (paused only while it jumps), so the
//! 30 s cooldown and the refresh schedule are tested without waiting for them.

use std::time::Duration;

use jsonwebtoken::Header;
use livestore_testkit::jwt::{TestKey, jwks, unix_now};
use livestore_testkit::{JwksReply, JwksServer};
use serde_json::json;

use super::*;
use crate::auth::jwt::JwtVerifier;
use crate::config::AuthConfig;

fn verifier_for(server: &JwksServer) -> JwtVerifier {
    let config = AuthConfig { jwks_url: Some(server.url()), ..AuthConfig::default() };
    JwtVerifier::new(&config).unwrap().unwrap()
}

fn token(key: TestKey) -> String {
    key.sign(&json!({"sub": "alice", "exp": unix_now() + 3_600}))
}

/// Moves tokio's clock forward by `duration` (timers due by then fire), then lets it run on.
async fn skip(duration: Duration) {
    tokio::time::pause();
    tokio::time::advance(duration).await;
    tokio::time::resume();
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn x25519() -> serde_json::Value {
    json!({"kty": "OKP", "crv": "X25519", "kid": "enc-1", "x": "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"})
}

#[test]
fn documents_are_parsed_key_by_key() {
    let mixed = json!({"keys": [x25519(), TestKey::Rsa1.jwk(), {"kty": "oct", "k": "c2VjcmV0"}]});
    let document = parse_document(mixed.to_string().as_bytes()).unwrap();
    assert_eq!(document.keys.len(), 1, "one unsupported key does not break the set");
    assert_eq!(document.keys[0].kid(), Some("rsa-1"));
    assert_eq!(
        document.skipped,
        [(Some("enc-1".to_owned()), KeyProblem::UnsupportedCurve), (None, KeyProblem::Symmetric)]
    );
    let deep = format!("{{\"keys\":[{}{}]}}", "[".repeat(20), "]".repeat(20));
    let too_large = format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(MAX_DOCUMENT_BYTES));
    let cases: [(&[u8], DocumentProblem); 9] = [
        (b"<html>sign in</html>", DocumentProblem::NotJson),
        (b"\xff\xfe{}", DocumentProblem::NotJson),
        (b"[1, 2]", DocumentProblem::NotAnObject),
        (b"{}", DocumentProblem::KeysNotAnArray),
        (br#"{"keys": {"kty": "RSA"}}"#, DocumentProblem::KeysNotAnArray),
        (br#"{"keys": []}"#, DocumentProblem::NoUsableKey),
        (
            br#"{"keys": [{"kty": "OKP", "crv": "X25519", "x": "AA"}]}"#,
            DocumentProblem::NoUsableKey,
        ),
        (deep.as_bytes(), DocumentProblem::TooDeep),
        (too_large.as_bytes(), DocumentProblem::TooLarge),
    ];
    for (body, problem) in cases {
        assert_eq!(parse_document(body).unwrap_err(), problem, "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn cache_control_max_age_is_clamped() {
    let age = |value: Option<&str>| {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(value) = value {
            headers.insert(reqwest::header::CACHE_CONTROL, value.parse().unwrap());
        }
        max_age(&headers).as_secs()
    };
    assert_eq!(age(None), 600);
    assert_eq!(age(Some("public, max-age=120")), 120);
    assert_eq!(age(Some("max-age=\"90\"")), 90);
    assert_eq!(age(Some("max-age=5")), 30);
    assert_eq!(age(Some("public, max-age=86400, stale-while-revalidate=60")), 3_600);
    assert_eq!(age(Some("no-store")), 30);
    assert_eq!(age(Some("no-cache, max-age=300")), 30);
    assert_eq!(age(Some("max-age=soon")), 600);
}

#[tokio::test]
async fn concurrent_verifications_share_one_fetch() {
    let server = JwksServer::start(JwksReply::Status(500));
    server.set_delay(Duration::from_millis(300));
    let verifier = verifier_for(&server);
    let tokens: Vec<String> = (0..16)
        .map(|index| token(if index % 2 == 0 { TestKey::Rsa1 } else { TestKey::P256a }))
        .collect();
    let verify_all =
        || futures_util::future::join_all(tokens.iter().map(|token| verifier.verify(token)));
    // A failing first fetch (no cooldown after it) is still shared: the waiters take its result.
    let results = verify_all().await;
    assert!(results.iter().all(Result::is_err), "{results:?}");
    assert_eq!(server.fetches(), 1);
    server.set_reply(JwksReply::document(jwks(&[TestKey::Rsa1, TestKey::P256a])));
    let results = verify_all().await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn an_unknown_kid_refetches_after_the_cooldown_and_rotation_takes_effect() {
    let server = JwksServer::start(JwksReply::document(jwks(&[TestKey::Rsa1])));
    let verifier = verifier_for(&server);
    assert!(verifier.verify(&token(TestKey::Rsa1)).await.is_ok());
    assert_eq!(server.fetches(), 1);
    // The identity provider rotates: rsa-2 in, rsa-1 out.
    server.set_reply(JwksReply::document(jwks(&[TestKey::Rsa2])));
    // Within 30 s of the fetch a missing kid fetches nothing, however many tokens ask (made-up kids included).
    let mut made_up = Header::new(jsonwebtoken::Algorithm::RS256);
    made_up.kid = Some("made-up".into());
    let made_up = TestKey::Rsa2.sign_with(&made_up, &json!({"exp": unix_now() + 60}));
    for token in [token(TestKey::Rsa2), made_up.clone(), token(TestKey::Rsa2)] {
        let rejection = verifier.verify(&token).await.unwrap_err();
        assert!(rejection.message.contains("does not know"), "{}", rejection.message);
    }
    assert_eq!(server.fetches(), 1);
    assert!(verifier.verify(&token(TestKey::Rsa1)).await.is_ok(), "the cached key still works");
    skip(COOLDOWN + Duration::from_secs(1)).await;
    assert!(
        verifier.verify(&token(TestKey::Rsa2)).await.is_ok(),
        "the new key works after the refetch"
    );
    assert_eq!(server.fetches(), 2);
    let rejection = verifier.verify(&token(TestKey::Rsa1)).await.unwrap_err();
    assert!(
        rejection.message.contains("does not know"),
        "the removed key is gone: {}",
        rejection.message
    );
    assert!(verifier.verify(&made_up).await.is_err());
    assert_eq!(server.fetches(), 2, "cooldown again after the refetch");
}

#[tokio::test]
async fn max_age_schedules_refreshes() {
    let document = jwks(&[TestKey::P256a]);
    let reply = |seconds: u64| JwksReply::Document {
        body: document.clone(),
        cache_control: Some(format!("public, max-age={seconds}")),
    };
    let server = JwksServer::start(reply(120));
    let verifier = verifier_for(&server);
    let metrics = JwksMetrics::default();
    verifier.start(metrics.clone());
    let fetched = |count: u64| {
        let metrics = metrics.clone();
        move || metrics.fetch_count(JwksFetchOutcome::Ok) == count
    };
    // Each answer is stored (with its refresh time) before the clock jumps.
    wait_until("the startup fetch", fetched(1)).await;
    server.set_reply(reply(86_400));
    skip(Duration::from_secs(121)).await;
    wait_until("the refresh after max-age", fetched(2)).await;
    assert!(verifier.verify(&token(TestKey::P256a)).await.is_ok());
    // A day's max-age is clamped to an hour.
    skip(Duration::from_secs(3_601)).await;
    wait_until("the refresh after an hour", fetched(3)).await;
    assert_eq!(server.fetches(), 3);
}

#[tokio::test]
async fn outages_keep_the_last_good_keys() {
    let mut server = JwksServer::start(JwksReply::Document {
        body: jwks(&[TestKey::P256a]),
        cache_control: Some("max-age=60".into()),
    });
    let verifier = verifier_for(&server);
    let metrics = JwksMetrics::default();
    verifier.start(metrics.clone());
    wait_until("the first fetch", || metrics.fetch_count(JwksFetchOutcome::Ok) == 1).await;
    assert_eq!(metrics.key_count(), 1);
    let huge = format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(MAX_DOCUMENT_BYTES));
    let outages = [
        (JwksReply::Status(503), JwksFetchOutcome::BadStatus),
        (JwksReply::Status(302), JwksFetchOutcome::BadStatus),
        (JwksReply::document("<html>maintenance</html>"), JwksFetchOutcome::BadDocument),
        (
            JwksReply::document(json!({"keys": [x25519()]}).to_string()),
            JwksFetchOutcome::BadDocument,
        ),
        (JwksReply::document(huge), JwksFetchOutcome::BadDocument),
    ];
    let mut delay = Duration::from_secs(61);
    for (reply, outcome) in outages {
        let before = metrics.fetch_count(outcome);
        server.set_reply(reply);
        skip(delay).await;
        wait_until("the failed refresh", || metrics.fetch_count(outcome) == before + 1).await;
        assert!(verifier.verify(&token(TestKey::P256a)).await.is_ok(), "{outcome:?}");
        assert_eq!(metrics.key_count(), 1);
        // After a failure the refresher retries in 30 s.
        delay = COOLDOWN + Duration::from_secs(1);
    }
    server.stop();
    skip(delay).await;
    wait_until("the unreachable refresh", || {
        metrics.fetch_count(JwksFetchOutcome::Unreachable) == 1
    })
    .await;
    assert!(verifier.verify(&token(TestKey::P256a)).await.is_ok());
    // Back, with a second key.
    server.set_reply(JwksReply::document(jwks(&[TestKey::P256a, TestKey::P256b])));
    server.restart();
    skip(delay).await;
    wait_until("the recovery", || metrics.fetch_count(JwksFetchOutcome::Ok) == 2).await;
    assert_eq!(metrics.key_count(), 2);
    assert!(verifier.verify(&token(TestKey::P256b)).await.is_ok());
}

#[tokio::test]
async fn a_failed_startup_fetch_is_retried_by_the_first_token() {
    let server = JwksServer::start(JwksReply::Status(500));
    let verifier = verifier_for(&server);
    let metrics = JwksMetrics::default();
    verifier.start(metrics.clone());
    wait_until("the startup fetch", || metrics.fetch_count(JwksFetchOutcome::BadStatus) == 1).await;
    server.set_reply(JwksReply::document(jwks(&[TestKey::Ed25519])));
    assert!(verifier.verify(&token(TestKey::Ed25519)).await.is_ok(), "fetched again at once");
    assert_eq!(server.fetches(), 2);
    // From then on the cooldown holds.
    assert!(verifier.verify(&token(TestKey::Rsa1)).await.is_err());
    assert_eq!(server.fetches(), 2);
}
