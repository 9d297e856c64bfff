//! What the client sends and what it hands back.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::Waker;

use bytes::Bytes;
pub use ringman_protocols::http::ResponseHead;

use super::{HttpClientError, Url};

/// A request to send ([`HttpClient::send`](super::HttpClient::send)).
#[derive(Debug)]
pub struct Request {
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Body,
}

/// A request body.
#[derive(Debug, Default)]
pub enum Body {
    /// None (no `Content-Length` for GET/HEAD; `Content-Length: 0` otherwise).
    #[default]
    Empty,
    /// Bytes known up front (`Content-Length`).
    Bytes(Bytes),
    /// Chunks produced while the request is sent (`Transfer-Encoding: chunked`), from a
    /// [`BodySender`].
    Stream(BodyStream),
}

impl Request {
    /// A request with `method` to `url`.
    pub fn new(method: &str, url: &str) -> Request {
        Request { method: method.to_string(), url: url.to_string(), headers: Vec::new(), body: Body::Empty }
    }
    /// `GET url`.
    pub fn get(url: &str) -> Request {
        Request::new("GET", url)
    }
    /// `HEAD url`.
    pub fn head(url: &str) -> Request {
        Request::new("HEAD", url)
    }
    /// `POST url`.
    pub fn post(url: &str) -> Request {
        Request::new("POST", url)
    }
    /// `PUT url`.
    pub fn put(url: &str) -> Request {
        Request::new("PUT", url)
    }
    /// `DELETE url`.
    pub fn delete(url: &str) -> Request {
        Request::new("DELETE", url)
    }

    /// Adds a header field (`Host`, `Content-Length` and `Transfer-Encoding` are the
    /// client's own and may not be set).
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// A body known up front.
    pub fn body(mut self, body: impl Into<Bytes>) -> Request {
        self.body = Body::Bytes(body.into());
        self
    }

    /// A body streamed while the request is sent; write it through the returned sender.
    pub fn body_stream(mut self) -> (Request, BodySender) {
        let shared = Rc::new(RefCell::new(Pipe::default()));
        self.body = Body::Stream(BodyStream { pipe: shared.clone() });
        (self, BodySender { pipe: shared })
    }

    pub(crate) fn is_head(&self) -> bool {
        self.method.eq_ignore_ascii_case("HEAD")
    }

    /// The head as it goes on the wire, checked.
    pub(crate) fn encode_head(&self, url: &Url, out: &mut Vec<u8>) -> Result<(), HttpClientError> {
        if self.method.is_empty() || !self.method.bytes().all(is_tchar) {
            return Err(HttpClientError::BadRequest("the method is not a token"));
        }
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(url.target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(url.host_header().as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut agent = false;
        for (n, v) in &self.headers {
            if n.is_empty() || !n.bytes().all(is_tchar) {
                return Err(HttpClientError::BadRequest("a header name is not a token"));
            }
            if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(HttpClientError::BadRequest("a header value holds CR, LF or NUL"));
            }
            for own in ["host", "content-length", "transfer-encoding"] {
                if n.eq_ignore_ascii_case(own) {
                    return Err(HttpClientError::BadRequest(
                        "Host, Content-Length and Transfer-Encoding are set by the client",
                    ));
                }
            }
            agent |= n.eq_ignore_ascii_case("user-agent");
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !agent {
            out.extend_from_slice(b"User-Agent: ringman\r\n");
        }
        match &self.body {
            Body::Empty if matches!(self.method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS") => {}
            Body::Empty => out.extend_from_slice(b"Content-Length: 0\r\n"),
            Body::Bytes(b) => out.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes()),
            Body::Stream(_) => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        }
        out.extend_from_slice(b"\r\n");
        Ok(())
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A whole response ([`HttpClient::send`](super::HttpClient::send)).
#[derive(Debug, Clone)]
pub struct Response {
    /// The head (status, reason, fields).
    pub head: ResponseHead,
    /// The body (empty after `HEAD`, `204`, `304`).
    pub body: Bytes,
}

impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.head.status
    }
    /// The first header field named `name`, as UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header_str(name)
    }
}

/// Chunks between a [`BodySender`] and the request being sent.
#[derive(Default, Debug)]
pub(crate) struct Pipe {
    pub(crate) chunks: VecDeque<Bytes>,
    pub(crate) finished: bool,
    pub(crate) dropped: bool,
    pub(crate) reader: Option<Waker>,
    /// Set by the sending side when it can take more (the connection drained).
    pub(crate) writer: Option<Waker>,
    pub(crate) queued: usize,
}

/// The request side of a streamed body.
#[derive(Debug)]
pub struct BodyStream {
    pub(crate) pipe: Rc<RefCell<Pipe>>,
}

/// Writes a streamed request body: each `send` is one chunk (`Transfer-Encoding:
/// chunked`); `finish` ends the body. Dropping it without `finish` aborts the request.
#[derive(Debug)]
pub struct BodySender {
    pipe: Rc<RefCell<Pipe>>,
}

/// Bytes a [`BodySender`] may have queued before `send` waits.
const PIPE_LIMIT: usize = 256 * 1024;

impl BodySender {
    /// Queues a chunk; waits while more than 256 KiB are queued and unsent. Empty chunks are
    /// skipped (an empty chunk would end the body).
    pub async fn send(&mut self, chunk: impl Into<Bytes>) {
        let chunk = chunk.into();
        if chunk.is_empty() {
            return;
        }
        std::future::poll_fn(|cx| {
            let mut p = self.pipe.borrow_mut();
            if p.queued < PIPE_LIMIT {
                std::task::Poll::Ready(())
            } else {
                p.writer = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await;
        let w = {
            let mut p = self.pipe.borrow_mut();
            p.queued += chunk.len();
            p.chunks.push_back(chunk);
            p.reader.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Ends the body.
    pub fn finish(self) {
        let w = {
            let mut p = self.pipe.borrow_mut();
            p.finished = true;
            p.reader.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }
}

impl Drop for BodySender {
    fn drop(&mut self) {
        let w = {
            let mut p = self.pipe.borrow_mut();
            if p.finished {
                return;
            }
            p.dropped = true;
            p.reader.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }
}
