//! [`RedisHandler`]: sessions in Redis, expiring by `EX`.

use std::time::Duration;

use ringman_cluster::redis::{Redis, RedisConfig, RedisError};
use ringman_protocols::resp::{Cmd, OwnedValue};

use super::{HandlerFuture, SessionError, SessionHandler, SessionId};

/// Sessions as Redis strings `<prefix><id>` (prefix `ringman:session:` by default, after
/// the URL's own key prefix if it has one), written with `SET ... EX <lifetime>` so that
/// Redis expires them itself: [`SessionHandler::gc`] has nothing to do. Every process
/// pointed at the same server shares them. Each ring thread talks through its own
/// [`Redis::shared`] client for the URL.
#[derive(Debug, Clone)]
pub struct RedisHandler {
    url: String,
    prefix: String,
}

impl RedisHandler {
    /// Sessions on the server at `url` (checked now; connections open on each ring's first
    /// use).
    pub fn new(url: &str) -> Result<RedisHandler, RedisError> {
        RedisConfig::from_url(url)?;
        Ok(RedisHandler { url: url.to_string(), prefix: "ringman:session:".into() })
    }

    /// Replaces the key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> RedisHandler {
        self.prefix = prefix.into();
        self
    }

    fn key(&self, id: &SessionId) -> String {
        format!("{}{id}", self.prefix)
    }
}

/// `EX` takes whole seconds, at least 1.
fn seconds(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

impl SessionHandler for RedisHandler {
    fn read(&self, id: &SessionId, _max_lifetime: Duration) -> HandlerFuture<Option<Vec<u8>>> {
        let (url, key) = (self.url.clone(), self.key(id));
        Box::pin(async move { Ok(Redis::shared(&url)?.get(key).await?) })
    }

    fn write(&self, id: &SessionId, data: Vec<u8>, max_lifetime: Duration) -> HandlerFuture<()> {
        let (url, key) = (self.url.clone(), self.key(id));
        Box::pin(async move {
            let cmd = Cmd::new("SET").key(key).arg(data).arg("EX").arg(seconds(max_lifetime));
            match Redis::shared(&url)?.cmd(&cmd).await? {
                v if v.is_ok() => Ok(()),
                v => Err(RedisError::Unexpected(format!("{v:?}")).into()),
            }
        })
    }

    fn touch(&self, id: &SessionId, max_lifetime: Duration) -> HandlerFuture<()> {
        let (url, key) = (self.url.clone(), self.key(id));
        Box::pin(async move {
            let cmd = Cmd::new("EXPIRE").key(key).arg(seconds(max_lifetime));
            match Redis::shared(&url)?.cmd(&cmd).await? {
                OwnedValue::Integer(_) => Ok(()),
                v => Err(RedisError::Unexpected(format!("{v:?}")).into()),
            }
        })
    }

    fn destroy(&self, id: &SessionId) -> HandlerFuture<()> {
        let (url, key) = (self.url.clone(), self.key(id));
        Box::pin(async move {
            Redis::shared(&url)?.del(key).await?;
            Ok(())
        })
    }

    fn gc(&self, _max_lifetime: Duration) -> HandlerFuture<usize> {
        Box::pin(std::future::ready(Ok::<usize, SessionError>(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_redis_expiry_rounds_up_to_whole_seconds() {
        assert_eq!(seconds(Duration::from_secs(1440)), 1440);
        assert_eq!(seconds(Duration::from_millis(1500)), 2);
        assert_eq!(seconds(Duration::ZERO), 1);
    }
}
