//! `[auth]`: static tokens, JWTs (HS256 secret, JWKS URL or static public keys, issuer, audience, leeway) and the
//! rule that says which stores a verified identity may use.

use serde::Deserialize;

use super::secrets::Secret;

/// Authentication settings. With no credential source configured (and no connect hook), the server runs without
/// auth, on loopback only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Static bearer tokens, each valid for all stores or for a list of stores.
    pub tokens: Vec<TokenEntry>,
    /// HS256 secret for JWTs.
    pub jwt_secret: Option<Secret>,
    /// A JWKS document to verify JWTs with (RS256/384/512, ES256/384, EdDSA), as identity providers publish it.
    pub jwks_url: Option<String>,
    /// Static public keys to verify JWTs with: PEM (`-----BEGIN PUBLIC KEY-----`) or JWK JSON strings.
    pub jwt_public_keys: Vec<String>,
    /// The `iss` a JWT must carry, when set.
    pub jwt_issuer: Option<String>,
    /// The `aud` a JWT must carry (one of them, when the token lists several), when set.
    pub jwt_audience: Option<String>,
    /// Seconds of clock difference tolerated on `exp` and `nbf`.
    pub jwt_leeway_seconds: u64,
    /// Which stores a verified JWT may use: `"claim:<name>"` (a claim listing store ids, `"*"` for all) or a
    /// pattern built from claim values, such as `"user-{sub}"` or `"{org_id}-*"`. Default: `claim:` and
    /// `jwt_stores_claim`.
    pub store_access: Option<String>,
    /// The claim listing store ids when `store_access` is not set (kept for configurations that predate it).
    pub jwt_stores_claim: String,
}

/// Default `jwt_leeway_seconds`.
pub(crate) const DEFAULT_JWT_LEEWAY_SECONDS: u64 = 30;
/// Largest `jwt_leeway_seconds`: more would keep expired tokens working for minutes.
pub(crate) const MAX_JWT_LEEWAY_SECONDS: u64 = 300;

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            tokens: Vec::new(),
            jwt_secret: None,
            jwks_url: None,
            jwt_public_keys: Vec::new(),
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_seconds: DEFAULT_JWT_LEEWAY_SECONDS,
            store_access: None,
            jwt_stores_claim: "storeIds".to_owned(),
        }
    }
}

impl AuthConfig {
    /// Whether any credential source is configured.
    pub fn is_enabled(&self) -> bool {
        !self.tokens.is_empty() || self.verifies_jwts()
    }

    /// Whether JWTs can be verified (a secret, a JWKS URL or public keys).
    pub fn verifies_jwts(&self) -> bool {
        self.jwt_secret.is_some() || self.jwks_url.is_some() || !self.jwt_public_keys.is_empty()
    }

    /// The store access rule in effect.
    pub fn store_access(&self) -> Result<StoreAccess, String> {
        match &self.store_access {
            Some(rule) => StoreAccess::parse(rule),
            None => Ok(StoreAccess::Claim(self.jwt_stores_claim.clone())),
        }
    }

    /// Checks the settings that can be checked without the network.
    pub fn validate(&self) -> Result<(), String> {
        for (index, entry) in self.tokens.iter().enumerate() {
            entry.secret().check_strength(&format!("auth.tokens[{index}]"))?;
        }
        if let Some(secret) = &self.jwt_secret {
            secret.check_strength("auth.jwt_secret")?;
        }
        if let Some(url) = &self.jwks_url {
            super::hooks::check_url("auth.jwks_url", url)?;
        }
        if self.jwt_leeway_seconds > MAX_JWT_LEEWAY_SECONDS {
            return Err(format!(
                "auth.jwt_leeway_seconds = {} is out of range: allowed 0..={MAX_JWT_LEEWAY_SECONDS} s",
                self.jwt_leeway_seconds
            ));
        }
        for (name, value) in
            [("auth.jwt_issuer", &self.jwt_issuer), ("auth.jwt_audience", &self.jwt_audience)]
        {
            if value.as_deref().is_some_and(|value| value.trim().is_empty()) {
                return Err(format!("{name} is empty; leave it out to not check it"));
            }
        }
        self.store_access()?;
        Ok(())
    }
}

/// Which stores a verified identity may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreAccess {
    /// A claim that lists store ids (an array of ids, one id, or `"*"` for all).
    Claim(String),
    /// A store id built from claim values.
    Pattern(Vec<PatternPart>),
}

/// A piece of a [`StoreAccess::Pattern`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternPart {
    /// Text the store id must contain here.
    Literal(String),
    /// The value of this claim (a string or a number, made of store-id characters).
    Claim(String),
    /// Any non-empty rest of a store id (only at the end).
    Rest,
}

