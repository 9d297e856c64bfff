//! An async Redis client on the rings.
//!
//! | file | what |
//! |------|------|
//! | `config.rs` | [`RedisConfig`]: the URL and the options, with their defaults |
//! | `link.rs` | one connection: pipelining, handshake, backlog, reconnect, timeouts, subscriber mode |
//! | `client.rs` | [`Redis`] (the per-ring pool), [`Reply`], typed helpers, [`Subscriber`] |
//! | `error.rs` | [`RedisError`] |
//!
//! The wire codec is the protocols crate's (`ringman_protocols::resp`): replies are parsed
//! in place from the receive buffer and copied once into an
//! [`OwnedValue`] for the caller.
//!
//! What a caller can rely on:
//! - Every command answers exactly once, on the ring thread that sent it.
//! - Commands on one connection are answered in the order sent; the pool spreads
//!   commands over its connections, so two commands from one caller may be answered out of
//!   order unless they go through [`Redis::pipeline`] (one connection).
//! - A connection that drops fails its unanswered commands with
//!   [`RedisError::Disconnected`] (they may have run) and keeps new ones (up to
//!   `max_backlog`) for the next connection, which first repeats `AUTH`/`HELLO` and `SELECT`.
//! - A panic in a reply callback or a subscriber handler is logged; the connection lives on.

mod client;
mod config;
mod error;
mod link;

pub use client::{Redis, Reply, SubEvent, Subscriber};
pub use config::RedisConfig;
pub use error::RedisError;
pub use ringman_protocols::resp::{Cmd, ErrorKind, OwnedValue};
