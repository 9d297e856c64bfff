//! An async HTTP/1.1 client on the rings (Workerman's `workerman/http-client`).
//!
//! | file | what |
//! |------|------|
//! | `url.rs` | `http://host[:port]/path?query`, `Location` resolution |
//! | `request.rs` | [`Request`] (method, fields, body: none, bytes, or streamed chunks), [`Response`] |
//! | `pool.rs` | keep-alive connections per ring and origin, `max_conn_per_addr`, idle timeout |
//! | `exchange.rs` | one request/response on a pooled connection, [`ResponseStream`] |
//! | `error.rs` | [`HttpClientError`] |
//!
//! The response parser is the protocols crate's
//! ([`ResponseParser`](ringman_protocols::http::ResponseParser)): `Content-Length`, chunked and close-delimited
//! bodies, interim `1xx` responses skipped, no body after `HEAD`, `204` and `304`, and the
//! same strictness as the server's request parser. Redirects are off by default
//! (`max_redirects`). `https://` is refused until TLS exists.
//!
//! ```no_run
//! use ringman_components::http_client::{HttpClient, Request};
//! # fn on_ring() {
//! let client = HttpClient::new(Default::default());
//! ringman_engine::spawn(async move {
//!     let r = client.send(Request::get("http://127.0.0.1:8080/hello")).await.unwrap();
//!     println!("{} {} bytes", r.status(), r.body.len());
//!     // Streamed (Server-Sent Events, large bodies):
//!     let mut s = client.send_streaming(Request::get("http://127.0.0.1:8080/events")).await.unwrap();
//!     while let Some(chunk) = s.chunk().await.unwrap() {
//!         println!("{chunk:?}");
//!     }
//! })
//! .unwrap();
//! # }
//! ```

mod error;
mod exchange;
mod pool;
mod request;
mod url;

use std::rc::Rc;
use std::time::Duration;

pub use error::HttpClientError;
pub use exchange::ResponseStream;
pub use request::{Body, BodySender, BodyStream, Request, Response, ResponseHead};
pub use url::Url;

use exchange::{exchange, Failure};
use pool::Pool;
use ringman_engine::timeout;

/// The client's settings (Workerman's http-client options), with their defaults.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Connections per origin (host and port) and ring (default 16).
    pub max_conn_per_addr: usize,
    /// An idle keep-alive connection is closed after this (default 30 s).
    pub idle_timeout: Duration,
    /// Connect timeout (default 5 s).
    pub connect_timeout: Duration,
    /// From sending to the response head, and for [`HttpClient::send`] to the whole body
    /// (default 30 s).
    pub request_timeout: Duration,
    /// Between two chunks of a [`ResponseStream`] (default 60 s).
    pub read_timeout: Duration,
    /// Redirects followed (default 0: a 3xx is returned as it is).
    pub max_redirects: usize,
    /// Largest body [`HttpClient::send`] reads (default 16 MiB; stream larger ones).
    pub max_body: usize,
    /// How `https://` servers are verified (default: the built-in roots; a CA file with
    /// [`ClientTls::with_ca`](ringman_engine::ClientTls::with_ca)).
    pub tls: ringman_engine::ClientTls,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            max_conn_per_addr: 16,
            idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            max_redirects: 0,
            max_body: 16 << 20,
            tls: ringman_engine::ClientTls::default(),
        }
    }
}

/// An HTTP/1.1 client on the calling ring thread (clone it freely there; it is not `Send`).
/// Each clone shares one connection pool.
#[derive(Clone)]
pub struct HttpClient {
    pool: Rc<Pool>,
}

impl HttpClient {
    /// A client with `cfg`.
    pub fn new(cfg: ClientConfig) -> HttpClient {
        HttpClient { pool: Pool::new(cfg) }
    }

    /// Its settings.
    pub fn config(&self) -> &ClientConfig {
        self.pool.config()
    }

    /// `GET url`, the whole response.
    pub async fn get(&self, url: &str) -> Result<Response, HttpClientError> {
        self.send(Request::get(url)).await
    }

