//! Session-ticket keys: the key set that encrypts the stateless session tickets of one TLS
//! worker, shared by all its rings, rotated on a period, and handed to a reload successor
//! so that sessions resume across a process reload.
//!
//! A ticket is `key name (16) | nonce (12) | AES-256-GCM(session state) | tag (16)`, the key
//! name also authenticated as associated data. The current key encrypts for one rotation
//! period (default 6 h); after a rotation it still decrypts for one more period, and then it
//! is dropped and its bytes wiped, so a ticket decrypts for at least one and at most two
//! periods after it was issued (the lifetime announced to clients is two periods, 12 h by
//! default, as rustls's own ticketer does). Nonces are random (aws-lc's randomized-nonce
//! AES-GCM), so the processes that share a key during a reload need no shared counter.
//!
//! Hand-off: the predecessor writes its key sets into a sealed memfd whose descriptor number
//! goes to the successor in [`TICKET_KEYS_FD_ENV`] (`handover::pass_ticket_keys`); the
//! successor reads and closes it once, and each TLS worker adopts the keys written under its
//! identity (its name and configured address). Anything wrong with the hand-off costs the
//! old sessions a full handshake, with a warning, never the start.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::time::Duration;

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use zeroize::Zeroizing;

/// Environment variable through which a reload successor learns the descriptor of the
/// memfd holding its predecessor's ticket keys (the number only: the keys never appear in
/// the environment or the command line).
pub(crate) const TICKET_KEYS_FD_ENV: &str = "RINGMAN_TICKET_KEYS_FD";

/// The memfd's name (its `/proc/self/fd` link reads `/memfd:<name> (deleted)`), checked by
/// the successor before it takes the descriptor over.
const MEMFD_NAME: &std::ffi::CStr = c"ringman-ticket-keys";

const NAME_LEN: usize = 16;
const SECRET_LEN: usize = 32;
const TAG_LEN: usize = 16;
const HEADER: usize = NAME_LEN + NONCE_LEN;

/// The longest rotation period: tickets live two periods, and TLS 1.3 caps a ticket's
/// lifetime at 7 days (RFC 8446 §4.6.1).
pub(crate) const MAX_ROTATION: Duration = Duration::from_secs(7 * 24 * 3600 / 2);

const MAGIC: &[u8; 4] = b"RMTK";
const VERSION: u8 = 1;
/// Bound on a hand-off's size (it holds two keys per TLS worker).
const MAX_HANDOFF: u64 = 1 << 20;

/// Seconds since the Unix epoch, as the key set reads them.
pub(crate) type Clock = Box<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock in Unix seconds: key ages must mean the same in a successor process.
fn wall_secs() -> u64 {
    crate::clock::wall().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// One ticket key.
struct TicketKey {
    name: [u8; NAME_LEN],
    /// Unix seconds when it started encrypting.
    created: u64,
    /// 1 for a process's (or a hand-off chain's) first key, one more per rotation.
    generation: u64,
    /// The raw key, kept for the hand-off; wiped on drop (aws-lc wipes its own key
    /// schedule when the AEAD context is freed).
    secret: Zeroizing<[u8; SECRET_LEN]>,
    aead: RandomizedNonceKey,
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // (Never the secret.)
        f.debug_struct("TicketKey").field("created", &self.created).field("generation", &self.generation).finish()
    }
}

impl TicketKey {
    fn from_secret(
        name: [u8; NAME_LEN],
        created: u64,
        generation: u64,
        secret: Zeroizing<[u8; SECRET_LEN]>,
    ) -> Option<TicketKey> {
        let aead = RandomizedNonceKey::new(&AES_256_GCM, &secret[..]).ok()?;
        Some(TicketKey { name, created, generation, secret, aead })
    }

    fn generate(now: u64, generation: u64) -> Option<TicketKey> {
        let mut name = [0u8; NAME_LEN];
        let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
        aws_lc_rs::rand::fill(&mut name).ok()?;
        aws_lc_rs::rand::fill(&mut secret[..]).ok()?;
        TicketKey::from_secret(name, now, generation, secret)
    }
}

/// The keys in use: the one that encrypts, and the one before it while it still decrypts.
#[derive(Debug)]
struct KeyRing {
    current: TicketKey,
    previous: Option<TicketKey>,
}

