//! Limits on JSON a peer sends: how deeply it may nest.
//!
//! Events keep their `args` as raw JSON (they are echoed byte for byte), and raw JSON is not limited by serde_json's
//! recursion guard, so without this check a client could store 100,000 levels of `[[[…]]]` and have every puller's
//! decoder recurse through them. Every decoder of peer input calls [`check_depth`] first.

use crate::error::ProtoError;

/// Deepest nesting of objects and arrays accepted in a frame, counting the envelope's own levels (a pushed event's
/// `args` sit five levels down). The same as serde_json's recursion limit for typed values.
pub const MAX_JSON_DEPTH: usize = 128;

/// Refuses `text` if its objects and arrays nest deeper than `max` levels. Linear in the text, no allocation; it does
/// not validate the JSON otherwise (the decoder that follows does).
pub fn check_depth(text: &str, max: usize) -> Result<(), ProtoError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in text.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(ProtoError::TooDeep { max });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        check_depth(r#"{"a":[1,{"b":"[[[[[[[[["}]}"#, 3).unwrap();
        check_depth(r#"{"a":"\"[[[[\\"}"#, 1).unwrap();
        let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        assert!(matches!(
            check_depth(&deep, MAX_JSON_DEPTH),
            Err(ProtoError::TooDeep { max: 128 })
        ));
        let fine = format!("{}{}", "[".repeat(128), "]".repeat(128));
        check_depth(&fine, MAX_JSON_DEPTH).unwrap();
    }
}
