//! `run --target URL`: loading a server the harness did not start.
//!
//! The URL's scheme names the wire protocol (`tcp` = raw echo, `text`, `frame`, `ws`, `http`)
//! and must match the scenario. HTTP and WebSocket requests use the URL's path and send its
//! `host[:port]` as `Host`. Load-generator failures against a target are mapped to
//! [`TargetError`], one line each, saying what the target did instead of what was expected.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::cli::Scenario;
use crate::error::{ArgError, LoadError};

/// A parsed `--target` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as given (for messages).
    pub url: String,
    /// Wire protocol named by the scheme.
    pub scenario: Scenario,
    /// Host as written (name, IPv4, or IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Request path (`/` when the URL has none; only `http` and `ws` may have one).
    pub path: String,
}

/// The scenario a target URL scheme stands for.
pub fn scheme_scenario(scheme: &str) -> Option<Scenario> {
    match scheme {
        "tcp" => Some(Scenario::Echo),
        "text" => Some(Scenario::Text),
        "frame" => Some(Scenario::Frame),
        "ws" | "websocket" => Some(Scenario::Ws),
        "http" => Some(Scenario::Http),
        "fanout" => Some(Scenario::Fanout),
        "udp" => Some(Scenario::Udp),
        _ => None,
    }
}

/// The URL scheme of a scenario (the inverse of [`scheme_scenario`]).
pub fn scenario_scheme(s: Scenario) -> &'static str {
    match s {
        Scenario::Echo | Scenario::Proxy => "tcp",
        Scenario::Text => "text",
        Scenario::Frame => "frame",
        Scenario::Ws => "ws",
        Scenario::Http => "http",
        Scenario::Fanout | Scenario::FanoutRedis => "fanout",
        Scenario::Udp => "udp",
        // (No `--target` form: the harness makes the PKI the generator trusts.)
        Scenario::Https | Scenario::Handshake => "https",
        Scenario::Wss => "wss",
    }
}

impl Target {
    /// Parses `<tcp|text|frame|ws|http>://HOST:PORT[/path]` (`[v6]:PORT` for IPv6; the port
    /// may be omitted for `http` and `ws`, meaning 80).
    pub fn parse(url: &str) -> Result<Target, ArgError> {
        let bad = |reason| ArgError::BadTarget { url: url.to_string(), reason };
        let (scheme, rest) = url.split_once("://").ok_or(bad("expected <scheme>://HOST:PORT"))?;
        let scenario = scheme_scenario(scheme).ok_or(bad("scheme must be tcp, text, frame, ws or http"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if !path.is_empty() && !matches!(scenario, Scenario::Http | Scenario::Ws | Scenario::Fanout) {
            return Err(bad("only http:// and ws:// targets take a path"));
        }
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad("the path must not contain spaces or control characters"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or(bad("unclosed [ in IPv6 host"))?;
            match after {
                "" => (h, None),
                p => (h, Some(p.strip_prefix(':').ok_or(bad("expected :PORT after ]"))?)),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        if host.bytes().any(|b| b <= b' ' || b == b'/' || b == b'@' || b == 0x7f) {
            return Err(bad("bad character in host"));
        }
        let port = match port {
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(bad("port must be 1..65535")),
                Ok(p) => p,
            },
            None if matches!(scenario, Scenario::Http | Scenario::Ws | Scenario::Fanout) => 80,
            None => return Err(bad("missing :PORT")),
        };
        let path = if path.is_empty() { "/".to_string() } else { path.to_string() };
        Ok(Target { url: url.to_string(), scenario, host: host.to_string(), port, path })
    }

    /// The `Host` header value: `host` (bracketed if IPv6) plus `:port` unless it is 80.
    pub fn host_header(&self) -> String {
        let h = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == 80 {
            h
        } else {
            format!("{h}:{}", self.port)
        }
    }

    /// Resolves the host to a socket address (the first one the resolver returns).
    pub fn resolve(&self) -> Result<SocketAddr, TargetError> {
        let err = |detail: String| TargetError::Resolve { target: self.url.clone(), detail };
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| err(e.to_string()))?
            .next()
            .ok_or_else(|| err("no address".into()))
    }
}

/// Why loading a target failed, in terms of what the target did.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The host name did not resolve.
    #[error("{target}: cannot resolve host: {detail}")]
    Resolve {
        /// The URL.
        target: String,
        /// Resolver message.
        detail: String,
    },
    /// Nothing listens on the port.
    #[error("{target}: connection refused by {addr} (is the server running?)")]
    Refused {
        /// The URL.
        target: String,
        /// Resolved address.
        addr: SocketAddr,
    },
    /// Connecting failed otherwise (timeout, unreachable, reset during the handshake).
    #[error("{target}: cannot connect to {addr}: {detail}")]
    Connect {
        /// The URL.
        target: String,
        /// Resolved address.
        addr: SocketAddr,
        /// OS error.
        detail: String,
    },
    /// The WebSocket upgrade was not answered with 101.
    #[error(
        "{target}: WebSocket handshake failed: the server answered {answer:?} instead of 101 (not a WebSocket server?)"
    )]
    Handshake {
        /// The URL.
        target: String,
        /// First line of the answer.
        answer: String,
    },
    /// The responses do not parse as the scenario's protocol, or an echo differs.
    #[error("{target}: the server does not speak {scheme}://: {detail}")]
    WrongProtocol {
        /// The URL.
        target: String,
        /// Expected scheme.
        scheme: &'static str,
        /// What was seen.
        detail: String,
    },
    /// Nothing came back during the whole run.
    #[error("{target}: no {scheme} response arrived during the run (does the server speak {scheme}://?)")]
    NoResponse {
        /// The URL.
        target: String,
        /// Expected scheme.
        scheme: &'static str,
    },
    /// The server closed every connection.
    #[error("{target}: the server closed all {conns} connections (does it speak {scheme}://?)")]
    AllClosed {
        /// The URL.
        target: String,
        /// Expected scheme.
        scheme: &'static str,
        /// Connections opened.
        conns: usize,
    },
    /// `--target-pid` names no running process.
    #[error("--target-pid {pid}: no such process")]
    NoPid {
        /// The pid.
        pid: u32,
    },
    /// Any other load-generator failure.
    #[error("{target}: {source}")]
    Load {
        /// The URL.
        target: String,
        /// The failure.
        source: LoadError,
    },
}

