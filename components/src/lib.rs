//! Workerman's components beyond the core, on ringman's rings: each module is one component
//! and uses the engine's public API only (outgoing connections, timers, the per-ring
//! executor) and, for Redis-backed parts, `ringman-cluster`'s client.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
pub mod cron;
