//! Mapping request paths to files under a document root without escaping it.

use std::path::{Path, PathBuf};

/// Why a request path cannot name a file under the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("path is not absolute")]
    NotAbsolute,
    /// A `..` segment (literal or percent-encoded).
    #[error("path climbs above the root")]
    DotDot,
    /// A NUL byte (literal or `%00`).
    #[error("NUL byte in path")]
    Nul,
    /// A backslash (literal or `%5C`), which some systems treat as a separator.
    #[error("backslash in path")]
    Backslash,
    /// Another control character.
    #[error("control character in path")]
    Control,
    /// A `%` not followed by two hex digits.
    #[error("invalid percent escape")]
    BadEscape,
    /// The decoded path is not UTF-8.
    #[error("path is not UTF-8")]
    NotUtf8,
}

/// Percent-decodes a request path (without its query) and turns it into a path relative to
/// the document root: empty and `.` segments are dropped; `..`, NUL, backslashes, control
/// characters, bad escapes and non-UTF-8 are refused, whether literal or encoded. An empty
/// result means the root itself.
///
/// The result is lexically safe; symlinks can still point outside the root, so canonicalize
/// `root.join(rel)` and check it with [`is_within`] before opening.
///
/// ```
/// use ringman_protocols::http::{resolve_path, PathError};
/// assert_eq!(resolve_path("/css/./a%20b.css").unwrap(), std::path::Path::new("css/a b.css"));
/// assert_eq!(resolve_path("/a/%2e%2E/etc"), Err(PathError::DotDot));
/// ```
pub fn resolve_path(path: &str) -> Result<PathBuf, PathError> {
    let raw = path.as_bytes();
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = if raw[i] == b'%' {
            let h = raw.get(i + 1).and_then(|&c| (c as char).to_digit(16));
            let l = raw.get(i + 2).and_then(|&c| (c as char).to_digit(16));
            match (h, l) {
                (Some(h), Some(l)) => {
                    i += 3;
                    (h * 16 + l) as u8
                }
                _ => return Err(PathError::BadEscape),
            }
        } else {
            i += 1;
            raw[i - 1]
        };
        match b {
            0 => return Err(PathError::Nul),
            b'\\' => return Err(PathError::Backslash),
            0x01..=0x1f | 0x7f => return Err(PathError::Control),
            _ => decoded.push(b),
        }
    }
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
    let mut out = PathBuf::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err(PathError::DotDot),
            s => out.push(s),
        }
    }
    Ok(out)
}

/// True when `candidate` lies in `root` or is `root` itself, comparing whole components
/// (`/srv/www2` is not within `/srv/www`). Both should be canonicalized first.
///
/// ```
/// use std::path::Path;
/// use ringman_protocols::http::is_within;
/// assert!(is_within(Path::new("/srv/www"), Path::new("/srv/www/a.html")));
/// assert!(!is_within(Path::new("/srv/www"), Path::new("/srv/www2/a.html")));
/// ```
pub fn is_within(root_canon: &Path, candidate_canon: &Path) -> bool {
    candidate_canon.starts_with(root_canon)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_attempts() {
        assert_eq!(resolve_path("/../etc/passwd"), Err(PathError::DotDot));
        assert_eq!(resolve_path("/%2e%2e/"), Err(PathError::DotDot));
        assert_eq!(resolve_path("/a/%2E%2E%2f"), Err(PathError::DotDot));
        assert_eq!(resolve_path("/a/%2E%2E%2fb"), Err(PathError::DotDot));
        assert_eq!(resolve_path("/a/.%2e"), Err(PathError::DotDot));
        assert_eq!(resolve_path("/x%00y"), Err(PathError::Nul));
        assert_eq!(resolve_path("\\..\\"), Err(PathError::NotAbsolute));
        assert_eq!(resolve_path("/\\..\\"), Err(PathError::Backslash));
        assert_eq!(resolve_path("/a%5c..%5cb"), Err(PathError::Backslash));
        assert_eq!(resolve_path("/a%0a"), Err(PathError::Control));
        assert_eq!(resolve_path("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(resolve_path("/a%2"), Err(PathError::BadEscape));
        assert_eq!(resolve_path("/%ff"), Err(PathError::NotUtf8));
        assert_eq!(resolve_path("a/b"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn ordinary_paths() {
        assert_eq!(resolve_path("/").unwrap(), PathBuf::new());
        assert_eq!(resolve_path("//a//b/").unwrap(), Path::new("a/b"));
        assert_eq!(resolve_path("/a..b/..c/.d").unwrap(), Path::new("a..b/..c/.d"));
        assert_eq!(resolve_path("/%E2%9C%93").unwrap(), Path::new("\u{2713}"));
        let rel = resolve_path("/x/y").unwrap();
        assert!(rel.is_relative());
    }

    #[test]
    fn within() {
        assert!(is_within(Path::new("/srv"), Path::new("/srv")));
        assert!(!is_within(Path::new("/srv/www"), Path::new("/srv")));
        assert!(!is_within(Path::new("/srv/www"), Path::new("/etc/passwd")));
    }
}
