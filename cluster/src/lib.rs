//! ringman beyond one process: an async Redis client on the rings, [`Channel`] (publish /
//! subscribe across processes and machines), groups and pushes to any connection of the
//! cluster, and [`GlobalData`] (shared variables with atomic updates).
//!
//! Everything here runs on ringman's ring threads, through the engine's public API
//! (outgoing connections, timers, the per-ring executor): no other runtime, no extra
//! thread. The broker is Redis; without one, [`Channel`] and the groups work inside the
//! process.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod channel;
pub mod redis;

pub use channel::{Channel, ChannelError, ChannelEvent, SubscriptionId};
pub mod global;
pub mod groups;

pub use global::GlobalData;
pub use groups::{Cluster, ClusterId, GroupError, NodeId};
