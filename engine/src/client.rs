//! `AsyncTcpConnection`: outgoing connections (Workerman's class of the same name), on the
//! same rings, slabs and send path as accepted ones.
//!
//! ```no_run
//! use ringman_engine::{AsyncTcpConnection, Worker};
//! let mut w = Worker::<()>::without_listener();
//! w.count = 1;
//! w.on_worker_start(|_, _| {
//!     let conn = AsyncTcpConnection::new("ws://127.0.0.1:8080/chat").unwrap().connect().unwrap();
//!     conn.on_websocket_connect(|c, _resp| {
//!         c.send("hello");
//!     });
//!     conn.on_message(|_, msg| println!("{}", String::from_utf8_lossy(msg.data)));
//!     conn.on_close(|c| {
//!         c.reconnect(std::time::Duration::from_secs(1));
//!     });
//! });
//! ```
//!
//! Through a proxy (Workerman 5.2's `proxySocks5` / `proxyHttp`):
//!
//! ```no_run
//! use ringman_engine::{AsyncTcpConnection, Proxy, Worker};
//! let mut w = Worker::<()>::without_listener();
//! w.on_worker_start(|_, _| {
//!     let mut client = AsyncTcpConnection::new("text://example.com:7").unwrap();
//!     client.proxy = Some(Proxy::parse("socks5://user:secret@127.0.0.1:1080").unwrap());
//!     let conn = client.connect().unwrap();
//!     conn.on_error(|_, e| eprintln!("{e}")); // a refusal: CONNECT_FAIL naming the proxy's answer
//! });
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ringman_protocols::Protocol;

use crate::config::Keepalive;
use crate::connection::Connection;
use crate::error::EngineError;
use crate::reactor::{with_core, Dial, DialOptions, ProxyKind, ProxySpec, WsOffer};
use crate::tls::ClientTls;

/// An outgoing connection to be opened (Workerman's `AsyncTcpConnection`): the target, its
/// protocol, and socket options. [`AsyncTcpConnection::connect`] opens it on the calling
/// ring thread and returns its [`Connection`] handle at once; set the connection's callbacks
/// on that handle (`on_connect`, `on_message`, `on_close`, `on_error`, ...) before returning
/// to the loop. From another thread, build and connect inside
/// [`WorkerHandle::run_on`](crate::WorkerHandle::run_on).
///
/// Sends made before the connection is established are held and go out once it is (for
/// `ws://`, once the server's `101` was validated), under the same `max_send_buffer_size`.
/// A connection that cannot be established reports `on_error` with
/// [`ConnError::Connect`](crate::ConnError::Connect) (code 1, CONNECT_FAIL) naming the cause,
/// then `on_close`.
#[derive(Clone)]
pub struct AsyncTcpConnection {
    host: String,
    port: u16,
    path: String,
    protocol: Arc<dyn Protocol>,
    websocket: bool,
    /// `unix://`: `host` is the socket file's path.
    unix: bool,
    /// Longest time from `connect()` to an established connection: name resolution,
    /// TCP connect and, for `ws://`, the upgrade (default 5 s).
    pub connect_timeout: Duration,
    /// Local address to bind before connecting (source address / port; TCP only).
    pub bind: Option<SocketAddr>,
    /// TCP_NODELAY (default true, like accepted connections; TCP only).
    pub nodelay: bool,
    /// TCP keepalive (default on, with the system's timing, as for accepted connections:
    /// see [`Keepalive`]); `None` turns it off. Not applied to Unix sockets.
    pub keepalive: Option<Keepalive>,
    /// `ws://`: extra header fields of the upgrade request (Origin, Authorization, ...;
    /// fields carrying CR or LF are skipped).
    pub headers: Vec<(String, String)>,
    /// `ws://`: subprotocols to offer (`Sec-WebSocket-Protocol`); the server's choice is in
    /// the response handed to `on_websocket_connect`.
    pub websocket_protocols: Vec<String>,
    /// `ws://`: offer permessage-deflate (default false, as Workerman's client).
    pub deflate: bool,
    /// `ws://`: send a ping after this much silence; a peer that then stays silent for
    /// another interval is destroyed with `ConnError::NoPong` (default none).
    pub websocket_ping_interval: Option<Duration>,
    /// TLS under the protocol: set by `wss://` and `ssl://` URLs (verification against the
    /// built-in roots), or set here for `text`/`frame` over TLS, or to trust a given CA
    /// ([`ClientTls::with_ca`]). The server's certificate must verify for the URL's host
    /// (also sent as SNI); a handshake that fails reports CONNECT_FAIL with
    /// [`ConnectError::Tls`](crate::ConnectError::Tls) and the reason.
    pub tls: Option<ClientTls>,
    /// Reach the target through this proxy (default none): the connection is made to the
    /// proxy, the tunnel negotiated, and only then is the connection established
    /// (`on_connect`). The target's name is resolved by the proxy, not here. A refused or
    /// failed handshake is CONNECT_FAIL with
    /// [`ConnectError::Proxy`](crate::ConnectError::Proxy) naming the proxy's answer; the
    /// connect timeout covers the handshake. `remote_addr()` is the proxy's address.
    pub proxy: Option<Proxy>,
}

