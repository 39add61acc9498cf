//! `HttpHooks` against a real hook receiver on 127.0.0.1: signing, answers, every kind of failure, the call slots,
//! the connect cache and the metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::*;
use crate::config::Secret;
use crate::hooks::TransportKind;
use crate::identity::Identity;

const SECRET: &str = "hook-secret-for-unit-tests-0123456789";

/// What the receiver saw: the path, the body, and whether its signature was right.
type Calls = Arc<Mutex<Vec<(String, Value, bool)>>>;

/// Serves the receiver; each path answers one way.
async fn receiver() -> (String, Calls) {
    let calls: Calls = Arc::default();
    let app = Router::new().route("/{mode}", post(answer)).with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, calls)
}

async fn answer(
    State(calls): State<Calls>,
    axum::extract::Path(mode): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let signed = headers.get("x-livestore-signature").and_then(|value| value.to_str().ok());
    let ok = signed == Some(wire::signature(SECRET.as_bytes(), &body).as_str());
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    calls.lock().unwrap().push((mode.clone(), value, ok));
    let json = |text: &'static str| ([(header::CONTENT_TYPE, "application/json")], text);
    match mode.as_str() {
        "allow" => json(r#"{"allow":true}"#).into_response(),
        "allow-ann" => json(
            r#"{"allow":true,"subject":"ann","claims":{"role":"editor"},"expiresAt":4102444800}"#,
        )
        .into_response(),
        "deny" => json(r#"{"allow":false,"reason":"read only"}"#).into_response(),
        "status500" => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        "redirect" => (StatusCode::FOUND, [(header::LOCATION, "/allow")]).into_response(),
        "garbage" => "<html>not a decision</html>".into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_millis(250)).await;
            json(r#"{"allow":true}"#).into_response()
        }
        "drip" => {
            // Headers at once, then one byte every 100 ms: only a timeout over the whole call catches it.
            let bytes = futures_util::stream::unfold(0, |sent| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                (sent < 50).then(|| (Ok::<_, std::io::Error>(Bytes::from_static(b" ")), sent + 1))
            });
            Body::from_stream(bytes).into_response()
        }
        "huge" => {
            // No Content-Length: the limit must hold while reading.
            let chunk = Bytes::from(vec![b' '; 1024]);
            let bytes = futures_util::stream::iter(
                (0..100).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
            );
            Body::from_stream(bytes).into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn hooks(
    base: &str,
    connect: &str,
    push: &str,
    configure: impl FnOnce(&mut HooksConfig),
) -> HttpHooks {
    let mut config = HooksConfig {
        connect_url: Some(format!("{base}/{connect}")),
        push_url: Some(format!("{base}/{push}")),
        pull_url: Some(format!("{base}/{push}")),
        secret: Some(Secret(SECRET.to_owned())),
        timeout_ms: 400,
        ..HooksConfig::default()
    };
    configure(&mut config);
    config.validate().unwrap();
    HttpHooks::new(&config, &Arc::new(Metrics::new())).unwrap().expect("URLs are configured")
}

fn connect_request(store: &str) -> ConnectRequest {
    ConnectRequest {
        store_id: store.to_owned(),
        payload: None,
        headers: BTreeMap::from([("cookie".to_owned(), "session=abc".to_owned())]),
        remote_addr: None,
        transport: TransportKind::Ws,
        identity: None,
    }
}

#[tokio::test]
async fn calls_are_signed_and_answers_decide() {
    let (base, calls) = receiver().await;
    let hooks = hooks(&base, "allow-ann", "deny", |_| {});
    assert!(hooks.wants_connect() && hooks.wants_push() && hooks.wants_pull());
    let debug = format!("{hooks:?}");
    assert!(!debug.contains(&base) && !debug.contains(SECRET), "{debug}");
    let decision = hooks.connect(connect_request("s1")).await.unwrap();
    assert_eq!(
        decision,
        ConnectDecision::Allow {
            subject: Some("ann".into()),
            claims: json!({"role": "editor"}).as_object().unwrap().clone(),
            expires_at: Some(4_102_444_800),
        }
    );
    let identity = Identity { subject: Some("ann".into()), ..Identity::default() };
    let push = PushRequest { store_id: "s1", identity: &identity, batch: &[] };
    assert_eq!(hooks.push(push).await.unwrap(), Decision::Deny { reason: "read only".into() });
    let pull = PullRequest { store_id: "s1", identity: &identity, cursor: None, live: false };
    assert!(matches!(hooks.pull(pull).await.unwrap(), Decision::Deny { .. }));
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|(_, _, signed)| *signed), "every call is signed: {calls:?}");
    assert_eq!(calls[0].1["headers"], json!({"cookie": "session=abc"}));
    assert_eq!((&calls[1].1["subject"], &calls[1].1["batch"]), (&json!("ann"), &json!([])));
    assert_eq!(calls[2].1["cursor"], json!(null));
    let ids: std::collections::HashSet<_> = calls.iter().map(|call| call.1["id"].clone()).collect();
    assert_eq!(ids.len(), 3, "each call has its own id");
    let rendered = hooks.metrics.render();
    for series in [
        r#"livestore_hook_calls_total{hook="connect",outcome="allow"} 1"#,
        r#"livestore_hook_calls_total{hook="push",outcome="deny"} 1"#,
        r#"livestore_hook_calls_total{hook="pull",outcome="deny"} 1"#,
        r#"livestore_hook_seconds_count{hook="connect"} 1"#,
    ] {
        assert!(rendered.contains(series), "{series} missing:\n{rendered}");
    }
}

/// Each failure is an error of its kind, fast, with a reason that names neither the URL nor the answer.
#[tokio::test]
async fn failures_are_errors_of_their_kind() {
    let (base, _calls) = receiver().await;
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let cases = [
        ("status500", "failed", "500"),
        ("redirect", "failed", "redirect"),
        ("garbage", "not a decision", "not JSON"),
        ("huge", "not a decision", "exceeds 65536 bytes"),
        ("drip", "did not answer within 400 ms", ""),
        ("missing", "failed", "404"),
    ];
    for (mode, kind, detail) in cases {
        let hooks = hooks(&base, mode, mode, |config| config.connect_cache_seconds = 0);
        let started = Instant::now();
        let error = hooks.connect(connect_request("s")).await.unwrap_err().to_string();
        assert!(error.contains(kind) && error.contains(detail), "{mode}: {error}");
        assert!(!error.contains(&base) && !error.contains("html"), "{mode}: {error}");
        assert!(
            started.elapsed() < Duration::from_millis(1_500),
            "{mode} took {:?}",
            started.elapsed()
        );
    }
    let closed = format!("http://{unused}");
    let hooks = hooks(&closed, "x", "x", |_| {});
    let error = hooks.connect(connect_request("s")).await.unwrap_err();
    assert!(matches!(error, HookError::Failed { .. }), "{error}");
    assert!(!error.to_string().contains(&unused.port().to_string()), "{error}");
    let rendered = hooks.metrics.render();
    assert!(rendered.contains(r#"livestore_hook_calls_total{hook="connect",outcome="failed"} 1"#));
}

#[tokio::test]
async fn waiting_for_a_call_slot_counts_against_the_timeout() {
    let (base, calls) = receiver().await;
    let hooks = Arc::new(hooks(&base, "slow", "slow", |config| {
        config.concurrency = 1;
        config.connect_cache_seconds = 0;
    }));
    let first = tokio::spawn({
        let hooks = hooks.clone();
        async move { hooks.connect(connect_request("a")).await }
    });
    // The second call waits for the first one's slot (250 ms), then needs 250 ms itself: over the 400 ms limit.
    while calls.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = hooks.connect(connect_request("b")).await;
    assert!(first.await.unwrap().is_ok());
    assert!(matches!(second, Err(HookError::Timeout { timeout_ms: 400, .. })), "{second:?}");
    let rendered = hooks.metrics.render();
    assert!(rendered.contains(r#"livestore_hook_calls_total{hook="connect",outcome="timeout"} 1"#));
}

#[tokio::test]
async fn connect_decisions_are_remembered_per_request() {
    let (base, calls) = receiver().await;
    let hooks = hooks(&base, "deny", "allow", |config| config.connect_cache_seconds = 60);
    let deny = ConnectDecision::Deny { reason: "read only".into() };
    assert_eq!(hooks.connect(connect_request("s")).await.unwrap(), deny);
    assert_eq!(hooks.connect(connect_request("s")).await.unwrap(), deny);
    assert_eq!(calls.lock().unwrap().len(), 1, "the second decision came from the cache");
    let mut other_cookie = connect_request("s");
    other_cookie.headers.insert("cookie".into(), "session=other".into());
    hooks.connect(other_cookie).await.unwrap();
    assert_eq!(calls.lock().unwrap().len(), 2);
    let rendered = hooks.metrics.render();
    assert!(rendered.contains(r#"livestore_hook_calls_total{hook="connect",outcome="cached"} 1"#));

    let uncached = self::hooks(&base, "deny", "allow", |config| config.connect_cache_seconds = 0);
    uncached.connect(connect_request("s")).await.unwrap();
    uncached.connect(connect_request("s")).await.unwrap();
    assert_eq!(calls.lock().unwrap().len(), 4, "connect_cache_seconds = 0 remembers nothing");
}

#[test]
fn hooks_need_a_url_and_a_secret() {
    let metrics = Arc::new(Metrics::new());
    assert!(HttpHooks::new(&HooksConfig::default(), &metrics).unwrap().is_none());
    let events_only = HooksConfig {
        events_url: Some("http://127.0.0.1:1/events".into()),
        ..HooksConfig::default()
    };
    assert!(
        HttpHooks::new(&events_only, &metrics).unwrap().is_none(),
        "events are not called here"
    );
    let unsigned =
        HooksConfig { push_url: Some("http://127.0.0.1:1/push".into()), ..HooksConfig::default() };
    assert!(HttpHooks::new(&unsigned, &metrics).unwrap_err().contains("hooks.secret"));
}
