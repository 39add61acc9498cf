//! Who a connection or request is, and until when: the one notion of identity that authentication produces and
//! hooks receive. Its own module so `auth` (which asks the connect hook) and `hooks` (which are told the identity)
//! do not depend on each other.

use std::time::{SystemTime, UNIX_EPOCH};

/// Where an identity comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdentitySource {
    /// No auth configured: everyone is anonymous.
    #[default]
    Anonymous,
    /// A static token from the configuration.
    StaticToken,
    /// A verified JWT.
    Jwt,
    /// The connect hook vouched for it.
    ConnectHook,
}

/// Who a connection or request is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    /// The subject: a JWT's `sub`, or what the connect hook said.
    pub subject: Option<String>,
    /// Verified claims: a JWT's, or the connect hook's.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The first Unix second at which it is no longer valid; `None` if it does not expire. An open WebSocket stops
    /// serving at this instant.
    pub expires_at: Option<u64>,
    /// Where it comes from.
    pub source: IdentitySource,
}

/// Seconds since the Unix epoch, for comparing with an [`Identity`]'s expiry.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

/// How long until the Unix second `expires_at` begins (zero if it has).
pub(crate) fn time_until(expires_at: u64) -> std::time::Duration {
    (UNIX_EPOCH + std::time::Duration::from_secs(expires_at))
        .duration_since(SystemTime::now())
        .unwrap_or_default()
}
