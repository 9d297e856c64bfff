//! The storage behind sessions: one trait, three implementations
//! ([`MemoryHandler`](super::MemoryHandler), [`FileHandler`](super::FileHandler),
//! [`RedisHandler`](super::RedisHandler)).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::{SessionError, SessionId};

/// What a [`SessionHandler`] method returns: a boxed future, polled on the ring thread
/// that called the method (it need not be `Send`, and it borrows nothing from the handler:
/// clone what the work needs into it).
pub type HandlerFuture<T> = Pin<Box<dyn Future<Output = Result<T, SessionError>>>>;

/// A session store (Workerman's `SessionHandlerInterface`). The handler itself is shared by
/// every ring thread (`Send + Sync`); each call returns a future that does the work
/// without blocking the ring: in memory at once, over Redis through the ring's own client,
/// on disk through a helper thread.
///
/// Data arrives already encoded (see [`Session`](super::Session) for the format), so a
/// handler stores opaque bytes under an id. Ids are always [`SessionId`]s: 32 hex digits,
/// never a client's unchecked text.
pub trait SessionHandler: Send + Sync + 'static {
    /// The data saved under `id`, or `None` when there is none or it was last saved or
    /// touched more than `max_lifetime` ago.
    fn read(&self, id: &SessionId, max_lifetime: Duration) -> HandlerFuture<Option<Vec<u8>>>;
    /// Saves `data` under `id` (replacing what was there), to expire after `max_lifetime`.
    fn write(&self, id: &SessionId, data: Vec<u8>, max_lifetime: Duration) -> HandlerFuture<()>;
    /// Restarts the expiry of `id`'s data without rewriting it (Workerman's
    /// `updateTimestamp`); nothing happens when there is none.
    fn touch(&self, id: &SessionId, max_lifetime: Duration) -> HandlerFuture<()>;
    /// Deletes `id`'s data (no error when there is none).
    fn destroy(&self, id: &SessionId) -> HandlerFuture<()>;
    /// Deletes every session older than `max_lifetime`; the number deleted, where the
    /// handler can tell (a store that expires entries on its own answers 0).
    fn gc(&self, max_lifetime: Duration) -> HandlerFuture<usize>;
}
