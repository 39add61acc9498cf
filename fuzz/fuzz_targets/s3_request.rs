//! The embedded object store (`/s3/...`) through the real axum router, in process.
//!
//! Two kinds of input: raw requests (method, path, query and headers as given), which exercise SigV4 query and
//! header parsing and every refusal before authentication; and requests presigned by `rusty-s3` with the store's
//! own credentials (optionally tampered with), which get past authentication and exercise the operations: PUT
//! bodies with checksum and length headers, `Range` and `If-None-Match` on GET, multipart XML bodies, upload ids
//! and part numbers, odd keys.
//!
//! Invariants beyond "no panic": no 500; a 206 has a `Content-Range` that matches its body; a presigned URL whose
//! path or query was tampered with is refused.

#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::Mutex;
use std::time::Duration;

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use common::{HARNESS, HOST};

const SEEDED_KEY: &str = "seed/object";
const SEEDED_MULTIPART_KEY: &str = "seed/multipart";

const HEADER_NAMES: [&str; 18] = [
    "range",
    "if-none-match",
    "content-length",
    "content-type",
    "content-md5",
    "x-amz-checksum-sha256",
    "x-amz-checksum-crc32",
    "x-amz-content-sha256",
    "x-amz-date",
    "authorization",
    "transfer-encoding",
    "x-amz-copy-source",
    "x-amz-checksum-mode",
    "host",
    "origin",
    "access-control-request-method",
    "x-amz-security-token",
    "expect",
];

#[derive(Arbitrary, Debug)]
enum Action {
    Get,
    Head,
    Put,
    Delete,
    CreateMultipart,
    UploadPart(u16),
    Complete(Vec<u8>),
    Abort,
    ListParts,
}