/// Maps a load-generator failure against `t` to what the target did.
pub fn classify(t: &Target, e: LoadError) -> TargetError {
    let target = t.url.clone();
    let scheme = scenario_scheme(t.scenario);
    match e {
        LoadError::Connect { addr, source } if source.kind() == std::io::ErrorKind::ConnectionRefused => {
            TargetError::Refused { target, addr }
        }
        // A read that timed out or hit EOF while waiting for the handshake answer.
        LoadError::Connect { source, .. }
            if matches!(t.scenario, Scenario::Ws | Scenario::Fanout) && is_handshake_read(&source) =>
        {
            TargetError::Handshake { target, answer: format!("nothing ({source})") }
        }
        LoadError::Connect { addr, source } => TargetError::Connect { target, addr, detail: source.to_string() },
        LoadError::Handshake(answer) => TargetError::Handshake { target, answer },
        LoadError::Protocol(p) => TargetError::WrongProtocol { target, scheme, detail: p.to_string() },
        e @ LoadError::NotEcho { .. } => TargetError::WrongProtocol { target, scheme, detail: e.to_string() },
        LoadError::NoResponse => TargetError::NoResponse { target, scheme },
        LoadError::AllConnectionsLost(conns) => TargetError::AllClosed { target, scheme, conns },
        source => TargetError::Load { target, source },
    }
}

