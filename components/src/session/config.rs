//! [`SessionConfig`]: the cookie's name and attributes, the data's lifetime, the sweep.

use std::time::Duration;

use ringman_protocols::http::{Cookie, SameSite};

use super::SessionId;

/// How sessions are named, sent and kept. `SessionConfig::default()` matches Workerman's
/// defaults except for the cookie name.
///
/// | field | default | Workerman |
/// |---|---|---|
/// | `cookie_name` | `RINGMANSESSID` | `Session::$name = 'PHPSESSID'` |
/// | `cookie_path` | `/` | `$cookiePath` |
/// | `cookie_domain` | none | `$domain` |
/// | `cookie_lifetime` | 0 (a browser-session cookie, no `Max-Age`) | `$cookieLifetime` |
/// | `http_only` | true | `$httpOnly` |
/// | `secure` | false | `$secure` |
/// | `same_site` | `Lax` | `$sameSite` (empty) |
/// | `gc_max_lifetime` | 1440 s | `$lifetime` (`session.gc_maxlifetime`) |
/// | `gc_interval` | 60 s | `$gcProbability` (1 in 20000 requests) |
///
/// Set `cookie_name = "PHPSESSID".into()` to keep Workerman's name. A session whose data
/// was neither written nor read-and-kept (see [`Sessions::save`](super::Sessions::save))
/// for `gc_max_lifetime` is gone: reading it answers a new, empty session and the sweep
/// (every `gc_interval`, [`Sessions::start_gc`](super::Sessions::start_gc)) deletes it. An
/// interval replaces Workerman's per-request probability so that the cost of a sweep never
/// lands on a request at random.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The cookie's name (an HTTP token).
    pub cookie_name: String,
    /// The cookie's `Path`.
    pub cookie_path: String,
    /// The cookie's `Domain`; `None` leaves it out (the cookie goes back to this host only).
    pub cookie_domain: Option<String>,
    /// The cookie's `Max-Age` in seconds; 0 sends none (the browser drops the cookie when
    /// it closes).
    pub cookie_lifetime: u64,
    /// `HttpOnly`: scripts in the page cannot read the cookie.
    pub http_only: bool,
    /// `Secure`: the browser sends the cookie over HTTPS only.
    pub secure: bool,
    /// `SameSite`; `None` leaves the attribute out.
    pub same_site: Option<SameSite>,
    /// How long a session lives after its last save.
    pub gc_max_lifetime: Duration,
    /// How often [`Sessions::start_gc`](super::Sessions::start_gc) sweeps expired sessions.
    pub gc_interval: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            cookie_name: "RINGMANSESSID".into(),
            cookie_path: "/".into(),
            cookie_domain: None,
            cookie_lifetime: 0,
            http_only: true,
            secure: false,
            same_site: Some(SameSite::Lax),
            gc_max_lifetime: Duration::from_secs(1440),
            gc_interval: Duration::from_secs(60),
        }
    }
}

impl SessionConfig {
    /// The `Set-Cookie` value that hands `id` to the client, with the configured
    /// attributes; `None` when `cookie_name` is not a token.
    pub fn set_cookie_value(&self, id: &SessionId) -> Option<String> {
        let mut c = self.base_cookie(id.as_str());
        if self.cookie_lifetime > 0 {
            c = c.max_age(i64::try_from(self.cookie_lifetime).unwrap_or(i64::MAX));
        }
        c.to_header_value()
    }

    /// The `Set-Cookie` value that makes the client forget the cookie (`Max-Age=0`).
    pub fn delete_cookie_value(&self) -> Option<String> {
        self.base_cookie("").max_age(0).to_header_value()
    }

    fn base_cookie<'a>(&'a self, value: &'a str) -> Cookie<'a> {
        let mut c =
            Cookie::new(&self.cookie_name, value).path(&self.cookie_path).http_only(self.http_only).secure(self.secure);
        if let Some(d) = &self.cookie_domain {
            c = c.domain(d);
        }
        if let Some(s) = self.same_site {
            c = c.same_site(s);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_cookie_defaults_and_attributes() {
        let id = SessionId::parse("00112233445566778899aabbccddeeff").unwrap();
        let cfg = SessionConfig::default();
        assert_eq!(
            cfg.set_cookie_value(&id).unwrap(),
            "RINGMANSESSID=00112233445566778899aabbccddeeff; Path=/; HttpOnly; SameSite=Lax"
        );
        let cfg = SessionConfig {
            cookie_name: "sid".into(),
            cookie_path: "/app".into(),
            cookie_domain: Some("example.com".into()),
            cookie_lifetime: 3600,
            http_only: false,
            secure: true,
            same_site: Some(SameSite::Strict),
            ..SessionConfig::default()
        };
        assert_eq!(
            cfg.set_cookie_value(&id).unwrap(),
            "sid=00112233445566778899aabbccddeeff; Max-Age=3600; Domain=example.com; Path=/app; Secure; SameSite=Strict"
        );
        assert_eq!(
            cfg.delete_cookie_value().unwrap(),
            "sid=; Max-Age=0; Domain=example.com; Path=/app; Secure; SameSite=Strict"
        );
        let bad = SessionConfig { cookie_name: "a b".into(), ..SessionConfig::default() };
        assert!(bad.set_cookie_value(&id).is_none());
    }
}