    /// Sends `req` and reads the whole response (redirects followed up to
    /// `max_redirects`; the body up to `max_body`), within `request_timeout`.
    pub async fn send(&self, req: Request) -> Result<Response, HttpClientError> {
        let cfg = self.pool.config().clone();
        let work = async {
            let s = self.send_streaming(req).await?;
            let head = s.head.clone();
            let body = s.collect(cfg.max_body).await?;
            Ok(Response { head, body })
        };
        timeout(cfg.request_timeout, work).await.map_err(|_| HttpClientError::Timeout("response"))?
    }

    /// [`HttpClient::send`] with a callback: `done` gets the outcome on this ring thread.
    /// Errors: [`HttpClientError::NotOnRing`] off a ring thread (then `done` is dropped).
    pub fn send_then(
        &self,
        req: Request,
        done: impl FnOnce(Result<Response, HttpClientError>) + 'static,
    ) -> Result<(), HttpClientError> {
        let me = self.clone();
        ringman_engine::spawn(async move { done(me.send(req).await) }).map_err(|_| HttpClientError::NotOnRing)?;
        Ok(())
    }

    /// Sends `req` and returns once the response head is in; the body is read with
    /// [`ResponseStream::chunk`]. Redirects are followed as for [`HttpClient::send`].
    pub async fn send_streaming(&self, mut req: Request) -> Result<ResponseStream, HttpClientError> {
        let cfg = self.pool.config();
        let mut url = Url::parse(&req.url)?;
        let mut redirects = 0;
        loop {
            let replay = replayable(&req);
            let this = replayable(&req).unwrap_or_else(|| take(&mut req));
            let first = timeout(cfg.request_timeout, exchange(&self.pool, &url, this)).await;
            let stream = match first {
                Err(_) => return Err(HttpClientError::Timeout("response")),
                Ok(Ok(s)) => s,
                // A kept-alive connection the server had closed: once more on a fresh one,
                // for a request that can be sent twice.
                Ok(Err(Failure { stale: true, .. })) if replay.is_some() && idempotent(&req.method) => {
                    let again = replayable(&req).expect("checked");
                    match timeout(cfg.request_timeout, exchange(&self.pool, &url, again)).await {
                        Err(_) => return Err(HttpClientError::Timeout("response")),
                        Ok(r) => r.map_err(|f| f.error)?,
                    }
                }
                Ok(Err(f)) => return Err(f.error),
            };
            let status = stream.status();
            let location = stream.head.header_str("location").map(str::to_string);
            let (Some(location), true, Some(mut next)) =
                (location, matches!(status, 301 | 302 | 303 | 307 | 308), replay.filter(|_| cfg.max_redirects > 0))
            else {
                return Ok(stream);
            };
            if redirects >= cfg.max_redirects {
                return Err(HttpClientError::TooManyRedirects(cfg.max_redirects));
            }
            redirects += 1;
            // The redirect's own body is read and dropped (the connection stays reusable).
            let _ = stream.collect(cfg.max_body).await?;
            url = url.join(&location)?;
            next.url = format!("http://{}{}", url.host_header(), url.target);
            if status == 303 || (matches!(status, 301 | 302) && next.method == "POST") {
                next.method = "GET".into();
                next.body = Body::Empty;
            }
            req = next;
        }
    }

    /// Connections open to `url`'s origin on this ring, and how many of them are idle.
    pub fn pool_counts(&self, url: &str) -> Result<(usize, usize), HttpClientError> {
        Ok(self.pool.counts(&Url::parse(url)?))
    }
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").field("config", self.pool.config()).finish()
    }
}

/// A copy of `req` that can be sent again (not for a streamed body).
fn replayable(req: &Request) -> Option<Request> {
    let body = match &req.body {
        Body::Empty => Body::Empty,
        Body::Bytes(b) => Body::Bytes(b.clone()),
        Body::Stream(_) => return None,
    };
    Some(Request { method: req.method.clone(), url: req.url.clone(), headers: req.headers.clone(), body })
}

fn take(req: &mut Request) -> Request {
    std::mem::replace(req, Request::new(&req.method.clone(), &req.url.clone()))
}

fn idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE")
}