/// A proxy for outgoing connections ([`AsyncTcpConnection::proxy`]): HTTP `CONNECT` (with
/// `Proxy-Authorization: Basic` when it has credentials) or SOCKS5 (RFC 1928, with RFC 1929
/// user/password authentication when it has credentials).
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    socks5: bool,
    host: String,
    port: u16,
    auth: Option<(String, String)>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // (The password is not shown.)
        f.debug_struct("Proxy")
            .field("kind", &if self.socks5 { "socks5" } else { "http" })
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.auth.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl Proxy {
    /// An HTTP `CONNECT` proxy at `host:port` (Workerman's `proxyHttp`).
    pub fn http(addr: &str) -> Result<Proxy, EngineError> {
        Proxy::at(false, addr)
    }

    /// A SOCKS5 proxy at `host:port` (Workerman's `proxySocks5`).
    pub fn socks5(addr: &str) -> Result<Proxy, EngineError> {
        Proxy::at(true, addr)
    }

    /// A proxy from a URL: `http://[USER:PASS@]HOST:PORT` or
    /// `socks5://[USER:PASS@]HOST:PORT` (`socks5h://` is the same: the proxy always resolves
    /// the target's name). User and password may be percent-encoded.
    pub fn parse(url: &str) -> Result<Proxy, EngineError> {
        let bad = |reason| EngineError::BadAddress { addr: url.to_string(), reason };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("expected http:// or socks5://"))?;
        let socks5 = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "socks5" | "socks5h" => true,
            _ => return Err(bad("a proxy is http:// or socks5://")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (userinfo, addr) = match rest.rsplit_once('@') {
            Some((u, a)) => (Some(u), a),
            None => (None, rest),
        };
        let proxy = Proxy::at(socks5, addr).map_err(|_| bad("expected HOST:PORT after the scheme"))?;
        match userinfo {
            None => Ok(proxy),
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                let user = percent_decode(user).ok_or_else(|| bad("bad percent-encoding in the user name"))?;
                let pass = percent_decode(pass).ok_or_else(|| bad("bad percent-encoding in the password"))?;
                proxy.with_auth(&user, &pass).map_err(|_| bad("user and password are 1-255 bytes each"))
            }
        }
    }

    fn at(socks5: bool, addr: &str) -> Result<Proxy, EngineError> {
        let (_, host, port, path) = parse_url(&format!("proxy://{addr}"))?;
        let bad = |reason| EngineError::BadAddress { addr: addr.to_string(), reason };
        let port = port.ok_or_else(|| bad("missing port"))?;
        if !path.is_empty() {
            return Err(bad("a proxy is HOST:PORT"));
        }
        Ok(Proxy { socks5, host, port, auth: None })
    }

    /// The same proxy with credentials: user and password for SOCKS5 (each 1-255 bytes, as
    /// RFC 1929 allows), `Proxy-Authorization: Basic` for HTTP.
    pub fn with_auth(mut self, user: &str, password: &str) -> Result<Proxy, EngineError> {
        if user.is_empty() || user.len() > 255 || password.is_empty() || password.len() > 255 {
            return Err(EngineError::BadAddress {
                addr: self.host.clone(),
                reason: "proxy user and password are 1-255 bytes each",
            });
        }
        self.auth = Some((user.to_string(), password.to_string()));
        Ok(self)
    }

    /// Whether this is a SOCKS5 proxy (else HTTP `CONNECT`).
    pub fn is_socks5(&self) -> bool {
        self.socks5
    }

    /// The proxy's host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user name, when it has credentials.
    pub fn user(&self) -> Option<&str> {
        self.auth.as_ref().map(|(u, _)| u.as_str())
    }

    fn into_spec(self) -> ProxySpec {
        ProxySpec {
            kind: if self.socks5 { ProxyKind::Socks5 } else { ProxyKind::Http },
            host: self.host,
            port: self.port,
            auth: self.auth,
        }
    }
}

