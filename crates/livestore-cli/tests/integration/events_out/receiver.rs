//! A webhook receiver written for these tests and served on 127.0.0.1, doing what a careful real one does: it
//! verifies the HMAC signature, dedups by `Idempotency-Key`, and processes each store's events in order. It also
//! checks what a receiver cannot see but the tests must: the key names exactly the batch's events, no request
//! carries a client's credentials, a store never has two requests in flight at once (from any node), and after
//! de-duplication every event arrives exactly once and in order (a batch resent under the same key must be
//! identical; an event must never come back under another key). Violations are collected, not panicked on in the
//! handler, and the tests assert there are none.
//!
//! Requests are answered from a script ([`Answer`]), then with 200: statuses, redirects, stalls longer than the
//! server's timeout, and holds that keep a request open until the test releases it. Each server node posts to its
//! own path (`/node-a`, …), so the receiver knows which node sent what.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::Notify;

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Process the batch, answer 200 (after the receiver's delay).
    Accept,
    /// Answer this status without processing.
    Status(u16),
    /// Answer this redirect to `/redirected` (which would accept) without processing.
    Redirect(u16),
    /// Process the batch, then answer 200 only after this long: past the server's timeout, so the server counts a
    /// failure and resends the batch, which must then come as a duplicate.
    Stall(Duration),
    /// Process the batch, then keep the request open until [`Receiver::release_holds`].
    Hold,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub node: String,
    pub key: String,
    pub answer: Answer,
}

/// What the receiver saw.
#[derive(Debug, Default)]
pub struct Record {
    /// Every request, in arrival order.
    pub requests: Vec<Request>,
    /// Each store's events after de-duplication, in processing order.
    pub events: BTreeMap<String, Vec<Value>>,
    /// Keys that came again after they were processed.
    pub duplicates: Vec<String>,
    /// Everything that must never happen.
    pub problems: Vec<String>,
    /// Requests that followed a redirect.
    pub redirected: usize,
    /// Requests currently held.
    pub held: usize,
    script: VecDeque<Answer>,
    delay: Duration,
    processed: HashMap<String, Vec<Value>>,
    in_flight: HashMap<String, Vec<String>>,
}

impl Record {
    /// Sequence numbers of a store's events after de-duplication.
    pub fn seq_nums(&self, store: &str) -> Vec<u64> {
        self.events
            .get(store)
            .map(|events| {
                events.iter().map(|event| event["seqNum"].as_u64().unwrap_or(0)).collect()
            })
            .unwrap_or_default()
    }

    /// Whether every store in `heads` got its events up to its head.
    pub fn has_all(&self, heads: &BTreeMap<String, u64>) -> bool {
        heads.iter().all(|(store, head)| self.seq_nums(store).last().copied().unwrap_or(0) >= *head)
    }
}

struct Shared {
    secret: Vec<u8>,
    /// A credential clients use; it must never reach the receiver in any header.
    client_token: Option<String>,
    record: Mutex<Record>,
    changed: Notify,
    release: Notify,
}

/// The receiver; dropping it stops serving.
pub struct Receiver {
    pub port: u16,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Serves on `port` (0: any free port), answering the first requests with `script`.
    pub async fn start(
        port: u16,
        secret: &str,
        client_token: Option<&str>,
        script: &[Answer],
    ) -> Receiver {
        let record = Record { script: script.iter().copied().collect(), ..Record::default() };
        let shared = Arc::new(Shared {
            secret: secret.as_bytes().to_vec(),
            client_token: client_token.map(str::to_owned),
            record: Mutex::new(record),
            changed: Notify::new(),
            release: Notify::new(),
        });
        let router = axum::Router::new()
            .route("/redirected", axum::routing::post(redirected))
            .route("/{node}", axum::routing::post(hook))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Receiver { port, shared, task }
    }

    /// The URL a node posts to.
    pub fn url(&self, node: &str) -> String {
        format!("http://127.0.0.1:{}/{node}", self.port)
    }

    /// Delays every accepted answer (a slow receiver keeps batches in flight).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.record.lock().unwrap_or_else(std::sync::PoisonError::into_inner).delay = delay;
    }

    /// Lets every held request answer 200.
    pub fn release_holds(&self) {
        self.shared.release.notify_waiters();
    }

    /// Reads the record.
    pub fn with<T>(&self, read: impl FnOnce(&Record) -> T) -> T {
        read(&self.shared.record.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Waits until `done` holds for the record; panics with `what` and the record's summary after `timeout`.
    pub async fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&Record) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            if self.with(&done) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() && !self.with(&done) {
                let summary = self.with(|record| {
                    let stores: Vec<String> = record
                        .events
                        .iter()
                        .map(|(store, events)| format!("{store}: {}", events.len()))
                        .collect();
                    format!(
                        "{} requests; {stores:?}; problems {:?}",
                        record.requests.len(),
                        record.problems
                    )
                });
                panic!("timed out waiting for {what}: {summary}");
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.release.notify_waiters();
    }
}

/// Removes a request's in-flight mark when its handler ends, however it ends.
struct InFlight {
    shared: Arc<Shared>,
    store: String,
    node: Option<String>,
}

