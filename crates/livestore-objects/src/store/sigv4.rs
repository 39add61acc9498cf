//! AWS Signature Version 4 verification for the embedded store: header auth
//! (`Authorization: AWS4-HMAC-SHA256 ...`) and query auth (presigned URLs),
//! with expiry and clock-skew checks.
//!
//! Only verification lives here. URLs are *produced* by the `rusty-s3` crate
//! in the signer, so the two sides are independent implementations and the
//! conformance suite checks that they agree (and that s3s-fs agrees too).
//!
//! The canonical URI is built from the *full* request path as received,
//! including the `/s3` mount prefix, because that is what clients sign: they
//! treat `http://host/s3` as the endpoint and sign the path they send.

use axum::http::HeaderMap;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::percent_decode_str;
use sha2::{Digest, Sha256};

/// Requests signed more than this far from the server clock are refused
/// (AWS uses the same 15 minutes).
const MAX_CLOCK_SKEW_SECONDS: i64 = 15 * 60;
/// AWS's upper bound for `X-Amz-Expires` (7 days).
const MAX_EXPIRES_SECONDS: i64 = 7 * 24 * 3600;
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// The one key pair the store accepts.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// What the signature says about the body, to be checked while streaming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PayloadCheck {
    /// `UNSIGNED-PAYLOAD` (always the case for presigned URLs).
    Unsigned,
    /// Header auth with `x-amz-content-sha256: <hex>`: the body must hash to it.
    Sha256([u8; 32]),
}

/// The parts of a request that a signature covers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SignedRequest<'a> {
    pub(crate) method: &'a str,
    /// Raw (still percent-encoded) path.
    pub(crate) path: &'a str,
    /// Raw query string without `?`.
    pub(crate) query: Option<&'a str>,
    pub(crate) headers: &'a HeaderMap,
}

/// Why a request's authentication failed; `store::S3Error` turns each into
/// the S3 error code AWS would use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    /// Neither an `Authorization` header nor `X-Amz-Signature` was sent.
    #[error(
        "Anonymous requests are not allowed: use a presigned URL or a SigV4 Authorization header"
    )]
    Anonymous,
    /// A presigned URL's parameters are missing or malformed.
    #[error("{0}")]
    MalformedQuery(String),
    /// The `Authorization` header (or its companions) is malformed.
    #[error("{0}")]
    MalformedHeader(String),
    /// The access key id is not the store's.
    #[error("The AWS Access Key Id you provided does not exist in our records.")]
    UnknownAccessKey,
    /// The credential scope names another region.
    #[error("the region '{got}' is wrong; expecting '{expected}'")]
    WrongRegion { got: String, expected: String },
    /// A presigned URL whose `X-Amz-Date + X-Amz-Expires` is in the past.
    #[error("Request has expired")]
    Expired,
    /// The signing time is too far from the server clock.
    #[error("The difference between the request time and the current time is too large.")]
    ClockSkew,
    /// A header listed in `SignedHeaders` is not in the request.
    #[error(
        "The request signature we calculated does not match the signature you provided: signed header '{0}' is missing from the request"
    )]
    MissingSignedHeader(String),
    /// The signature does not match: tampered URL, wrong secret, another key
    /// or method, or a signed header (content-length, checksum) with another value.
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your key and signing method; signed headers: {0}"
    )]
    SignatureMismatch(String),
    /// `aws-chunked` payload signing, which this store does not implement.
    #[error(
        "Streaming (aws-chunked) payload signatures are not supported; sign with UNSIGNED-PAYLOAD or the body's hex SHA-256"
    )]
    StreamingPayload,
}

/// Verifies `request` against `credentials` at time `now` (Unix seconds).
pub(crate) fn verify(
    request: SignedRequest<'_>,
    credentials: &Credentials,
    region: &str,
    now: i64,
) -> Result<PayloadCheck, AuthError> {
    let query_pairs = parse_query(request.query.unwrap_or(""));
    let has_query_signature = query_pairs.iter().any(|(name, _)| name == "X-Amz-Signature");
    if has_query_signature {
        verify_query(request, &query_pairs, credentials, region, now)
    } else if let Some(authorization) = request.headers.get(axum::http::header::AUTHORIZATION) {
        let authorization = authorization.to_str().map_err(|_| {
            AuthError::MalformedHeader("Authorization header is not valid ASCII".into())
        })?;
        verify_header(request, authorization, &query_pairs, credentials, region, now)
    } else {
        Err(AuthError::Anonymous)
    }
}

