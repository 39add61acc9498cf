//! The JSON of hook calls: request bodies with their replay guard (`id`, `sentAt`), the body's signature, and
//! strict parsing of answers.
//!
//! Answers are parsed by hand from a `serde_json::Value` rather than with derived deserializers, so that every
//! refusal says what is wrong in a few words of our own and never quotes the answer at length (a field name is cut
//! to 40 characters and escaped). Unknown fields are refused: a typo such as `expires_at` must not silently turn
//! into "no expiry". This module does no IO; `client` moves the bytes.

use std::collections::BTreeMap;

use hmac::{Hmac, KeyInit, Mac};
use livestore_proto::event::EncodedEvent;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::hooks::{ConnectDecision, ConnectRequest, Decision, PullRequest, PushRequest};

/// The header that carries the body's signature.
pub(crate) const SIGNATURE_HEADER: &str = "x-livestore-signature";
/// Largest answer read from a hook.
pub(crate) const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Deepest nesting of objects and arrays in an answer (a decision is two levels; claims get the rest).
pub(crate) const MAX_ANSWER_DEPTH: usize = 32;
/// Longest `reason` (and `subject`) a hook may give, in bytes.
pub(crate) const MAX_REASON_BYTES: usize = 512;
/// An `expiresAt` above this (the year 5138) is surely milliseconds sent by mistake.
const MAX_EXPIRES_AT_SECONDS: u64 = 100_000_000_000;

