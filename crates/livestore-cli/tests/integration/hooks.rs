//! `[hooks]` over HTTP: the real binary calling a hook receiver this test serves on 127.0.0.1 (`receiver`), which
//! checks every call's signature and records it. Connect, push and pull decisions on both transports, every way a
//! hook can fail (fail closed, or open with `fail_open`), forwarded headers, the connect cache, expiry from the
//! hook's answer, logs without secrets, a real LiveStore 0.4.0 client whose pushes are refused (`js`), and the
//! receiver snippets of docs/hooks.md run for real (`docs`).

mod docs;
mod js;
mod latency;
pub mod receiver;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use self::receiver::{Answer, Receiver, SECRET};
use crate::support::*;

/// The sync URL's `payload` parameter for any JSON: encoded, encodeURIComponent'ed, then query-encoded.
pub fn encoded_payload(payload: &Value) -> String {
    let escape = |text: &str| -> String {
        text.bytes()
            .map(|byte| match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (byte as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect()
    };
    escape(&escape(&payload.to_string()))
}

fn ws_url(server: &TestServer, store: &str, user: &str) -> String {
    format!("{}&payload={}", server.ws_url(store), encoded_payload(&json!({ "user": user })))
}

fn http_url(server: &TestServer, store: &str, user: &str) -> String {
    format!(
        "{}/?storeId={store}&transport=http&payload={}",
        server.http_url(),
        encoded_payload(&json!({ "user": user }))
    )
}

/// A server whose `[hooks]` point at `receiver`, plus `hooks` lines and other config `sections`.
fn start(
    receiver: &Receiver,
    hooks: &str,
    sections: &str,
    env: &[(&str, &str)],
) -> (TestServer, tempfile::TempDir) {
    let config = format!("[hooks]\n{}{hooks}\n{sections}", receiver.config());
    let mut all_env = vec![("LIVESTORE_HOOKS_SECRET", SECRET)];
    all_env.extend_from_slice(env);
    server_with_config(&config, &all_env)
}

/// The rule most tests use: the payload's `user` is who connects (except `eve`, and nobody without one); pushes and
/// pulls are allowed.
fn users(hook: &str, body: &Value) -> Answer {
    match (hook, body["payload"]["user"].as_str()) {
        ("connect", None | Some("eve")) => Answer::deny("unknown user"),
        ("connect", Some(user)) => {
            Answer::Json(json!({"allow": true, "subject": user, "claims": {"role": "editor"}}))
        }
        _ => Answer::allow(),
    }
}

async fn connect(server: &TestServer, store: &str, user: &str) -> WsClient {
    match WsClient::try_connect(ws_url(server, store, user)).await {
        Ok(client) => client,
        Err((status, body)) => panic!("{user} was refused with {status}: {body}"),
    }
}

/// The message of an `Exit` failure carrying an `UnknownError`.
fn failure_message(frame: &Value) -> String {
    assert_eq!(frame["exit"]["_tag"], "Failure", "{frame}");
    assert_eq!(frame["exit"]["cause"]["error"]["_tag"], "UnknownError", "{frame}");
    frame["exit"]["cause"]["error"]["cause"]["message"].as_str().unwrap().to_owned()
}

async fn post(url: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut request = reqwest::Client::new().post(url).body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn http_ping(store: &str) -> String {
    json!({"_tag": "Request", "id": "1", "tag": "SyncHttpRpc.Ping", "payload": {"storeId": store}, "headers": []})
        .to_string()
}

fn http_push(store: &str, batch: Vec<Value>) -> String {
    let mut request = push_request("1", store, batch, None);
    request["tag"] = json!("SyncHttpRpc.Push");
    request.to_string()
}

fn http_pull(store: &str, cursor: Option<(&str, u64)>) -> String {
    let mut request = pull_request("1", store, false, cursor);
    request["tag"] = json!("SyncHttpRpc.Pull");
    request["payload"].as_object_mut().unwrap().remove("live");
    request.to_string()
}

/// The store's whole log as the server holds it, read by an allowed user: `(seqNum, args)` pairs.
async fn server_log(server: &TestServer, store: &str) -> Vec<(u64, Value)> {
    let mut client = connect(server, store, "auditor").await;
    client.send(&pull_request("audit", store, false, None)).await;
    let mut log = Vec::new();
    loop {
        let frame = client.frame().await;
        if frame["_tag"] == "Exit" {
            assert_eq!(frame["exit"]["_tag"], "Success", "{frame}");
            return log;
        }
        for value in frame["values"].as_array().unwrap() {
            for item in value["batch"].as_array().unwrap() {
                let event = &item["eventEncoded"];
                log.push((event["seqNum"].as_u64().unwrap(), event["args"].clone()));
            }
        }
    }
}

async fn metrics(server: &TestServer) -> String {
    reqwest::get(format!("{}/metrics", server.http_url())).await.unwrap().text().await.unwrap()
}

fn hook_calls(metrics: &str, hook: &str, outcome: &str) -> f64 {
    let series = format!("livestore_hook_calls_total{{hook=\"{hook}\",outcome=\"{outcome}\"}}");
    metric_value(metrics, &series).unwrap_or(0.0)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

const JWT_SECRET: &str = "jwt-secret-for-hook-tests-0123456789-abc";

#[tokio::test]
async fn the_connect_hook_vouches_for_who_the_push_and_pull_hooks_see() {
    let receiver = Receiver::start(users).await;
    let (server, _dir) = start(&receiver, "", "", &[("LIVESTORE_JWT_SECRET", JWT_SECRET)]);
    let mut ann = connect(&server, "vouched", "ann").await;
    ann.send(&push_request("p1", "vouched", events(1, 1), None)).await;
    assert_eq!(ann.frame().await["exit"]["_tag"], "Success");
    ann.send(&pull_request("q1", "vouched", false, None)).await;
    let page = ann.frame().await;
    assert_eq!(chunk_seq_nums(&page).0, [1]);
    let backend_id = backend_id_of(&page);
    assert_eq!(ann.frame().await["_tag"], "Exit");

    let connect = &receiver.calls("connect")[0].body;
    assert_eq!(connect["storeId"], "vouched");
    assert_eq!(connect["payload"], json!({"user": "ann"}));
    assert_eq!((&connect["transport"], &connect["headers"]), (&json!("ws"), &json!({})));
    assert!(connect["remoteAddr"].as_str().unwrap().starts_with("127.0.0.1:"), "{connect}");
    assert!(
        connect.get("subject").is_none() && connect.get("claims").is_none(),
        "no credential came"
    );
    assert_eq!(connect["id"].as_str().unwrap().len(), 32);
    let sent_at = connect["sentAt"].as_u64().unwrap();
    assert!(sent_at.abs_diff(unix_now() * 1000) < 60_000, "sentAt is Unix ms: {sent_at}");
    let push = &receiver.calls("push")[0].body;
    assert_eq!((&push["subject"], &push["claims"]), (&json!("ann"), &json!({"role": "editor"})));
    assert_eq!(push["batch"], json!(events(1, 1)), "the events as on the wire");
    let pull = &receiver.calls("pull")[0].body;
    assert_eq!(
        (&pull["subject"], &pull["cursor"], &pull["live"]),
        (&json!("ann"), &json!(null), &json!(false))
    );

    // HTTP, with a verified JWT besides the payload: the hook sees the JWT's subject and claims, and its own
    // answer (subject bob) is who pushes and pulls.
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "jwt-ann", "org": "acme", "storeIds": "*", "exp": unix_now() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let bearer = format!("Bearer {token}");
    let url = http_url(&server, "vouched", "bob");
    let (status, body) =
        post(&url, &[("authorization", &bearer)], &http_push("vouched", events(2, 1))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""_tag":"Success""#), "{body}");
    let (status, body) =
        post(&url, &[("authorization", &bearer)], &http_pull("vouched", Some((&backend_id, 1))))
            .await;
    assert_eq!(status, 200, "{body}");
    let connect = &receiver.calls("connect")[1].body;
    assert_eq!(
        (&connect["subject"], &connect["claims"]["org"]),
        (&json!("jwt-ann"), &json!("acme"))
    );
    assert_eq!(connect["transport"], "http");
    let push = &receiver.calls("push")[1].body;
    assert_eq!((&push["subject"], &push["claims"]), (&json!("bob"), &json!({"role": "editor"})));
    let pull = &receiver.calls("pull")[1].body;
    assert_eq!(
        (&pull["subject"], &pull["cursor"], &pull["live"]),
        (&json!("bob"), &json!(1), &json!(false))
    );

    assert_eq!(receiver.bad_signatures(), 0);
    let ids: std::collections::HashSet<String> = ["connect", "push", "pull"]
        .iter()
        .flat_map(|hook| receiver.calls(hook))
        .map(|call| call.body["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 6, "every call has its own id");
    assert!(!server.log().contains(&token[token.len() - 20..]), "the JWT is not logged");
}

#[tokio::test]
async fn a_refused_connect_gets_403_with_the_reason() {
    let receiver = Receiver::start(users).await;
    let (server, _dir) = start(&receiver, "", "", &[]);
    assert_eq!(
        WsClient::try_connect(ws_url(&server, "s", "eve")).await.err(),
        Some((403, "unknown user".to_owned())),
        "refused before the upgrade, with the hook's reason"
    );
    let (status, body) = post(&http_url(&server, "s", "eve"), &[], &http_ping("s")).await;
    assert_eq!((status, body.as_str()), (403, "unknown user"));
    let anonymous = format!("{}/?storeId=s&transport=http", server.http_url());
    assert_eq!(post(&anonymous, &[], &http_ping("s")).await.0, 403);
    // Allowed users still get in, and every HTTP request is asked about (per request, not per client).
    connect(&server, "s", "ann").await;
    assert_eq!(post(&http_url(&server, "s", "ann"), &[], &http_ping("s")).await.0, 200);
    let metrics = metrics(&server).await;
    assert_eq!(hook_calls(&metrics, "connect", "deny"), 3.0);
    assert_eq!(hook_calls(&metrics, "connect", "allow"), 2.0);
    assert_eq!(
        metric_value(&metrics, "livestore_connects_refused_total{reason=\"forbidden\"}"),
        Some(3.0)
    );
}

#[tokio::test]
async fn a_hook_that_cannot_decide_refuses_with_503_and_fail_open_lets_through() {
    let receiver = Receiver::start(|_, _| Answer::Status(500)).await;
    let (server, _dir) = start(&receiver, "timeout_ms = 300\nconnect_cache_seconds = 0\n", "", &[]);
    let failures = [
        ("timeout", Answer::Delayed(Duration::from_secs(2), Box::new(Answer::allow()))),
        ("500", Answer::Status(500)),
        ("garbage", Answer::Garbage),
        ("redirect", Answer::Redirect),
        ("slow body", Answer::Drip),
        ("deny without reason", Answer::Json(json!({"allow": false}))),
        ("allow as a string", Answer::Json(json!({"allow": "yes"}))),
    ];
    for (name, answer) in failures {
        receiver.set_rule(move |_, _| answer.clone());
        let started = Instant::now();
        let refused = WsClient::try_connect(ws_url(&server, "s", "ann")).await.err();
        assert_eq!(refused.map(|(status, _)| status), Some(503), "{name} over WebSocket");
        let (status, body) = post(&http_url(&server, "s", "ann"), &[], &http_ping("s")).await;
        assert_eq!(status, 503, "{name} over HTTP: {body}");
        assert!(!body.contains("bad day") && !body.contains("html"), "{name}: {body}");
        assert!(started.elapsed() < Duration::from_secs(3), "{name} took {:?}", started.elapsed());
    }
    let metrics = metrics(&server).await;
    assert_eq!(hook_calls(&metrics, "connect", "timeout"), 4.0, "too slow, and a body too slow");
    assert_eq!(hook_calls(&metrics, "connect", "failed"), 4.0, "500 and the redirect");
    assert_eq!(hook_calls(&metrics, "connect", "bad_answer"), 6.0);
    assert_eq!(hook_calls(&metrics, "connect", "allow"), 0.0, "the redirect was not followed");
    assert!(server.log().contains("connect hook failed; refusing the request"));

    // fail_open: the same failures let clients in, and a push the push hook cannot decide is admitted.
    let (open, _dir) = start(&receiver, "timeout_ms = 300\nfail_open = true\n", "", &[]);
    receiver.set_rule(|_, _| Answer::Status(500));
    let mut client = connect(&open, "s", "ann").await;
    client.send(&push_request("p1", "s", events(1, 1), None)).await;
    assert_eq!(client.frame().await["exit"]["_tag"], "Success");
    assert_eq!(post(&http_url(&open, "s", "ann"), &[], &http_ping("s")).await.0, 200);
    assert!(open.log().contains("letting the request through (hooks.fail_open)"));
}

#[tokio::test]
async fn only_the_listed_headers_reach_the_connect_hook() {
    let receiver = Receiver::start(users).await;
    let (server, _dir) =
        start(&receiver, "forward_headers = [\"cookie\", \"X-Tenant\"]\n", "", &[]);
    let headers = [
        ("cookie", "session=cookie-value-4711"),
        ("x-tenant", "acme"),
        ("x-other", "not forwarded"),
    ];
    let mut request = ws_url(&server, "s", "ann").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    assert!(WsClient::try_connect(request).await.is_ok());
    assert_eq!(post(&http_url(&server, "s", "ann"), &headers, &http_ping("s")).await.0, 200);
    let calls = receiver.calls("connect");
    assert_eq!(calls.len(), 2);
    for call in calls {
        assert_eq!(
            call.body["headers"],
            json!({"cookie": "session=cookie-value-4711", "x-tenant": "acme"}),
            "{}",
            call.body["transport"]
        );
    }
}

/// Pipelined pushes: the hook is asked about several at once, the answers keep the arrival order, a refused batch
/// is never written, an undecidable one fails fast, and the pusher's own echo still follows its ack.
#[tokio::test]
async fn push_hook_refusals_are_answered_in_order_and_never_written() {
    let receiver = Receiver::start(|hook, body| {
        let texts: Vec<&str> = body["batch"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["args"]["text"].as_str())
            .collect();
        match hook {
            "push" if texts.contains(&"forbidden") => Answer::deny("no forbidden todos"),
            "push" if texts.contains(&"slow") => {
                Answer::Delayed(Duration::from_millis(400), Box::new(Answer::allow()))
            }
            "push" if texts.contains(&"hang") => {
                Answer::Delayed(Duration::from_secs(30), Box::new(Answer::allow()))
            }
            _ => users(hook, body),
        }
    })
    .await;
    let (server, _dir) = start(&receiver, "timeout_ms = 1000\n", "", &[]);
    let mut client = connect(&server, "gated", "ann").await;
    client.send(&pull_request("live", "gated", true, None)).await;
    assert_eq!(chunk_seq_nums(&client.frame().await).0, Vec::<u64>::new());
    let todo = |seq: u64, text: &str| {
        event(seq, "v1.TodoCreated", json!({"id": format!("t{seq}"), "text": text}))
    };
    let pushes = [
        push_request("p1", "gated", vec![todo(1, "slow")], None),
        push_request("p2", "gated", vec![todo(2, "forbidden")], None),
        push_request("p3", "gated", vec![todo(2, "fine")], None),
        push_request("p4", "gated", vec![], None),
        push_request("p5", "gated", vec![todo(3, "hang")], None),
    ];
    let started = Instant::now();
    for push in &pushes {
        client.send(push).await;
    }
    let mut order = Vec::new();
    while order.iter().filter(|entry: &&String| entry.starts_with('p')).count() < 5 {
        let frame = client.frame().await;
        match frame["_tag"].as_str().unwrap() {
            "Exit" => {
                let id = frame["requestId"].as_str().unwrap().to_owned();
                match id.as_str() {
                    "p2" => assert_eq!(failure_message(&frame), "push refused: no forbidden todos"),
                    "p5" => assert!(failure_message(&frame).contains("cannot decide"), "{frame}"),
                    _ => assert_eq!(frame["exit"]["_tag"], "Success", "{frame}"),
                }
                order.push(id);
            }
            "Chunk" => order.extend(chunk_seq_nums(&frame).0.iter().map(|seq| format!("e{seq}"))),
            _ => panic!("unexpected {frame}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5), "nothing hung: {:?}", started.elapsed());
    let replies: Vec<&String> = order.iter().filter(|entry| entry.starts_with('p')).collect();
    assert_eq!(
        replies,
        ["p1", "p2", "p3", "p4", "p5"],
        "replies keep the arrival order: {order:?}"
    );
    let position = |entry: &str| order.iter().position(|seen| seen == entry);
    assert!(position("e1") > position("p1"), "the echo follows its ack: {order:?}");
    assert!(position("e2").is_none() || position("e2") > position("p3"), "{order:?}");
    let calls = receiver.calls("push");
    assert_eq!(calls.len(), 4, "the empty batch is not asked about");
    let overlap = calls[1].received.duration_since(calls[0].received);
    assert!(
        overlap < Duration::from_millis(350),
        "p2 was asked while p1 waited 400 ms ({overlap:?})"
    );

    // Over HTTP too; the refused events are not in the log.
    let (status, body) = post(
        &http_url(&server, "gated", "ann"),
        &[],
        &http_push("gated", vec![todo(3, "forbidden")]),
    )
    .await;
    assert_eq!(status, 200);
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(failure_message(&reply[0]), "push refused: no forbidden todos");
    let log = server_log(&server, "gated").await;
    assert_eq!(
        log,
        [(1, json!({"id": "t1", "text": "slow"})), (2, json!({"id": "t2", "text": "fine"}))]
    );
    let metrics = metrics(&server).await;
    assert_eq!(
        metric_value(&metrics, "livestore_pushes_rejected_total{reason=\"hook\"}"),
        Some(3.0)
    );
    assert_eq!(hook_calls(&metrics, "push", "deny"), 2.0);
    assert_eq!(hook_calls(&metrics, "push", "timeout"), 1.0);
}

#[tokio::test]
async fn pull_hook_refusals_end_the_pull_and_an_undecided_live_pull_closes_with_1013() {
    let receiver = Receiver::start(|hook, body| match (hook, body["storeId"].as_str()) {
        ("pull", Some("archived")) => Answer::deny("this store is archived"),
        ("pull", Some("flaky")) => Answer::Status(503),
        _ => users(hook, body),
    })
    .await;
    let (server, _dir) = start(&receiver, "", "", &[]);
    let mut client = connect(&server, "archived", "ann").await;
    client.send(&pull_request("once", "archived", false, None)).await;
    assert_eq!(failure_message(&client.frame().await), "pull refused: this store is archived");
    client.send(&pull_request("live", "archived", true, None)).await;
    let frame = client.frame().await;
    assert_eq!(frame["requestId"], "live", "the refusal is the live pull's first frame: {frame}");
    assert_eq!(failure_message(&frame), "pull refused: this store is archived");
    client.send(&push_request("p1", "archived", events(1, 1), None)).await;
    assert_eq!(
        client.frame().await["exit"]["_tag"],
        "Success",
        "the connection still serves pushes"
    );
    let (status, body) =
        post(&http_url(&server, "archived", "ann"), &[], &http_pull("archived", None)).await;
    assert_eq!(status, 200);
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(failure_message(&reply[0]), "pull refused: this store is archived");
    let live_flags: Vec<Value> =
        receiver.calls("pull").iter().map(|call| call.body["live"].clone()).collect();
    assert_eq!(live_flags, [json!(false), json!(true), json!(false)]);

    let mut flaky = connect(&server, "flaky", "ann").await;
    flaky.send(&pull_request("once", "flaky", false, None)).await;
    assert!(failure_message(&flaky.frame().await).starts_with("pull not started"));
    flaky.send(&pull_request("live", "flaky", true, None)).await;
    assert_eq!(
        flaky.close_code().await,
        Some(1013),
        "the client reconnects and the hook is asked again"
    );
}

#[tokio::test]
async fn a_connect_decision_is_reused_within_the_cache_ttl() {
    let receiver = Receiver::start(users).await;
    let (server, _dir) = start(&receiver, "connect_cache_seconds = 2\n", "", &[]);
    connect(&server, "s", "ann").await;
    connect(&server, "s", "ann").await;
    assert_eq!(receiver.calls("connect").len(), 1, "the second connect was decided from the cache");
    for _ in 0..2 {
        assert_eq!(post(&http_url(&server, "s", "ann"), &[], &http_ping("s")).await.0, 200);
    }
    assert_eq!(receiver.calls("connect").len(), 2, "HTTP is another transport, then cached");
    assert_eq!(WsClient::try_connect(ws_url(&server, "s", "eve")).await.err().unwrap().0, 403);
    assert_eq!(WsClient::try_connect(ws_url(&server, "s", "eve")).await.err().unwrap().0, 403);
    assert_eq!(receiver.calls("connect").len(), 3, "refusals are remembered too");
    assert_eq!(hook_calls(&metrics(&server).await, "connect", "cached"), 3.0);
    // Once the TTL is over, the hook is asked again.
    let first = receiver.calls("connect")[0].received;
    let deadline = Instant::now() + Duration::from_secs(6);
    while receiver.calls("connect").len() < 4 {
        assert!(Instant::now() < deadline, "the cache never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
        connect(&server, "s", "ann").await;
    }
    let again = receiver.calls("connect")[3].received.duration_since(first);
    assert!(again >= Duration::from_millis(1_900), "asked again after {again:?}, within the TTL");
}

#[tokio::test]
async fn the_connect_hooks_expiry_closes_the_socket_with_1008() {
    let receiver = Receiver::start(|hook, body| {
        let now = unix_now();
        let expires_at = match body["payload"]["user"].as_str() {
            Some("seconds") => json!(now + 2),
            Some("rfc3339") => {
                json!(jiff::Timestamp::from_second((now + 2) as i64).unwrap().to_string())
            }
            Some("past") => json!(now - 10),
            _ => return users(hook, body),
        };
        match hook {
            "connect" => {
                Answer::Json(json!({"allow": true, "subject": "x", "expiresAt": expires_at}))
            }
            _ => Answer::allow(),
        }
    })
    .await;
    let (server, _dir) = start(&receiver, "connect_cache_seconds = 0\n", "", &[]);
    for user in ["seconds", "rfc3339"] {
        let mut client = connect(&server, "expiring", user).await;
        let connected = Instant::now();
        client.send(&pull_request("live", "expiring", true, None)).await;
        assert_eq!(client.frame().await["_tag"], "Chunk");
        assert_eq!(client.close_code().await, Some(1008), "{user}");
        let after = connected.elapsed();
        assert!(
            after >= Duration::from_millis(900) && after < Duration::from_secs(4),
            "{user}: {after:?}"
        );
    }
    let refused = WsClient::try_connect(ws_url(&server, "expiring", "past")).await.err();
    assert_eq!(refused, Some((403, "access expired".to_owned())));
    assert_eq!(
        metric_value(
            &metrics(&server).await,
            "livestore_limit_hits_total{limit=\"credential_expired\"}"
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn no_secret_or_forwarded_cookie_reaches_the_log() {
    let receiver = Receiver::start(|hook, body| match hook {
        "push" => Answer::deny("not today"),
        _ => users(hook, body),
    })
    .await;
    let config = format!(
        "[hooks]\nconnect_url = \"{}?key=url-key-secret-5150\"\npush_url = \"{}\"\n\
         forward_headers = [\"cookie\"]\nconnect_cache_seconds = 0\n",
        receiver.url("connect"),
        receiver.url("push")
    );
    let (server, _dir) = server_with_config(
        &config,
        &[("LIVESTORE_HOOKS_SECRET", SECRET), ("LIVESTORE_LOG", "trace")],
    );
    let cookie = ("cookie", "session=cookie-secret-9931");
    let mut request = ws_url(&server, "traced", "ann").into_client_request().unwrap();
    request.headers_mut().insert(cookie.0, cookie.1.parse().unwrap());
    let mut client = WsClient::try_connect(request).await.unwrap();
    client.send(&push_request("p1", "traced", events(1, 1), None)).await;
    assert_eq!(failure_message(&client.frame().await), "push refused: not today");
    assert_eq!(
        post(&http_url(&server, "traced", "eve"), &[cookie], &http_ping("traced")).await.0,
        403
    );
    receiver.set_rule(|_, _| Answer::Status(500));
    assert_eq!(
        post(&http_url(&server, "traced", "ann"), &[cookie], &http_ping("traced")).await.0,
        503
    );
    client.close().await;
    let log = server.log();
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "the log is at trace level");
    assert!(log.contains("hook refused") && log.contains("connect hook failed"), "{log}");
    for secret in [SECRET, "cookie-secret-9931", "url-key-secret-5150"] {
        assert!(!log.contains(secret), "{secret} is in the log");
    }
}

#[test]
fn hook_urls_without_a_secret_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("livestore.toml");
    std::fs::write(&config, "[hooks]\nconnect_url = \"http://127.0.0.1:9/connect\"\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_livestore"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("LIVESTORE_CONFIG", &config)
        .env_remove("LIVESTORE_HOOKS_SECRET")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("hooks.secret (LIVESTORE_HOOKS_SECRET) is required"), "{stderr}");
}