fn is_handshake_read(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::UnexpectedEof
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(url: &str) -> Target {
        Target::parse(url).unwrap()
    }

    #[test]
    fn parses_every_scheme() {
        let x = t("tcp://127.0.0.1:9301");
        assert_eq!((x.scenario, x.host.as_str(), x.port, x.path.as_str()), (Scenario::Echo, "127.0.0.1", 9301, "/"));
        assert_eq!(t("text://localhost:1").scenario, Scenario::Text);
        assert_eq!(t("frame://h:2").scenario, Scenario::Frame);
        assert_eq!(t("ws://h:3/chat?room=1").path, "/chat?room=1");
        assert_eq!(t("websocket://h:3").scenario, Scenario::Ws);
        let h = t("http://example.test/hello");
        assert_eq!((h.scenario, h.port, h.path.as_str()), (Scenario::Http, 80, "/hello"));
        for s in Scenario::ALL.into_iter().filter(|s| !s.is_tls()) {
            // A proxy in front of an echo speaks tcp://.
            assert_eq!(scheme_scenario(scenario_scheme(s)), Some(s.wire()));
        }
    }

    #[test]
    fn host_header_and_ipv6() {
        assert_eq!(t("http://example.test/x").host_header(), "example.test");
        assert_eq!(t("http://127.0.0.1:8080/").host_header(), "127.0.0.1:8080");
        let v6 = t("http://[::1]:8080/a");
        assert_eq!((v6.host.as_str(), v6.port, v6.path.as_str()), ("::1", 8080, "/a"));
        assert_eq!(v6.host_header(), "[::1]:8080");
        assert_eq!(t("ws://[::1]").host_header(), "[::1]");
    }

    #[test]
    fn rejects_bad_urls() {
        for url in [
            "127.0.0.1:80",
            "sctp://h:1",
            "https://h:1/",
            "tcp://h",
            "tcp://h:0",
            "tcp://h:70000",
            "tcp://h:x",
            "tcp://:80",
            "tcp://h:1/path",
            "http://h:1/a b",
            "http://[::1:80",
            "http://[::1]80",
            "http://us@er:1/",
        ] {
            assert!(matches!(Target::parse(url), Err(ArgError::BadTarget { .. })), "{url}");
        }
    }

    #[test]
    fn resolves_loopback() {
        assert_eq!(t("tcp://127.0.0.1:5").resolve().unwrap(), "127.0.0.1:5".parse().unwrap());
        assert!(matches!(t("tcp://no-such-host.invalid:5").resolve(), Err(TargetError::Resolve { .. })));
    }

    #[test]
    fn error_mapping() {
        use std::io::{Error, ErrorKind};
        let ws = t("ws://127.0.0.1:9/");
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let refused = LoadError::Connect { addr, source: Error::from(ErrorKind::ConnectionRefused) };
        let e = classify(&ws, refused);
        assert!(matches!(e, TargetError::Refused { .. }));
        assert_eq!(e.to_string(), "ws://127.0.0.1:9/: connection refused by 127.0.0.1:9 (is the server running?)");
        let e = classify(&ws, LoadError::Handshake("GET / HTTP/1.1".into()));
        assert!(e.to_string().contains("answered \"GET / HTTP/1.1\" instead of 101"), "{e}");
        let silent = LoadError::Connect { addr, source: Error::from(ErrorKind::WouldBlock) };
        assert!(matches!(classify(&ws, silent), TargetError::Handshake { .. }));
        let tcp = t("tcp://127.0.0.1:9");
        let timeout = LoadError::Connect { addr, source: Error::from(ErrorKind::TimedOut) };
        assert!(matches!(classify(&tcp, timeout), TargetError::Connect { .. }));
        let e = classify(&tcp, LoadError::NotEcho { expected: "abc".into(), got: "HTTP/1.1 400".into() });
        assert!(matches!(e, TargetError::WrongProtocol { scheme: "tcp", .. }), "{e}");
        let http = t("http://127.0.0.1:9/");
        let bad =
            ringman_protocols::ProtocolError::Malformed { protocol: "http", reason: "not an HTTP/1.x status line" };
        let e = classify(&http, LoadError::Protocol(bad));
        assert!(e.to_string().starts_with("http://127.0.0.1:9/: the server does not speak http://"), "{e}");
        assert!(matches!(classify(&tcp, LoadError::NoResponse), TargetError::NoResponse { scheme: "tcp", .. }));
        assert!(matches!(classify(&tcp, LoadError::AllConnectionsLost(4)), TargetError::AllClosed { conns: 4, .. }));
        let sys = LoadError::Sys { call: "epoll_wait", source: Error::from(ErrorKind::Other) };
        assert!(matches!(classify(&tcp, sys), TargetError::Load { .. }));
        for e in [classify(&tcp, LoadError::NoResponse), classify(&ws, LoadError::Handshake("x\ny".into()))] {
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
    }
}