/// `sha256=<hex HMAC-SHA256 of body, keyed with secret>`: the `X-Livestore-Signature` header's value.
pub(crate) fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret)
        .expect("HMAC-SHA256 takes a key of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut text = String::with_capacity(7 + digest.len() * 2);
    text.push_str("sha256=");
    for byte in digest.iter() {
        text.push(char::from(HEX[usize::from(byte >> 4)]));
        text.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    text
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// What makes one call unique, so a receiver can refuse a replayed body: a random id and the send time.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Envelope {
    /// 32 random hex digits.
    pub(crate) id: String,
    /// Unix milliseconds.
    pub(crate) sent_at: u64,
}

impl Envelope {
    pub(crate) fn new() -> Envelope {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
        Envelope { id: format!("{:032x}", rand::random::<u128>()), sent_at: millis }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConnectBody<'a> {
    #[serde(flatten)]
    envelope: &'a Envelope,
    store_id: &'a str,
    payload: Option<&'a RawValue>,
    headers: &'a BTreeMap<String, String>,
    remote_addr: Option<String>,
    transport: crate::hooks::TransportKind,
    /// Present (possibly `null`) only when a verified credential came with the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    claims: Option<&'a Map<String, Value>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PushBody<'a> {
    #[serde(flatten)]
    envelope: &'a Envelope,
    store_id: &'a str,
    subject: Option<&'a str>,
    claims: &'a Map<String, Value>,
    /// Serialized exactly as `EncodedEvent::to_json`, the events as they travel on the wire.
    batch: &'a [EncodedEvent],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PullBody<'a> {
    #[serde(flatten)]
    envelope: &'a Envelope,
    store_id: &'a str,
    subject: Option<&'a str>,
    claims: &'a Map<String, Value>,
    cursor: Option<u64>,
    live: bool,
}

/// The connect hook's request body.
pub(crate) fn connect_body(envelope: &Envelope, request: &ConnectRequest) -> Vec<u8> {
    let identity = request.identity.as_ref();
    to_bytes(&ConnectBody {
        envelope,
        store_id: &request.store_id,
        payload: request.payload.as_deref(),
        headers: &request.headers,
        remote_addr: request.remote_addr.map(|addr| addr.to_string()),
        transport: request.transport,
        subject: identity.map(|identity| identity.subject.as_deref()),
        claims: identity.map(|identity| &identity.claims),
    })
}

/// The push hook's request body.
pub(crate) fn push_body(envelope: &Envelope, request: &PushRequest<'_>) -> Vec<u8> {
    to_bytes(&PushBody {
        envelope,
        store_id: request.store_id,
        subject: request.identity.subject.as_deref(),
        claims: &request.identity.claims,
        batch: request.batch,
    })
}

/// The pull hook's request body.
pub(crate) fn pull_body(envelope: &Envelope, request: &PullRequest<'_>) -> Vec<u8> {
    to_bytes(&PullBody {
        envelope,
        store_id: request.store_id,
        subject: request.identity.subject.as_deref(),
        claims: &request.identity.claims,
        cursor: request.cursor,
        live: request.live,
    })
}

fn to_bytes(body: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(body).expect("hook bodies are plain JSON: strings, maps, raw JSON, numbers")
}

/// Parses a connect answer: `{"allow":true,"subject"?,"claims"?,"expiresAt"?}` or `{"allow":false,"reason"}`.
/// An error is a short description of what is wrong, safe to log.
pub(crate) fn parse_connect_answer(body: &[u8]) -> Result<ConnectDecision, String> {
    let (allow, mut fields) = parse_object(body)?;
    if !allow {
        return Ok(ConnectDecision::Deny { reason: take_reason(&mut fields)? });
    }
    let subject = match fields.remove("subject") {
        None | Some(Value::Null) => None,
        Some(Value::String(subject)) => Some(check_text("subject", subject)?),
        Some(_) => return Err("\"subject\" is not a string".to_owned()),
    };
    let claims = match fields.remove("claims") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(claims)) => claims,
        Some(_) => return Err("\"claims\" is not an object".to_owned()),
    };
    let expires_at = match fields.remove("expiresAt") {
        None => None,
        Some(value) => parse_expires_at(&value)?,
    };
    refuse_leftovers(&fields, "an allowing connect answer has allow, subject, claims, expiresAt")?;
    Ok(ConnectDecision::Allow { subject, claims, expires_at })
}

/// Parses a push or pull answer: `{"allow":true}` or `{"allow":false,"reason"}`.
pub(crate) fn parse_decision(body: &[u8]) -> Result<Decision, String> {
    let (allow, mut fields) = parse_object(body)?;
    if !allow {
        return Ok(Decision::Deny { reason: take_reason(&mut fields)? });
    }
    refuse_leftovers(&fields, "an allowing answer has only allow")?;
    Ok(Decision::Allow)
}

/// `expiresAt`: Unix seconds (a number; a fraction is cut off) or an RFC 3339 string with an offset
/// (`2030-01-02T03:04:05Z`, `2030-01-02T05:04:05+02:00`); `null` means no expiry.
pub(crate) fn parse_expires_at(value: &Value) -> Result<Option<u64>, String> {
    let seconds = match value {
        Value::Null => return Ok(None),
        Value::Number(number) => match (number.as_u64(), number.as_f64()) {
            (Some(seconds), _) => seconds,
            (None, Some(seconds)) if seconds.is_finite() && seconds >= 0.0 => {
                seconds.floor() as u64
            }
            _ => return Err("\"expiresAt\" is a negative number".to_owned()),
        },
        Value::String(text) => {
            let timestamp: jiff::Timestamp = text.parse().map_err(|_| {
                format!(
                    "\"expiresAt\" {} is not an RFC 3339 time with an offset (e.g. 2030-01-02T03:04:05Z)",
                    short(text)
                )
            })?;
            u64::try_from(timestamp.as_second())
                .map_err(|_| "\"expiresAt\" is before 1970".to_owned())?
        }
        _ => return Err("\"expiresAt\" is neither Unix seconds nor an RFC 3339 string".to_owned()),
    };
    if seconds > MAX_EXPIRES_AT_SECONDS {
        return Err(format!(
            "\"expiresAt\" {seconds} is too large for Unix seconds (milliseconds sent by mistake?)"
        ));
    }
    Ok(Some(seconds))
}

/// The answer as an object and its `allow`, with `allow` removed from the fields.
fn parse_object(body: &[u8]) -> Result<(bool, Map<String, Value>), String> {
    if body.len() > MAX_ANSWER_BYTES {
        return Err(format!("the answer exceeds {MAX_ANSWER_BYTES} bytes"));
    }
    let text = std::str::from_utf8(body).map_err(|_| "the answer is not UTF-8".to_owned())?;
    livestore_proto::json::check_depth(text, MAX_ANSWER_DEPTH)
        .map_err(|_| format!("the answer nests deeper than {MAX_ANSWER_DEPTH} levels"))?;
    // serde_json's syntax errors name a position, never the text.
    let value: Value =
        serde_json::from_str(text).map_err(|error| format!("the answer is not JSON ({error})"))?;
    let Value::Object(mut fields) = value else {
        return Err("the answer is not a JSON object".to_owned());
    };
    match fields.remove("allow") {
        Some(Value::Bool(allow)) => Ok((allow, fields)),
        Some(_) => Err("\"allow\" is not true or false".to_owned()),
        None => Err("the answer has no \"allow\"".to_owned()),
    }
}

/// A refusal's `reason`, which must be the only other field.
fn take_reason(fields: &mut Map<String, Value>) -> Result<String, String> {
    let reason = match fields.remove("reason") {
        Some(Value::String(reason)) => check_text("reason", reason)?,
        Some(_) => return Err("\"reason\" is not a string".to_owned()),
        None => return Err("a refusal has no \"reason\"".to_owned()),
    };
    refuse_leftovers(fields, "a refusal has only allow and reason")?;
    Ok(reason)
}

/// A reason or subject: not blank, at most [`MAX_REASON_BYTES`], no control characters (it reaches logs and
/// clients).
fn check_text(field: &str, text: String) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err(format!("\"{field}\" is empty"));
    }
    if text.len() > MAX_REASON_BYTES {
        return Err(format!("\"{field}\" is longer than {MAX_REASON_BYTES} bytes"));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("\"{field}\" contains control characters"));
    }
    Ok(text)
}

fn refuse_leftovers(fields: &Map<String, Value>, expected: &str) -> Result<(), String> {
    match fields.keys().next() {
        Some(name) => Err(format!("unexpected field {} ({expected})", short(name))),
        None => Ok(()),
    }
}

/// At most 40 characters of peer text, quoted and escaped, for a message.
fn short(text: &str) -> String {
    let cut: String = text.chars().take(40).collect();
    if cut.len() < text.len() { format!("{cut:?}…") } else { format!("{cut:?}") }
}

#[cfg(test)]
mod tests;
