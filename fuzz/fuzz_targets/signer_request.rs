//! The signer API (`/api/...`) through the real axum router, in process: body parsing, key rules, authorization,
//! signing and the embedded backend's operations. Also `ObjectKey::parse` and `sanitize_store_id` directly.
//!
//! Invariants beyond "no panic": no 5xx; every error body is `{"error": "..."}` JSON; a token scoped to one store
//! never gets a 2xx for a key outside that store; an accepted key has at least two non-empty segments and no `.`
//! or `..` segment.

#![no_main]

#[path = "common.rs"]
mod common;

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use livestore_objects::{ObjectKey, sanitize_store_id};
use serde_json::{Value, json};

use common::{ADMIN_TOKEN, HARNESS, HOST, SCOPED_STORE, SCOPED_TOKEN};

const ROUTES: [&str; 11] = [
    "/api/health",
    "/api/v1/sign/upload",
    "/api/v1/sign/download",
    "/api/v1/delete",
    "/api/v1/head",
    "/api/v1/multipart/create",
    "/api/v1/multipart/sign-part",
    "/api/v1/multipart/complete",
    "/api/v1/multipart/abort",
    "/api/v1/multipart/parts",
    "/api/v1/unknown",
];

#[derive(Arbitrary, Debug)]
enum Auth<'a> {
    None,
    Admin,
    Scoped,
    WorkerHeader,
    Raw(&'a [u8]),
}

#[derive(Arbitrary, Debug)]
enum Payload<'a> {
    /// Bytes as they come.
    Raw(&'a [u8]),
    /// A JSON object with the fields the routes read, each present or not, typed or not.
    Fields {
        key: Option<KeyPick<'a>>,
        content_type: Option<&'a str>,
        content_length: Option<u64>,
        sha256: Option<&'a str>,
        upload_id: Option<&'a str>,
        part_number: Option<i64>,
        parts: Option<Vec<(i64, &'a str)>>,
        wrong_type: bool,
    },
}

#[derive(Arbitrary, Debug)]
enum KeyPick<'a> {
    InScopedStore(&'a str),
    Anywhere(&'a str),
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    route: u8,
    raw_path: Option<&'a str>,
    method: u8,
    auth: Auth<'a>,
    forwarded_proto: Option<&'a str>,
    payload: Payload<'a>,
}

fn body_of(payload: &Payload<'_>) -> Vec<u8> {
    match payload {
        Payload::Raw(bytes) => bytes.to_vec(),
        Payload::Fields {
            key,
            content_type,
            content_length,
            sha256,
            upload_id,
            part_number,
            parts,
            wrong_type,
        } => {
            let key = key.as_ref().map(|pick| match pick {
                KeyPick::InScopedStore(name) => format!("{SCOPED_STORE}/{name}"),
                KeyPick::Anywhere(raw) => (*raw).to_owned(),
            });
            let mut object = serde_json::Map::new();
            if let Some(key) = &key {
                object.insert("key".into(), if *wrong_type { json!(7) } else { json!(key) });
            }
            let mut put = |name: &str, value: Option<Value>| {
                if let Some(value) = value {
                    object.insert(name.into(), value);
                }
            };
            put("contentType", content_type.map(|value| json!(value)));
            put("contentLength", content_length.map(|value| json!(value)));
            put("sha256", sha256.map(|value| json!(value)));
            put("uploadId", upload_id.map(|value| json!(value)));
            put("partNumber", part_number.map(|value| json!(value)));
            put(
                "parts",
                parts.as_ref().map(|parts| {
                    json!(
                        parts
                            .iter()
                            .map(|(number, etag)| json!({"partNumber": number, "etag": etag}))
                            .collect::<Vec<_>>()
                    )
                }),
            );
            Value::Object(object).to_string().into_bytes()
        }
    }
}

fuzz_target!(|input: Input<'_>| {
    let key_text = match &input.payload {
        Payload::Raw(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Payload::Fields { key: Some(KeyPick::Anywhere(raw)), .. } => (*raw).to_owned(),
        Payload::Fields { .. } => String::new(),
    };
    if let Ok(key) = ObjectKey::parse(&key_text) {
        let segments: Vec<&str> = key.as_str().split('/').collect();
        assert!(
            segments.len() >= 2
                && segments.iter().all(|segment| !matches!(*segment, "" | "." | ".."))
        );
        assert!(!key.as_str().contains('\\') && !key.as_str().starts_with('/'));
        assert!(!key.store_id().is_empty() && !key.store_id().contains('/'));
    }
    let sanitized = sanitize_store_id(&key_text);
    assert!(
        sanitized
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    );

    let path = match input.raw_path {
        Some(raw) => format!("/api/{raw}"),
        None => ROUTES[usize::from(input.route) % ROUTES.len()].to_owned(),
    };
    let method = match input.method % 8 {
        0 => Method::GET,
        1 => Method::PUT,
        2 => Method::DELETE,
        3 => Method::OPTIONS,
        4 => Method::PATCH,
        _ => Method::POST,
    };
    let body = body_of(&input.payload);
    let sent_key = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|sent| sent.get("key").and_then(Value::as_str).map(str::to_owned));
    let mut builder =
        Request::builder().method(method.clone()).uri(path.as_str()).header("host", HOST);
    builder = match &input.auth {
        Auth::None => builder,
        Auth::Admin => builder.header("authorization", format!("Bearer {ADMIN_TOKEN}")),
        Auth::Scoped => builder.header("authorization", format!("bearer {SCOPED_TOKEN}")),
        Auth::WorkerHeader => builder.header("x-worker-auth", ADMIN_TOKEN),
        Auth::Raw(bytes) => builder.header("authorization", *bytes),
    };
    if let Some(proto) = input.forwarded_proto {
        builder = builder.header("x-forwarded-proto", proto);
    }
    let Ok(request) = builder.header("content-type", "application/json").body(Body::from(body))
    else {
        // The http crate refused the URI or a header value: not our code.
        return;
    };
    HARNESS.tick();
    let (response, bytes) = HARNESS.send(request);
    let status = response.status();
    assert!(!status.is_server_error(), "{status} for {path}: {}", String::from_utf8_lossy(&bytes));
    if status.is_client_error() {
        let error: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!("{status} body is not JSON: {}", String::from_utf8_lossy(&bytes))
        });
        assert!(error["error"].is_string(), "{error}");
    }
    let preflight = method == Method::OPTIONS;
    if status.is_success()
        && !preflight
        && matches!(input.auth, Auth::Scoped)
        && path.starts_with("/api/v1/")
    {
        let key = sent_key.expect("a successful call names a key");
        assert!(
            key.starts_with(&format!("{SCOPED_STORE}/")),
            "a token for {SCOPED_STORE} was granted {key:?} on {path}"
        );
    }
});