/// What a status tool may know about a TLS worker's session-ticket keys (never the keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketKeyInfo {
    /// The current key's generation: 1 for the first key, one more per rotation; a reload
    /// successor continues its predecessor's count.
    pub generation: u64,
    /// How long the current key has been encrypting.
    pub age: Duration,
    /// The rotation period (`TlsConfig::ticket_key_rotation`).
    pub rotation: Duration,
    /// Whether the previous key still decrypts tickets.
    pub previous: bool,
    /// Whether this process adopted its keys from a reload predecessor.
    pub adopted: bool,
}

/// A TLS worker's session-ticket keys, the `ProducesTickets` of its rustls configuration.
pub(crate) struct TicketKeys {
    /// The worker's identity in a hand-off (`name@address`).
    id: String,
    /// Seconds a key encrypts; it decrypts for twice that.
    rotation: u64,
    ring: RwLock<KeyRing>,
    clock: Clock,
    adopted: bool,
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketKeys").field("id", &self.id).field("rotation", &self.rotation).finish_non_exhaustive()
    }
}

/// Why the keys were not made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    /// The system's random generator failed.
    #[error("no random bytes for a session-ticket key")]
    Random,
}

impl TicketKeys {
    /// The key set of the worker `id`: the keys its predecessor handed over under that
    /// identity (`adopt`), else fresh ones.
    pub(crate) fn new(id: String, rotation: Duration, adopt: bool) -> Result<TicketKeys, KeyError> {
        let handed = if adopt { take_handed(&id) } else { None };
        TicketKeys::with_clock(id, rotation, handed, Box::new(wall_secs))
    }

    /// As [`TicketKeys::new`], with the keys handed over (if any) and the clock given.
    fn with_clock(
        id: String,
        rotation: Duration,
        handed: Option<Handed>,
        clock: Clock,
    ) -> Result<TicketKeys, KeyError> {
        let rotation = rotation.as_secs().clamp(1, MAX_ROTATION.as_secs());
        let now = clock();
        let (ring, adopted) = match handed.and_then(Handed::into_ring) {
            Some(ring) => (ring, true),
            None => (KeyRing { current: TicketKey::generate(now, 1).ok_or(KeyError::Random)?, previous: None }, false),
        };
        let keys = TicketKeys { id, rotation, ring: RwLock::new(ring), clock, adopted };
        // Adopted keys may be due for rotation or too old already.
        drop(keys.keys());
        Ok(keys)
    }

    /// Whether `key` still decrypts at `now`.
    fn live(&self, key: &TicketKey, now: u64) -> bool {
        now.saturating_sub(key.created) < self.rotation.saturating_mul(2)
    }

    /// Whether the ring needs a write: the current key has encrypted for a period, or the
    /// previous one has aged out.
    fn due(&self, ring: &KeyRing, now: u64) -> bool {
        now.saturating_sub(ring.current.created) >= self.rotation
            || ring.previous.as_ref().is_some_and(|p| !self.live(p, now))
    }

    /// The keys, rotated first if a rotation is due. The common case is one read lock, as
    /// in rustls's own `TicketRotator`; the write lock is taken once per rotation period.
    fn keys(&self) -> RwLockReadGuard<'_, KeyRing> {
        let now = (self.clock)();
        {
            let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
            if !self.due(&ring, now) {
                return ring;
            }
        }
        self.rotate(now);
        self.ring.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Rotates: a new current key (made before the lock is taken), the old current as the
    /// previous while it still decrypts; keys that aged out are dropped (and wiped).
    fn rotate(&self, now: u64) {
        let fresh = TicketKey::generate(now, 0);
        let mut ring = self.ring.write().unwrap_or_else(|p| p.into_inner());
        if !self.due(&ring, now) {
            return; // another ring rotated meanwhile
        }
        if now.saturating_sub(ring.current.created) >= self.rotation {
            let Some(mut fresh) = fresh else {
                log::error!("{}: no random bytes for a new session-ticket key; keeping the current one", self.id);
                return;
            };
            fresh.generation = ring.current.generation + 1;
            let old = std::mem::replace(&mut ring.current, fresh);
            ring.previous = self.live(&old, now).then_some(old);
            log::debug!("{}: session-ticket key rotated (generation {})", self.id, ring.current.generation);
        }
        if ring.previous.as_ref().is_some_and(|p| !self.live(p, now)) {
            ring.previous = None;
        }
    }

    /// The figures `status` shows.
    pub(crate) fn info(&self) -> TicketKeyInfo {
        let now = (self.clock)();
        let ring = self.keys();
        TicketKeyInfo {
            generation: ring.current.generation,
            age: Duration::from_secs(now.saturating_sub(ring.current.created)),
            rotation: Duration::from_secs(self.rotation),
            previous: ring.previous.is_some(),
            adopted: self.adopted,
        }
    }

