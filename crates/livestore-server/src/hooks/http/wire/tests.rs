//! Unit tests of the hook wire format: the signature, request bodies, answer parsing, `expiresAt`.

use serde_json::json;

use super::*;
use crate::hooks::TransportKind;
use crate::identity::Identity;

#[test]
fn the_signature_is_hex_hmac_sha256_of_the_body() {
    // RFC 4231, test case 2.
    assert_eq!(
        signature(b"Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // The vector docs/hooks.md verifies in Node and Python.
    assert_eq!(
        signature(b"hook-secret-0123456789abcdef0123456789", br#"{"id":"1","allow":true}"#),
        "sha256=8b96038b102a0ec923d9416d7501748fdf4e7cb753c49c723543c8c32679669c"
    );
}

fn parsed(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

#[test]
fn request_bodies_carry_the_envelope_and_the_request() {
    let envelope = Envelope::new();
    assert_eq!(envelope.id.len(), 32);
    assert_ne!(Envelope::new().id, envelope.id, "ids are unique");
    let mut headers = BTreeMap::new();
    headers.insert("cookie".to_owned(), "session=1".to_owned());
    let mut request = ConnectRequest {
        store_id: "s1".into(),
        payload: Some(RawValue::from_string(r#"{"authToken":"t"}"#.into()).unwrap()),
        headers,
        remote_addr: Some("127.0.0.1:4000".parse().unwrap()),
        transport: TransportKind::Http,
        identity: None,
    };
    let body = parsed(&connect_body(&envelope, &request));
    assert_eq!(
        body,
        json!({"id": envelope.id, "sentAt": envelope.sent_at, "storeId": "s1",
               "payload": {"authToken": "t"}, "headers": {"cookie": "session=1"},
               "remoteAddr": "127.0.0.1:4000", "transport": "http"})
    );
    request.identity = Some(Identity::default());
    request.payload = None;
    let body = parsed(&connect_body(&envelope, &request));
    assert_eq!((&body["subject"], &body["claims"]), (&json!(null), &json!({})));
    assert_eq!(body["payload"], json!(null));

    let identity = Identity {
        subject: Some("ann".into()),
        claims: json!({"role": "editor"}).as_object().unwrap().clone(),
        ..Identity::default()
    };
    let event: EncodedEvent = serde_json::from_value(json!({"name": "v1.X", "args": {"id": 1},
        "seqNum": 1, "parentSeqNum": 0, "clientId": "c", "sessionId": "s"}))
    .unwrap();
    let batch = [event.clone()];
    let push = PushRequest { store_id: "s1", identity: &identity, batch: &batch };
    let body = parsed(&push_body(&envelope, &push));
    assert_eq!(body["subject"], "ann");
    assert_eq!(body["claims"], json!({"role": "editor"}));
    assert_eq!(body["batch"], json!([serde_json::from_str::<Value>(&event.to_json()).unwrap()]));
    let pull = PullRequest { store_id: "s1", identity: &identity, cursor: Some(7), live: true };
    let body = parsed(&pull_body(&envelope, &pull));
    assert_eq!(
        (&body["cursor"], &body["live"], &body["storeId"]),
        (&json!(7), &json!(true), &json!("s1"))
    );
    assert_eq!(body["id"], envelope.id);
}

#[test]
fn connect_answers_allow_or_deny() {
    assert_eq!(
        parse_connect_answer(br#"{"allow":true}"#),
        Ok(ConnectDecision::Allow { subject: None, claims: Map::new(), expires_at: None })
    );
    let full =
        br#"{"allow":true,"subject":"ann","claims":{"role":"editor"},"expiresAt":1900000000}"#;
    assert_eq!(
        parse_connect_answer(full),
        Ok(ConnectDecision::Allow {
            subject: Some("ann".into()),
            claims: json!({"role": "editor"}).as_object().unwrap().clone(),
            expires_at: Some(1_900_000_000),
        })
    );
    let nulls = br#"{"allow":true,"subject":null,"claims":null,"expiresAt":null}"#;
    assert!(matches!(parse_connect_answer(nulls), Ok(ConnectDecision::Allow { .. })));
    assert_eq!(
        parse_connect_answer(br#"{"allow":false,"reason":"not a member"}"#),
        Ok(ConnectDecision::Deny { reason: "not a member".into() })
    );
}

#[test]
fn push_and_pull_answers_allow_or_deny() {
    assert_eq!(parse_decision(br#"{"allow":true}"#), Ok(Decision::Allow));
    assert_eq!(parse_decision(b" {\"allow\" : true}\n"), Ok(Decision::Allow));
    assert_eq!(
        parse_decision(br#"{"reason":"read only","allow":false}"#),
        Ok(Decision::Deny { reason: "read only".into() })
    );
}

/// Every malformed answer is refused with a reason that does not quote it at length.
#[test]
fn garbage_is_refused_with_a_short_reason() {
    let long_key = format!(r#"{{"allow":true,"{}":1}}"#, "k".repeat(10_000));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "not JSON"),
        (b"<html>oops</html>".to_vec(), "not JSON"),
        (b"{\"allow\":true".to_vec(), "not JSON"),
        (b"{\"allow\":true}{}".to_vec(), "not JSON"),
        (vec![0xff, 0xfe], "not UTF-8"),
        (b"[true]".to_vec(), "not a JSON object"),
        (b"true".to_vec(), "not a JSON object"),
        (b"{}".to_vec(), "no \"allow\""),
        (br#"{"allow":"true"}"#.to_vec(), "not true or false"),
        (br#"{"allow":1}"#.to_vec(), "not true or false"),
        (br#"{"allow":false}"#.to_vec(), "has no \"reason\""),
        (br#"{"allow":false,"reason":"  "}"#.to_vec(), "\"reason\" is empty"),
        (br#"{"allow":false,"reason":7}"#.to_vec(), "\"reason\" is not a string"),
        (br#"{"allow":false,"reason":"a\nb"}"#.to_vec(), "control characters"),
        (
            format!(r#"{{"allow":false,"reason":"{}"}}"#, "r".repeat(513)).into_bytes(),
            "longer than 512",
        ),
        (
            br#"{"allow":false,"reason":"no","subject":"x"}"#.to_vec(),
            "unexpected field \"subject\"",
        ),
        (br#"{"allow":true,"reason":"why"}"#.to_vec(), "unexpected field \"reason\""),
        (long_key.into_bytes(), "unexpected field"),
    ];
    for (body, expected) in cases {
        let error = parse_decision(&body).unwrap_err();
        assert!(error.contains(expected), "{:?}: {error}", String::from_utf8_lossy(&body));
        assert!(error.len() < 200, "{error}");
    }
    let error =
        parse_decision(format!(r#"{{"allow":false,"reason":"{}"}}"#, "r".repeat(513)).as_bytes())
            .unwrap_err();
    assert!(!error.contains("rrrr"), "the reason is not quoted: {error}");
}

#[test]
fn connect_answers_are_checked_field_by_field() {
    for (body, expected) in [
        (r#"{"allow":true,"expires_at":5}"#, "unexpected field \"expires_at\""),
        (r#"{"allow":true,"subject":5}"#, "\"subject\" is not a string"),
        (r#"{"allow":true,"subject":""}"#, "\"subject\" is empty"),
        (r#"{"allow":true,"claims":[1]}"#, "\"claims\" is not an object"),
        (r#"{"allow":true,"expiresAt":true}"#, "neither Unix seconds nor"),
        (r#"{"allow":false,"reason":"x","claims":{}}"#, "unexpected field \"claims\""),
    ] {
        let error = parse_connect_answer(body.as_bytes()).unwrap_err();
        assert!(error.contains(expected), "{body}: {error}");
    }
}

#[test]
fn deep_and_huge_answers_are_refused_before_parsing() {
    let deep = format!(r#"{{"allow":true,"claims":{}1{}}}"#, "[".repeat(40), "]".repeat(40));
    assert!(parse_connect_answer(deep.as_bytes()).unwrap_err().contains("deeper than 32"));
    let fine =
        format!(r#"{{"allow":true,"claims":{{"a":{}1{}}}}}"#, "[".repeat(29), "]".repeat(29));
    assert!(parse_connect_answer(fine.as_bytes()).is_ok());
    let huge = format!(r#"{{"allow":true,"claims":{{"pad":"{}"}}}}"#, "x".repeat(MAX_ANSWER_BYTES));
    assert!(parse_connect_answer(huge.as_bytes()).unwrap_err().contains("exceeds 65536 bytes"));
}

#[test]
fn expires_at_is_unix_seconds_or_rfc_3339() {
    assert_eq!(parse_expires_at(&json!(null)), Ok(None));
    assert_eq!(parse_expires_at(&json!(1_900_000_000)), Ok(Some(1_900_000_000)));
    assert_eq!(parse_expires_at(&json!(1_900_000_000.75)), Ok(Some(1_900_000_000)), "cut off");
    assert_eq!(parse_expires_at(&json!("2030-01-02T03:04:05Z")), Ok(Some(1_893_553_445)));
    assert_eq!(parse_expires_at(&json!("2030-01-02T05:04:05+02:00")), Ok(Some(1_893_553_445)));
    assert_eq!(parse_expires_at(&json!("2030-01-02T03:04:05.999Z")), Ok(Some(1_893_553_445)));
    assert!(parse_expires_at(&json!(-1)).unwrap_err().contains("negative"));
    assert!(parse_expires_at(&json!(1_900_000_000_000_u64)).unwrap_err().contains("milliseconds"));
    for bad in ["2030-01-02", "2030-01-02T03:04:05", "tomorrow", "1900000000"] {
        let error = parse_expires_at(&json!(bad)).unwrap_err();
        assert!(error.contains("not an RFC 3339 time"), "{bad}: {error}");
    }
    assert!(parse_expires_at(&json!("1960-01-01T00:00:00Z")).unwrap_err().contains("before 1970"));
    assert!(parse_expires_at(&json!([1])).is_err());
}
