//! Response building: status line, headers, cookies, body, chunked streaming, Server-Sent
//! Events, and pre-encoded static responses.

use std::borrow::Cow;
use std::time::SystemTime;

use super::date::http_date;
use super::error::{itoa_buf, reason_phrase};

/// Anything that can become a response body without copying when it is borrowed.
pub trait IntoBody<'a> {
    /// The body bytes.
    fn into_body(self) -> Cow<'a, [u8]>;
}

impl<'a> IntoBody<'a> for &'a [u8] {
    fn into_body(self) -> Cow<'a, [u8]> {
        Cow::Borrowed(self)
    }
}
impl<'a, const N: usize> IntoBody<'a> for &'a [u8; N] {
    fn into_body(self) -> Cow<'a, [u8]> {
        Cow::Borrowed(self)
    }
}
impl<'a> IntoBody<'a> for &'a str {
    fn into_body(self) -> Cow<'a, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}
impl<'a> IntoBody<'a> for Vec<u8> {
    fn into_body(self) -> Cow<'a, [u8]> {
        Cow::Owned(self)
    }
}
impl<'a> IntoBody<'a> for String {
    fn into_body(self) -> Cow<'a, [u8]> {
        Cow::Owned(self.into_bytes())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delimit {
    /// `Content-Length` from the body (unless set by hand).
    Length,
    /// `Transfer-Encoding: chunked`; the body, if any, is the first chunk.
    Chunked,
    /// No length: the body runs until the connection closes (Server-Sent Events).
    Close,
}

/// An HTTP/1.1 response under construction.
///
/// `write_to` adds `Content-Length` (unless set by hand, chunked, streaming, or a status
/// without content: 1xx/204/304). Header fields whose name is not a token or whose value holds
/// CR, LF or NUL are skipped, so user data cannot inject header lines. `Connection` is left
/// to the caller: add `Connection: close` when [`Request::keep_alive`](super::Request::keep_alive)
/// is false (and close after sending), `Connection: keep-alive` for a persistent HTTP/1.0
/// client.
///
/// ```
/// use ringman_protocols::http::{Cookie, Response};
/// let mut out = Vec::new();
/// Response::new(404)
///     .header("Content-Type", "text/plain")
///     .cookie(&Cookie::new("sid", "abc").http_only(true).path("/"))
///     .body("no")
///     .write_to(&mut out);
/// assert_eq!(
///     out,
///     b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nSet-Cookie: sid=abc; Path=/; HttpOnly\r\nContent-Length: 2\r\n\r\nno"
/// );
/// ```
#[derive(Debug, Clone)]
pub struct Response<'a> {
    status: u16,
    reason: Option<Cow<'a, str>>,
    date: Option<[u8; 29]>,
    headers: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    body: Cow<'a, [u8]>,
    delimit: Delimit,
}

impl Default for Response<'_> {
    fn default() -> Self {
        Response::new(200)
    }
}