    /// Appends this set's hand-off entry: identity, generation, then the current key and
    /// the previous one (name, creation time, secret).
    fn export(&self, out: &mut Vec<u8>) {
        let ring = self.keys();
        let keys: Vec<&TicketKey> = std::iter::once(&ring.current).chain(ring.previous.as_ref()).collect();
        out.extend_from_slice(&(self.id.len() as u16).to_le_bytes());
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&ring.current.generation.to_le_bytes());
        out.push(keys.len() as u8);
        for k in keys {
            out.extend_from_slice(&k.name);
            out.extend_from_slice(&k.created.to_le_bytes());
            out.extend_from_slice(&k.secret[..]);
        }
    }
}

impl rustls::server::ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        u32::try_from(self.rotation * 2).unwrap_or(u32::MAX)
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let ring = self.keys();
        let key = &ring.current;
        let mut out = Vec::with_capacity(HEADER + plain.len() + TAG_LEN);
        out.extend_from_slice(&key.name);
        out.extend_from_slice(&[0; NONCE_LEN]);
        out.extend_from_slice(plain);
        let (nonce, tag) = key.aead.seal_in_place_separate_tag(Aad::from(&key.name), &mut out[HEADER..]).ok()?;
        out[NAME_LEN..HEADER].copy_from_slice(nonce.as_ref());
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() < HEADER + TAG_LEN {
            return None;
        }
        let (name, rest) = ticket.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let ring = self.keys();
        let key = std::iter::once(&ring.current).chain(ring.previous.as_ref()).find(|k| k.name == name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let len = key.aead.open_in_place(nonce, Aad::from(name), &mut buf).ok()?.len();
        buf.truncate(len);
        Some(buf)
    }
}

// ------------------------------------------------------------------------------ hand-off

/// Why a hand-off could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandoffError {
    /// The variable does not hold a descriptor number.
    #[error("{TICKET_KEYS_FD_ENV}={0:?} is not a descriptor number")]
    NotANumber(String),
    /// The descriptor is not open, or not the memfd a predecessor writes.
    #[error("descriptor {0} is not a ringman ticket-key memfd")]
    NotOurs(RawFd),
    /// Reading it failed.
    #[error("reading descriptor {fd}: {source}")]
    Read {
        /// The descriptor.
        fd: RawFd,
        /// The OS error.
        source: std::io::Error,
    },
    /// Its content is not a hand-off of this version.
    #[error("malformed hand-off: {0}")]
    Malformed(&'static str),
}

/// One worker's keys as handed over.
#[derive(Debug)]
struct Handed {
    generation: u64,
    /// Current first, then the previous: (name, creation time, secret).
    keys: Vec<([u8; NAME_LEN], u64, Zeroizing<[u8; SECRET_LEN]>)>,
}

impl Handed {
    fn into_ring(self) -> Option<KeyRing> {
        let mut keys = self.keys.into_iter().enumerate().map(|(i, (name, created, secret))| {
            TicketKey::from_secret(name, created, self.generation.saturating_sub(i as u64), secret)
        });
        let current = keys.next()??;
        let previous = keys.next().flatten();
        Some(KeyRing { current, previous })
    }
}

/// The hand-off of these key sets, as written into the memfd. Wiped on drop.
fn encode(sets: &[&TicketKeys]) -> Zeroizing<Vec<u8>> {
    let size = 7 + sets.iter().map(|s| 2 + s.id.len() + 9 + 2 * (NAME_LEN + 8 + SECRET_LEN)).sum::<usize>();
    // (Sized up front: a reallocation would leave a copy of the keys in freed memory.)
    let mut out = Zeroizing::new(Vec::with_capacity(size));
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&(sets.len() as u16).to_le_bytes());
    for s in sets {
        s.export(&mut out);
    }
    out
}

