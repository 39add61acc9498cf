//! JWT checks beyond what `jsonwebtoken` does, run before it: size, shape, `crit`, duplicate members, nesting.
//!
//! `jsonwebtoken` deserializes the header into a struct that ignores `crit` (RFC 7515 §4.1.11 requires refusing a
//! token whose critical extensions are not understood; we understand none) and the claims into a map where a
//! duplicated claim silently takes its last value (RFC 7519 §4 allows refusing; two parsers disagreeing on which
//! copy counts is how claim smuggling works). Both are refused here.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

/// Longest token accepted. Real tokens are well under 2 KiB; a JWKS token with many claims stays under this.
pub(crate) const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Nesting allowed inside a token's header or claims.
const MAX_TOKEN_JSON_DEPTH: usize = 16;

/// Why a token's structure is refused (before its signature is looked at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StructureProblem {
    TooLarge,
    NotThreeSegments,
    BadEncoding,
    Crit,
    DuplicateMember,
    TooDeep,
}

impl StructureProblem {
    pub(crate) fn message(self) -> &'static str {
        match self {
            StructureProblem::TooLarge => "token too large",
            StructureProblem::NotThreeSegments | StructureProblem::BadEncoding => "malformed token",
            StructureProblem::Crit => {
                "token has critical header extensions (crit), which this server does not support"
            }
            StructureProblem::DuplicateMember => "token repeats a header field or claim",
            StructureProblem::TooDeep => "token claims nest too deeply",
        }
    }
}

/// Checks a compact JWS's size and shape, and that its header and claims are JSON objects without repeated members,
/// without `crit`, and shallow.
pub(crate) fn check_structure(token: &str) -> Result<(), StructureProblem> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(StructureProblem::TooLarge);
    }
    let mut segments = token.split('.');
    let (Some(header), Some(claims), Some(_signature), None) =
        (segments.next(), segments.next(), segments.next(), segments.next())
    else {
        return Err(StructureProblem::NotThreeSegments);
    };
    let header_members = object_members(header)?;
    if header_members.iter().any(|name| name == "crit") {
        return Err(StructureProblem::Crit);
    }
    object_members(claims)?;
    Ok(())
}

/// The member names of a base64url-encoded JSON object, refusing repeats.
fn object_members(segment: &str) -> Result<Vec<String>, StructureProblem> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| StructureProblem::BadEncoding)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| StructureProblem::BadEncoding)?;
    livestore_proto::json::check_depth(text, MAX_TOKEN_JSON_DEPTH)
        .map_err(|_| StructureProblem::TooDeep)?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let members = deserializer.deserialize_map(UniqueMembers).map_err(|error| {
        if error.to_string().starts_with(DUPLICATE) {
            StructureProblem::DuplicateMember
        } else {
            StructureProblem::BadEncoding
        }
    })?;
    deserializer.end().map_err(|_| StructureProblem::BadEncoding)?;
    Ok(members)
}

const DUPLICATE: &str = "duplicate member";

struct UniqueMembers;

impl<'de> Visitor<'de> for UniqueMembers {
    type Value = Vec<String>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
        let mut names: Vec<String> = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            if names.contains(&name) {
                return Err(serde::de::Error::custom(DUPLICATE));
            }
            map.next_value::<IgnoredAny>()?;
            names.push(name);
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(header: &str, claims: &str) -> String {
        format!("{}.{}.c2ln", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims))
    }

    #[test]
    fn structure_problems_are_named() {
        let ok = token(r#"{"alg":"HS256","typ":"JWT"}"#, r#"{"exp":1,"storeIds":["a"]}"#);
        assert_eq!(check_structure(&ok), Ok(()));
        let cases = [
            (token(r#"{"alg":"HS256","crit":["exp"]}"#, "{}"), StructureProblem::Crit),
            (token(r#"{"alg":"HS256","alg":"none"}"#, "{}"), StructureProblem::DuplicateMember),
            (
                token(r#"{"alg":"HS256"}"#, r#"{"storeIds":["a"],"storeIds":"*"}"#),
                StructureProblem::DuplicateMember,
            ),
            (token(r#"{"alg":"HS256"}"#, r#"["not an object"]"#), StructureProblem::BadEncoding),
            (
                token(
                    r#"{"alg":"HS256"}"#,
                    &format!("{{\"a\":{}1{}}}", "[".repeat(20), "]".repeat(20)),
                ),
                StructureProblem::TooDeep,
            ),
            ("a.b".to_owned(), StructureProblem::NotThreeSegments),
            ("a.b.c.d".to_owned(), StructureProblem::NotThreeSegments),
            ("!!.??.c".to_owned(), StructureProblem::BadEncoding),
            ("x".repeat(MAX_TOKEN_BYTES + 1), StructureProblem::TooLarge),
        ];
        for (token, problem) in cases {
            assert_eq!(check_structure(&token), Err(problem), "{token}");
        }
    }
}
