//! Where and how to connect: `redis://[user[:password]@]host[:port][/db]` plus options.

use std::time::Duration;

use super::RedisError;

/// The client's configuration. [`RedisConfig::from_url`] fills it from a URL; the options
/// are public fields with documented defaults.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Host name or address (`[::1]` for IPv6 in a URL).
    pub host: String,
    /// Port (default 6379).
    pub port: u16,
    /// `AUTH` user (Redis 6 ACL); `None` authenticates as the default user.
    pub username: Option<String>,
    /// `AUTH` password; `None` sends no `AUTH`.
    pub password: Option<String>,
    /// `SELECT`ed database (default 0: no `SELECT`).
    pub db: u32,
    /// Prepended to every key argument of a command built with `Cmd::key` (and by the
    /// typed helpers), so several applications can share one Redis.
    pub key_prefix: Vec<u8>,
    /// Connections per ring thread (default 2); commands go round-robin, each connection
    /// pipelines.
    pub pool_size: usize,
    /// A command not answered within this fails with [`RedisError::Timeout`] (default 5 s).
    pub command_timeout: Duration,
    /// Connect timeout of each attempt (default 5 s).
    pub connect_timeout: Duration,
    /// Reconnect back-off: the first delay, doubled after each failed attempt up to
    /// `reconnect_max` (defaults 100 ms and 5 s).
    pub reconnect_min: Duration,
    /// See `reconnect_min`.
    pub reconnect_max: Duration,
    /// Commands one connection keeps while it is down, sent once it is back; beyond this
    /// they fail at once with [`RedisError::Backlog`] (default 10,000).
    pub max_backlog: usize,
    /// Speak RESP3 (`HELLO 3`) instead of RESP2 (default false; Redis 6 or later).
    pub resp3: bool,
    /// TLS to the server (`rediss://`): verified against the built-in roots, or the CA of
    /// [`ClientTls::with_ca`](ringman_engine::ClientTls::with_ca) set here. Default none.
    pub tls: Option<ringman_engine::ClientTls>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            host: "127.0.0.1".into(),
            port: 6379,
            username: None,
            password: None,
            db: 0,
            key_prefix: Vec::new(),
            pool_size: 2,
            command_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            max_backlog: 10_000,
            resp3: false,
            tls: None,
        }
    }
}

impl RedisConfig {
    /// Parses `redis://[user[:password]@]host[:port][/db]` (percent-encoded user and
    /// password are decoded); `rediss://` is the same over TLS (`tls` set, verified against
    /// the built-in roots).
    ///
    /// ```
    /// use ringman_cluster::redis::RedisConfig;
    /// let c = RedisConfig::from_url("redis://app:s%40cret@10.0.0.5:6380/2").unwrap();
    /// assert_eq!((c.host.as_str(), c.port, c.db), ("10.0.0.5", 6380, 2));
    /// assert_eq!((c.username.as_deref(), c.password.as_deref()), (Some("app"), Some("s@cret")));
    /// ```
    pub fn from_url(url: &str) -> Result<RedisConfig, RedisError> {
        let bad = |why: &str| RedisError::Config(format!("{url:?}: {why}"));
        let (rest, tls) = match url.split_once("://") {
            Some(("redis", rest)) => (rest, false),
            Some(("rediss", rest)) => (rest, true),
            _ => return Err(bad("expected redis[s]://host[:port][/db]")),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut cfg = RedisConfig::default();
        if tls {
            cfg.tls = Some(ringman_engine::ClientTls::new());
        }
        let hostport = match authority.rsplit_once('@') {
            Some((cred, hp)) => {
                match cred.split_once(':') {
                    Some((u, p)) => {
                        cfg.username = (!u.is_empty()).then(|| decode(u)).transpose().map_err(&bad)?;
                        cfg.password = Some(decode(p).map_err(&bad)?);
                    }
                    // `redis://password@host` is how many clients spell a password alone.
                    None => cfg.password = Some(decode(cred).map_err(&bad)?),
                }
                hp
            }
            None => authority,
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        cfg.host = host.to_string();
        if let Some(p) = port {
            cfg.port = p.parse().map_err(|_| bad("port must be 1-65535"))?;
        }
        let db = path.split('?').next().unwrap_or("");
        if !db.is_empty() {
            cfg.db = db.parse().map_err(|_| bad("the path must be a database number"))?;
        }
        Ok(cfg)
    }

    /// The `tcp://` address the engine dials.
    pub(crate) fn dial_url(&self) -> String {
        if self.host.contains(':') {
            format!("tcp://[{}]:{}", self.host, self.port)
        } else {
            format!("tcp://{}:{}", self.host, self.port)
        }
    }
}

fn decode(s: &str) -> Result<String, &'static str> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = b.get(i + 1..i + 3).ok_or("truncated %-escape")?;
            let h = std::str::from_utf8(h).map_err(|_| "bad %-escape")?;
            out.push(u8::from_str_radix(h, 16).map_err(|_| "bad %-escape")?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "credentials are not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = RedisConfig::from_url("redis://127.0.0.1").unwrap();
        assert_eq!((c.host.as_str(), c.port, c.db, c.password.is_none()), ("127.0.0.1", 6379, 0, true));
        let c = RedisConfig::from_url("redis://pw@[::1]:7000/3").unwrap();
        assert_eq!((c.host.as_str(), c.port, c.db), ("::1", 7000, 3));
        assert_eq!(c.password.as_deref(), Some("pw"));
        assert_eq!(c.dial_url(), "tcp://[::1]:7000");
        let c = RedisConfig::from_url("redis://:only@h/0").unwrap();
        assert_eq!((c.username, c.password.as_deref()), (None, Some("only")));
        assert!(RedisConfig::from_url("rediss://h").unwrap().tls.is_some(), "rediss is TLS");
        assert!(RedisConfig::from_url("redis://h").unwrap().tls.is_none());
        for bad in ["http://h", "redis://", "redis://h:x", "redis://h/x", "redis://u:%zz@h"] {
            assert!(RedisConfig::from_url(bad).is_err(), "{bad}");
        }
    }
}
