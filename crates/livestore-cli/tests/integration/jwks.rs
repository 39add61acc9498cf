//! Identity from an identity provider: `livestore serve` verifying RS256 and ES256 tokens with keys from a JWKS
//! endpoint the test serves on 127.0.0.1 (`livestore_testkit::JwksServer`), before the WebSocket upgrade and on the
//! HTTP transport; key rotation mid-run; issuer and audience; `store_access` patterns; expiry on an open socket;
//! the endpoint down or serving garbage; forged tokens; and real JavaScript and Rust clients syncing with such
//! tokens.

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use livestore_testkit::jwt::{TestKey, jwks, raw_token, unix_now};
use livestore_testkit::{JwksReply, JwksServer};
use serde_json::{Value, json};

use crate::js_driver::{JsDriver, created};
use crate::support::*;

const ISSUER: &str = "https://tenant.idp.example.com/";
const AUDIENCE: &str = "https://sync.example.com";
const CONVERGE: Duration = Duration::from_secs(30);

/// Claims as an identity provider issues them: subject, issuer, audience, an hour of validity, the stores listed.
fn claims(sub: &str, stores: Value) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": unix_now() + 3_600, "iat": unix_now(),
           "storeIds": stores})
}

/// A server trusting `jwks`, with the issuer and audience set through the environment.
fn server_for(jwks: &JwksServer) -> TestServer {
    TestServer::start_with_env(&[
        ("LIVESTORE_JWKS_URL", &jwks.url()),
        ("LIVESTORE_JWT_ISSUER", ISSUER),
        ("LIVESTORE_JWT_AUDIENCE", AUDIENCE),
    ])
}

fn ws_with_token(server: &TestServer, store: &str, token: &str) -> String {
    format!("{}&payload={}", server.ws_url(store), payload_param(token))
}

/// `Ok` for a 101, else the refusal's status and body.
async fn upgrade(url: &str) -> Result<(), (u16, String)> {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            Err((response.status().as_u16(), body.into_owned()))
        }
        Err(other) => panic!("unexpected error {other}"),
    }
}

fn ping(store: &str) -> String {
    json!({"_tag": "Request", "id": "1", "tag": "SyncHttpRpc.Ping", "payload": {"storeId": store}, "headers": []})
        .to_string()
}