impl InFlight {
    fn end(&mut self) {
        if let Some(node) = self.node.take() {
            let mut record =
                self.shared.record.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(nodes) = record.in_flight.get_mut(&self.store)
                && let Some(position) = nodes.iter().position(|known| *known == node)
            {
                nodes.remove(position);
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.end();
    }
}

async fn redirected(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.record.lock().unwrap_or_else(std::sync::PoisonError::into_inner).redirected += 1;
    shared.changed.notify_waiters();
    StatusCode::OK
}

async fn hook(
    State(shared): State<Arc<Shared>>,
    Path(node): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let checked = check_request(&shared, &headers, &body);
    let (store, key, events) = match checked {
        Ok(parsed) => parsed,
        Err(problem) => {
            let mut record =
                shared.record.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            record.problems.push(problem);
            drop(record);
            shared.changed.notify_waiters();
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    let (answer, delay, mut in_flight) = {
        let mut record = shared.record.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let others = record.in_flight.entry(store.clone()).or_default();
        if !others.is_empty() {
            let problem = format!(
                "store {store}: a request from {node} while one from {others:?} was in flight"
            );
            others.push(node.clone());
            record.problems.push(problem);
        } else {
            others.push(node.clone());
        }
        let answer = record.script.pop_front().unwrap_or(Answer::Accept);
        let request = Request { node: node.clone(), key: key.clone(), answer };
        record.requests.push(request);
        let in_flight = InFlight { shared: shared.clone(), store: store.clone(), node: Some(node) };
        (answer, record.delay, in_flight)
    };
    shared.changed.notify_waiters();
    match answer {
        Answer::Status(status) => StatusCode::from_u16(status).unwrap().into_response(),
        Answer::Redirect(status) => {
            (StatusCode::from_u16(status).unwrap(), [(header::LOCATION, "/redirected")])
                .into_response()
        }
        Answer::Accept => {
            process(&shared, &store, &key, events);
            tokio::time::sleep(delay).await;
            StatusCode::OK.into_response()
        }
        Answer::Stall(stall) => {
            process(&shared, &store, &key, events);
            // The server abandons this request at its timeout and may resend the batch after its backoff; this
            // request no longer counts as in flight from then on.
            in_flight.end();
            tokio::time::sleep(stall).await;
            StatusCode::OK.into_response()
        }
        Answer::Hold => {
            let released = shared.release.notified();
            process(&shared, &store, &key, events);
            shared.record.lock().unwrap_or_else(std::sync::PoisonError::into_inner).held += 1;
            shared.changed.notify_waiters();
            released.await;
            shared.record.lock().unwrap_or_else(std::sync::PoisonError::into_inner).held -= 1;
            StatusCode::OK.into_response()
        }
    }
}

/// Checks what every request must satisfy; returns its store, key and events.
fn check_request(
    shared: &Shared,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(String, String, Vec<Value>), String> {
    for forbidden in [header::AUTHORIZATION, header::COOKIE] {
        if headers.contains_key(&forbidden) {
            return Err(format!("the request carries {forbidden}"));
        }
    }
    if let Some(token) = &shared.client_token
        && headers
            .values()
            .any(|value| value.to_str().is_ok_and(|text| text.contains(token.as_str())))
    {
        return Err("a client's token was forwarded".into());
    }
    let signature = headers
        .get("x-livestore-signature")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("sha256="))
        .and_then(|hex| hex::decode(hex).ok())
        .ok_or("no X-Livestore-Signature: sha256=<hex>")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&shared.secret).unwrap();
    mac.update(body);
    mac.verify_slice(&signature).map_err(|_| "the signature does not match the body".to_owned())?;
    if headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok())
        != Some("application/json")
    {
        return Err("not application/json".into());
    }
    let payload: Value =
        serde_json::from_slice(body).map_err(|error| format!("body is not JSON: {error}"))?;
    let store = payload["storeId"].as_str().ok_or("no storeId")?.to_owned();
    let events = payload["events"].as_array().ok_or("no events")?.clone();
    if payload.as_object().map(serde_json::Map::len) != Some(2) {
        return Err("the body has fields other than storeId and events".into());
    }
    let seq = |event: Option<&Value>| event.and_then(|event| event["seqNum"].as_u64()).unwrap_or(0);
    let key =
        headers.get("idempotency-key").and_then(|value| value.to_str().ok()).unwrap_or_default();
    let expected = format!("{store}:{}-{}", seq(events.first()), seq(events.last()));
    if events.is_empty() || key != expected {
        return Err(format!("Idempotency-Key {key:?} does not name the batch {expected}"));
    }
    Ok((store, key.to_owned(), events))
}

/// Processes a batch once per key, in order per store.
fn process(shared: &Shared, store: &str, key: &str, events: Vec<Value>) {
    let mut record = shared.record.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(first) = record.processed.get(key) {
        if *first != events {
            record.problems.push(format!("key {key} came again with other events"));
        }
        record.duplicates.push(key.to_owned());
    } else {
        let last = record.seq_nums(store).last().copied().unwrap_or(0);
        let first = events.first().and_then(|event| event["seqNum"].as_u64()).unwrap_or(0);
        let contiguous = events
            .iter()
            .enumerate()
            .all(|(index, event)| event["seqNum"].as_u64() == Some(first + index as u64));
        if first != last + 1 || !contiguous {
            record.problems.push(format!(
                "store {store}: batch {key} does not continue after {last} (a gap, a reordering, or events again \
                 under a new key)"
            ));
        }
        record.processed.insert(key.to_owned(), events.clone());
        record.events.entry(store.to_owned()).or_default().extend(events);
    }
    drop(record);
    shared.changed.notify_waiters();
}
