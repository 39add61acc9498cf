//! Authentication: static tokens and JWTs, checked before the upgrade (WS) and per request (HTTP); secrets never
//! appear in logs.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::support::*;

const JWT_SECRET: &str = "jwt-secret-for-tests-0123456789-abcdef";

fn payload_param(token: &str) -> String {
    // The client JSON-encodes, encodeURIComponent's, then query-encodes again (spec §6.1).
    let json = json!({ "authToken": token }).to_string();
    let once: String = url_escape(&json);
    url_escape(&once)
}

fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn jwt(stores: serde_json::Value, expires_in: i64, secret: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = json!({ "exp": now + expires_in, "storeIds": stores, "sub": "test" });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn upgrade_status(url: &str) -> Result<(), u16> {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("unexpected error {other}"),
    }
}

#[tokio::test]
async fn static_tokens_before_the_upgrade_and_never_logged() {
    let server = TestServer::start_with_env(&[(
        "LIVESTORE_AUTH_TOKENS",
        "token-alpha-secret-0123456789abcdef,token-beta-secret-0123456789abcdefgh",
    )]);
    let base = server.ws_url("guarded");
    assert_eq!(upgrade_status(&base).await, Err(401), "missing token");
    assert_eq!(
        upgrade_status(&format!("{base}&payload={}", payload_param("wrong-guess-secret"))).await,
        Err(401)
    );
    assert_eq!(
        upgrade_status(&format!(
            "{base}&payload={}",
            payload_param("token-alpha-secret-0123456789abcdef")
        ))
        .await,
        Ok(())
    );
    // A token with characters that need double encoding.
    let mut client = WsClient::connect(&format!(
        "{base}&payload={}",
        payload_param("token-beta-secret-0123456789abcdefgh")
    ))
    .await;
    let mut pull = pull_request("0", "guarded", false, None);
    pull["payload"]["payload"] = json!({ "authToken": "token-beta-secret-0123456789abcdefgh" });
    client.send(&pull).await;
    assert_eq!(client.frame().await["_tag"], "Chunk");
    assert_eq!(client.frame().await["_tag"], "Exit");
    // A request whose payload carries a bad token fails alone.
    let mut push = push_request("1", "guarded", events(1, 1), None);
    push["payload"]["payload"] = json!({ "authToken": "wrong-guess-secret" });
    client.send(&push).await;
    let reply = client.frame().await;
    assert!(
        reply["exit"]["cause"]["error"]["cause"]["message"]
            .as_str()
            .unwrap()
            .starts_with("unauthorized")
    );
    // HTTP: header or payload.
    let url = format!("{}/?storeId=guarded&transport=http", server.http_url());
    let ping = r#"{"_tag":"Request","id":"1","tag":"SyncHttpRpc.Ping","payload":{"storeId":"guarded"},"headers":[]}"#;
    assert_eq!(http_post(&url, ping).await.0, 401);
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth("token-alpha-secret-0123456789abcdef")
        .body(ping)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The credential is checked before the body is read: a token only inside the body's RPC payload is not looked
    // at (sync-cf clients also send it in the URL, which is what counts).
    let with_payload = r#"{"_tag":"Request","id":"1","tag":"SyncHttpRpc.Ping","payload":{"storeId":"guarded","payload":{"authToken":"token-beta-secret-0123456789abcdefgh"}},"headers":[]}"#;
    let (status, body) = http_post(&url, with_payload).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("missing credentials"), "{body}");
    let url_with_payload =
        format!("{url}&payload={}", payload_param("token-beta-secret-0123456789abcdefgh"));
    assert_eq!(http_post(&url_with_payload, with_payload).await.0, 200);
    let log = server.log();
    for secret in [
        "token-alpha-secret-0123456789abcdef",
        "token-beta-secret-0123456789abcdefgh",
        "wrong-guess-secret",
    ] {
        assert!(!log.contains(secret), "secret {secret} leaked into the log:\n{log}");
    }
}

#[tokio::test]
async fn jwt_claims_scope_stores_and_expiry_is_enforced() {
    let server = TestServer::start_with_env(&[("LIVESTORE_JWT_SECRET", JWT_SECRET)]);
    let good = jwt(json!(["team-1", "team-2"]), 600, JWT_SECRET);
    let with = |store: &str, token: &str| {
        format!("{}&payload={}", server.ws_url(store), payload_param(token))
    };
    assert_eq!(upgrade_status(&with("team-1", &good)).await, Ok(()));
    assert_eq!(upgrade_status(&with("team-3", &good)).await, Err(403), "store not in claim");
    assert_eq!(
        upgrade_status(&with("team-1", &jwt(json!("*"), -120, JWT_SECRET))).await,
        Err(401),
        "expired"
    );
    assert_eq!(
        upgrade_status(&with("team-1", &jwt(json!("*"), 600, "forged-secret-0123456789"))).await,
        Err(401)
    );
    assert_eq!(upgrade_status(&with("team-1", "not.a.jwt")).await, Err(401), "malformed");
    assert_eq!(
        upgrade_status(&with("team-9", &jwt(json!("*"), 600, JWT_SECRET))).await,
        Ok(()),
        "wildcard"
    );
    let log = server.log();
    assert!(!log.contains(&good[good.len() - 20..]), "a JWT leaked into the log");
}
