//! Request-side conformance with RFC 9112 (HTTP/1.1 message syntax) and RFC 9110 (HTTP
//! semantics), one test per rule, written from the RFC text.
//!
//! Every case goes through the same [`Framer`] + [`HttpDecoder`] + [`Request::from_decoded`]
//! chain the engine drives, and [`check`] holds each one to four things:
//!
//! * the verdict on the request arriving whole: answered, or rejected with a given status
//!   (the error reply always carries `Connection: close`);
//! * the same verdict with the bytes split at every boundary, and fed one byte at a time (a
//!   split-dependent verdict would let a request be smuggled past a proxy that buffers
//!   differently);
//! * pipelined after a valid request: that one is answered first;
//! * pipelined before a valid request: after a rejected request nothing is ever answered.

use super::{HttpDecoder, Request, Version, MAX_METHOD_LEN, MAX_TARGET_LEN};
use crate::{Delivery, Flow, Framer};

const MAX: usize = 64 * 1024;

/// A valid request used around each case when pipelining.
const VALID: &[u8] = b"GET /valid HTTP/1.1\r\nHost: h\r\n\r\n";

/// What the server does with a byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    /// The decoded messages it answers, in order.
    answered: Vec<Vec<u8>>,
    /// The status of the error reply that ends the connection, if any.
    status: Option<u16>,
}

/// Feeds `chunks` in order as the engine does: each decoded message is read back with
/// [`Request::from_decoded`] (a failure there is answered with its status, as
/// `Worker::on_request` does); a decoder error is answered with `error_reply`.
fn drive(chunks: &[&[u8]]) -> Outcome {
    use crate::Decoder;
    let mut dec = HttpDecoder::new();
    let mut framer = Framer::new();
    let mut answered = Vec::new();
    let mut status = None;
    for c in chunks {
        let mut c = c.to_vec();
        let r = framer.feed(&mut dec, &mut c, MAX, |d| match d {
            Delivery::Message(m) => match Request::from_decoded(m.data) {
                Ok(_) => {
                    answered.push(m.data.to_vec());
                    Flow::Continue
                }
                Err(e) => {
                    status = Some(e.status());
                    Flow::Stop
                }
            },
            Delivery::Reply(..) => Flow::Continue,
        });
        if status.is_some() {
            break;
        }
        if let Err(e) = r {
            let mut reply = Vec::new();
            dec.error_reply(&e, &mut reply);
            assert!(reply.windows(19).any(|w| w == b"Connection: close\r\n"), "{:?}", String::from_utf8_lossy(&reply));
            status = Some(std::str::from_utf8(&reply[9..12]).unwrap().parse().unwrap());
            break;
        }
    }
    Outcome { answered, status }
}

/// The expected verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Answered (exactly one request).
    Ok,
    /// Refused with this status; nothing answered.
    Reject(u16),
}
use Verdict::{Ok as Accept, Reject};

/// Holds `wire` to `verdict` whole, split at every boundary, byte by byte and pipelined
/// around [`VALID`] in both orders. Returns the decoded request of an accepted case.
fn check(wire: &[u8], verdict: Verdict) -> Vec<u8> {
    let what = String::from_utf8_lossy(wire);
    let whole = drive(&[wire]);
    match verdict {
        Verdict::Ok => assert!(whole.status.is_none() && whole.answered.len() == 1, "{what}: {whole:?}"),
        Verdict::Reject(s) => assert_eq!(whole, Outcome { answered: vec![], status: Some(s) }, "{what}"),
    }
    for i in 0..=wire.len() {
        assert_eq!(drive(&[&wire[..i], &wire[i..]]), whole, "{what} split at {i}");
    }
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(drive(&bytes), whole, "{what} byte by byte");

    // Pipelined: a valid request before it is answered; nothing after a rejected one is.
    let valid = drive(&[VALID]).answered.remove(0);
    let mut sandwich = VALID.to_vec();
    sandwich.extend_from_slice(wire);
    sandwich.extend_from_slice(VALID);
    let mut expected = Outcome { answered: vec![valid.clone()], status: whole.status };
    if verdict == Verdict::Ok {
        expected.answered.push(whole.answered[0].clone());
        expected.answered.push(valid);
    }
    assert_eq!(drive(&[&sandwich]), expected, "{what} pipelined");
    let step = if sandwich.len() > 4096 { 97 } else { 1 };
    for i in (0..=sandwich.len()).step_by(step) {
        assert_eq!(drive(&[&sandwich[..i], &sandwich[i..]]), expected, "{what} pipelined, split at {i}");
    }
    whole.answered.into_iter().next().unwrap_or_default()
}

