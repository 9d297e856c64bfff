//! Entity-tag lists of `If-None-Match` and `If-Match` (RFC 9110 §8.8.3, §13.1.1, §13.1.2).

/// How two entity tags are compared (RFC 9110 §8.8.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityTagMatch {
    /// Both tags strong and their opaque parts equal (`If-Match`, `If-Range`).
    Strong,
    /// The opaque parts equal, either tag possibly weak (`If-None-Match`).
    Weak,
}

/// Whether the field value `field` (`*`, or a comma-separated list of entity tags) matches
/// `etag` (a complete entity tag such as `"abc"` or `W/"abc"`) under `how`. `*` matches any
/// current representation; a malformed list matches nothing.
///
/// ```
/// use ringman_protocols::http::{entity_tags_match, EntityTagMatch::{Strong, Weak}};
/// assert!(entity_tags_match(b"\"x\", W/\"abc\"", b"\"abc\"", Weak));
/// assert!(!entity_tags_match(b"W/\"abc\"", b"\"abc\"", Strong));
/// assert!(entity_tags_match(b"*", b"\"abc\"", Strong));
/// assert!(!entity_tags_match(b"abc", b"\"abc\"", Weak));
/// ```
pub fn entity_tags_match(field: &[u8], etag: &[u8], how: EntityTagMatch) -> bool {
    let (own_weak, own) = split_tag(etag);
    if how == EntityTagMatch::Strong && own_weak {
        return false;
    }
    let field = super::request::trim_ows(field);
    if field == b"*" {
        return true;
    }
    let mut rest = field;
    loop {
        // #entity-tag: elements separated by commas and optional whitespace (empty ones allowed).
        while let [b' ' | b'\t' | b',', r @ ..] = rest {
            rest = r;
        }
        if rest.is_empty() {
            return false;
        }
        let weak = rest.starts_with(b"W/");
        if weak {
            rest = &rest[2..];
        }
        let [b'"', r @ ..] = rest else { return false };
        let Some(close) = r.iter().position(|&b| b == b'"') else { return false };
        let opaque = &r[..close];
        if !opaque.iter().all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80) {
            return false;
        }
        if opaque == own && !(how == EntityTagMatch::Strong && weak) {
            return true;
        }
        rest = &r[close + 1..];
        match rest.iter().position(|&b| b != b' ' && b != b'\t') {
            Some(i) if rest[i] != b',' => return false,
            _ => {}
        }
    }
}

/// `(weak, opaque part without quotes)` of a complete entity tag.
fn split_tag(tag: &[u8]) -> (bool, &[u8]) {
    let (weak, t) = match tag.strip_prefix(b"W/") {
        Some(t) => (true, t),
        None => (false, tag),
    };
    (weak, t.strip_prefix(b"\"").and_then(|t| t.strip_suffix(b"\"")).unwrap_or(t))
}

#[cfg(test)]
mod tests {
    use super::EntityTagMatch::{Strong, Weak};
    use super::*;

    #[test]
    fn comparison_table_of_rfc_9110() {
        // RFC 9110 §8.8.3.2's example table.
        let cases: [(&[u8], &[u8], bool, bool); 4] = [
            (b"W/\"1\"", b"W/\"1\"", false, true),
            (b"W/\"1\"", b"W/\"2\"", false, false),
            (b"W/\"1\"", b"\"1\"", false, true),
            (b"\"1\"", b"\"1\"", true, true),
        ];
        for (a, b, strong, weak) in cases {
            assert_eq!(entity_tags_match(a, b, Strong), strong, "{a:?} {b:?}");
            assert_eq!(entity_tags_match(a, b, Weak), weak, "{a:?} {b:?}");
        }
    }

    #[test]
    fn lists_and_malformed_values() {
        assert!(entity_tags_match(b" \"a\" ,, \"b,c\" , \"d\"", b"\"b,c\"", Weak));
        assert!(entity_tags_match(b"\"a\",\"d\"", b"\"d\"", Strong));
        assert!(!entity_tags_match(b"\"a\" \"d\"", b"\"d\"", Weak));
        assert!(!entity_tags_match(b"\"a", b"\"a\"", Weak));
        assert!(!entity_tags_match(b"", b"\"a\"", Weak));
        assert!(!entity_tags_match(b"*", b"W/\"a\"", Strong));
        assert!(entity_tags_match(b"*", b"W/\"a\"", Weak));
    }
}
