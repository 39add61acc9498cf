//! Per-user tenant rules for an embedded LiveStore sync server, written as Rust hooks.
//!
//! - **Who is this?** A client's sync payload carries a key this program issued:
//!   `{"user":"ann","expires":1767229200,"key":"<hex HMAC-SHA256(secret, "ann:1767229200")>"}`
//!   ([`TenantRules::issue`]). The connect hook checks the key and its expiry; the server then closes the
//!   connection when the key expires.
//! - **Which store?** User `ann` may open only the store `user-ann`.
//! - **Which events?** Every pushed event's `args` must carry `"userId": "ann"`; a batch with any other event is
//!   refused and never written.
//!
//! The rules are plain data checks; the server does the rest (fail-closed behaviour, ordering, refusal frames).

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use livestore_server::hooks::{
    ConnectDecision, ConnectRequest, Decision, HookError, PushRequest, SyncHooks,
};
use serde_json::Value;

/// The hooks; cheap to share between connections.
pub struct TenantRules {
    secret: Vec<u8>,
}

impl std::fmt::Debug for TenantRules {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("TenantRules { secret: <redacted> }")
    }
}

/// The fewest bytes the signing secret may have.
pub const MIN_SECRET_BYTES: usize = 32;

impl TenantRules {
    /// Rules that issue and check keys signed with `secret` (at least [`MIN_SECRET_BYTES`]).
    pub fn new(secret: &[u8]) -> Result<TenantRules, String> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!("the secret must have at least {MIN_SECRET_BYTES} bytes"));
        }
        Ok(TenantRules { secret: secret.to_vec() })
    }

    /// The sync payload that lets `user` in until the Unix second `expires`.
    pub fn issue(&self, user: &str, expires: u64) -> Result<Value, String> {
        check_user(user)?;
        let key = hex::encode(self.mac(user, expires).finalize().into_bytes());
        Ok(serde_json::json!({ "user": user, "expires": expires, "key": key }))
    }

    /// Who a sync payload says the client is, if its key is genuine and not expired at `now`.
    pub fn verify(&self, payload: Option<&Value>, now: u64) -> Result<(String, u64), String> {
        let payload = payload.ok_or("no sync payload: pass the one `tenant-rules key` prints")?;
        let user = payload["user"].as_str().ok_or("the payload has no user")?;
        check_user(user)?;
        let expires = payload["expires"].as_u64().ok_or("the payload has no expires")?;
        let key = payload["key"].as_str().and_then(|key| hex::decode(key).ok());
        let key = key.ok_or("the payload has no key")?;
        // `verify_slice` compares in constant time.
        self.mac(user, expires).verify_slice(&key).map_err(|_| "the key is not valid")?;
        if expires <= now {
            return Err("the key has expired".to_owned());
        }
        Ok((user.to_owned(), expires))
    }

    fn mac(&self, user: &str, expires: u64) -> Hmac<sha2::Sha256> {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.secret)
            .expect("HMAC-SHA256 takes a key of any length");
        mac.update(format!("{user}:{expires}").as_bytes());
        mac
    }
}

/// User names become store ids, so they are held to store-id characters.
fn check_user(user: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&user.len())
        && user.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if valid { Ok(()) } else { Err("a user name is 1 to 64 letters, digits, - or _".to_owned()) }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

/// Why a batch may not be written, if it may not: the first event whose `args.userId` is not `user`.
pub fn check_batch(user: &str, batch: &[livestore_server::hooks::EncodedEvent]) -> Option<String> {
    batch.iter().find_map(|event| {
        let args: Option<Value> =
            event.args.as_ref().and_then(|args| serde_json::from_str(args.get()).ok());
        let owner = args.as_ref().and_then(|args| args["userId"].as_str());
        (owner != Some(user)).then(|| {
            format!("event {} ({}) does not carry userId {user:?}", event.seq_num, event.name)
        })
    })
}

#[async_trait::async_trait]
impl SyncHooks for TenantRules {
    fn wants_connect(&self) -> bool {
        true
    }

    fn wants_push(&self) -> bool {
        true
    }

    async fn connect(&self, request: ConnectRequest) -> Result<ConnectDecision, HookError> {
        let payload: Option<Value> =
            request.payload.as_ref().and_then(|payload| serde_json::from_str(payload.get()).ok());
        let (user, expires) = match self.verify(payload.as_ref(), unix_now()) {
            Ok(verified) => verified,
            Err(reason) => return Ok(ConnectDecision::Deny { reason }),
        };
        let own_store = format!("user-{user}");
        if request.store_id != own_store {
            let reason = format!("{user} may only open the store {own_store}");
            return Ok(ConnectDecision::Deny { reason });
        }
        let mut claims = serde_json::Map::new();
        claims.insert("tenant".to_owned(), Value::String(user.clone()));
        Ok(ConnectDecision::Allow { subject: Some(user), claims, expires_at: Some(expires) })
    }

    async fn push(&self, request: PushRequest<'_>) -> Result<Decision, HookError> {
        // The connect hook set the subject; without one (it cannot happen here) nothing may be written.
        let Some(user) = request.identity.subject.as_deref() else {
            return Ok(Decision::Deny { reason: "unknown user".to_owned() });
        };
        Ok(match check_batch(user, request.batch) {
            Some(reason) => Decision::Deny { reason },
            None => Decision::Allow,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"tenant-rules-unit-test-secret-0123456789";

    #[test]
    fn keys_name_a_user_until_they_expire() {
        let rules = TenantRules::new(SECRET).unwrap();
        let payload = rules.issue("ann", 2_000).unwrap();
        assert_eq!(rules.verify(Some(&payload), 1_999), Ok(("ann".to_owned(), 2_000)));
        assert_eq!(rules.verify(Some(&payload), 2_000).unwrap_err(), "the key has expired");
        let mut forged = payload.clone();
        forged["user"] = "bob".into();
        assert_eq!(rules.verify(Some(&forged), 1_000).unwrap_err(), "the key is not valid");
        let mut extended = payload;
        extended["expires"] = 9_999.into();
        assert_eq!(rules.verify(Some(&extended), 1_000).unwrap_err(), "the key is not valid");
        assert!(rules.verify(None, 1_000).is_err());
        assert!(rules.issue("../etc", 2_000).is_err());
        assert!(TenantRules::new(b"short").is_err());
    }

    #[test]
    fn batches_must_carry_the_users_id() {
        let event = |seq: u64, args: &str| -> livestore_server::hooks::EncodedEvent {
            serde_json::from_str(&format!(
                r#"{{"name":"v1.TodoCreated","args":{args},"seqNum":{seq},"parentSeqNum":{},"clientId":"c","sessionId":"s"}}"#,
                seq - 1
            ))
            .unwrap()
        };
        let own = event(1, r#"{"id":"t1","userId":"ann"}"#);
        assert_eq!(check_batch("ann", std::slice::from_ref(&own)), None);
        let foreign = event(2, r#"{"id":"t2","userId":"bob"}"#);
        assert_eq!(
            check_batch("ann", &[own, foreign]).unwrap(),
            "event e2 (v1.TodoCreated) does not carry userId \"ann\""
        );
        assert!(check_batch("ann", &[event(1, r#"{"id":"t1"}"#)]).is_some());
        assert!(check_batch("ann", &[event(1, "null")]).is_some());
    }
}