/// `GET / HTTP/1.1`, `Host: h`, then `fields` (each without CRLF), then the empty line.
fn get(fields: &[&str]) -> Vec<u8> {
    let mut w = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
    for f in fields {
        w.extend_from_slice(f.as_bytes());
        w.extend_from_slice(b"\r\n");
    }
    w.extend_from_slice(b"\r\n");
    w
}

/// A chunked POST whose body section (after the head) is `body`.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut w = b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    w.extend_from_slice(body);
    w
}

/// A request whose request line is `line` (without CRLF), with a Host field.
fn line(line: &[u8]) -> Vec<u8> {
    let mut w = line.to_vec();
    w.extend_from_slice(b"\r\nHost: h\r\n\r\n");
    w
}

fn parsed(m: &[u8]) -> Request<'_> {
    Request::from_decoded(m).unwrap()
}

// ---- RFC 9112 §2.2: message parsing -------------------------------------------------

/// §2.2: "A recipient that receives a bare CR ... MUST consider that element to be invalid";
/// a bare LF as line terminator is refused as well (the stricter of the allowed choices).
#[test]
fn line_endings_are_crlf_only() {
    check(b"GET / HTTP/1.1\nHost: h\r\n\r\n", Reject(400));
    check(b"GET / HTTP/1.1\r\nHost: h\n\r\n", Reject(400));
    check(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", Reject(400));
    check(b"GET / HTTP/1.1\r\nHost: h\r\n\n", Reject(400));
}

/// §2.2: a server "SHOULD ignore at least one empty line (CRLF) received prior to the
/// request-line".
#[test]
fn empty_lines_before_the_request_line_are_ignored() {
    check(b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", Accept);
    check(b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", Accept);
}

/// §2.2: whitespace between the start-line and the first field: "MUST either reject the
/// message as invalid or consume each whitespace-preceded line" — rejected.
#[test]
fn whitespace_before_the_first_field_is_rejected() {
    check(b"GET / HTTP/1.1\r\n Host: h\r\n\r\n", Reject(400));
    check(b"GET / HTTP/1.1\r\n\tX: y\r\nHost: h\r\n\r\n", Reject(400));
}

// ---- RFC 9112 §3: request line ------------------------------------------------------

/// §3: `request-line = method SP request-target SP HTTP-version`; single spaces, no other
/// whitespace. "Recipients of an invalid request-line SHOULD respond with ... 400".
#[test]
fn request_line_has_exactly_two_single_spaces() {
    for bad in [
        &b"GET  / HTTP/1.1"[..],
        b"GET /  HTTP/1.1",
        b" GET / HTTP/1.1",
        b"GET / HTTP/1.1 ",
        b"GET\t/ HTTP/1.1",
        b"GET /\tHTTP/1.1",
        b"GET /a b HTTP/1.1",
        b"GET",
        b"GET ",
        b"GET / ",
        b"/ HTTP/1.1",
    ] {
        check(&line(bad), Reject(400));
    }
}

/// §3.1: `method = token`; methods are case-sensitive and any token is a method (the
/// application answers methods it does not implement).
#[test]
fn method_is_a_token() {
    check(&line(b"G@T / HTTP/1.1"), Reject(400));
    check(&line(b"G\x80T / HTTP/1.1"), Reject(400));
    check(&line(b"GE(T / HTTP/1.1"), Reject(400));
    let m = check(&line(b"get / HTTP/1.1"), Accept);
    assert_eq!(parsed(&m).method(), "get");
    check(&line(b"M-SEARCH * HTTP/1.1"), Reject(400));
    check(&line(b"PROPFIND /x HTTP/1.1"), Accept);
}

/// §3: "A server that receives a method longer than any that it implements SHOULD respond
/// with a 501"; answered as soon as the method outgrows [`MAX_METHOD_LEN`].
#[test]
fn over_long_method_is_501() {
    let ok = format!("{} / HTTP/1.1", "A".repeat(MAX_METHOD_LEN));
    check(&line(ok.as_bytes()), Accept);
    let long = format!("{} / HTTP/1.1", "A".repeat(MAX_METHOD_LEN + 1));
    check(&line(long.as_bytes()), Reject(501));
    // Without the rest of the line: refused without waiting for it.
    assert_eq!(drive(&["A".repeat(MAX_METHOD_LEN + 1).as_bytes()]).status, Some(501));
}

/// §3: "A server that receives a request-target longer than any URI it wishes to parse
/// MUST respond with a 414"; the limit is [`MAX_TARGET_LEN`].
#[test]
fn over_long_target_is_414() {
    let ok = format!("GET /{} HTTP/1.1", "a".repeat(MAX_TARGET_LEN - 1));
    check(&line(ok.as_bytes()), Accept);
    let long = format!("GET /{} HTTP/1.1", "a".repeat(MAX_TARGET_LEN));
    check(&line(long.as_bytes()), Reject(414));
}

// ---- RFC 9112 §2.3 and RFC 9110 §2.5: version ----------------------------------------

/// §2.3: `HTTP-version = HTTP-name "/" DIGIT "." DIGIT`, `HTTP-name` case-sensitive. A
/// version that does not match is a malformed request line (400), not an unsupported one.
#[test]
fn malformed_version_is_400() {
    for v in [
        &b"HTTP/1"[..],
        b"HTTP/1.",
        b"HTTP/.1",
        b"http/1.1",
        b"Http/1.1",
        b"HTTP/01.1",
        b"HTTP/1.01",
        b"HTTP/1.10",
        b"HTTP/1.1x",
        b"HTTP /1.1",
        b"HTTP/1 .1",
        b"HTTP/a.b",
        b"HTTP/1,1",
        b"HTTPS/1.1",
        b"HTTP/\xd9.1",
    ] {
        let mut l = b"GET / ".to_vec();
        l.extend_from_slice(v);
        check(&line(&l), Reject(400));
    }
}

/// RFC 9110 §15.6.6: 505 for a major version the server does not support (HTTP/0.9 style
/// lines without a version, `HTTP/2.0`, the HTTP/2 preface, `HTTP/3.0`).
#[test]
fn unsupported_major_version_is_505() {
    for v in [&b"HTTP/2.0"[..], b"HTTP/3.0", b"HTTP/0.9", b"HTTP/9.9"] {
        let mut l = b"GET / ".to_vec();
        l.extend_from_slice(v);
        check(&line(&l), Reject(505));
    }
    check(b"GET /\r\n", Reject(505));
    check(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Reject(505));
}

/// RFC 9110 §2.5 / RFC 9112 §2.3: a higher minor version of HTTP/1 is handled as the
/// highest minor version the server implements (1.1), Host rule included.
#[test]
fn higher_minor_version_is_handled_as_1_1() {
    let m = check(&line(b"GET /a HTTP/1.2"), Accept);
    let r = parsed(&m);
    assert_eq!((r.version(), r.keep_alive(), r.path()), (Version::Http11, true, "/a"));
    check(&line(b"GET / HTTP/1.9"), Accept);
    check(b"GET / HTTP/1.2\r\n\r\n", Reject(400));
    let m = check(b"POST / HTTP/1.3\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n", Accept);
    assert_eq!(parsed(&m).body(), b"ab");
    check(b"GET / HTTP/1.2\r\nHost: h\r\nBad Name: x\r\n\r\n", Reject(400));
}

/// HTTP/1.0 requests need no Host, and persist only with `Connection: keep-alive`
/// (RFC 9112 §9.3).
#[test]
fn http_1_0_requests() {
    let m = check(b"GET / HTTP/1.0\r\n\r\n", Accept);
    assert_eq!((parsed(&m).version(), parsed(&m).keep_alive()), (Version::Http10, false));
    check(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", Reject(400));
}

// ---- RFC 9112 §3.2: request target ---------------------------------------------------

/// §3.2 with RFC 3986: the target is visible ASCII; bytes outside it (controls, DEL,
/// non-ASCII) and a fragment are refused (400).
#[test]
fn target_is_visible_ascii() {
    for t in [&b"/\x80"[..], b"/caf\xc3\xa9", b"/\xff", b"/a\x7f", b"/a\x01b", b"/a\x00", b"/#frag", b"/a?b#c"] {
        let mut l = b"GET ".to_vec();
        l.extend_from_slice(t);
        l.extend_from_slice(b" HTTP/1.1");
        check(&line(&l), Reject(400));
    }
    // What browsers send unencoded is accepted.
    let m = check(&line(b"GET /a/[b]/{c}|d?x[]=1&y=%7B%22%7D&z=a:b@c!$&'()*+,;= HTTP/1.1"), Accept);
    assert_eq!(parsed(&m).query(), Some("x[]=1&y=%7B%22%7D&z=a:b@c!$&'()*+,;="));
}

/// RFC 3986 §2.1: `pct-encoded = "%" HEXDIG HEXDIG`; other uses of `%` are refused (400),
/// since decoders disagree on them (`%u` decoding, `%%`).
#[test]
fn percent_encodings_are_valid() {
    for t in [&b"/%"[..], b"/%4", b"/%zz", b"/%u0041", b"/a?b=%g0", b"/%%41"] {
        let mut l = b"GET ".to_vec();
        l.extend_from_slice(t);
        l.extend_from_slice(b" HTTP/1.1");
        check(&line(&l), Reject(400));
    }
    check(&line(b"GET /%41%aF?q=%20 HTTP/1.1"), Accept);
}

/// §3.2: origin-form, absolute-form, and asterisk-form for OPTIONS only; authority-form is
/// for CONNECT, which is not implemented (501, RFC 9110 §9.1).
#[test]
fn target_forms() {
    check(&line(b"OPTIONS * HTTP/1.1"), Accept);
    check(&line(b"GET * HTTP/1.1"), Reject(400));
    check(&line(b"GET h:80 HTTP/1.1"), Reject(400));
    check(&line(b"GET a/b HTTP/1.1"), Reject(400));
    check(&line(b"GET ftp://h/x HTTP/1.1"), Reject(400));
    check(&line(b"CONNECT h:443 HTTP/1.1"), Reject(501));
}

/// §3.2.2: "the origin server MUST ignore the received Host header field (if any) and
/// instead use the host information of the request-target"; RFC 9110 §4.2.1: an http URI
/// with an empty host is invalid; §4.2.4: userinfo "SHOULD" be treated as an error.
#[test]
fn absolute_form_authority() {
    let m = check(b"GET http://target.example:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n", Accept);
    let r = parsed(&m);
    assert_eq!((r.host(), r.path(), r.query()), (Some("target.example:8080"), "/p", Some("q")));
    check(&line(b"GET http:///p HTTP/1.1"), Reject(400));
    check(&line(b"GET http://user:pw@h/p HTTP/1.1"), Reject(400));
    check(&line(b"GET http://h:x/p HTTP/1.1"), Reject(400));
    check(&line(b"GET HTTPS://[::1]:8443?x HTTP/1.1"), Accept);
}

// ---- RFC 9112 §3.2 and RFC 9110 §7.2: Host --------------------------------------------

/// §3.2: "A server MUST respond with a 400 ... to any HTTP/1.1 request message that lacks
/// a Host header field and to any request message that contains more than one Host header
/// field line or a Host header field with an invalid field value."
#[test]
fn host_is_required_single_and_valid() {
    check(b"GET / HTTP/1.1\r\n\r\n", Reject(400));
    check(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", Reject(400));
    for bad in [
        "Host:",
        "Host: ",
        "Host: a b",
        "Host: a/b",
        "Host: u@a",
        "Host: a,b",
        "Host: a:b",
        "Host: a:123456",
        "Host: [::1",
        "Host: []",
        "Host: :80",
        "Host: a%zz",
        "Host: caf\u{e9}",
    ] {
        let w = format!("GET / HTTP/1.1\r\n{bad}\r\n\r\n");
        check(w.as_bytes(), Reject(400));
    }
    for good in ["Host: a", "Host: a.example:8080", "Host: 10.0.0.1", "Host: [::1]:80", "Host: a%20b", "Host: a:"] {
        let w = format!("GET / HTTP/1.1\r\n{good}\r\n\r\n");
        check(w.as_bytes(), Accept);
    }
}

// ---- RFC 9112 §5 and RFC 9110 §5: fields ---------------------------------------------

/// §5.1: "No whitespace is allowed between the field name and colon ... a server MUST
/// reject ... with a response status code of 400"; RFC 9110 §5.1: names are tokens.
#[test]
fn field_names_are_tokens_directly_followed_by_a_colon() {
    check(&get(&["X-A : 1"]), Reject(400));
    check(&get(&["X-A\t: 1"]), Reject(400));
    check(&get(&[": 1"]), Reject(400));
    check(&get(&["X(A): 1"]), Reject(400));
    check(&get(&["X A: 1"]), Reject(400));
    check(&get(&["no colon"]), Reject(400));
    check(&get(&["X-A:1", "x-b:\t 2 \t"]), Accept);
}

/// §5.2: "A server that receives an obs-fold in a request message ... MUST either reject
/// the message by sending a 400 ... or replace each received obs-fold with one or more SP"
/// — rejected.
#[test]
fn obsolete_line_folding_is_rejected() {
    check(&get(&["X-A: 1", " folded"]), Reject(400));
    check(&get(&["X-A: 1", "\tfolded"]), Reject(400));
}

/// RFC 9110 §5.5: "Field values containing CR, LF, or NUL characters are invalid and
/// dangerous" (rejected); other controls are not `field-vchar` either. obs-text is kept.
#[test]
fn field_values_have_no_controls() {
    for v in ["a\0b", "a\x01", "a\x7f", "\x0bchunked", "a\x1bb"] {
        check(&get(&[&format!("X-A: {v}")]), Reject(400));
    }
    let mut w = get(&["X-A: caf"]);
    w.splice(w.len() - 4..w.len() - 4, [0xc3, 0xa9]);
    let m = check(&w, Accept);
    assert_eq!(parsed(&m).header("x-a"), Some(&b"caf\xc3\xa9"[..]));
}

/// RFC 9110 §5.4 / RFC 6585 §5: too many or too large fields are answered 431.
#[test]
fn field_limits_are_431() {
    let many: Vec<String> = (0..super::MAX_HEADERS).map(|i| format!("X-{i}: v")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    check(&get(&many), Reject(431));
    let big = format!("X-Big: {}", "v".repeat(super::DEFAULT_HEAD_LIMIT));
    check(&get(&[&big]), Reject(431));
}

// ---- RFC 9112 §6 and RFC 9110 §8.6: message body length ------------------------------

/// RFC 9110 §8.6: `Content-Length = 1*DIGIT`; RFC 9112 §6.3 (5): an invalid value makes
/// the framing invalid: 400 and close. Leading zeros, equal duplicates or lists and values
/// beyond 64 bits are refused too (proxies read them differently).
#[test]
fn content_length_is_one_plain_decimal() {
    for v in ["1x", "+1", "-1", "1 1", "1,1", "1, 1", "0x1", "01", "00", "", "18446744073709551616"] {
        let mut w = get(&[&format!("Content-Length: {v}")]);
        w.push(b'a');
        check(&w, Reject(400));
    }
    check(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na", Reject(400));
    let m = check(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", Accept);
    assert_eq!(parsed(&m).body(), b"abc");
    check(&get(&["Content-Length: 0"]), Accept);
}

/// RFC 9110 §15.5.14: a body larger than the server accepts is answered 413 as soon as the
/// length is known.
#[test]
fn body_over_the_limit_is_413() {
    check(&get(&[&format!("Content-Length: {}", MAX + 1)]), Reject(413));
    check(&get(&["Content-Length: 18446744073709551615"]), Reject(413));
    check(&chunked(format!("{:x}\r\n", MAX + 1).as_bytes()), Reject(413));
}

/// RFC 9112 §6.1: "A server that receives a request message with a transfer coding it does
/// not understand SHOULD respond with 501"; §6.3 (4): chunked not final ⇒ 400 and close.
#[test]
fn transfer_encoding_is_exactly_chunked() {
    let te = |v: &str| chunked_with(&format!("Transfer-Encoding: {v}"));
    check(&te("gzip, chunked"), Reject(501));
    check(&te("x-custom, chunked"), Reject(501));
    check(&te("chunked, gzip"), Reject(400));
    check(&te("gzip"), Reject(400));
    check(&te("identity"), Reject(400));
    check(&te("chunked, chunked"), Reject(400));
    check(&te("chunked;q=1"), Reject(400));
    check(&te(""), Reject(400));
    check(&te(","), Reject(400));
    // A list split over two field lines is refused, not combined (our choice: one line).
    check(&chunked_with("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked"), Reject(400));
    check(&te("Chunked"), Accept);
    check(&te(" chunked ,"), Accept);
}

/// A POST with `fields` (CRLF-joined, no trailing CRLF) and a one-chunk chunked body.
fn chunked_with(fields: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nHost: h\r\n{fields}\r\n\r\n1\r\na\r\n0\r\n\r\n").into_bytes()
}

/// RFC 9112 §6.1: "A server MAY reject a request that contains both Content-Length and
/// Transfer-Encoding ... Such a message might indicate an attempt to perform request
/// smuggling" — rejected, and (§6.1) Transfer-Encoding in HTTP/1.0 is faulty framing.
#[test]
fn content_length_with_transfer_encoding_is_rejected() {
    check(&chunked_with("Content-Length: 6\r\nTransfer-Encoding: chunked"), Reject(400));
    check(&chunked_with("Transfer-Encoding: chunked\r\nContent-Length: 6"), Reject(400));
    check(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n", Reject(400));
}

// ---- RFC 9112 §7.1: chunked transfer coding ------------------------------------------

/// §7.1: `chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF`, `chunk-size = 1*HEXDIG`.
#[test]
fn chunk_size_is_hex_then_crlf() {
    for body in [
        &b"x\r\n"[..],
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhelloXX0\r\n\r\n",
        b"5\r\nhello\r\n0\n\r\n",
        b"11111111111111111\r\n",
        b"\r\n",
    ] {
        check(&chunked(body), Reject(400));
    }
    let m = check(&chunked(b"5\r\nhello\r\n000A\r\n world and\r\n00\r\n\r\n"), Accept);
    assert_eq!(parsed(&m).body(), b"hello world and");
}

/// §7.1.1: `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`:
/// whitespace only before `;` or `=`; `5 ` CRLF (whitespace, no extension) is refused.
#[test]
fn chunk_extension_whitespace() {
    for body in [
        &b"5 \r\nhello\r\n0\r\n\r\n"[..],
        b"5\t\r\nhello\r\n0\r\n\r\n",
        b"5;a \r\nhello\r\n0\r\n\r\n",
        b"5;a=b \r\nhello\r\n0\r\n\r\n",
        b"5;\r\nhello\r\n0\r\n\r\n",
        b"5;a=\r\nhello\r\n0\r\n\r\n",
        b"5;a=\"x\r\nhello\r\n0\r\n\r\n",
        b"5 x\r\nhello\r\n0\r\n\r\n",
        b"0 \r\n\r\n",
    ] {
        check(&chunked(body), Reject(400));
    }
    let m = check(&chunked(b"5 ;a = b\t; c;d=\"q \\\" \"\r\nhello\r\n0;z\r\n\r\n"), Accept);
    assert_eq!(parsed(&m).body(), b"hello");
}

/// §7.1.2: trailer fields follow the last chunk; they are kept apart from the header
/// fields (never merged) and malformed ones are refused.
#[test]
fn trailer_fields_stay_apart() {
    let m = check(&chunked(b"2\r\nab\r\n0\r\nX-Checksum: 42\r\n\r\n"), Accept);
    let r = parsed(&m);
    assert_eq!((r.trailer("x-checksum"), r.header("x-checksum")), (Some(&b"42"[..]), None));
    check(&chunked(b"0\r\nBad Name: x\r\n\r\n"), Reject(400));
    check(&chunked(b"0\r\nX: y\n\r\n"), Reject(400));
    check(&chunked(b"0\r\n folded\r\n\r\n"), Reject(400));
}

/// RFC 9110 §6.5.1: fields needed before the content (framing, routing, authentication,
/// request modifiers, content format) must not be processed as trailers: refused (400).
#[test]
fn forbidden_trailer_fields_are_400() {
    for name in [
        "Content-Length",
        "transfer-encoding",
        "Host",
        "Authorization",
        "Proxy-Authorization",
        "Cookie",
        "Trailer",
        "Connection",
        "Expect",
        "Range",
        "If-None-Match",
        "Content-Type",
        "Content-Encoding",
        "Max-Forwards",
    ] {
        check(&chunked(format!("1\r\na\r\n0\r\n{name}: 1\r\n\r\n").as_bytes()), Reject(400));
    }
}

// ---- RFC 9110 §10.1.1: Expect ----------------------------------------------------------

/// §10.1.1: "A server that receives an Expect field value containing a member other than
/// 100-continue MAY respond with a 417"; "A server that receives a 100-continue expectation
/// in an HTTP/1.0 request MUST ignore that expectation."
#[test]
fn expectations() {
    check(&get(&["Expect: magic"]), Reject(417));
    check(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\na", Accept);
    check(b"POST / HTTP/1.0\r\nExpect: magic\r\nContent-Length: 1\r\n\r\na", Accept);
}

// ---- Pipelining (RFC 9112 §9.3.2) ------------------------------------------------------

/// §9.3.2: pipelined requests are answered in order; after a rejected one the connection
/// ends, so the requests behind it are never answered, however the bytes arrive.
#[test]
fn pipelined_verdicts_in_both_orders() {
    let bad = b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 01\r\n\r\nx";
    let mut wire = VALID.to_vec();
    wire.extend_from_slice(bad);
    wire.extend_from_slice(VALID);
    let out = drive(&[&wire]);
    assert_eq!((out.answered.len(), out.status), (1, Some(400)));
    assert_eq!(parsed(&out.answered[0]).path(), "/valid");
    let mut wire = bad.to_vec();
    wire.extend_from_slice(VALID);
    assert_eq!(drive(&[&wire]), Outcome { answered: vec![], status: Some(400) });
    // A smuggling attempt: the body of the first request is a second request to a proxy
    // that honours Content-Length; here it is refused before anything is answered.
    let smuggle =
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_eq!(drive(&[smuggle]), Outcome { answered: vec![], status: Some(400) });
}

/// RFC 9110 §5.5: a control byte in a field value is malformed; the verdict must not
/// depend on which bytes arrived together with the request line's end (the fuzz smoke's
/// input: split every four bytes, the incomplete head was no error, whole it was a 400).
#[test]
fn a_field_fault_arriving_with_the_request_line_is_judged_with_the_head() {
    let partial = b"POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ucnedkos\x01\x00\x00\x00\x00\x00\x00\x1a";
    let whole = drive(&[partial]);
    assert_eq!(whole, Outcome { answered: vec![], status: None }, "the head is not complete yet");
    let fours: Vec<&[u8]> = partial.chunks(4).collect();
    assert_eq!(drive(&fours), whole);
    let mut complete = partial.to_vec();
    complete.extend_from_slice(b"\r\n\r\n");
    let whole = drive(&[&complete]);
    assert_eq!(whole.status, Some(400));
    for step in 1..8 {
        let parts: Vec<&[u8]> = complete.chunks(step).collect();
        assert_eq!(drive(&parts), whole, "split every {step} bytes");
    }
}

// ---- Whole and split verdicts agree on arbitrary request lines ---------------------------

proptest::proptest! {
    /// The whole-head path (httparse plus the checks it leaves out) and the early checks on
    /// a partial head (the request-line grammar) reach the same verdict on any request line.
    #[test]
    fn request_line_verdicts_do_not_depend_on_splits(
        parts in proptest::collection::vec(
            proptest::sample::select(vec![
                &b"GET"[..], b" ", b"  ", b"/", b"a", b"%", b"%4", b"1", b"F", b"#", b"?", b"\x80", b"\t",
                b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"HTTP/", b".", b"*", b"http://", b"@", b":",
                b"\r", b"\n", b"AAAAAAAAAAAAAAAAAAAA",
            ]),
            0..12,
        ),
        cut in proptest::prelude::any::<usize>(),
    ) {
        let mut wire = parts.concat();
        wire.extend_from_slice(b"\r\nHost: h\r\n\r\n");
        let whole = drive(&[&wire]);
        let i = cut % (wire.len() + 1);
        proptest::prop_assert_eq!(&drive(&[&wire[..i], &wire[i..]]), &whole);
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        proptest::prop_assert_eq!(&drive(&bytes), &whole);
    }
}