fn verify_query(
    request: SignedRequest<'_>,
    query_pairs: &[(String, String)],
    credentials: &Credentials,
    region: &str,
    now: i64,
) -> Result<PayloadCheck, AuthError> {
    let param = |name: &str| {
        query_pairs.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str()).ok_or_else(
            || AuthError::MalformedQuery(format!("Query-string authentication requires {name}")),
        )
    };
    if param("X-Amz-Algorithm")? != ALGORITHM {
        return Err(AuthError::MalformedQuery(format!("X-Amz-Algorithm must be {ALGORITHM}")));
    }
    let scope =
        CredentialScope::parse(param("X-Amz-Credential")?).map_err(AuthError::MalformedQuery)?;
    scope.check(credentials, region)?;
    let amz_date = param("X-Amz-Date")?;
    let signed_at = parse_amz_date(amz_date).ok_or_else(|| {
        AuthError::MalformedQuery("X-Amz-Date must look like 20240101T000000Z".into())
    })?;
    if !amz_date.starts_with(&scope.date) {
        return Err(AuthError::MalformedQuery(
            "X-Amz-Date does not match the credential date".into(),
        ));
    }
    let expires: i64 = param("X-Amz-Expires")?
        .parse()
        .ok()
        .filter(|seconds| (1..=MAX_EXPIRES_SECONDS).contains(seconds))
        .ok_or_else(|| {
            AuthError::MalformedQuery(
                "X-Amz-Expires must be a number of seconds between 1 and 604800".into(),
            )
        })?;
    if signed_at - now > MAX_CLOCK_SKEW_SECONDS {
        return Err(AuthError::ClockSkew);
    }
    if now > signed_at + expires {
        return Err(AuthError::Expired);
    }
    let signed_headers = param("X-Amz-SignedHeaders")?;
    let provided = param("X-Amz-Signature")?;
    let canonical_query = canonical_query(query_pairs, true);
    check_signature(
        request,
        &canonical_query,
        signed_headers,
        UNSIGNED_PAYLOAD,
        amz_date,
        &scope,
        credentials,
        provided,
    )?;
    Ok(PayloadCheck::Unsigned)
}

fn verify_header(
    request: SignedRequest<'_>,
    authorization: &str,
    query_pairs: &[(String, String)],
    credentials: &Credentials,
    region: &str,
    now: i64,
) -> Result<PayloadCheck, AuthError> {
    let malformed = |message: &str| AuthError::MalformedHeader(message.to_owned());
    let rest = authorization
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| malformed("Authorization must use AWS4-HMAC-SHA256"))?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", value)) => credential = Some(value),
            Some(("SignedHeaders", value)) => signed_headers = Some(value),
            Some(("Signature", value)) => signature = Some(value),
            _ => return Err(malformed("Authorization header has an unknown component")),
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return Err(malformed("Authorization needs Credential, SignedHeaders and Signature"));
    };
    let scope = CredentialScope::parse(credential).map_err(AuthError::MalformedHeader)?;
    scope.check(credentials, region)?;
    let amz_date = header_str(request.headers, "x-amz-date")
        .ok_or_else(|| malformed("x-amz-date header is required"))?;
    let signed_at = parse_amz_date(amz_date)
        .ok_or_else(|| malformed("x-amz-date must look like 20240101T000000Z"))?;
    if (signed_at - now).abs() > MAX_CLOCK_SKEW_SECONDS {
        return Err(AuthError::ClockSkew);
    }
    let content_sha256 = header_str(request.headers, "x-amz-content-sha256")
        .ok_or_else(|| malformed("x-amz-content-sha256 header is required"))?;
    let payload = if content_sha256 == UNSIGNED_PAYLOAD {
        PayloadCheck::Unsigned
    } else if content_sha256.starts_with("STREAMING-") {
        return Err(AuthError::StreamingPayload);
    } else {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(content_sha256, &mut digest).map_err(|_| {
            malformed("x-amz-content-sha256 must be UNSIGNED-PAYLOAD or 64 hex digits")
        })?;
        PayloadCheck::Sha256(digest)
    };
    let canonical_query = canonical_query(query_pairs, false);
    check_signature(
        request,
        &canonical_query,
        signed_headers,
        content_sha256,
        amz_date,
        &scope,
        credentials,
        signature,
    )?;
    Ok(payload)
}

