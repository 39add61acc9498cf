//! Store ids as livestore-filesync lays them out: `sanitizeStoreId`, shared by the object keys the signer checks
//! (`livestore-objects`) and the local file paths and remote keys the file engine writes (`livestore-files`), so
//! both sides always agree on a store's prefix.

/// livestore-filesync's `sanitizeStoreId`: every character outside `[A-Za-z0-9._-]` becomes `_`. Distinct raw ids
/// can share a sanitized form (`a b` and `a_b`); that is upstream's layout.
pub fn sanitize_store_id(store_id: &str) -> String {
    store_id
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || matches!(character, '.' | '_' | '-') {
                character
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_safe_characters_and_replaces_each_other_one() {
        assert_eq!(sanitize_store_id("my-store_1.x"), "my-store_1.x");
        assert_eq!(sanitize_store_id("user@example.com/ü b"), "user_example.com___b");
        assert_eq!(sanitize_store_id("store:one"), "store_one");
        assert_eq!(sanitize_store_id(""), "");
    }
}
