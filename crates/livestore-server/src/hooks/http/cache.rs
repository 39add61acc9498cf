//! A short memory of connect decisions, so a client that reconnects (or polls over HTTP every second) does not cost
//! a hook call each time.
//!
//! The key is a SHA-256 digest of everything the decision could depend on: the store, the transport, the sync
//! payload, the forwarded headers and the verified credential's subject and claims (the peer's address is not part
//! of it: a hook that decides by address wants `connect_cache_seconds = 0`). Keeping only the digest means the cache
//! holds no cookie or token. An entry lives `connect_cache_seconds`, and an allow no longer than its `expiresAt`;
//! refusals are remembered too (a refused LiveStore client retries forever), failures never. At most `capacity`
//! entries: a full cache drops expired entries, then the one that would expire first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::hooks::{ConnectDecision, ConnectRequest, TransportKind};

/// Entries the cache holds at most.
pub(crate) const DEFAULT_CAPACITY: usize = 10_000;

/// What identifies a connect decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey([u8; 32]);

impl CacheKey {
    /// The digest of every field of `request` the hook sees, except the peer's address.
    pub(crate) fn of(request: &ConnectRequest) -> CacheKey {
        let mut hasher = Sha256::new();
        // Each field is length-prefixed, so no two different requests hash the same bytes.
        let mut field = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        };
        field(request.store_id.as_bytes());
        field(match request.transport {
            TransportKind::Ws => b"ws",
            TransportKind::Http => b"http",
            TransportKind::Signer => b"signer",
        });
        match &request.payload {
            Some(payload) => field(payload.get().as_bytes()),
            None => field(b"\0none"),
        }
        field(&(request.headers.len() as u64).to_be_bytes());
        for (name, value) in &request.headers {
            field(name.as_bytes());
            field(value.as_bytes());
        }
        match &request.identity {
            Some(identity) => {
                field(identity.subject.as_deref().unwrap_or("\0none").as_bytes());
                field(serde_json::Value::Object(identity.claims.clone()).to_string().as_bytes());
            }
            None => field(b"\0anonymous"),
        }
        CacheKey(hasher.finalize().into())
    }
}

#[derive(Debug)]
struct Entry {
    decision: ConnectDecision,
    until: Instant,
}

/// The cache; safe to share between tasks (a short lock, never held across an await).
#[derive(Debug)]
pub(crate) struct ConnectCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<CacheKey, Entry>>,
}

impl ConnectCache {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> ConnectCache {
        ConnectCache { ttl, capacity: capacity.max(1), entries: Mutex::new(HashMap::new()) }
    }

