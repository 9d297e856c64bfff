//! Session ids: 128 random bits from the kernel's CSPRNG, written as 32 lowercase hex
//! digits; ids arriving in a cookie are checked against exactly that shape before any
//! handler sees them.

use std::cell::RefCell;
use std::fmt;
use std::fs::File;
use std::io::Read;

use super::SessionError;

/// Random bytes per id (128 bits).
const ID_BYTES: usize = 16;
/// Characters of an id: two hex digits per byte.
pub(crate) const ID_LEN: usize = ID_BYTES * 2;

thread_local! {
    /// This thread's handle on the kernel's CSPRNG, opened on first use. Nothing is buffered
    /// in user space: every id is a fresh read, so a forked process cannot repeat its
    /// parent's ids.
    static URANDOM: RefCell<Option<File>> = const { RefCell::new(None) };
}

/// A session id: 32 lowercase hex digits. It can only be made by [`SessionId::generate`] or
/// by [`SessionId::parse`], so a value of this type is always safe as a file name or key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

impl SessionId {
    /// A new id from `/dev/urandom` (the kernel CSPRNG, the pool `getrandom(2)` reads; it
    /// never blocks once the kernel's pool is initialised at boot).
    pub fn generate() -> Result<SessionId, SessionError> {
        let mut raw = [0u8; ID_BYTES];
        URANDOM.with(|u| -> std::io::Result<()> {
            let mut u = u.borrow_mut();
            if u.is_none() {
                *u = Some(File::open("/dev/urandom")?);
            }
            u.as_mut().expect("just opened").read_exact(&mut raw)
        })?;
        let mut s = String::with_capacity(ID_LEN);
        for b in raw {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        Ok(SessionId(s))
    }

    /// An id received from a client: `Some` only for exactly 32 characters of `0-9a-f`.
    /// Anything else (a path such as `../../etc/passwd`, upper case, other lengths) is
    /// `None`, and the caller starts a new session.
    pub fn parse(s: &str) -> Option<SessionId> {
        let ok = s.len() == ID_LEN && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| SessionId(s.to_string()))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Only a prefix: a full id in a log is a credential in a log.
impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({}…)", &self.0[..6])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn session_ids_are_32_hex_digits_and_do_not_repeat() {
        let ids: HashSet<String> = (0..2000).map(|_| SessionId::generate().unwrap().0).collect();
        assert_eq!(ids.len(), 2000);
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(SessionId::parse(id).is_some(), "{id}");
        }
        // Every hex digit shows up in every position over 2000 ids (a stuck nibble fails).
        for pos in 0..32 {
            let seen: HashSet<u8> = ids.iter().map(|i| i.as_bytes()[pos]).collect();
            assert_eq!(seen.len(), 16, "position {pos}");
        }
    }

    #[test]
    fn session_id_parse_refuses_everything_but_the_generated_shape() {
        let good = "0123456789abcdef0123456789abcdef";
        assert_eq!(SessionId::parse(good).unwrap().as_str(), good);
        for bad in [
            "",
            "../../etc/passwd",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdef0123456789abcde/",
            "0123456789abcdef0123456789abcd.g",
            "0123456789abcdef0123456789abc\0de",
            "../../../../../../../../../etc/p",
        ] {
            assert!(SessionId::parse(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn session_id_debug_hides_most_of_it() {
        let id = SessionId::generate().unwrap();
        let d = format!("{id:?}");
        assert!(!d.contains(id.as_str()), "{d}");
    }
}