impl<'a> Response<'a> {
    /// An empty response with `status` and its standard reason phrase.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            reason: None,
            date: None,
            headers: Vec::new(),
            body: Cow::Borrowed(b""),
            delimit: Delimit::Length,
        }
    }

    /// `200 OK` with `Content-Type: text/html;charset=utf-8` and `body` (Workerman's default
    /// response for a string).
    pub fn html(body: impl IntoBody<'a>) -> Self {
        Response::new(200).header("Content-Type", "text/html;charset=utf-8").body(body)
    }

    /// `200 OK` headers for a Server-Sent Events stream: `Content-Type: text/event-stream`,
    /// `Cache-Control: no-cache`, no length (events follow, written with [`sse_event`]; the
    /// stream ends when the connection closes).
    pub fn event_stream() -> Self {
        let mut r = Response::new(200).header("Content-Type", "text/event-stream").header("Cache-Control", "no-cache");
        r.delimit = Delimit::Close;
        r
    }

    /// Sets the status code (the reason phrase follows unless set with [`reason`](Self::reason)).
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// The status code.
    pub fn status_code(&self) -> u16 {
        self.status
    }

    /// Overrides the reason phrase (CR/LF are dropped on output).
    pub fn reason(mut self, reason: impl Into<Cow<'a, str>>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Adds a header field (repeatable; see [`set_header`](Self::set_header) to replace).
    pub fn header(mut self, name: impl Into<Cow<'a, str>>, value: impl Into<Cow<'a, str>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces every field named `name` (case-insensitive) by one with `value`.
    pub fn set_header(mut self, name: impl Into<Cow<'a, str>>, value: impl Into<Cow<'a, str>>) -> Self {
        let name = name.into();
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        self.headers.push((name, value.into()));
        self
    }

    /// Removes every field named `name` (case-insensitive).
    pub fn remove_header(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    /// The first value of the field named `name` (case-insensitive).
    pub fn get_header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| &**v)
    }

    /// Adds a `Date` field with a value from [`http_date`] (or a [`DateCache`](super::DateCache)).
    pub fn date(mut self, date: &[u8; 29]) -> Self {
        self.date = Some(*date);
        self
    }

    /// Adds a `Set-Cookie` field (skipped when the cookie name is not a token).
    pub fn cookie(self, cookie: &Cookie<'_>) -> Self {
        match cookie.to_header_value() {
            Some(v) => self.header("Set-Cookie", v),
            None => self,
        }
    }

    /// Sets the body.
    pub fn body(mut self, body: impl IntoBody<'a>) -> Self {
        self.body = body.into_body();
        self
    }

    /// The body.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }

    /// Sends the body with `Transfer-Encoding: chunked`: `write_to` writes the head and the
    /// body (if any) as the first chunk; continue with [`chunk`] and end with [`last_chunk`].
    pub fn chunked(mut self) -> Self {
        self.delimit = Delimit::Chunked;
        self
    }

    fn has_content(&self) -> bool {
        !(self.status < 200 || self.status == 204 || self.status == 304)
    }

    /// Appends the head: status line, fields, the framing field, the empty line.
    /// `write_head_to` alone is the answer to a `HEAD` request.
    pub fn write_head_to(&self, out: &mut Vec<u8>) {
        out.reserve(64 + self.headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>());
        out.extend_from_slice(b"HTTP/1.1 ");
        let status = self.status.clamp(100, 999);
        out.extend_from_slice(itoa_buf(u64::from(status)).as_bytes());
        out.push(b' ');
        match &self.reason {
            Some(r) => out.extend(r.bytes().filter(|&b| b != b'\r' && b != b'\n')),
            None => out.extend_from_slice(reason_phrase(status).as_bytes()),
        }
        out.extend_from_slice(b"\r\n");
        if let Some(d) = &self.date {
            out.extend_from_slice(b"Date: ");
            out.extend_from_slice(d);
            out.extend_from_slice(b"\r\n");
        }
        let mut framed = false;
        for (n, v) in &self.headers {
            if !is_token(n.as_bytes()) || v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                continue;
            }
            framed |= n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding");
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !framed && self.has_content() {
            match self.delimit {
                Delimit::Length => {
                    out.extend_from_slice(b"Content-Length: ");
                    out.extend_from_slice(itoa_buf(self.body.len() as u64).as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                Delimit::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
                Delimit::Close => {}
            }
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Appends the whole response (head and body) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        self.write_head_to(out);
        if !self.has_content() {
            return;
        }
        match self.delimit {
            Delimit::Chunked => chunk(&self.body, out),
            Delimit::Length | Delimit::Close => out.extend_from_slice(&self.body),
        }
    }
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Appends one chunk of a chunked body. An empty `data` writes nothing (an empty chunk
/// would end the body; use [`last_chunk`] for that).
///
/// ```
/// let mut out = Vec::new();
/// ringman_protocols::http::chunk(b"hello world!!!!!", &mut out);
/// ringman_protocols::http::last_chunk(&mut out);
/// assert_eq!(out, b"10\r\nhello world!!!!!\r\n0\r\n\r\n");
/// ```
pub fn chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    let mut hex = [0u8; 16];
    let mut i = hex.len();
    let mut n = data.len();
    loop {
        i -= 1;
        hex[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.reserve(data.len() + 20);
    out.extend_from_slice(&hex[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends the last chunk (`0\r\n\r\n`) that ends a chunked body.
pub fn last_chunk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &str) {
    out.extend_from_slice(name);
    out.extend(value.bytes().filter(|&b| b != b'\r' && b != b'\n' && b != 0));
    out.push(b'\n');
}

/// Appends one Server-Sent Event. `data` may span lines (each becomes a `data:` line);
/// CR, LF and NUL are dropped from `event` and `id` so they cannot start new fields.
///
/// ```
/// let mut out = Vec::new();
/// ringman_protocols::http::sse_event(Some("tick"), "a\nb", Some("7"), Some(3000), &mut out);
/// assert_eq!(out, b"event: tick\nid: 7\nretry: 3000\ndata: a\ndata: b\n\n");
/// ```
pub fn sse_event(event: Option<&str>, data: &str, id: Option<&str>, retry: Option<u64>, out: &mut Vec<u8>) {
    if let Some(e) = event {
        push_field(out, b"event: ", e);
    }
    if let Some(i) = id {
        push_field(out, b"id: ", i);
    }
    if let Some(r) = retry {
        out.extend_from_slice(b"retry: ");
        out.extend_from_slice(itoa_buf(r).as_bytes());
        out.push(b'\n');
    }
    for line in data.split("\r\n").flat_map(|l| l.split(['\r', '\n'])) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Appends an SSE comment (`: text`, one per line): a keep-alive that clients ignore.
pub fn sse_comment(text: &str, out: &mut Vec<u8>) {
    for line in text.split("\r\n").flat_map(|l| l.split(['\r', '\n'])) {
        out.extend_from_slice(b": ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// The `SameSite` cookie attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// `SameSite=Strict`.
    Strict,
    /// `SameSite=Lax`.
    Lax,
    /// `SameSite=None` (browsers require `Secure` with it).
    None,
}

/// A `Set-Cookie` value under construction.
///
/// ```
/// use ringman_protocols::http::{Cookie, SameSite};
/// let c = Cookie::new("id", "a b").max_age(60).secure(true).same_site(SameSite::Lax);
/// assert_eq!(c.to_header_value().unwrap(), "id=a%20b; Max-Age=60; Secure; SameSite=Lax");
/// ```
#[derive(Debug, Clone)]
pub struct Cookie<'a> {
    name: &'a str,
    value: &'a str,
    max_age: Option<i64>,
    expires: Option<SystemTime>,
    path: Option<&'a str>,
    domain: Option<&'a str>,
    secure: bool,
    http_only: bool,
    same_site: Option<SameSite>,
}

impl<'a> Cookie<'a> {
    /// A session cookie `name=value`; value bytes outside RFC 6265 `cookie-octet` are
    /// percent-encoded on output.
    pub fn new(name: &'a str, value: &'a str) -> Self {
        Cookie {
            name,
            value,
            max_age: None,
            expires: None,
            path: None,
            domain: None,
            secure: false,
            http_only: false,
            same_site: None,
        }
    }
    /// `Max-Age` in seconds (0 or negative deletes the cookie).
    pub fn max_age(mut self, secs: i64) -> Self {
        self.max_age = Some(secs);
        self
    }
    /// `Expires` at `t`.
    pub fn expires(mut self, t: SystemTime) -> Self {
        self.expires = Some(t);
        self
    }
    /// `Path`.
    pub fn path(mut self, path: &'a str) -> Self {
        self.path = Some(path);
        self
    }
    /// `Domain`.
    pub fn domain(mut self, domain: &'a str) -> Self {
        self.domain = Some(domain);
        self
    }
    /// `Secure`.
    pub fn secure(mut self, on: bool) -> Self {
        self.secure = on;
        self
    }
    /// `HttpOnly`.
    pub fn http_only(mut self, on: bool) -> Self {
        self.http_only = on;
        self
    }
    /// `SameSite`.
    pub fn same_site(mut self, s: SameSite) -> Self {
        self.same_site = Some(s);
        self
    }

    /// The `Set-Cookie` field value, or `None` when the name is not a token. `Path` and
    /// `Domain` values containing `;` or control characters are left out.
    pub fn to_header_value(&self) -> Option<String> {
        if !is_token(self.name.as_bytes()) {
            return None;
        }
        let mut s = String::with_capacity(self.name.len() + self.value.len() + 32);
        s.push_str(self.name);
        s.push('=');
        for b in self.value.bytes() {
            let octet = b == 0x21
                || (0x23..=0x2b).contains(&b)
                || (0x2d..=0x3a).contains(&b)
                || (0x3c..=0x5b).contains(&b)
                || (0x5d..=0x7e).contains(&b);
            if octet {
                s.push(b as char);
            } else {
                s.push('%');
                s.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
                s.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
            }
        }
        let attr_ok = |v: &str| v.bytes().all(|b| b >= 0x20 && b != 0x7f && b != b';');
        if let Some(a) = self.max_age {
            s.push_str("; Max-Age=");
            s.push_str(&a.to_string());
        }
        if let Some(t) = self.expires {
            s.push_str("; Expires=");
            s.push_str(std::str::from_utf8(&http_date(t)).unwrap_or_default());
        }
        if let Some(d) = self.domain.filter(|d| attr_ok(d)) {
            s.push_str("; Domain=");
            s.push_str(d);
        }
        if let Some(p) = self.path.filter(|p| attr_ok(p)) {
            s.push_str("; Path=");
            s.push_str(p);
        }
        if self.secure {
            s.push_str("; Secure");
        }
        if self.http_only {
            s.push_str("; HttpOnly");
        }
        if let Some(ss) = self.same_site {
            s.push_str(match ss {
                SameSite::Strict => "; SameSite=Strict",
                SameSite::Lax => "; SameSite=Lax",
                SameSite::None => "; SameSite=None",
            });
        }
        Some(s)
    }
}

/// A response encoded once and sent many times; only the `Date` value is rewritten, in
/// place.
///
/// ```
/// use ringman_protocols::http::{Response, StaticResponse};
/// let mut r = StaticResponse::new(&Response::new(200).header("Server", "ringman").body("hi"));
/// let mut out = Vec::new();
/// r.write_to(b"Sun, 06 Nov 1994 08:49:37 GMT", &mut out);
/// assert_eq!(out, b"HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nServer: ringman\r\nContent-Length: 2\r\n\r\nhi");
/// ```
#[derive(Debug, Clone)]
pub struct StaticResponse {
    bytes: Vec<u8>,
    date_at: usize,
}

impl StaticResponse {
    /// Encodes `resp` with a `Date` field (placeholder value until [`set_date`](Self::set_date)).
    pub fn new(resp: &Response<'_>) -> Self {
        let mut r = resp.clone().remove_header("date");
        r.date = Some(http_date(std::time::UNIX_EPOCH));
        let mut bytes = Vec::new();
        r.write_to(&mut bytes);
        let date_at = memchr::memmem::find(&bytes, b"\r\nDate: ").map_or(0, |i| i + 8);
        StaticResponse { bytes, date_at }
    }

    /// Rewrites the `Date` value in place.
    pub fn set_date(&mut self, date: &[u8; 29]) {
        self.bytes[self.date_at..self.date_at + 29].copy_from_slice(date);
    }

    /// The encoded response, as of the last [`set_date`](Self::set_date).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Sets the date and appends the whole response to `out`.
    pub fn write_to(&mut self, date: &[u8; 29], out: &mut Vec<u8>) {
        self.set_date(date);
        out.extend_from_slice(&self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &Response<'_>) -> String {
        let mut out = Vec::new();
        r.write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn no_body_statuses_and_injection() {
        assert_eq!(text(&Response::new(204).body("x")), "HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(text(&Response::new(304)), "HTTP/1.1 304 Not Modified\r\n\r\n");
        let r = Response::new(200)
            .header("X-Evil", "a\r\nSet-Cookie: x=1")
            .header("Bad Name", "v")
            .header("Ok", "v")
            .reason("Fine\r\n");
        assert_eq!(text(&r), "HTTP/1.1 200 Fine\r\nOk: v\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            text(&Response::new(200).header("Content-Length", "0")),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        );
        let r = Response::new(200).header("A", "1").header("a", "2").set_header("A", "3");
        assert_eq!(r.get_header("a"), Some("3"));
    }

    #[test]
    fn chunked_and_head() {
        let r = Response::new(200).chunked().body("abc");
        assert_eq!(text(&r), "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
        let mut out = Vec::new();
        Response::new(200).body("abcdef").write_head_to(&mut out);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n");
        let mut out = Vec::new();
        chunk(&[0u8; 300], &mut out);
        assert!(out.starts_with(b"12c\r\n"));
    }

    #[test]
    fn sse() {
        assert_eq!(
            text(&Response::event_stream()),
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        );
        let mut out = Vec::new();
        sse_event(Some("a\nb"), "x\r\ny\rz", None, None, &mut out);
        assert_eq!(out, b"event: ab\ndata: x\ndata: y\ndata: z\n\n");
        out.clear();
        sse_comment("ping", &mut out);
        assert_eq!(out, b": ping\n\n");
    }

    #[test]
    fn cookie_attributes() {
        let c = Cookie::new("a", "v;x")
            .expires(std::time::UNIX_EPOCH)
            .domain("example.com")
            .path("/p;evil")
            .same_site(SameSite::None)
            .secure(true);
        assert_eq!(
            c.to_header_value().unwrap(),
            "a=v%3Bx; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Domain=example.com; Secure; SameSite=None"
        );
        assert!(Cookie::new("a b", "v").to_header_value().is_none());
    }

    #[test]
    fn static_response_date_patch() {
        let mut s = StaticResponse::new(&Response::html("hello").date(&[b'x'; 29]));
        let d = http_date(SystemTime::now());
        s.set_date(&d);
        let text = String::from_utf8(s.as_bytes().to_vec()).unwrap();
        assert_eq!(text.matches("Date: ").count(), 1);
        assert!(text.contains(std::str::from_utf8(&d).unwrap()));
        assert!(text.ends_with("Content-Length: 5\r\n\r\nhello"));
    }
}
