//! Workerman's components beyond the core, on ringman's rings: each module is one component
//! and uses the engine's public API only (outgoing connections, timers, the per-ring
//! executor) and, for Redis-backed parts, `ringman-cluster`'s client.
#![deny(missing_docs)]
// Unsafe code only in `filemon::inotify` (three system calls, each with its SAFETY note).
#![deny(unsafe_code)]

pub mod cron;
pub mod filemon;
pub mod http_client;
pub mod session;
