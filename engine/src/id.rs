//! The process-wide identity of a connection.

/// Identifies a connection across all ring threads of the process, for the life of the
/// process (Workerman's `$connection->id`).
///
/// The number ([`ConnectionId::as_u64`]) is ring thread (16 bits) | serial (48 bits). Serials
/// come from one process-wide counter (each ring reserves them in blocks), so no two
/// connections of a process ever share an id — not across ring restarts, recycles, or
/// servers started one after another. The counter would wrap after 2^48 accepts (about
/// 9 years at a million accepts per second), so a stale id can never name a later
/// connection in practice. Ids the engine hands out also carry the connection's slot, so
/// looking one up is an index; an id rebuilt with [`ConnectionId::from_u64`] is found
/// through a per-ring map instead.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionId {
    serial: u64,
    slot: u32,
}

/// `slot` of an id rebuilt from its number: look it up by serial.
const NO_SLOT: u32 = u32::MAX;

impl ConnectionId {
    pub(crate) fn new(serial: u64, slot: usize) -> ConnectionId {
        ConnectionId { serial, slot: slot as u32 }
    }
    /// The ring thread that owns the connection (an index for
    /// [`run_on_ring`](crate::run_on_ring)).
    pub fn thread(self) -> u16 {
        (self.serial >> 48) as u16
    }
    /// The slot, when the id carries one.
    pub(crate) fn slot(self) -> Option<usize> {
        (self.slot != NO_SLOT).then_some(self.slot as usize)
    }
    pub(crate) fn serial(self) -> u64 {
        self.serial
    }
    /// The id as a number (unique in the process, never reused).
    pub fn as_u64(self) -> u64 {
        self.serial
    }
    /// Rebuilds an id from [`ConnectionId::as_u64`] (for example one kept in another
    /// service): it names the same connection, and nothing once that connection is gone.
    pub fn from_u64(v: u64) -> ConnectionId {
        ConnectionId { serial: v, slot: NO_SLOT }
    }
}

impl PartialEq for ConnectionId {
    fn eq(&self, other: &Self) -> bool {
        self.serial == other.serial
    }
}
impl Eq for ConnectionId {}
impl std::hash::Hash for ConnectionId {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.serial.hash(h);
    }
}
impl PartialOrd for ConnectionId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ConnectionId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.serial.cmp(&other.serial)
    }
}

impl std::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.serial)
    }
}