/// Decodes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl std::fmt::Debug for AsyncTcpConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncTcpConnection")
            .field("host", &self.host)
            .field("unix", &self.unix)
            .field("port", &self.port)
            .field("path", &self.path)
            .field("protocol", &self.protocol.name())
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// Splits `scheme://host[:port][/path]` (IPv6 hosts in brackets).
fn parse_url(url: &str) -> Result<(String, String, Option<u16>, String), EngineError> {
    let bad = |reason| EngineError::BadAddress { addr: url.to_string(), reason };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("expected scheme://host:port"))?;
    if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(bad("scheme must be alphanumeric"));
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    // The path goes into a `ws://` upgrade request verbatim: a CR or LF there would end the
    // request line and inject header fields, a space would split it.
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(bad("the path contains a space or control characters (CR, LF, ...): percent-encode them"));
    }
    if authority.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(bad("the host contains a space or control characters"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed [ in IPv6 host"))?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    let port = port.map(|p| p.parse::<u16>().map_err(|_| bad("port must be a number 1-65535"))).transpose()?;
    let path = if path.starts_with('?') { format!("/{path}") } else { path.to_string() };
    Ok((scheme.to_ascii_lowercase(), host.to_string(), port, path))
}

impl AsyncTcpConnection {
    /// A connection to `scheme://host:port[/path]` with a built-in protocol: `tcp`, `text`,
    /// `frame`, `ssl` (tcp over TLS), `ws` or `wss` (the WebSocket client; port 80, or 443
    /// for `wss`, when omitted, the path and query go
    /// into the upgrade request, so a URL with a space or a control character such as CR or
    /// LF is refused with [`EngineError::BadAddress`]: percent-encode them). `host` is a name
    /// (resolved off the ring, `/etc/hosts` first) or an address (`[::1]` for IPv6).
    ///
    /// `unix:///path/to/socket` connects to a Unix-domain stream socket, with raw bytes until
    /// [`AsyncTcpConnection::set_protocol`] chooses another protocol (Workerman's
    /// `$connection->protocol`); `bind`, `nodelay` and `keepalive` do not apply to it.
    ///
    /// ```no_run
    /// use ringman_engine::AsyncTcpConnection;
    /// # fn on_ring() -> Result<(), ringman_engine::EngineError> {
    /// let mut c = AsyncTcpConnection::new("unix:///run/echo.sock")?;
    /// c.set_protocol("text")?;
    /// let conn = c.connect()?;
    /// conn.send("hello");
    /// # Ok(()) }
    /// ```
    pub fn new(url: &str) -> Result<AsyncTcpConnection, EngineError> {
        if let Some(c) = AsyncTcpConnection::unix(url, Arc::new(ringman_protocols::Raw))? {
            return Ok(c);
        }
        let (scheme, host, port, path) = parse_url(url)?;
        let (protocol, websocket): (Arc<dyn Protocol>, bool) = match scheme.as_str() {
            "ws" | "wss" => (Arc::new(ringman_protocols::Raw), true),
            "ssl" | "tls" => (Arc::new(ringman_protocols::Raw), false),
            s => (ringman_protocols::by_scheme(s).ok_or(EngineError::UnknownScheme(scheme.clone()))?, false),
        };
        let tls = matches!(scheme.as_str(), "wss" | "ssl" | "tls");
        let port = match (port, websocket, tls) {
            (Some(p), _, _) => p,
            (None, true, false) => 80,
            (None, true, true) => 443,
            (None, false, _) => {
                return Err(EngineError::BadAddress { addr: url.to_string(), reason: "missing port" });
            }
        };
        let mut c = AsyncTcpConnection::build(host, port, path, protocol, websocket);
        if tls {
            c.tls = Some(ClientTls::new());
        }
        Ok(c)
    }

    /// A connection speaking a custom protocol to `scheme://host:port` (the scheme is only
    /// a label).
    pub fn with_protocol(url: &str, protocol: Arc<dyn Protocol>) -> Result<AsyncTcpConnection, EngineError> {
        if let Some(c) = AsyncTcpConnection::unix(url, protocol.clone())? {
            return Ok(c);
        }
        let (_, host, port, path) = parse_url(url)?;
        let port = port.ok_or(EngineError::BadAddress { addr: url.to_string(), reason: "missing port" })?;
        Ok(AsyncTcpConnection::build(host, port, path, protocol, false))
    }

    /// A `unix:///path` connection, if `url` is one.
    fn unix(url: &str, protocol: Arc<dyn Protocol>) -> Result<Option<AsyncTcpConnection>, EngineError> {
        let Some((_, path)) = url.split_once("://").filter(|(s, _)| s.eq_ignore_ascii_case("unix")) else {
            return Ok(None);
        };
        let bad = |reason| EngineError::BadAddress { addr: url.to_string(), reason };
        if path.is_empty() {
            return Err(bad("expected unix:///path/to/socket"));
        }
        if path.len() > 107 {
            return Err(bad("a unix socket path is at most 107 bytes long"));
        }
        let mut c = AsyncTcpConnection::build(path.to_string(), 0, String::new(), protocol, false);
        c.unix = true;
        Ok(Some(c))
    }

    /// Chooses the protocol by name — `tcp`, `text` or `frame` — whatever the URL's scheme
    /// (Workerman's `$connection->protocol`); meant for `unix://`, whose URL names none.
    /// Other names are [`EngineError::UnknownProtocol`] (`ws://` is a URL of its own; use
    /// [`AsyncTcpConnection::set_custom_protocol`] for a custom protocol).
    pub fn set_protocol(&mut self, name: &str) -> Result<&mut Self, EngineError> {
        let name = name.to_ascii_lowercase();
        let protocol = ["tcp", "text", "frame"]
            .contains(&name.as_str())
            .then(|| ringman_protocols::by_scheme(&name))
            .flatten()
            .ok_or(EngineError::UnknownProtocol(name))?;
        Ok(self.set_custom_protocol(protocol))
    }

    /// Chooses a custom protocol (as [`AsyncTcpConnection::with_protocol`] does). A `ws://`
    /// connection stops being a WebSocket client.
    pub fn set_custom_protocol(&mut self, protocol: Arc<dyn Protocol>) -> &mut Self {
        self.protocol = protocol;
        self.websocket = false;
        self
    }

    fn build(host: String, port: u16, path: String, protocol: Arc<dyn Protocol>, websocket: bool) -> Self {
        AsyncTcpConnection {
            host,
            port,
            path,
            protocol,
            websocket,
            unix: false,
            connect_timeout: Duration::from_secs(5),
            bind: None,
            nodelay: true,
            keepalive: Some(Keepalive::default()),
            headers: Vec::new(),
            websocket_protocols: Vec::new(),
            deflate: false,
            websocket_ping_interval: None,
            tls: None,
            proxy: None,
        }
    }

    /// The host as given (for `unix://`, the socket file's path).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (0 for `unix://`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Opens the connection on the calling ring thread and returns its handle at once; the
    /// outcome arrives as `on_connect` or `on_error` (CONNECT_FAIL). Errors here:
    /// [`EngineError::NotOnRingThread`], [`EngineError::Stopping`], [`EngineError::Socket`],
    /// [`EngineError::BadAddress`] for a SOCKS5 target name longer than 255 bytes or for TLS
    /// over `unix://` (not supported), and [`EngineError::Tls`] for TLS settings that do not load.
    pub fn connect(self) -> Result<Connection, EngineError> {
        if self.proxy.as_ref().is_some_and(Proxy::is_socks5) && self.host.len() > 255 {
            return Err(EngineError::BadAddress {
                addr: self.host,
                reason: "a SOCKS5 target name is at most 255 bytes",
            });
        }
        let ws = self.websocket.then(|| WsOffer {
            headers: self.headers,
            protocols: self.websocket_protocols,
            deflate: self.deflate,
            ping_interval: self.websocket_ping_interval,
            key: String::new(),
        });
        let opts = DialOptions {
            connect_timeout: self.connect_timeout,
            bind: self.bind,
            nodelay: self.nodelay,
            keepalive: self.keepalive,
        };
        let path = if self.path.is_empty() { "/".to_string() } else { self.path };
        if self.unix && self.tls.is_some() {
            return Err(EngineError::BadAddress {
                addr: format!("unix://{}", self.host),
                reason: "TLS over unix:// is not supported",
            });
        }
        let tls = match &self.tls {
            Some(t) => Some(crate::tls::load_client(t, &self.host, self.websocket)?),
            None => None,
        };
        let proxy = self.proxy.map(Proxy::into_spec);
        let unix = self.unix.then(|| std::path::PathBuf::from(&self.host));
        let mut dial = Dial::new(self.host, self.port, path, opts, self.protocol, ws, proxy);
        dial.unix = unix;
        dial.tls = tls;
        let mut dial = Some(dial);
        let r = with_core(|c| c.connect(dial.take().expect("called once")));
        // A dial refused off a ring thread is dropped here, outside any core.
        drop(dial);
        r.unwrap_or(Err(EngineError::NotOnRingThread)).map(Connection::from_id)
    }

    /// One hop of a transparent proxy: opens this connection and pipes it with `peer` both
    /// ways (`peer.pipe(up)`, `up.pipe(peer)`: back-pressure in each direction, each side
    /// closed after the other's flush). If the connection cannot be established, its
    /// CONNECT_FAIL is logged and `peer` is closed (through the pipe). Both must be on the
    /// calling ring thread, as for `pipe`.
    ///
    /// ```no_run
    /// use ringman_engine::{AsyncTcpConnection, Worker};
    /// let mut w = Worker::<()>::new("tcp://0.0.0.0:8080").unwrap();
    /// w.on_connect(|client, _| {
    ///     if let Err(e) = AsyncTcpConnection::new("tcp://10.0.0.2:80").and_then(|up| up.connect_piped(client)) {
    ///         eprintln!("{e}");
    ///         client.close(None);
    ///     }
    /// });
    /// ```
    pub fn connect_piped(self, peer: &Connection) -> Result<Connection, EngineError> {
        let up = self.connect()?;
        if !(peer.pipe(up) && up.pipe(*peer)) {
            up.destroy();
            return Err(EngineError::NotOnRingThread);
        }
        let from = peer.remote_addr();
        up.on_error(move |up, e| log::warn!("upstream {} of {from:?}: {e}", up.id()));
        Ok(up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_host_port_and_path() {
        let p = parse_url;
        assert_eq!(
            p("ws://example.com/chat?x=1").unwrap(),
            ("ws".into(), "example.com".into(), None, "/chat?x=1".into())
        );
        assert_eq!(p("tcp://127.0.0.1:6379").unwrap(), ("tcp".into(), "127.0.0.1".into(), Some(6379), String::new()));
        assert_eq!(p("ws://[::1]:8080/").unwrap(), ("ws".into(), "::1".into(), Some(8080), "/".into()));
        assert_eq!(p("ws://h:1?q").unwrap().3, "/?q");
        assert!(p("tcp://:80").is_err());
        assert!(p("tcp://h:99999").is_err());
        assert!(p("no-scheme").is_err());
        assert!(p("ws://[::1:80").is_err());
    }

    #[test]
    fn control_characters_and_spaces_in_a_url_are_refused() {
        for url in [
            "ws://h:1/a\r\nX-Injected: 1",
            "ws://h:1/a\nb",
            "ws://h:1/?q=\r",
            "ws://h:1/a\tb",
            "ws://h:1/a\x7fb",
            "ws://h:1/a b",
            "ws://h\r\nX: 1:1/",
        ] {
            match AsyncTcpConnection::new(url) {
                Err(EngineError::BadAddress { reason, .. }) => assert!(reason.contains("control"), "{url:?}: {reason}"),
                other => panic!("{url:?}: {other:?}"),
            }
        }
        assert!(AsyncTcpConnection::new("ws://h:1/a%0D%0Ab?x=%20").is_ok(), "percent-encoded is fine");
    }

    #[test]
    fn proxy_urls_with_and_without_credentials() {
        let p = Proxy::parse("socks5://us%40er:p%3Ass@127.0.0.1:1080").unwrap();
        assert!(p.is_socks5());
        assert_eq!((p.host(), p.port(), p.user()), ("127.0.0.1", 1080, Some("us@er")));
        assert_eq!(p.auth.as_ref().unwrap().1, "p:ss");
        let p = Proxy::parse("http://[::1]:3128/").unwrap();
        assert!(!p.is_socks5());
        assert_eq!((p.host(), p.port(), p.user()), ("::1", 3128, None));
        assert!(Proxy::parse("socks5h://h:1").unwrap().is_socks5());
        for bad in ["ftp://h:1", "http://h", "socks5://u:p@h", "http://u:%zz@h:1", "http://:p@h:1", "socks5://h:1/x"] {
            assert!(Proxy::parse(bad).is_err(), "{bad}");
        }
        assert!(Proxy::socks5("h:1").unwrap().with_auth(&"u".repeat(256), "p").is_err());
        assert!(!format!("{:?}", Proxy::parse("http://u:secret@h:1").unwrap()).contains("secret"));
    }

    #[test]
    fn ports_default_only_for_websocket() {
        assert_eq!(AsyncTcpConnection::new("ws://example.com").unwrap().port(), 80);
        assert!(AsyncTcpConnection::new("tcp://example.com").is_err());
        assert!(AsyncTcpConnection::new("gopher://example.com:70").is_err());
        let c = AsyncTcpConnection::new("text://localhost:7000").unwrap();
        assert_eq!((c.host(), c.port()), ("localhost", 7000));
    }
}