/// An HTTP-transport ping with the token in the `Authorization` header.
async fn http_ping_with_bearer(server: &TestServer, store: &str, token: &str) -> (u16, String) {
    let url = format!("{}/?storeId={store}&transport=http", server.http_url());
    let response =
        reqwest::Client::new().post(url).bearer_auth(token).body(ping(store)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// An HTTP-transport ping with the token in the URL's sync payload, as sync-cf clients send it.
async fn http_ping_with_payload(server: &TestServer, store: &str, token: &str) -> (u16, String) {
    let url = format!(
        "{}/?storeId={store}&transport=http&payload={}",
        server.http_url(),
        payload_param(token)
    );
    http_post(&url, ping(store)).await
}

async fn metrics(server: &TestServer) -> String {
    reqwest::get(format!("{}/metrics", server.http_url())).await.unwrap().text().await.unwrap()
}

async fn jwks_fetches(server: &TestServer, outcome: &str) -> f64 {
    let series = format!("livestore_jwks_fetches_total{{outcome=\"{outcome}\"}}");
    metric_value(&metrics(server).await, &series).unwrap_or(0.0)
}

/// Polls the server's metrics until `outcome` was counted `count` times.
async fn wait_for_jwks_fetches(server: &TestServer, outcome: &str, count: f64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while jwks_fetches(server, outcome).await < count {
        assert!(
            Instant::now() < deadline,
            "no {count} JWKS fetches with outcome {outcome}:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn rs256_and_es256_tokens_before_the_upgrade_and_over_http() {
    // An encryption key the server cannot use sits in the set too; it must not spoil the others.
    let x25519 = json!({"kty": "OKP", "crv": "X25519", "use": "enc", "kid": "enc-1",
                        "x": "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"});
    let document = json!({"keys": [x25519, TestKey::Rsa1.jwk(), TestKey::P256a.jwk()]}).to_string();
    let idp = JwksServer::start(JwksReply::document(document));
    let server = server_for(&idp);
    let rs256 = TestKey::Rsa1.sign(&claims("alice", json!(["team"])));
    let es256 = TestKey::P256a.sign(&claims("bob", json!(["team"])));
    for token in [&rs256, &es256] {
        let mut client = WsClient::connect(&ws_with_token(&server, "team", token)).await;
        client.send(&pull_request("0", "team", false, None)).await;
        assert_eq!(client.frame().await["_tag"], "Chunk");
        let (status, body) = upgrade(&ws_with_token(&server, "other", token)).await.unwrap_err();
        assert_eq!((status, body.as_str()), (403, "token is not valid for store \"other\""));
        assert_eq!(http_ping_with_bearer(&server, "team", token).await.0, 200);
        assert_eq!(http_ping_with_payload(&server, "team", token).await.0, 200);
        assert_eq!(http_ping_with_bearer(&server, "other", token).await.0, 403);
    }
    let (status, body) = upgrade(&server.ws_url("team")).await.unwrap_err();
    assert_eq!(status, 401, "{body}");
    let metrics = metrics(&server).await;
    assert_eq!(metric_value(&metrics, "livestore_jwks_keys"), Some(2.0), "{metrics}");
    assert_eq!(
        metric_value(&metrics, "livestore_jwks_fetches_total{outcome=\"ok\"}"),
        Some(1.0),
        "known keys need no refetch"
    );
    assert_eq!(idp.fetches(), 1);
    let log = server.log();
    assert!(log.contains("JWKS keys loaded"), "{log}");
    for token in [&rs256, &es256] {
        assert!(!log.contains(&token[token.len() - 30..]), "a token leaked into the log");
    }
}

#[tokio::test]
async fn issuer_and_audience_mismatches_are_refused_with_a_clear_message() {
    let idp = JwksServer::start(JwksReply::document(jwks(&[TestKey::P256a])));
    let server = server_for(&idp);
    let token_with = |changes: Value| {
        let mut claims = claims("alice", json!("*"));
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        TestKey::P256a.sign(&claims)
    };
    let cases = [
        (
            json!({"iss": "https://evil.example.com/"}),
            "token issuer (iss) is not the one this server trusts",
        ),
        (json!({"iss": null}), "token lacks the \"iss\" claim"),
        (
            json!({"aud": "https://other-app.example.com"}),
            "token audience (aud) does not include this server's",
        ),
        (json!({"aud": null}), "token lacks the \"aud\" claim"),
    ];
    for (changes, message) in cases {
        let token = token_with(changes.clone());
        assert_eq!(
            upgrade(&ws_with_token(&server, "s", &token)).await,
            Err((401, message.to_owned())),
            "{changes}"
        );
        assert_eq!(http_ping_with_bearer(&server, "s", &token).await, (401, message.to_owned()));
    }
    // An audience list that includes this server is fine.
    let token = token_with(json!({"aud": ["https://api.example.com", AUDIENCE]}));
    assert_eq!(upgrade(&ws_with_token(&server, "s", &token)).await, Ok(()));
}

#[tokio::test]
async fn store_access_user_sub_gives_each_user_their_own_store() {
    let idp = JwksServer::start(JwksReply::document(jwks(&[TestKey::Rsa1])));
    let (server, _config) = server_with_config(
        "[auth]\nstore_access = \"user-{sub}\"\n",
        &[("LIVESTORE_JWKS_URL", &idp.url())],
    );
    let alice = TestKey::Rsa1.sign(&json!({"sub": "alice", "exp": unix_now() + 600}));
    let bob = TestKey::Rsa1.sign(&json!({"sub": "bob", "exp": unix_now() + 600}));
    assert_eq!(upgrade(&ws_with_token(&server, "user-alice", &alice)).await, Ok(()));
    assert_eq!(upgrade(&ws_with_token(&server, "user-bob", &bob)).await, Ok(()));
    for (store, token) in [("user-bob", &alice), ("user-alice2", &alice), ("user-alice", &bob)] {
        assert_eq!(
            upgrade(&ws_with_token(&server, store, token)).await,
            Err((403, format!("token is not valid for store {store:?}"))),
        );
        assert_eq!(http_ping_with_payload(&server, store, token).await.0, 403, "{store}");
    }
    assert_eq!(http_ping_with_payload(&server, "user-alice", &alice).await.0, 200);
    // A token without the claim the pattern needs opens nothing.
    let anonymous = TestKey::Rsa1.sign(&json!({"exp": unix_now() + 600}));
    assert_eq!(upgrade(&ws_with_token(&server, "user-", &anonymous)).await.unwrap_err().0, 403);
}

/// The identity provider rotates its key while the server runs: a token of the new key is refused only until the
/// server fetched the keys again (a missing kid fetches at most every 30 s), a token of the removed key from then.
#[tokio::test]
async fn a_key_rotation_mid_run() {
    let idp = JwksServer::start(JwksReply::document(jwks(&[TestKey::Rsa1])));
    let server = server_for(&idp);
    let old = TestKey::Rsa1.sign(&claims("alice", json!("*")));
    let new = TestKey::Rsa2.sign(&claims("alice", json!("*")));
    assert_eq!(upgrade(&ws_with_token(&server, "rotating", &old)).await, Ok(()));
    let rotated_at = Instant::now();
    idp.set_reply(JwksReply::document(jwks(&[TestKey::Rsa2])));
    let deadline = rotated_at + Duration::from_secs(45);
    loop {
        match upgrade(&ws_with_token(&server, "rotating", &new)).await {
            Ok(()) => break,
            Err((status, body)) => {
                assert_eq!(status, 401, "{body}");
                assert!(body.contains("does not know"), "{body}");
                assert!(Instant::now() < deadline, "the new key never worked:\n{}", server.log());
            }
        }
        assert_eq!(
            http_ping_with_bearer(&server, "rotating", &old).await.0,
            200,
            "the old key until then"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(http_ping_with_bearer(&server, "rotating", &new).await.0, 200);
    let (status, body) = upgrade(&ws_with_token(&server, "rotating", &old)).await.unwrap_err();
    assert_eq!(status, 401);
    assert!(body.starts_with("token is signed by a key this server does not know"), "{body}");
    // One fetch at startup and one for the new kid: the polls in between were within the cooldown.
    assert_eq!(idp.fetches(), 2);
    assert_eq!(jwks_fetches(&server, "ok").await, 2.0);
}

#[tokio::test]
async fn a_jwks_token_closes_its_socket_with_1008_at_expiry() {
    let idp = JwksServer::start(JwksReply::document(jwks(&[TestKey::P256a])));
    let (server, _config) = server_with_config(
        "[auth]\njwt_leeway_seconds = 0\n",
        &[("LIVESTORE_JWKS_URL", &idp.url())],
    );
    let exp = unix_now() + 3;
    let token = TestKey::P256a.sign(&json!({"sub": "alice", "exp": exp, "storeIds": "*"}));
    let url = ws_with_token(&server, "expiring", &token);
    let mut client = WsClient::connect(&url).await;
    client.send(&pull_request("live", "expiring", true, None)).await;
    assert_eq!(client.frame().await["_tag"], "Chunk");
    assert_eq!(client.close_code().await, Some(1008));
    assert!(unix_now() > exp, "closed before the token expired");
    assert_eq!(upgrade(&url).await, Err((401, "token expired".to_owned())));
}

#[tokio::test]
async fn the_jwks_endpoint_down_keeps_the_cached_keys_working() {
    // The shortest max-age the server honours, so it tries to refresh 30 s in.
    let mut idp = JwksServer::start(JwksReply::Document {
        body: jwks(&[TestKey::Rsa1]),
        cache_control: Some("max-age=30".into()),
    });
    let server = server_for(&idp);
    let token = TestKey::Rsa1.sign(&claims("alice", json!("*")));
    wait_for_jwks_fetches(&server, "ok", 1.0, Duration::from_secs(10)).await;
    idp.stop();
    wait_for_jwks_fetches(&server, "unreachable", 1.0, Duration::from_secs(45)).await;
    assert_eq!(upgrade(&ws_with_token(&server, "s", &token)).await, Ok(()));
    assert_eq!(http_ping_with_payload(&server, "s", &token).await.0, 200);
    // A token of a key the server never saw is refused, not an error.
    let unknown = TestKey::Rsa2.sign(&claims("alice", json!("*")));
    assert_eq!(upgrade(&ws_with_token(&server, "s", &unknown)).await.unwrap_err().0, 401);
    assert_eq!(metric_value(&metrics(&server).await, "livestore_jwks_keys"), Some(1.0));
    assert!(server.log().contains("keeping the keys fetched before"), "{}", server.log());
}

/// Each garbage answer at startup: the server starts and stays up, refuses tokens with 401 (not 5xx), counts the
/// failure, logs it without the document; once the endpoint answers properly, the next token fetches at once.
#[tokio::test]
async fn bad_jwks_documents_do_not_crash_the_server() {
    const MARKER: &str = "document-body-must-not-be-logged";
    let x25519_only = json!({"keys": [{"kty": "OKP", "crv": "X25519", "kid": MARKER, "use": "sig",
                                        "x": "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"}]});
    let answers = [
        (JwksReply::document(format!("<html>{MARKER}</html>")), "bad_document"),
        (JwksReply::document(format!("[\"{MARKER}\"]")), "bad_document"),
        (JwksReply::document(json!({"keys": {"note": MARKER}}).to_string()), "bad_document"),
        (JwksReply::document(x25519_only.to_string()), "bad_document"),
        (
            JwksReply::document(format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(600 * 1024))),
            "bad_document",
        ),
        (
            JwksReply::document(format!("{}{}", "[".repeat(10_000), "]".repeat(10_000))),
            "bad_document",
        ),
        (JwksReply::Status(500), "bad_status"),
        (JwksReply::Status(301), "bad_status"),
    ];
    let token = TestKey::P256a.sign(&claims("alice", json!("*")));
    for (answer, outcome) in answers {
        let idp = JwksServer::start(answer.clone());
        let server = server_for(&idp);
        wait_for_jwks_fetches(&server, outcome, 1.0, Duration::from_secs(10)).await;
        let (status, body) = upgrade(&ws_with_token(&server, "s", &token)).await.unwrap_err();
        assert_eq!(status, 401, "{answer:?}: {body}");
        assert_eq!(http_ping_with_bearer(&server, "s", &token).await.0, 401);
        let health = reqwest::get(format!("{}/healthz", server.http_url())).await.unwrap();
        assert_eq!(health.status(), 200);
        let log = server.log();
        assert!(log.contains("cannot fetch the JWKS"), "{log}");
        assert!(!log.contains(MARKER), "the document reached the log:\n{log}");
    }
    // Recovery: the startup fetch failed, so the first token fetches again without waiting for the cooldown.
    let idp = JwksServer::start(JwksReply::Status(503));
    let server = server_for(&idp);
    wait_for_jwks_fetches(&server, "bad_status", 1.0, Duration::from_secs(10)).await;
    idp.set_reply(JwksReply::document(jwks(&[TestKey::P256a])));
    assert_eq!(upgrade(&ws_with_token(&server, "s", &token)).await, Ok(()));
}

#[tokio::test]
async fn forged_and_oversized_tokens_are_refused() {
    let idp = JwksServer::start(JwksReply::document(jwks(&[TestKey::Rsa1, TestKey::P256a])));
    let server = server_for(&idp);
    let claims = claims("mallory", json!("*"));
    let none = raw_token(&json!({"alg": "none", "typ": "JWT"}), &claims, b"");
    // HS256 with the RSA public key as the HMAC secret, naming the RSA key.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(TestKey::Rsa1.kid().to_owned());
    let confused = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(TestKey::Rsa1.public_pem().as_bytes()),
    )
    .unwrap();
    // ES256 by the P-256 key, naming the RSA key.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(TestKey::Rsa1.kid().to_owned());
    let wrong_type = TestKey::P256a.sign_with(&header, &claims);
    let mut big_claims = claims.clone();
    big_claims["pad"] = json!("x".repeat(10 * 1024));
    let huge = TestKey::Rsa1.sign(&big_claims);
    let cases = [
        (none, "unsigned tokens (alg none) are refused"),
        (
            confused,
            "HMAC-signed tokens (HS256) are not accepted here: tokens must be signed by the identity provider's keys",
        ),
        (
            wrong_type,
            "token is signed with ES256, but the key it names (kid) is an RSA key that verifies RS256",
        ),
        (huge, "token too large"),
    ];
    for (token, message) in &cases {
        assert_eq!(
            upgrade(&ws_with_token(&server, "s", token)).await,
            Err((401, (*message).to_owned()))
        );
        assert_eq!(http_ping_with_bearer(&server, "s", token).await, (401, (*message).to_owned()));
    }
    assert_eq!(idp.fetches(), 1, "forged tokens naming known kids make the server fetch nothing");
}

#[tokio::test]
async fn js_clients_sync_with_an_rs256_token_over_websocket_and_http() {
    let idp = JwksServer::start(JwksReply::document(jwks(&[TestKey::Rsa1])));
    let server = server_for(&idp);
    let url = server.http_url();
    let token = TestKey::Rsa1.sign(&claims("alice", json!(["idp-todos"])));
    let mut driver = JsDriver::start().await;
    driver.open("ws", "idp-todos", &url, json!({"token": token})).await;
    driver
        .open(
            "http",
            "idp-todos",
            &url,
            json!({"transport": "http", "httpPollMs": 300, "token": token}),
        )
        .await;
    driver.commit("ws", json!([created("w1", "over ws")])).await;
    driver.commit("http", json!([created("h1", "over http")])).await;
    let both = |todos: &Value| todos.as_array().unwrap().len() == 2;
    let over_ws = driver.wait_todos("ws", CONVERGE, both).await;
    let over_http = driver.wait_todos("http", CONVERGE, both).await;
    assert_eq!(over_ws, over_http);
    driver.wait_synced("ws").await;
    driver.wait_synced("http").await;
    assert_eq!(driver.eventlog("ws").await, driver.eventlog("http").await);
    driver.exit().await;
    assert_eq!(server_seq_nums(&server, "idp-todos", &token).await, [1, 2]);
}

#[tokio::test]
async fn a_rust_client_syncs_with_an_es256_token() {
    let idp = JwksServer::start(JwksReply::document(jwks(&[TestKey::P256a])));
    let server = server_for(&idp);
    let token = TestKey::P256a.sign(&claims("carol", json!(["rust-idp"])));
    let dir = tempfile::tempdir().unwrap();
    let store = livestore_client::Store::open(
        livestore_client::StoreOptions::new(
            "rust-idp",
            livestore_client::Storage::Dir(dir.path().into()),
        ),
        livestore_client::todo::schema(),
    )
    .unwrap();
    let mut options = livestore_client::sync::DriverOptions::new(server.http_url());
    options.sync_payload = Some(json!({"authToken": token}));
    options.min_backoff = Duration::from_millis(100);
    let sync = livestore_client::sync::start(store.clone(), options);
    store
        .commit(&livestore_client::todo::TodoCreated { id: "r1".into(), text: "from rust".into() })
        .unwrap();
    let deadline = Instant::now() + CONVERGE;
    loop {
        let status = store.sync_status().unwrap();
        if status.upstream_head == "e1" && status.pending_count == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Rust client did not sync: {status:?}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server_seq_nums(&server, "rust-idp", &token).await, [1]);
    sync.stop().await;
    store.shutdown().unwrap();
}

/// The store's log on the server, read by a raw client with `token`.
async fn server_seq_nums(server: &TestServer, store: &str, token: &str) -> Vec<u64> {
    let mut client = WsClient::connect(&ws_with_token(server, store, token)).await;
    client.send(&pull_request("0", store, false, None)).await;
    let mut seqs = Vec::new();
    loop {
        let frame = client.frame().await;
        if frame["_tag"] == "Exit" {
            return seqs;
        }
        seqs.extend(chunk_seq_nums(&frame).0);
    }
}