#[derive(Arbitrary, Debug)]
enum Tamper<'a> {
    AppendQuery(&'a str),
    ReplacePath(&'a str),
    ChangeMethod,
}

#[derive(Arbitrary, Debug)]
enum Mode<'a> {
    Raw {
        method: u8,
        path: &'a str,
        query: Option<&'a str>,
    },
    Signed {
        action: Action,
        key: Option<&'a str>,
        upload_id: Option<&'a str>,
        expires_seconds: u16,
        tamper: Option<Tamper<'a>>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    mode: Mode<'a>,
    headers: Vec<(u8, &'a [u8])>,
    body: &'a [u8],
}

struct Signing {
    bucket: Bucket,
    credentials: Credentials,
}

static SIGNING: std::sync::LazyLock<Signing> = std::sync::LazyLock::new(|| {
    let store = &HARNESS.store;
    let endpoint = format!("http://{HOST}/s3/").parse().expect("endpoint URL");
    Signing {
        bucket: Bucket::new(endpoint, UrlStyle::Path, store.bucket.clone(), store.region.clone())
            .expect("bucket"),
        credentials: Credentials::new(store.access_key_id.clone(), store.secret_access_key.clone()),
    }
});

/// The upload id of the seeded multipart upload; empty until seeded (and again after a wipe).
static SEEDED_UPLOAD: Mutex<String> = Mutex::new(String::new());

fn decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}

fn path_and_query(url: &url::Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

fn send(
    method: Method,
    target: &str,
    headers: &[(&str, &[u8])],
    body: Vec<u8>,
) -> Option<(StatusCode, Vec<u8>, axum::http::HeaderMap)> {
    let mut builder = Request::builder().method(method).uri(target).header("host", HOST);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Body::from(body)).ok()?;
    let (response, bytes) = HARNESS.send(request);
    Some((response.status(), bytes, response.headers().clone()))
}

/// Stores the seeded object and opens the seeded multipart upload with one small part.
fn seed() {
    let signing = &*SIGNING;
    let week = Duration::from_secs(3600);
    let put = signing.bucket.put_object(Some(&signing.credentials), SEEDED_KEY).sign(week);
    let body = vec![b'x'; 1000];
    let (status, ..) =
        send(Method::PUT, &path_and_query(&put), &[("content-length", b"1000")], body)
            .expect("seed PUT");
    assert_eq!(status, StatusCode::OK);
    let create = signing
        .bucket
        .create_multipart_upload(Some(&signing.credentials), SEEDED_MULTIPART_KEY)
        .sign(week);
    let (status, bytes, _) =
        send(Method::POST, &path_and_query(&create), &[], Vec::new()).expect("seed create");
    assert_eq!(status, StatusCode::OK);
    let created =
        rusty_s3::actions::CreateMultipartUpload::parse_response(&String::from_utf8_lossy(&bytes))
            .expect("create response parses");
    let upload_id = created.upload_id().to_owned();
    let part = signing
        .bucket
        .upload_part(Some(&signing.credentials), SEEDED_MULTIPART_KEY, 1, &upload_id)
        .sign(week);
    let (status, ..) =
        send(Method::PUT, &path_and_query(&part), &[("content-length", b"10")], vec![b'p'; 10])
            .expect("seed part");
    assert_eq!(status, StatusCode::OK);
    *SEEDED_UPLOAD.lock().expect("seed lock") = upload_id;
}

fuzz_target!(|input: Input<'_>| {
    if HARNESS.tick() || SEEDED_UPLOAD.lock().expect("seed lock").is_empty() {
        seed();
    }
    let seeded_upload = SEEDED_UPLOAD.lock().expect("seed lock").clone();
    let mut headers: Vec<(&str, &[u8])> = input
        .headers
        .iter()
        .map(|(index, value)| (HEADER_NAMES[usize::from(*index) % HEADER_NAMES.len()], *value))
        .filter(|(name, _)| *name != "host")
        .collect();
    let body = input.body.to_vec();
    let length_text = body.len().to_string();
    let (method, target, tampered) = match &input.mode {
        Mode::Raw { method, path, query } => {
            let method = match method % 7 {
                0 => Method::GET,
                1 => Method::PUT,
                2 => Method::POST,
                3 => Method::DELETE,
                4 => Method::HEAD,
                5 => Method::OPTIONS,
                _ => Method::PATCH,
            };
            let target = match query {
                Some(query) => format!("/s3/{path}?{query}"),
                None => format!("/s3/{path}"),
            };
            (method, target, false)
        }
        Mode::Signed { action, key, upload_id, expires_seconds, tamper } => {
            let signing = &*SIGNING;
            let credentials = Some(&signing.credentials);
            let bucket = &signing.bucket;
            let expires = Duration::from_secs(u64::from(*expires_seconds % 3600) + 1);
            let key = key.unwrap_or(match action {
                Action::UploadPart(_) | Action::Complete(_) | Action::Abort | Action::ListParts => {
                    SEEDED_MULTIPART_KEY
                }
                _ => SEEDED_KEY,
            });
            let upload_id = upload_id.unwrap_or(seeded_upload.as_str());
            let (method, url) = match action {
                Action::Get => (Method::GET, bucket.get_object(credentials, key).sign(expires)),
                Action::Head => (Method::HEAD, bucket.head_object(credentials, key).sign(expires)),
                Action::Put => (Method::PUT, bucket.put_object(credentials, key).sign(expires)),
                Action::Delete => {
                    (Method::DELETE, bucket.delete_object(credentials, key).sign(expires))
                }
                Action::CreateMultipart => {
                    (Method::POST, bucket.create_multipart_upload(credentials, key).sign(expires))
                }
                Action::UploadPart(number) => (
                    Method::PUT,
                    bucket.upload_part(credentials, key, *number, upload_id).sign(expires),
                ),
                Action::Complete(_) => (
                    Method::POST,
                    bucket
                        .complete_multipart_upload(credentials, key, upload_id, std::iter::empty())
                        .sign(expires),
                ),
                Action::Abort => (
                    Method::DELETE,
                    bucket.abort_multipart_upload(credentials, key, upload_id).sign(expires),
                ),
                Action::ListParts => {
                    (Method::GET, bucket.list_parts(credentials, key, upload_id).sign(expires))
                }
            };
            let mut target = path_and_query(&url);
            let mut method = method;
            let mut tampered = false;
            match tamper {
                None => {}
                Some(Tamper::AppendQuery(extra)) => {
                    target.push('&');
                    target.push_str(extra);
                    // Only parameters the signature covers count: a second X-Amz-Signature is ignored by design,
                    // and a fragment (`#...`) never reaches the server.
                    let extra = extra.split('#').next().unwrap_or_default();
                    tampered = extra.split('&').filter(|pair| !pair.is_empty()).any(|pair| {
                        decoded(pair.split_once('=').map_or(pair, |(name, _)| name))
                            != "X-Amz-Signature"
                    });
                }
                Some(Tamper::ReplacePath(path)) => {
                    let query = url.query().unwrap_or("");
                    let new_path = format!("/s3/{path}");
                    // Another spelling of the same path names the same object; only another path is tampering.
                    let sent_path = new_path.split(['?', '#']).next().unwrap_or_default();
                    tampered = decoded(sent_path) != decoded(url.path());
                    target = format!("{new_path}?{query}");
                }
                Some(Tamper::ChangeMethod) => {
                    method = if method == Method::GET { Method::DELETE } else { Method::GET };
                    tampered = true;
                }
            }
            if matches!(action, Action::Put | Action::UploadPart(_))
                && !headers.iter().any(|(name, _)| *name == "content-length")
            {
                headers.push(("content-length", length_text.as_bytes()));
            }
            (method, target, tampered)
        }
    };
    let body = match &input.mode {
        Mode::Signed { action: Action::Complete(xml), .. } => xml.clone(),
        _ => body,
    };
    let Some((status, bytes, response_headers)) = send(method.clone(), &target, &headers, body)
    else {
        // The http crate refused the URI or a header: not our code.
        return;
    };
    assert_ne!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{method} {target}: {}",
        String::from_utf8_lossy(&bytes)
    );
    if tampered {
        assert!(!status.is_success(), "tampered request {method} {target} succeeded with {status}");
    }
    if status == StatusCode::PARTIAL_CONTENT {
        let range = response_headers
            .get("content-range")
            .and_then(|value| value.to_str().ok())
            .expect("206 has Content-Range");
        let (span, _) = range.trim_start_matches("bytes ").split_once('/').expect("start-end/size");
        let (start, end) = span.split_once('-').expect("start-end");
        let (start, end): (u64, u64) = (start.parse().unwrap(), end.parse().unwrap());
        assert_eq!(end - start + 1, bytes.len() as u64, "{range}");
    }
});
