//! One request and its response on a pooled connection: the head written, the body sent
//! (whole, or chunk by chunk as a `BodySender` produces it, waiting for the socket when its
//! buffer is full), then the response read through the protocols crate's
//! [`ResponseParser`] from the connection's message stream. The body reaches the caller as
//! slices of the received buffers (`Bytes`), never copied again.

use std::collections::VecDeque;
use std::rc::Rc;
use std::task::Poll;

use bytes::Bytes;
use ringman_engine::{timeout, Connection, Messages};
use ringman_protocols::http::{ResponseEvent, ResponseHead, ResponseParser};

use super::pool::{Lease, Pool};
use super::request::{Body, BodyStream};
use super::{HttpClientError, Request, Url};

/// A response whose body is read chunk by chunk
/// ([`HttpClient::send_streaming`](super::HttpClient::send_streaming)): for Server-Sent Events and bodies too large to
/// hold. Reading slowly slows the server down (the connection stops reading while chunks
/// wait). Dropped before the end, the connection is closed rather than reused.
pub struct ResponseStream {
    /// The head.
    pub head: ResponseHead,
    inner: Option<Reader>,
    chunks: VecDeque<Bytes>,
    done: bool,
}

struct Reader {
    pool: Rc<Pool>,
    url: Url,
    conn: Connection,
    messages: Messages,
    parser: ResponseParser,
    reusable: bool,
}

impl ResponseStream {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.head.status
    }

    /// The next chunk of the body, `Ok(None)` at its end. Waits at most the client's
    /// `read_timeout` for it.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, HttpClientError> {
        loop {
            if let Some(c) = self.chunks.pop_front() {
                return Ok(Some(c));
            }
            if self.done {
                self.release();
                return Ok(None);
            }
            let Some(r) = self.inner.as_mut() else { return Ok(None) };
            let read_timeout = r.pool.config().read_timeout;
            let m = match timeout(read_timeout, r.messages.recv()).await {
                Ok(m) => m,
                Err(_) => {
                    self.abort();
                    return Err(HttpClientError::Timeout("read"));
                }
            };
            let r = self.inner.as_mut().expect("still reading");
            let (chunks, done) = (&mut self.chunks, &mut self.done);
            let mut reusable = r.reusable;
            let result = match &m {
                Some(m) => {
                    let data = &m.data;
                    r.parser
                        .feed(data, |ev| match ev {
                            ResponseEvent::Data(d) if !d.is_empty() => chunks.push_back(data.slice_ref(d)),
                            ResponseEvent::End { reusable: ok } => {
                                *done = true;
                                reusable = ok;
                            }
                            _ => {}
                        })
                        .map(|used| {
                            // Bytes after the response: nothing was asked for them.
                            if used < data.len() {
                                reusable = false;
                            }
                        })
                }
                None => r.parser.finish(|ev| {
                    if let ResponseEvent::End { .. } = ev {
                        *done = true;
                        reusable = false;
                    }
                }),
            };
            r.reusable = reusable;
            if let Err(e) = result {
                self.abort();
                return Err(e.into());
            }
        }
    }

    /// Reads the rest of the body into one buffer (at most `limit` bytes).
    pub(crate) async fn collect(mut self, limit: usize) -> Result<Bytes, HttpClientError> {
        let mut parts: Vec<Bytes> = Vec::new();
        let mut len = 0;
        while let Some(c) = self.chunk().await? {
            len += c.len();
            if len > limit {
                self.abort();
                return Err(HttpClientError::BodyTooLarge { limit });
            }
            parts.push(c);
        }
        Ok(match parts.len() {
            0 => Bytes::new(),
            1 => parts.pop().expect("one"),
            _ => {
                let mut all = Vec::with_capacity(len);
                for p in parts {
                    all.extend_from_slice(&p);
                }
                all.into()
            }
        })
    }

    fn release(&mut self) {
        if let Some(r) = self.inner.take() {
            let Reader { pool, url, conn, messages, reusable, .. } = r;
            // The stream goes first: anything more the server sends meets the idle
            // connection's handler (which closes it).
            drop(messages);
            pool.release(&url, conn, reusable);
        }
    }

    fn abort(&mut self) {
        if let Some(r) = self.inner.take() {
            drop(r.messages);
            r.conn.destroy();
        }
        self.done = true;
        self.chunks.clear();
    }
}

impl Drop for ResponseStream {
    fn drop(&mut self) {
        if self.done && self.chunks.is_empty() {
            self.release();
        } else {
            self.abort();
        }
    }
}

