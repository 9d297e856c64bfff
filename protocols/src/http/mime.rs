//! Content types of common web files, by extension.

/// The MIME type for a file extension (case-insensitive, without the dot); text types carry
/// `charset=utf-8`.
///
/// ```
/// use ringman_protocols::http::mime_for_extension;
/// assert_eq!(mime_for_extension("JS"), Some("text/javascript; charset=utf-8"));
/// assert_eq!(mime_for_extension("nope"), None);
/// ```
pub fn mime_for_extension(ext: &str) -> Option<&'static str> {
    let mut lower = [0u8; 16];
    if ext.len() > lower.len() {
        return None;
    }
    for (d, s) in lower.iter_mut().zip(ext.bytes()) {
        *d = s.to_ascii_lowercase();
    }
    Some(match &lower[..ext.len()] {
        b"html" | b"htm" => "text/html; charset=utf-8",
        b"css" => "text/css; charset=utf-8",
        b"js" | b"mjs" => "text/javascript; charset=utf-8",
        b"json" | b"map" => "application/json",
        b"txt" | b"log" => "text/plain; charset=utf-8",
        b"md" => "text/markdown; charset=utf-8",
        b"csv" => "text/csv; charset=utf-8",
        b"xml" => "application/xml",
        b"rss" => "application/rss+xml",
        b"atom" => "application/atom+xml",
        b"webmanifest" => "application/manifest+json",
        b"wasm" => "application/wasm",
        b"pdf" => "application/pdf",
        b"zip" => "application/zip",
        b"gz" => "application/gzip",
        b"tar" => "application/x-tar",
        b"png" => "image/png",
        b"jpg" | b"jpeg" => "image/jpeg",
        b"gif" => "image/gif",
        b"webp" => "image/webp",
        b"avif" => "image/avif",
        b"svg" => "image/svg+xml",
        b"ico" => "image/x-icon",
        b"bmp" => "image/bmp",
        b"woff" => "font/woff",
        b"woff2" => "font/woff2",
        b"ttf" => "font/ttf",
        b"otf" => "font/otf",
        b"mp3" => "audio/mpeg",
        b"ogg" => "audio/ogg",
        b"wav" => "audio/wav",
        b"mp4" => "video/mp4",
        b"webm" => "video/webm",
        _ => return None,
    })
}

/// The MIME type for a path by its extension, `application/octet-stream` when unknown.
///
/// ```
/// assert_eq!(ringman_protocols::http::mime_for_path("a/b.PNG"), "image/png");
/// assert_eq!(ringman_protocols::http::mime_for_path("Makefile"), "application/octet-stream");
/// ```
pub fn mime_for_path(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.rsplit_once('.')
        .filter(|(stem, _)| !stem.is_empty())
        .and_then(|(_, ext)| mime_for_extension(ext))
        .unwrap_or("application/octet-stream")
}
