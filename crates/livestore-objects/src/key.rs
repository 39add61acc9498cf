//! Object key rules for the signer API: what a client may ask to sign, and
//! which store a key belongs to.
//!
//! Keys look like `<storeId>/<contentHash>` (livestore-filesync's
//! `<sanitizedStoreId>/<hash>`); the first segment is the store id that the
//! token authority checks. The embedded store itself does not apply these
//! rules (it is an S3 endpoint and stores any key under a hashed file name);
//! they protect the *signer*, which must never hand out a URL for a key the
//! caller does not own or that other tools could interpret as a path.

use std::fmt;

/// The longest key accepted, in bytes (S3's own limit).
pub const MAX_KEY_BYTES: usize = 1024;

/// A key that passed [`ObjectKey::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

/// Why a key was refused; the `Display` text is sent to clients after
/// `Invalid key: `.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is the empty string.
    #[error("key is empty")]
    Empty,
    /// The key is longer than [`MAX_KEY_BYTES`].
    #[error("key is {0} bytes long, the limit is 1024")]
    TooLong(usize),
    /// The key starts with `/`.
    #[error("key must not start with '/'")]
    LeadingSlash,
    /// The key contains a backslash (a path separator on some platforms).
    #[error("key must not contain a backslash")]
    Backslash,
    /// The key contains a control character (U+0000..U+001F, U+007F..U+009F).
    #[error("key must not contain control characters")]
    ControlCharacter,
    /// A segment is `.` or `..`.
    #[error("key must not contain '.' or '..' segments")]
    DotSegment,
    /// Two slashes in a row or a trailing slash: URL builders drop empty
    /// segments, so the signed URL would name a different key.
    #[error("key must not contain empty segments ('//' or a trailing '/')")]
    EmptySegment,
    /// The key has a single segment, so it names no store.
    #[error("key must look like '<storeId>/<name>'")]
    NoStoreSegment,
}

impl ObjectKey {
    /// Checks `raw` against the key rules.
    pub fn parse(raw: &str) -> Result<Self, KeyError> {
        if raw.is_empty() {
            return Err(KeyError::Empty);
        }
        if raw.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong(raw.len()));
        }
        if raw.starts_with('/') {
            return Err(KeyError::LeadingSlash);
        }
        if raw.contains('\\') {
            return Err(KeyError::Backslash);
        }
        if raw.chars().any(char::is_control) {
            return Err(KeyError::ControlCharacter);
        }
        let mut segment_count = 0usize;
        for segment in raw.split('/') {
            match segment {
                "" => return Err(KeyError::EmptySegment),
                "." | ".." => return Err(KeyError::DotSegment),
                _ => segment_count += 1,
            }
        }
        if segment_count < 2 {
            return Err(KeyError::NoStoreSegment);
        }
        Ok(Self(raw.to_owned()))
    }

    /// The store id: everything before the first `/`.
    pub fn store_id(&self) -> &str {
        // `parse` guarantees at least two non-empty segments.
        self.0.split_once('/').map_or(self.0.as_str(), |(store, _)| store)
    }

    /// The key as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// livestore-filesync's `sanitizeStoreId` (shared with the file engine). Keys carry the *sanitized* store id, so a
/// [`TokenAuthority`](crate::TokenAuthority) that knows raw store ids should compare
/// `sanitize_store_id(allowed) == store_id`.
pub use livestore_core::store_id::sanitize_store_id;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_store_prefixed_keys() {
        let key = ObjectKey::parse("store_1/0a1b").expect("valid key");
        assert_eq!(key.store_id(), "store_1");
        let unicode = ObjectKey::parse("s/日本語 ファイル/ü.txt").expect("unicode is fine");
        assert_eq!(unicode.store_id(), "s");
        assert!(ObjectKey::parse("s/a..b/c.").is_ok(), "dots inside names are fine");
    }

    #[test]
    fn rejects_each_rule() {
        let cases: &[(&str, KeyError)] = &[
            ("", KeyError::Empty),
            ("/s/a", KeyError::LeadingSlash),
            ("s\\a", KeyError::Backslash),
            ("s/a\u{0}b", KeyError::ControlCharacter),
            ("s/a\nb", KeyError::ControlCharacter),
            ("s/a\u{7f}", KeyError::ControlCharacter),
            ("s/../t/a", KeyError::DotSegment),
            ("s/./a", KeyError::DotSegment),
            ("s/..", KeyError::DotSegment),
            ("s//a", KeyError::EmptySegment),
            ("s/a/", KeyError::EmptySegment),
            ("justonesegment", KeyError::NoStoreSegment),
        ];
        for (raw, expected) in cases {
            assert_eq!(ObjectKey::parse(raw).as_ref(), Err(expected), "{raw:?}");
        }
        let long = format!("s/{}", "a".repeat(MAX_KEY_BYTES));
        assert_eq!(ObjectKey::parse(&long), Err(KeyError::TooLong(MAX_KEY_BYTES + 2)));
        let exactly = format!("s/{}", "a".repeat(MAX_KEY_BYTES - 2));
        assert!(ObjectKey::parse(&exactly).is_ok());
    }
}