impl StoreAccess {
    /// Parses `claim:<name>` or a pattern such as `user-{sub}` or `{org_id}-*`.
    pub fn parse(rule: &str) -> Result<StoreAccess, String> {
        let invalid = |why: &str| {
            format!(
                "auth.store_access {rule:?} {why}; write \"claim:<claim name>\" or a pattern of store-id characters, \
                 {{claim}} placeholders and an optional final *, e.g. \"user-{{sub}}\" or \"{{org_id}}-*\""
            )
        };
        if let Some(claim) = rule.strip_prefix("claim:") {
            return if claim.is_empty() {
                Err(invalid("names no claim"))
            } else {
                Ok(StoreAccess::Claim(claim.to_owned()))
            };
        }
        let mut parts = Vec::new();
        let mut rest = rule;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('{') {
                let (name, tail) =
                    after.split_once('}').ok_or_else(|| invalid("has an unclosed {"))?;
                if name.is_empty()
                    || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                {
                    return Err(invalid("has a placeholder that is not a claim name"));
                }
                parts.push(PatternPart::Claim(name.to_owned()));
                rest = tail;
            } else if let Some(tail) = rest.strip_prefix('*') {
                if !tail.is_empty() {
                    return Err(invalid("has a * before its end"));
                }
                parts.push(PatternPart::Rest);
                rest = tail;
            } else {
                let end = rest.find(['{', '*']).unwrap_or(rest.len());
                let literal = &rest[..end];
                if !literal.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                    return Err(invalid("has characters a store id cannot have"));
                }
                parts.push(PatternPart::Literal(literal.to_owned()));
                rest = &rest[end..];
            }
        }
        if !parts.iter().any(|part| matches!(part, PatternPart::Claim(_))) {
            return Err(invalid("uses no claim"));
        }
        Ok(StoreAccess::Pattern(parts))
    }

    /// Whether an identity with `claims` may use `store_id`.
    pub fn allows(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
        store_id: &str,
    ) -> bool {
        match self {
            StoreAccess::Claim(name) => match claims.get(name) {
                Some(serde_json::Value::String(store)) => store == "*" || store == store_id,
                Some(serde_json::Value::Array(stores)) => stores.iter().any(|store| {
                    store.as_str().is_some_and(|store| store == "*" || store == store_id)
                }),
                _ => false,
            },
            StoreAccess::Pattern(parts) => {
                let mut rest = store_id;
                for part in parts {
                    match part {
                        PatternPart::Literal(text) => match rest.strip_prefix(text.as_str()) {
                            Some(tail) => rest = tail,
                            None => return false,
                        },
                        PatternPart::Claim(name) => {
                            let Some(value) = claim_text(claims, name) else { return false };
                            match rest.strip_prefix(value.as_str()) {
                                Some(tail) => rest = tail,
                                None => return false,
                            }
                        }
                        PatternPart::Rest => return !rest.is_empty(),
                    }
                }
                rest.is_empty()
            }
        }
    }
}

/// A claim's value as text, if it is a non-empty string or a number made only of store-id characters (so a claim
/// value can never smuggle in a pattern of its own).
fn claim_text(claims: &serde_json::Map<String, serde_json::Value>, name: &str) -> Option<String> {
    let text = match claims.get(name)? {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Number(number) => number.to_string(),
        _ => return None,
    };
    let valid =
        !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    valid.then_some(text)
}

/// A static token, either bare (all stores) or with the stores it may use.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum TokenEntry {
    /// A token valid for every store.
    AllStores(Secret),
    /// A token valid for the listed stores only.
    Scoped {
        /// The token.
        token: Secret,
        /// Store ids it may use; `"*"` means all.
        stores: Vec<String>,
    },
}

impl TokenEntry {
    /// The token text.
    pub fn token(&self) -> &str {
        &self.secret().0
    }

    /// The token as a secret.
    pub fn secret(&self) -> &Secret {
        match self {
            TokenEntry::AllStores(secret) | TokenEntry::Scoped { token: secret, .. } => secret,
        }
    }

    /// Whether the token may use `store_id`.
    pub fn allows_store(&self, store_id: &str) -> bool {
        match self {
            TokenEntry::AllStores(_) => true,
            TokenEntry::Scoped { stores, .. } => {
                stores.iter().any(|store| store == "*" || store == store_id)
            }
        }
    }
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenEntry::AllStores(_) => formatter.write_str("TokenEntry(<redacted>, all stores)"),
            TokenEntry::Scoped { stores, .. } => {
                write!(formatter, "TokenEntry(<redacted>, stores: {stores:?})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(value: &serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn store_access_rules() {
        let listed = StoreAccess::parse("claim:storeIds").unwrap();
        assert!(listed.allows(&claims(&json!({"storeIds": ["a", "b"]})), "b"));
        assert!(listed.allows(&claims(&json!({"storeIds": "*"})), "z"));
        assert!(!listed.allows(&claims(&json!({"storeIds": ["a"]})), "b"));
        assert!(!listed.allows(&claims(&json!({})), "a"));
        let per_user = StoreAccess::parse("user-{sub}").unwrap();
        assert!(per_user.allows(&claims(&json!({"sub": "alice"})), "user-alice"));
        assert!(!per_user.allows(&claims(&json!({"sub": "alice"})), "user-alice2"));
        assert!(!per_user.allows(&claims(&json!({"sub": "alice"})), "user-bob"));
        assert!(
            !per_user.allows(&claims(&json!({"sub": "a|b"})), "user-a|b"),
            "claim values are store ids"
        );
        assert!(per_user.allows(&claims(&json!({"sub": 42})), "user-42"));
        let per_org = StoreAccess::parse("{org_id}-*").unwrap();
        assert!(per_org.allows(&claims(&json!({"org_id": "acme"})), "acme-todos"));
        assert!(!per_org.allows(&claims(&json!({"org_id": "acme"})), "acme-"));
        assert!(
            !per_org.allows(&claims(&json!({"org_id": "acme"})), "acmex-todos"),
            "the dash is literal"
        );
        assert!(!per_org.allows(&claims(&json!({"org_id": ""})), "-todos"));
        for bad in ["claim:", "user-*-x", "{sub", "user/{sub}", "plain-store", "{a b}"] {
            assert!(StoreAccess::parse(bad).is_err(), "{bad}");
        }
    }
}