    /// The remembered decision for `key`, if it is still valid at `now`.
    pub(crate) fn get(&self, key: &CacheKey, now: Instant) -> Option<ConnectDecision> {
        let mut entries = self.lock();
        match entries.get(key) {
            Some(entry) if entry.until > now => Some(entry.decision.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remembers `decision`, made at `now` (`now_unix` in Unix seconds, to bound an allow by its `expiresAt`).
    pub(crate) fn insert(
        &self,
        key: CacheKey,
        decision: ConnectDecision,
        now: Instant,
        now_unix: u64,
    ) {
        let mut lifetime = self.ttl;
        if let ConnectDecision::Allow { expires_at: Some(expires_at), .. } = &decision {
            lifetime = lifetime.min(Duration::from_secs(expires_at.saturating_sub(now_unix)));
        }
        if lifetime.is_zero() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, entry| entry.until > now);
            if entries.len() >= self.capacity
                && let Some(soonest) =
                    entries.iter().min_by_key(|(_, entry)| entry.until).map(|(key, _)| *key)
            {
                entries.remove(&soonest);
            }
        }
        entries.insert(key, Entry { decision, until: now + lifetime });
    }

    /// How many entries are held (expired ones included until they are looked up or evicted).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Entry>> {
        // The map is consistent after every statement, so a panic elsewhere leaves nothing half-done.
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::value::RawValue;

    use super::*;
    use crate::identity::Identity;

    fn request(store: &str, payload: Option<&str>, cookie: Option<&str>) -> ConnectRequest {
        let mut headers = BTreeMap::new();
        if let Some(cookie) = cookie {
            headers.insert("cookie".to_owned(), cookie.to_owned());
        }
        ConnectRequest {
            store_id: store.to_owned(),
            payload: payload.map(|text| RawValue::from_string(text.to_owned()).unwrap()),
            headers,
            remote_addr: Some("127.0.0.1:5000".parse().unwrap()),
            transport: TransportKind::Ws,
            identity: None,
        }
    }

    fn allow(expires_at: Option<u64>) -> ConnectDecision {
        ConnectDecision::Allow {
            subject: Some("ann".into()),
            claims: Default::default(),
            expires_at,
        }
    }

    #[test]
    fn the_key_covers_what_the_hook_sees_except_the_address() {
        let base = CacheKey::of(&request("s", Some(r#"{"a":1}"#), Some("session=1")));
        let mut moved = request("s", Some(r#"{"a":1}"#), Some("session=1"));
        moved.remote_addr = Some("10.0.0.9:1".parse().unwrap());
        assert_eq!(CacheKey::of(&moved), base, "the address is not part of the key");
        for different in [
            request("t", Some(r#"{"a":1}"#), Some("session=1")),
            request("s", Some(r#"{"a":2}"#), Some("session=1")),
            request("s", None, Some("session=1")),
            request("s", Some(r#"{"a":1}"#), Some("session=2")),
            request("s", Some(r#"{"a":1}"#), None),
        ] {
            assert_ne!(CacheKey::of(&different), base, "{different:?}");
        }
        let mut over_http = request("s", Some(r#"{"a":1}"#), Some("session=1"));
        over_http.transport = TransportKind::Http;
        assert_ne!(CacheKey::of(&over_http), base);
        let mut verified = request("s", Some(r#"{"a":1}"#), Some("session=1"));
        verified.identity = Some(Identity { subject: Some("ann".into()), ..Identity::default() });
        let ann = CacheKey::of(&verified);
        assert_ne!(ann, base);
        verified.identity = Some(Identity { subject: Some("bob".into()), ..Identity::default() });
        assert_ne!(CacheKey::of(&verified), ann, "another verified subject");
        // Length prefixes: moving bytes from one field to the next changes the key.
        assert_ne!(
            CacheKey::of(&request("s1", Some("23"), None)),
            CacheKey::of(&request("s", Some("123"), None))
        );
    }

    #[test]
    fn entries_live_for_the_ttl_and_an_allow_no_longer_than_its_expiry() {
        let cache = ConnectCache::new(Duration::from_secs(5), 100);
        let start = Instant::now();
        let key = CacheKey::of(&request("s", None, None));
        cache.insert(key, allow(None), start, 1_000);
        assert_eq!(cache.get(&key, start + Duration::from_secs(4)), Some(allow(None)));
        assert_eq!(cache.get(&key, start + Duration::from_secs(5)), None, "the TTL is over");
        assert_eq!(cache.len(), 0, "an expired entry is dropped when looked up");

        cache.insert(key, allow(Some(1_002)), start, 1_000);
        assert!(cache.get(&key, start + Duration::from_secs(1)).is_some());
        assert_eq!(cache.get(&key, start + Duration::from_secs(2)), None, "expiresAt comes first");
        cache.insert(key, allow(Some(1_000)), start, 1_000);
        assert_eq!(cache.len(), 0, "an allow expiring now is not remembered");

        let deny = ConnectDecision::Deny { reason: "no".into() };
        cache.insert(key, deny.clone(), start, 1_000);
        assert_eq!(cache.get(&key, start + Duration::from_secs(1)), Some(deny), "refusals too");
    }

    #[test]
    fn a_full_cache_drops_expired_entries_then_the_soonest_to_expire() {
        let cache = ConnectCache::new(Duration::from_secs(10), 3);
        let start = Instant::now();
        let key = |store: &str| CacheKey::of(&request(store, None, None));
        cache.insert(key("a"), allow(Some(1_001)), start, 1_000);
        cache.insert(key("b"), allow(None), start, 1_000);
        cache.insert(key("c"), allow(None), start + Duration::from_secs(1), 1_001);
        let later = start + Duration::from_secs(2);
        cache.insert(key("d"), allow(None), later, 1_002);
        assert_eq!(cache.len(), 3, "the expired entry made room");
        cache.insert(key("e"), allow(None), later, 1_002);
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&key("b"), later).is_none(), "b would have expired first");
        for store in ["c", "d", "e"] {
            assert!(cache.get(&key(store), later).is_some(), "{store}");
        }
    }
}
