//! The HTTP client's errors.

use ringman_protocols::http::ResponseError;

/// Why a request produced no response.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    /// The URL is not `http://host[:port][/path][?query]` (`https://` needs TLS, which this
    /// build does not have).
    #[error("bad URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A method, header name or value the client refuses to send (CR, LF, or not a token).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The connection could not be established.
    #[error("connect failed: {0}")]
    Connect(#[from] ringman_engine::DialError),
    /// A deadline passed: `"connect"`, `"response"` (head, or the whole body for a whole
    /// read), `"read"` (the next chunk of a streamed body).
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The response broke HTTP/1.1 framing (the connection is closed).
    #[error(transparent)]
    Response(#[from] ResponseError),
    /// The connection closed before the response began (a reused connection the server
    /// had just closed; the request may be retried if it is idempotent).
    #[error("the connection closed before the response")]
    Closed,
    /// A whole-body read exceeded `max_body`.
    #[error("response body exceeds {limit} bytes")]
    BodyTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// More redirects than `max_redirects`.
    #[error("more than {0} redirects")]
    TooManyRedirects(usize),
    /// Used off a ring thread.
    #[error("not on a ring thread")]
    NotOnRing,
    /// The streamed request body's sender was dropped before `finish`.
    #[error("the request body stream ended without finish()")]
    BodyAborted,
}