/// `AK/20130524/us-east-1/s3/aws4_request`, split.
struct CredentialScope {
    access_key_id: String,
    date: String,
    region: String,
}

impl CredentialScope {
    fn parse(raw: &str) -> Result<Self, String> {
        let mut parts = raw.rsplitn(5, '/');
        let (Some(terminator), Some(service), Some(region), Some(date), Some(access_key_id)) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("credential must look like <key>/<date>/<region>/s3/aws4_request".into());
        };
        if terminator != "aws4_request" || service != "s3" || date.len() != 8 {
            return Err("credential must look like <key>/<date>/<region>/s3/aws4_request".into());
        }
        Ok(Self { access_key_id: access_key_id.into(), date: date.into(), region: region.into() })
    }

    fn check(&self, credentials: &Credentials, region: &str) -> Result<(), AuthError> {
        if !constant_time_eq(self.access_key_id.as_bytes(), credentials.access_key_id.as_bytes()) {
            return Err(AuthError::UnknownAccessKey);
        }
        if self.region != region {
            return Err(AuthError::WrongRegion {
                got: self.region.clone(),
                expected: region.into(),
            });
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn check_signature(
    request: SignedRequest<'_>,
    canonical_query: &str,
    signed_headers: &str,
    payload_hash: &str,
    amz_date: &str,
    scope: &CredentialScope,
    credentials: &Credentials,
    provided_signature: &str,
) -> Result<(), AuthError> {
    let header_names: Vec<&str> = signed_headers.split(';').collect();
    if !header_names.contains(&"host") {
        return Err(AuthError::SignatureMismatch(format!(
            "{signed_headers} (the host header must be signed)"
        )));
    }
    let mut canonical_headers = String::with_capacity(256);
    for name in &header_names {
        let value = canonical_header_value(request.headers, name)
            .ok_or_else(|| AuthError::MissingSignedHeader((*name).to_owned()))?;
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(&value);
        canonical_headers.push('\n');
    }
    let key = signing_key(&credentials.secret_access_key, &scope.date, &scope.region);
    let scope_string = format!("{}/{}/s3/aws4_request", scope.date, scope.region);
    let signature_for = |canonical_uri: &str| {
        let canonical_request = format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            request.method,
            canonical_uri,
            canonical_query,
            canonical_headers,
            signed_headers,
            payload_hash
        );
        let string_to_sign = format!(
            "{ALGORITHM}\n{amz_date}\n{scope_string}\n{}",
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        );
        hex::encode(hmac(&key, string_to_sign.as_bytes()))
    };
    let canonical_uri = canonical_uri(request.path);
    let matches = constant_time_eq(signature_for(&canonical_uri).as_bytes(), provided_signature.as_bytes())
        // Some clients sign the path exactly as they send it, without
        // re-encoding; accepting that form costs one more HMAC on failure only.
        || (canonical_uri != request.path
            && constant_time_eq(signature_for(request.path).as_bytes(), provided_signature.as_bytes()));
    if matches { Ok(()) } else { Err(AuthError::SignatureMismatch(header_names.join(", "))) }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// All values of `name`, each trimmed with inner whitespace runs collapsed,
/// joined by `,` (the SigV4 canonical header rule).
fn canonical_header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let mut joined = String::new();
    for (index, value) in values.enumerate() {
        if index > 0 {
            joined.push(',');
        }
        let text = String::from_utf8_lossy(value.as_bytes());
        let mut words = text.split_ascii_whitespace();
        if let Some(first) = words.next() {
            joined.push_str(first);
            for word in words {
                joined.push(' ');
                joined.push_str(word);
            }
        }
    }
    Some(joined)
}

fn signing_key(secret: &str, date: &str, region: &str) -> [u8; 32] {
    let date_key = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let region_key = hmac(&date_key, region.as_bytes());
    let service_key = hmac(&region_key, b"s3");
    hmac(&service_key, b"aws4_request")
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len() && left.iter().zip(right).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Splits a raw query string into decoded pairs, keeping `+` literal (S3
/// clients encode spaces as `%20`, and `+` in a signed query means `+`).
fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
            (decode(name), decode(value))
        })
        .collect()
}