impl std::fmt::Debug for ResponseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseStream").field("status", &self.head.status).field("done", &self.done).finish()
    }
}

/// Why an exchange failed; `stale`: a reused connection closed before any answer (the
/// server had closed it while idle), so an idempotent request may be sent again.
pub(crate) struct Failure {
    pub(crate) error: HttpClientError,
    pub(crate) stale: bool,
}

impl From<HttpClientError> for Failure {
    fn from(error: HttpClientError) -> Failure {
        Failure { error, stale: false }
    }
}

/// A connection in the middle of an exchange: destroyed if the exchange is dropped (a
/// timeout, an aborted task) before handing it on, so its pool place is freed and no
/// half-read response is left on it.
struct InFlight(Option<Connection>);

impl InFlight {
    fn hand_over(mut self) -> Connection {
        self.0.take().expect("handed over once")
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.destroy();
        }
    }
}

/// Sends `req` on a connection of `pool` and reads up to the response head.
pub(crate) async fn exchange(pool: &Rc<Pool>, url: &Url, req: Request) -> Result<ResponseStream, Failure> {
    let mut head = Vec::with_capacity(256);
    req.encode_head(url, &mut head)?;
    let is_head = req.is_head();
    let Lease { conn, reused } = pool.acquire(url).await?;
    let guard = InFlight(Some(conn));
    // The stream is dropped before the guard (declared after it): leftover bytes never
    // reach the idle handler of a connection about to be destroyed anyway.
    let mut messages = match conn.messages() {
        Ok(m) => m,
        Err(_) => return Err(HttpClientError::NotOnRing.into()),
    };
    let mut parser = ResponseParser::new();
    parser.start(is_head);
    conn.send(&head);
    match req.body {
        Body::Empty => {}
        Body::Bytes(b) => {
            conn.send(&b);
        }
        Body::Stream(s) => {
            // (On an error the guard destroys the connection.)
            send_stream(&conn, s).await?;
        }
    }
    // Up to the head.
    let mut stream = ResponseStream {
        head: ResponseHead { minor_version: 1, status: 0, reason: String::new(), headers: Vec::new() },
        inner: None,
        chunks: VecDeque::new(),
        done: false,
    };
    let mut got_head = None;
    let mut reusable = false;
    let mut any_byte = false;
    while got_head.is_none() {
        let m = messages.recv().await;
        let (chunks, done) = (&mut stream.chunks, &mut stream.done);
        let result = match &m {
            Some(m) => {
                any_byte = true;
                let data = &m.data;
                parser
                    .feed(data, |ev| match ev {
                        ResponseEvent::Head(h) => got_head = Some(h),
                        ResponseEvent::Data(d) if !d.is_empty() => chunks.push_back(data.slice_ref(d)),
                        ResponseEvent::End { reusable: ok } => {
                            *done = true;
                            reusable = ok;
                        }
                        _ => {}
                    })
                    .map(|used| {
                        if used < data.len() {
                            reusable = false;
                        }
                    })
            }
            None if !any_byte => {
                drop(messages);
                return Err(Failure { error: HttpClientError::Closed, stale: reused });
            }
            None => parser.finish(|_| {}),
        };
        result.map_err(HttpClientError::from)?;
    }
    stream.head = got_head.expect("loop ended on the head");
    let conn = guard.hand_over();
    stream.inner = Some(Reader { pool: pool.clone(), url: url.clone(), conn, messages, parser, reusable });
    Ok(stream)
}

/// Writes a streamed body as chunks, waiting for the connection to drain when its send
/// buffer is full.
async fn send_stream(conn: &Connection, body: BodyStream) -> Result<(), HttpClientError> {
    loop {
        let next = std::future::poll_fn(|cx| {
            let mut p = body.pipe.borrow_mut();
            if let Some(c) = p.chunks.pop_front() {
                p.queued -= c.len();
                if let Some(w) = p.writer.take() {
                    w.wake();
                }
                return Poll::Ready(Ok(Some(c)));
            }
            if p.finished {
                return Poll::Ready(Ok(None));
            }
            if p.dropped {
                return Poll::Ready(Err(HttpClientError::BodyAborted));
            }
            p.reader = Some(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        match next {
            Some(chunk) => {
                conn.send(format!("{:x}\r\n", chunk.len()));
                conn.send(&chunk);
                conn.send("\r\n");
                if conn.send_queue_len() >= conn.max_send_buffer_size() / 2 && !conn.drained().await {
                    return Err(HttpClientError::Closed);
                }
            }
            None => {
                conn.send("0\r\n\r\n");
                return Ok(());
            }
        }
    }
}