/// Reads an [`encode`]d hand-off.
fn decode(bytes: &[u8]) -> Result<HashMap<String, Handed>, HandoffError> {
    struct Cursor<'a>(&'a [u8]);
    impl<'a> Cursor<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], HandoffError> {
            if self.0.len() < n {
                return Err(HandoffError::Malformed("truncated"));
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        }
        fn array<const N: usize>(&mut self) -> Result<[u8; N], HandoffError> {
            Ok(self.take(N)?.try_into().expect("N bytes"))
        }
        fn u64(&mut self) -> Result<u64, HandoffError> {
            Ok(u64::from_le_bytes(self.array()?))
        }
        fn u16(&mut self) -> Result<u16, HandoffError> {
            Ok(u16::from_le_bytes(self.array()?))
        }
    }
    let mut c = Cursor(bytes);
    if c.take(4)? != MAGIC {
        return Err(HandoffError::Malformed("not a ticket-key hand-off"));
    }
    if c.take(1)?[0] != VERSION {
        return Err(HandoffError::Malformed("unknown version"));
    }
    let mut out = HashMap::new();
    for _ in 0..c.u16()? {
        let id_len = usize::from(c.u16()?);
        let id = std::str::from_utf8(c.take(id_len)?).map_err(|_| HandoffError::Malformed("identity not UTF-8"))?;
        let generation = c.u64()?;
        let n = c.take(1)?[0];
        if !(1..=2).contains(&n) {
            return Err(HandoffError::Malformed("a worker with no key or more than two"));
        }
        let mut keys = Vec::with_capacity(2);
        for _ in 0..n {
            let name = c.array::<NAME_LEN>()?;
            let created = c.u64()?;
            let secret = Zeroizing::new(c.array::<SECRET_LEN>()?);
            keys.push((name, created, secret));
        }
        out.insert(id.to_string(), Handed { generation, keys });
    }
    if !c.0.is_empty() {
        return Err(HandoffError::Malformed("trailing bytes"));
    }
    Ok(out)
}

/// A sealed memfd holding the hand-off of these key sets (close-on-exec: the caller clears
/// that flag for the successor alone).
pub(crate) fn handoff_memfd(sets: &[&TicketKeys]) -> std::io::Result<OwnedFd> {
    crate::sys::sealed_memfd(MEMFD_NAME, &encode(sets))
}

/// Reads the hand-off named by `value` (the variable's content): checks that the
/// descriptor is a memfd of ours, reads it and closes it. A descriptor that is not ours is
/// left alone.
fn read_handoff(value: &str) -> Result<HashMap<String, Handed>, HandoffError> {
    let fd: RawFd = value.trim().parse().map_err(|_| HandoffError::NotANumber(value.to_string()))?;
    if fd < 0 {
        return Err(HandoffError::NotANumber(value.to_string()));
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).map_err(|_| HandoffError::NotOurs(fd))?;
    let want = format!("/memfd:{} (deleted)", MEMFD_NAME.to_string_lossy());
    if link.as_os_str() != want.as_str() {
        return Err(HandoffError::NotOurs(fd));
    }
    // SAFETY: the descriptor is open (its /proc link was just read) and is the memfd our
    // predecessor made for this process alone: nothing else here owns it. Taking it over
    // closes it once read.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let read = |source| HandoffError::Read { fd, source };
    let len = file.metadata().map_err(read)?.len();
    if len > MAX_HANDOFF {
        return Err(HandoffError::Malformed("too large"));
    }
    let mut bytes = Zeroizing::new(vec![0u8; len as usize]);
    file.read_exact_at(&mut bytes, 0).map_err(read)?;
    decode(&bytes)
}

/// The key sets handed over to this process, read once (at the first TLS worker's start),
/// each taken by the worker it belongs to.
fn handed() -> &'static Mutex<HashMap<String, Handed>> {
    static HANDED: OnceLock<Mutex<HashMap<String, Handed>>> = OnceLock::new();
    HANDED.get_or_init(|| {
        let Ok(value) = std::env::var(TICKET_KEYS_FD_ENV) else { return Mutex::default() };
        match read_handoff(&value) {
            Ok(sets) => Mutex::new(sets),
            Err(e) => {
                log::warn!(
                    "session-ticket keys from the reload predecessor unusable ({e}); new keys, so sessions from before the reload take a full handshake"
                );
                Mutex::default()
            }
        }
    })
}

