//! A hook receiver for the tests: an axum app on 127.0.0.1 that checks each call's signature, records it, and
//! answers by a rule the test sets (and may change while the server runs).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};

/// The signing secret the tests configure (`LIVESTORE_HOOKS_SECRET`).
pub const SECRET: &str = "hooks-secret-for-integration-tests-7f3a9c";

/// How the receiver answers one call.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200 with this JSON.
    Json(Value),
    /// This status, a text body.
    Status(u16),
    /// 200 with a body that is not JSON.
    Garbage,
    /// 302 to the same hook's path on this receiver with `-allowed` appended (which allows).
    Redirect,
    /// 200 headers at once, then the body one byte every 100 ms for 5 s.
    Drip,
    /// Waits, then answers.
    Delayed(Duration, Box<Answer>),
}

impl Answer {
    pub fn allow() -> Answer {
        Answer::Json(json!({"allow": true}))
    }

    pub fn deny(reason: &str) -> Answer {
        Answer::Json(json!({"allow": false, "reason": reason}))
    }
}

type Rule = Arc<dyn Fn(&str, &Value) -> Answer + Send + Sync>;

/// One recorded call.
#[derive(Debug, Clone)]
pub struct Call {
    /// `connect`, `push` or `pull` (the URL path).
    pub hook: String,
    pub body: Value,
    pub received: Instant,
}

struct Shared {
    rule: Mutex<Rule>,
    calls: Mutex<Vec<Call>>,
    bad_signatures: Mutex<usize>,
}

/// The running receiver.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Receiver {
    /// Starts a receiver answering by `rule(hook, body)`.
    pub async fn start(rule: impl Fn(&str, &Value) -> Answer + Send + Sync + 'static) -> Receiver {
        let shared = Arc::new(Shared {
            rule: Mutex::new(Arc::new(rule)),
            calls: Mutex::new(Vec::new()),
            bad_signatures: Mutex::new(0),
        });
        let app = Router::new().route("/{hook}", post(answer)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, shared }
    }

    /// The URL of a hook on this receiver.
    pub fn url(&self, hook: &str) -> String {
        format!("http://{}/{hook}", self.addr)
    }

    /// `[hooks]` lines pointing at this receiver for connect, push and pull.
    pub fn config(&self) -> String {
        format!(
            "connect_url = \"{}\"\npush_url = \"{}\"\npull_url = \"{}\"\n",
            self.url("connect"),
            self.url("push"),
            self.url("pull")
        )
    }

    /// Changes how later calls are answered.
    pub fn set_rule(&self, rule: impl Fn(&str, &Value) -> Answer + Send + Sync + 'static) {
        *self.shared.rule.lock().unwrap() = Arc::new(rule);
    }

    /// The calls of one hook so far, in arrival order.
    pub fn calls(&self, hook: &str) -> Vec<Call> {
        let calls = self.shared.calls.lock().unwrap();
        calls.iter().filter(|call| call.hook == hook).cloned().collect()
    }

    /// Calls whose signature did not verify (the tests expect none).
    pub fn bad_signatures(&self) -> usize {
        *self.shared.bad_signatures.lock().unwrap()
    }
}

/// The hex HMAC-SHA256 signature header value for `body`.
pub fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    Path(hook): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if hook.ends_with("-allowed") {
        // A redirect target: it would allow, so a server that followed redirects would let the client in.
        return Json::answer(&json!({"allow": true}));
    }
    let signature = headers.get("x-livestore-signature").and_then(|value| value.to_str().ok());
    if signature != Some(sign(&body).as_str()) {
        *shared.bad_signatures.lock().unwrap() += 1;
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let value: Value = serde_json::from_slice(&body).expect("hook bodies are JSON");
    let rule = shared.rule.lock().unwrap().clone();
    let decided = rule(&hook, &value);
    shared.calls.lock().unwrap().push(Call {
        hook: hook.clone(),
        body: value,
        received: Instant::now(),
    });
    respond(&hook, decided).await
}

async fn respond(hook: &str, answer: Answer) -> Response {
    match answer {
        Answer::Json(value) => Json::answer(&value),
        Answer::Status(status) => {
            (StatusCode::from_u16(status).unwrap(), "the hook is having a bad day").into_response()
        }
        Answer::Garbage => "<html>this is not a decision</html>".into_response(),
        Answer::Redirect => {
            (StatusCode::FOUND, [(header::LOCATION, format!("/{hook}-allowed"))]).into_response()
        }
        Answer::Drip => {
            let bytes = futures_util::stream::unfold(0, |sent| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                (sent < 50).then(|| (Ok::<_, std::io::Error>(Bytes::from_static(b" ")), sent + 1))
            });
            Body::from_stream(bytes).into_response()
        }
        Answer::Delayed(delay, answer) => {
            tokio::time::sleep(delay).await;
            Box::pin(respond(hook, *answer)).await
        }
    }
}

struct Json;

impl Json {
    fn answer(value: &Value) -> Response {
        ([(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
    }
}
