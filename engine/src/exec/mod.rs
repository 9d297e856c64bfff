//! Async code on the rings: a small executor per ring thread.
//!
//! Callbacks stay the default; a callback that wants straight-line code over several
//! events spawns a future with [`spawn`] or [`Connection::spawn`](crate::Connection::spawn).
//! The future runs on the ring thread that spawned it (it need not be `Send`), between I/O
//! completions, and is polled only when something woke it: a ring event (a message, a
//! drained send buffer, an established or failed connection, a timer) or a waker called
//! from any thread (which posts to the ring's mailbox). Nothing is polled in a loop and no
//! other thread or runtime is involved.
//!
//! | file | what |
//! |------|------|
//! | `executor.rs` | the per-thread task slab, the ready queue, wakers, spawn, the loop's hook |
//! | `join.rs` | [`JoinHandle`], [`JoinError`] |
//! | `sleep.rs` | [`Sleep`] (`Timer::sleep`) |
//! | `conn.rs` | futures on a connection: [`Messages`], [`Drained`], [`Connecting`]; the runner's event hooks |
//!
//! Rules a user can rely on:
//! - **Panics** in a future are caught like a callback's: the task ends (its
//!   [`JoinHandle`] answers [`JoinError::Panicked`]); a task bound to a connection also
//!   closes that connection with `on_error` ([`ConnError::Panic`](crate::ConnError::Panic)).
//! - **A connection's tasks** ([`Connection::spawn`](crate::Connection::spawn)) are dropped
//!   when the connection closes, after its `on_close`.
//! - **Who gets a message**: while a [`Messages`] stream of a connection exists, it receives
//!   every message of that connection, in order, and `on_message` (the connection's own or
//!   the worker's) receives none; from the stream's drop on, `on_message` gets them again,
//!   starting with the messages the stream had received but not yielded (before anything
//!   received later). Only a closed connection's unread messages end with its stream: its
//!   `on_close` has run.
//!   The stream holds at most [`Messages::HIGH_WATER`] messages (or its bytes, or the marks set with [`Messages::set_high_water`]): beyond that the connection
//!   stops reading until the stream is read, so a slow task slows its peer down through TCP
//!   instead of buffering without bound.
//! - **Stop**: tasks still pending when the ring stops are dropped after `on_worker_stop`.

mod conn;
mod executor;
mod join;
mod sleep;

pub(crate) use conn::{has_leftover, has_waiters, notify, offer_message, take_leftover, Note};
pub use conn::{Connecting, DialError, Drained, Messages, OwnedMessage, Recv};
pub use executor::spawn;
pub(crate) use executor::spawn_bound;
pub(crate) use executor::{clear, has_ready, run_ready};
pub use join::{JoinError, JoinHandle};
pub use sleep::{timeout, Elapsed, Sleep, Timeout};
