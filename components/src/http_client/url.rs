//! `http[s]://host[:port][/path][?query]`.

use super::HttpClientError;

/// A parsed request URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (80 by default, 443 for `https://`).
    pub port: u16,
    /// `https://`: TLS under HTTP.
    pub tls: bool,
    /// Path and query, starting with `/`.
    pub target: String,
}

impl Url {
    /// Parses an absolute `http://` or `https://` URL.
    pub fn parse(url: &str) -> Result<Url, HttpClientError> {
        let bad = |reason| HttpClientError::BadUrl { url: url.to_string(), reason };
        let (rest, tls) = match url.split_once("://") {
            Some((s, rest)) if s.eq_ignore_ascii_case("http") => (rest, false),
            Some((s, rest)) if s.eq_ignore_ascii_case("https") => (rest, true),
            _ => return Err(bad("expected http[s]://host[:port][/path]")),
        };
        if rest.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad("spaces or control characters (percent-encode them)"));
        }
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, mut target) = rest.split_at(split);
        if let Some(i) = target.find('#') {
            target = &target[..i];
        }
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not supported (send an Authorization header)"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
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
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| bad("port must be 1-65535"))?,
            None if tls => 443,
            None => 80,
        };
        let target = match target {
            "" => "/".to_string(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_string(),
        };
        Ok(Url { host: host.to_string(), port, tls, target })
    }

    /// Resolves a `Location` value against this URL (absolute, or absolute-path).
    pub fn join(&self, location: &str) -> Result<Url, HttpClientError> {
        if location.contains("://") {
            return Url::parse(location);
        }
        if location.starts_with("//") {
            let scheme = if self.tls { "https" } else { "http" };
            return Url::parse(&format!("{scheme}:{location}"));
        }
        if !location.starts_with('/') {
            // Relative to the current path's directory.
            let dir = self.target.split('?').next().unwrap_or("/");
            let dir = &dir[..dir.rfind('/').map_or(0, |i| i + 1)];
            return Ok(Url { target: format!("{dir}{location}"), ..self.clone() });
        }
        Ok(Url { target: location.to_string(), ..self.clone() })
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        let h = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == if self.tls { 443 } else { 80 } {
            h
        } else {
            format!("{h}:{}", self.port)
        }
    }

    /// The engine's dial address.
    pub(crate) fn dial(&self) -> String {
        if self.host.contains(':') {
            format!("tcp://[{}]:{}", self.host, self.port)
        } else {
            format!("tcp://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_join() {
        let u = Url::parse("http://example.com").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.target.as_str()), ("example.com", 80, "/"));
        let u = Url::parse("http://[::1]:8080/a/b?x=1#frag").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.target.as_str()), ("::1", 8080, "/a/b?x=1"));
        assert_eq!(u.host_header(), "[::1]:8080");
        assert_eq!(Url::parse("http://h?q").unwrap().target, "/?q");
        for bad in ["ftp://h", "http://", "http://h:0", "http://h:x", "http://u@h", "http://h/a b", "http://h/\r\n"] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
        let base = Url::parse("http://h:81/dir/page?x").unwrap();
        assert_eq!(base.join("/other").unwrap().target, "/other");
        assert_eq!(base.join("next").unwrap().target, "/dir/next");
        assert_eq!(base.join("http://g/x").unwrap().host, "g");
        assert_eq!(base.join("//g2:90/y").unwrap().port, 90);
        let s = Url::parse("https://example.com/x").unwrap();
        assert_eq!((s.port, s.tls, s.host_header()), (443, true, "example.com".to_string()));
        assert!(s.join("//other/y").unwrap().tls, "a scheme-relative redirect keeps https");
        assert!(!s.join("http://plain/").unwrap().tls);
    }
}
