//! The little XML the embedded store speaks: escaping for responses, and a
//! tolerant reader for the one XML request body it accepts
//! (`CompleteMultipartUpload`). A full XML parser would be overkill for
//! flat documents whose shape S3 fixes.

/// Escapes text for element content.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            other => out.push(other),
        }
    }
    out
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#34;", "\"")
        .replace("&amp;", "&")
}

/// The texts of every `<tag>...</tag>` element in `document`, in order
/// (namespace prefixes and attributes on the opening tag are tolerated).
pub(crate) fn elements<'a>(document: &'a str, tag: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let close = format!("</{tag}>");
    let mut rest = document;
    while let Some(start) = find_open_tag(rest, tag) {
        let after_open = &rest[start..];
        let Some(end) = after_open.find(&close) else { break };
        found.push(&after_open[..end]);
        rest = &after_open[end + close.len()..];
    }
    found
}

/// Returns the index just past `<tag>` or `<tag attr=...>`.
fn find_open_tag(text: &str, tag: &str) -> Option<usize> {
    let open = format!("<{tag}");
    let mut offset = 0;
    while let Some(position) = text[offset..].find(&open) {
        let after_name = offset + position + open.len();
        let next = text[after_name..].chars().next()?;
        if next == '>' || next.is_whitespace() {
            let close_angle = text[after_name..].find('>')?;
            return Some(after_name + close_angle + 1);
        }
        offset = after_name;
    }
    None
}

/// One `<Part>` of a `CompleteMultipartUpload` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CompletedPart {
    pub(crate) part_number: u32,
    /// Without quotes.
    pub(crate) etag: String,
}

/// Parses a `CompleteMultipartUpload` body; `None` if it is malformed.
pub(crate) fn parse_complete_multipart(document: &str) -> Option<Vec<CompletedPart>> {
    if elements(document, "CompleteMultipartUpload").len() != 1 {
        return None;
    }
    elements(document, "Part")
        .into_iter()
        .map(|part| {
            let number = elements(part, "PartNumber").first()?.trim().parse().ok()?;
            let etag = unescape(elements(part, "ETag").first()?.trim());
            Some(CompletedPart { part_number: number, etag: etag.trim_matches('"').to_owned() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sdk_style_bodies() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Part><ETag>&quot;abc&quot;</ETag><PartNumber>1</PartNumber></Part>
  <Part><PartNumber>2</PartNumber><ETag>"def"</ETag></Part>
</CompleteMultipartUpload>"#;
        let parts = parse_complete_multipart(body).expect("valid body");
        assert_eq!(
            parts,
            vec![
                CompletedPart { part_number: 1, etag: "abc".into() },
                CompletedPart { part_number: 2, etag: "def".into() },
            ]
        );
    }

    #[test]
    fn malformed_bodies_are_none() {
        assert_eq!(parse_complete_multipart("garbage"), None);
        assert_eq!(
            parse_complete_multipart(
                "<CompleteMultipartUpload><Part><PartNumber>x</PartNumber><ETag>a</ETag></Part></CompleteMultipartUpload>"
            ),
            None
        );
        assert_eq!(escape("<a&\"b\">"), "&lt;a&amp;&quot;b&quot;&gt;");
    }
}