/// The keys handed over for worker `id`, if any (logged either way when a hand-off came).
fn take_handed(id: &str) -> Option<Handed> {
    let came = std::env::var_os(TICKET_KEYS_FD_ENV).is_some();
    let taken = handed().lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    match &taken {
        Some(h) => log::info!("{id}: adopted the reload predecessor's session-ticket keys (generation {})", h.generation),
        None if came => log::warn!(
            "{id}: the reload predecessor handed over no session-ticket keys for this worker; new keys, so its sessions take a full handshake"
        ),
        None => {}
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::ProducesTickets;
    use std::os::fd::{AsRawFd, IntoRawFd};

    /// What descriptor `fd` of this process refers to, if it is open.
    fn target(fd: RawFd) -> Option<std::path::PathBuf> {
        std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()
    }
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    const HOUR: u64 = 3600;

    /// A key set on a clock the test moves.
    fn keys_at(clock: &Arc<AtomicU64>, handed: Option<Handed>) -> TicketKeys {
        let c = clock.clone();
        TicketKeys::with_clock(
            "w@127.0.0.1:1".into(),
            Duration::from_secs(6 * HOUR),
            handed,
            Box::new(move || c.load(Ordering::SeqCst)),
        )
        .unwrap()
    }

    #[test]
    fn a_ticket_decrypts_after_one_rotation_not_after_its_key_aged_out() {
        let clock = Arc::new(AtomicU64::new(1_000_000));
        let t0 = clock.load(Ordering::SeqCst);
        let keys = keys_at(&clock, None);
        assert_eq!(keys.lifetime(), 12 * HOUR as u32, "two rotation periods");
        assert_eq!(keys.info().generation, 1);
        clock.store(t0 + HOUR, Ordering::SeqCst);
        let first = keys.encrypt(b"session under key 1").unwrap();
        assert_eq!(keys.decrypt(&first).unwrap(), b"session under key 1");
        // One rotation: key 2 encrypts, key 1 still decrypts.
        clock.store(t0 + 6 * HOUR, Ordering::SeqCst);
        let second = keys.encrypt(b"under key 2").unwrap();
        let info = keys.info();
        assert_eq!((info.generation, info.previous, info.age), (2, true, Duration::ZERO));
        assert_eq!(keys.decrypt(&first).unwrap(), b"session under key 1", "after one rotation");
        assert_ne!(first[..NAME_LEN], second[..NAME_LEN], "a new key name");
        // Second rotation: key 1 is 12 h old, past its lifetime, and gone.
        clock.store(t0 + 12 * HOUR, Ordering::SeqCst);
        assert_eq!(keys.decrypt(&first), None, "key 1 aged out");
        assert_eq!(keys.decrypt(&second).unwrap(), b"under key 2");
        assert_eq!(keys.info().generation, 3);
        clock.store(t0 + 18 * HOUR, Ordering::SeqCst);
        assert_eq!(keys.decrypt(&second), None, "key 2 aged out");
    }

    #[test]
    fn an_idle_set_drops_a_key_at_its_age_not_a_rotation_later() {
        let clock = Arc::new(AtomicU64::new(50_000));
        let t0 = clock.load(Ordering::SeqCst);
        let keys = keys_at(&clock, None);
        let first = keys.encrypt(b"early").unwrap();
        // Nothing happens for 11 h: the late rotation keeps key 1 for its last hour.
        clock.store(t0 + 11 * HOUR, Ordering::SeqCst);
        assert_eq!(keys.decrypt(&first).unwrap(), b"early");
        assert_eq!(keys.info().generation, 2);
        clock.store(t0 + 12 * HOUR, Ordering::SeqCst);
        assert_eq!(keys.decrypt(&first), None, "12 h after key 1 began, though key 2 is only 1 h old");
        assert!(!keys.info().previous);
    }

    #[test]
    fn tampered_or_foreign_tickets_are_refused() {
        let clock = Arc::new(AtomicU64::new(7));
        let keys = keys_at(&clock, None);
        let other = keys_at(&clock, None);
        let t = keys.encrypt(b"state").unwrap();
        assert_eq!(t.len(), HEADER + 5 + TAG_LEN);
        assert_eq!(other.decrypt(&t), None, "another set's key");
        for i in [0, NAME_LEN, HEADER, t.len() - 1] {
            let mut bad = t.clone();
            bad[i] ^= 1;
            assert_eq!(keys.decrypt(&bad), None, "byte {i} flipped");
        }
        assert_eq!(keys.decrypt(&t[..HEADER + TAG_LEN - 1]), None, "too short");
        assert_eq!(keys.decrypt(&[]), None);
        let again = keys.encrypt(b"state").unwrap();
        assert_ne!(t[NAME_LEN..HEADER], again[NAME_LEN..HEADER], "a fresh nonce per ticket");
    }

    #[test]
    fn a_handed_over_set_decrypts_its_predecessors_tickets_and_keeps_its_schedule() {
        let clock = Arc::new(AtomicU64::new(100 * HOUR));
        let t0 = clock.load(Ordering::SeqCst);
        let old = keys_at(&clock, None);
        let a = old.encrypt(b"under 1").unwrap();
        clock.store(t0 + 6 * HOUR, Ordering::SeqCst);
        let b = old.encrypt(b"under 2").unwrap();
        let bytes = encode(&[&old]);
        let mut sets = decode(&bytes).unwrap();
        assert_eq!(sets.len(), 1);
        let successor = keys_at(&clock, sets.remove("w@127.0.0.1:1"));
        let info = successor.info();
        assert!(info.adopted);
        assert_eq!((info.generation, info.previous), (2, true));
        assert_eq!(successor.decrypt(&a).unwrap(), b"under 1");
        assert_eq!(successor.decrypt(&b).unwrap(), b"under 2");
        // Its own tickets are the predecessor's too (same current key).
        let c = successor.encrypt(b"made by the successor").unwrap();
        assert_eq!(old.decrypt(&c).unwrap(), b"made by the successor");
        // The keys' ages came along: key 1 ages out on its original schedule.
        clock.store(t0 + 12 * HOUR, Ordering::SeqCst);
        assert_eq!(successor.decrypt(&a), None);
        assert_eq!(successor.decrypt(&b).unwrap(), b"under 2");
        // A fresh set (no hand-off) knows none of them.
        let fresh = keys_at(&clock, None);
        assert!(!fresh.info().adopted);
        assert_eq!(fresh.decrypt(&b), None);
    }

    #[test]
    fn a_hand_off_of_keys_already_too_old_adopts_nothing_stale() {
        let clock = Arc::new(AtomicU64::new(10 * HOUR));
        let t0 = clock.load(Ordering::SeqCst);
        let old = keys_at(&clock, None);
        let a = old.encrypt(b"x").unwrap();
        let bytes = encode(&[&old]);
        // The successor reads it a day later (a clock jump, or a stored memfd).
        clock.store(t0 + 24 * HOUR, Ordering::SeqCst);
        let successor = keys_at(&clock, decode(&bytes).unwrap().remove("w@127.0.0.1:1"));
        assert_eq!(successor.decrypt(&a), None);
        let info = successor.info();
        assert_eq!((info.generation, info.previous), (2, false));
    }

    #[test]
    fn malformed_hand_offs_are_refused() {
        let clock = Arc::new(AtomicU64::new(1));
        let keys = keys_at(&clock, None);
        let good = encode(&[&keys]);
        assert!(decode(&good).is_ok());
        for cut in [0, 3, 5, 7, good.len() - 1] {
            assert!(matches!(decode(&good[..cut]), Err(HandoffError::Malformed(_))), "cut at {cut}");
        }
        let mut longer = good.to_vec();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(HandoffError::Malformed("trailing bytes"))));
        let mut bad = good.to_vec();
        bad[4] = 9;
        assert!(matches!(decode(&bad), Err(HandoffError::Malformed("unknown version"))));
        let mut none = good.to_vec();
        let keys_at = 7 + 2 + "w@127.0.0.1:1".len() + 8;
        none[keys_at] = 0;
        assert!(decode(&none).is_err());
    }

    #[test]
    fn the_memfd_is_read_once_and_closed_and_a_stranger_descriptor_is_left_alone() {
        let clock = Arc::new(AtomicU64::new(1));
        let keys = keys_at(&clock, None);
        let t = keys.encrypt(b"s").unwrap();
        let fd = handoff_memfd(&[&keys]).unwrap().into_raw_fd();
        let memfd = target(fd).unwrap();
        assert!(memfd.to_string_lossy().starts_with("/memfd:ringman-ticket-keys"), "{memfd:?}");
        let mut sets = read_handoff(&fd.to_string()).unwrap();
        // (Closed: the number is free, or reused by another test's descriptor.)
        assert_ne!(target(fd), Some(memfd), "closed once read");
        let adopted = keys_at(&clock, sets.remove("w@127.0.0.1:1"));
        assert_eq!(adopted.decrypt(&t).unwrap(), b"s");
        // A descriptor that is not our memfd: refused, and still open.
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(matches!(read_handoff(&f.as_raw_fd().to_string()), Err(HandoffError::NotOurs(_))));
        assert_eq!(target(f.as_raw_fd()), Some(format!("/proc/{}/stat", std::process::id()).into()), "left open");
        assert!(matches!(read_handoff("seven"), Err(HandoffError::NotANumber(_))));
        assert!(matches!(read_handoff("-1"), Err(HandoffError::NotANumber(_))));
    }
}