fn canonical_query(pairs: &[(String, String)], skip_signature: bool) -> String {
    let mut encoded: Vec<(String, String)> = pairs
        .iter()
        .filter(|(name, _)| !(skip_signature && name == "X-Amz-Signature"))
        .map(|(name, value)| {
            (uri_encode(name.as_bytes(), true), uri_encode(value.as_bytes(), true))
        })
        .collect();
    encoded.sort();
    let mut out = String::with_capacity(256);
    for (index, (name, value)) in encoded.iter().enumerate() {
        if index > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// The AWS canonical form of a path: each segment decoded, then re-encoded
/// with only `A-Za-z0-9-._~` left as is.
pub(crate) fn canonical_uri(raw_path: &str) -> String {
    let mut out = String::with_capacity(raw_path.len() + 16);
    for (index, segment) in raw_path.split('/').enumerate() {
        if index > 0 {
            out.push('/');
        }
        let decoded: Vec<u8> = percent_decode_str(segment).collect();
        out.push_str(&uri_encode(&decoded, true));
    }
    out
}

fn uri_encode(bytes: &[u8], encode_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &byte in bytes {
        let unreserved = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~');
        if unreserved || (!encode_slash && byte == b'/') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `20130524T000000Z` -> Unix seconds.
pub(crate) fn parse_amz_date(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        digits.bytes().all(|byte| byte.is_ascii_digit()).then(|| digits.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    /// The example key pair from the AWS SigV4 documentation.
    fn aws_example() -> Credentials {
        Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        }
    }

    fn host_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("examplebucket.s3.amazonaws.com"));
        headers
    }

    const SIGNED_AT: i64 = 1_369_353_600; // 2013-05-24T00:00:00Z

    #[test]
    fn amz_date_parsing() {
        assert_eq!(parse_amz_date("20130524T000000Z"), Some(SIGNED_AT));
        assert_eq!(parse_amz_date("19700101T000001Z"), Some(1));
        assert_eq!(parse_amz_date("2013-05-24T00:00:00Z"), None);
        assert_eq!(parse_amz_date("20131324T000000Z"), None);
    }

    /// AWS documentation example "GET Object" (header auth).
    #[test]
    fn aws_header_auth_vector() {
        let mut headers = host_headers();
        headers.insert("range", HeaderValue::from_static("bytes=0-9"));
        headers.insert(
            "x-amz-content-sha256",
            HeaderValue::from_static(
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
        );
        headers.insert("x-amz-date", HeaderValue::from_static("20130524T000000Z"));
        headers.insert("authorization", HeaderValue::from_static(
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        ));
        let request =
            SignedRequest { method: "GET", path: "/test.txt", query: None, headers: &headers };
        let payload = verify(request, &aws_example(), "us-east-1", SIGNED_AT + 60).expect("valid");
        assert!(matches!(payload, PayloadCheck::Sha256(_)));
        assert_eq!(
            verify(request, &aws_example(), "us-east-1", SIGNED_AT + 3600),
            Err(AuthError::ClockSkew)
        );
        let tampered = SignedRequest { method: "PUT", ..request };
        assert!(matches!(
            verify(tampered, &aws_example(), "us-east-1", SIGNED_AT),
            Err(AuthError::SignatureMismatch(_))
        ));
    }

    /// AWS documentation example of a presigned GET URL (query auth).
    #[test]
    fn aws_query_auth_vector() {
        let headers = host_headers();
        let query = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
        let request = SignedRequest {
            method: "GET",
            path: "/test.txt",
            query: Some(query),
            headers: &headers,
        };
        let credentials = aws_example();
        assert_eq!(
            verify(request, &credentials, "us-east-1", SIGNED_AT + 10),
            Ok(PayloadCheck::Unsigned)
        );
        assert_eq!(
            verify(request, &credentials, "us-east-1", SIGNED_AT + 86_401),
            Err(AuthError::Expired)
        );
        assert!(matches!(
            verify(request, &credentials, "eu-west-1", SIGNED_AT),
            Err(AuthError::WrongRegion { .. })
        ));
        let other_key = SignedRequest { path: "/test2.txt", ..request };
        assert!(matches!(
            verify(other_key, &credentials, "us-east-1", SIGNED_AT),
            Err(AuthError::SignatureMismatch(_))
        ));
        let wrong_secret = Credentials { secret_access_key: "x".into(), ..aws_example() };
        assert!(matches!(
            verify(request, &wrong_secret, "us-east-1", SIGNED_AT),
            Err(AuthError::SignatureMismatch(_))
        ));
    }

    #[test]
    fn anonymous_and_streaming_are_refused() {
        let headers = host_headers();
        let request = SignedRequest { method: "GET", path: "/a", query: None, headers: &headers };
        assert_eq!(verify(request, &aws_example(), "us-east-1", 0), Err(AuthError::Anonymous));
    }

    #[test]
    fn canonical_uri_reencodes() {
        assert_eq!(canonical_uri("/s3/b/a%20b/%E6%97%A5"), "/s3/b/a%20b/%E6%97%A5");
        assert_eq!(canonical_uri("/s3/b/a!b(c)"), "/s3/b/a%21b%28c%29");
        assert_eq!(canonical_uri("/s3/b/a%2fb"), "/s3/b/a%2Fb");
    }

    /// Whatever key rusty-s3 presigns (any non-control text, reserved
    /// characters included), our verifier accepts it, and rejects the URL
    /// for any other key.
    mod against_rusty_s3 {
        use proptest::prelude::*;
        use rusty_s3::S3Action as _;

        use super::*;

        fn presigned(key: &str) -> url::Url {
            let bucket = rusty_s3::Bucket::new(
                "http://127.0.0.1:8787/s3".parse().expect("endpoint"),
                rusty_s3::UrlStyle::Path,
                "files",
                "us-east-1",
            )
            .expect("bucket");
            let credentials = rusty_s3::Credentials::new("AK", "SK");
            let mut action = bucket.put_object(Some(&credentials), key);
            action.headers_mut().insert("content-length", "5");
            let time = jiff::Timestamp::from_second(SIGNED_AT).expect("timestamp");
            action.sign_with_time(std::time::Duration::from_secs(900), &time)
        }

        fn check(url: &url::Url, path: &str) -> Result<PayloadCheck, AuthError> {
            let mut headers = HeaderMap::new();
            headers.insert("host", HeaderValue::from_static("127.0.0.1:8787"));
            headers.insert("content-length", HeaderValue::from_static("5"));
            let credentials =
                Credentials { access_key_id: "AK".into(), secret_access_key: "SK".into() };
            let request =
                SignedRequest { method: "PUT", path, query: url.query(), headers: &headers };
            verify(request, &credentials, "us-east-1", SIGNED_AT + 1)
        }

        proptest! {
            #[test]
            fn accepts_its_urls_and_only_for_that_key(key in "[^\\p{Cc}]{1,40}", other in "[a-z]{1,8}") {
                let url = presigned(&key);
                prop_assert_eq!(check(&url, url.path()), Ok(PayloadCheck::Unsigned));
                let moved = format!("{}{other}", url.path());
                prop_assert!(matches!(check(&url, &moved), Err(AuthError::SignatureMismatch(_))));
            }
        }
    }
}
