//! Host name resolution that never blocks a ring: lookups run on a small pool of resolver
//! threads with the system resolver (`getaddrinfo`, which honours `/etc/hosts`,
//! `/etc/nsswitch.conf` and `/etc/resolv.conf`), and each answer travels back to the asking
//! ring through its mailbox. Rings cache answers for [`CACHE_TTL`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::id::ConnectionId;
use crate::mailbox::{post, Cmd};

/// How long a ring reuses an answer. `getaddrinfo` does not report the DNS record's TTL,
/// so this is a fixed, short bound: a changed record is seen within it.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(30);

/// Resolver threads: lookups of one slow name do not hold up others behind it.
const THREADS: usize = 2;

struct Job {
    host: String,
    port: u16,
    conn: ConnectionId,
    attempt: u32,
}

fn pool() -> &'static Sender<Job> {
    static POOL: OnceLock<Sender<Job>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        for i in 0..THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("ringman-resolve-{i}")).spawn(move || {
                for job in rx {
                    let addrs = (job.host.as_str(), job.port)
                        .to_socket_addrs()
                        .map(Iterator::collect::<Vec<SocketAddr>>)
                        .map_err(|e| e.to_string())
                        .and_then(|v| if v.is_empty() { Err("no address".to_string()) } else { Ok(v) });
                    let cmd =
                        Cmd::Resolved { conn: job.conn, attempt: job.attempt, host: job.host, port: job.port, addrs };
                    // A ring that is gone has no connection waiting for the answer.
                    post(job.conn.thread(), cmd);
                }
            });
            if let Err(e) = spawned {
                log::error!("cannot start a resolver thread: {e}");
            }
        }
        tx
    })
}

/// Looks `host` up off the ring; the answer arrives as [`Cmd::Resolved`] for `conn`'s
/// dialing attempt `attempt`.
pub(crate) fn lookup(host: &str, port: u16, conn: ConnectionId, attempt: u32) {
    let _ = pool().send(Job { host: host.to_string(), port, conn, attempt });
}
