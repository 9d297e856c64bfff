//! ringman-bench: load generator and side-by-side benchmark harness for ringman.
//!
//! * [`uring_gen`]: the default io_uring load generator (multishot receive, batched sends,
//!   one ring per thread), closed and open loop.
//! * [`loadgen`]: the classic single-threaded epoll client (closed and open loop) that reuses the
//!   protocols crate to build requests and split responses.
//! * [`server`]: starts pinned server processes (ringman, the peers in `bench/peers`, nginx)
//!   and samples their CPU time and RSS from `/proc`.
//! * [`suite`]: one measurement (`run`) and the standard suite (`compare`).
//! * [`proxy`]: the proxy scenario (generator → proxy → echo) and its P8 summary.
//! * [`redis_bench`]: fan-out across two processes through Redis, and the Redis client's
//!   pipelined rate beside `redis-benchmark`'s.
//! * [`tls_gen`]: the TLS load (HTTPS keep-alive, full handshakes, wss echo) with a rustls
//!   client, against servers holding the certificate of the bench's own CA ([`pki`]).
//! * [`report`]: table, `compare.json`, hand-written `latency.svg`.
//! * [`goals`]: the goals of `bench/goals.json` and their verdicts from one `compare`.
//! * [`results`]: `bench/RESULTS.md`, written by `compare` from one run.
#![warn(missing_docs)]

pub mod cli;
pub mod error;
pub mod fanout;
pub mod goals;
pub mod hist;
pub mod idle;
pub mod loadgen;
pub mod machine;
pub mod pki;
pub mod ports;
pub mod proxy;
pub mod redis_bench;
pub mod report;
pub mod results;
pub mod ringman_server;
pub mod rng;
pub mod schedule;
pub mod server;
pub mod suite;
pub mod summary;
pub mod target;
#[cfg(test)]
mod testutil;
pub mod tls_gen;
pub mod udp_gen;
pub mod uring_gen;
pub mod wire;
