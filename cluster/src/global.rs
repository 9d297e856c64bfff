//! GlobalData on Redis: variables shared by every process, with Workerman's atomic
//! operations (`add`, `cas`, `increment`), on the rings.
//!
//! | Workerman | here | Redis |
//! |-----------|------|-------|
//! | `$global->x` (read) | [`GlobalData::get`] | `GET` |
//! | `$global->x = v` | [`GlobalData::set`] | `SET` |
//! | `unset($global->x)` | [`GlobalData::delete`] | `DEL` |
//! | `add(k, v)`: set only if absent | [`GlobalData::add`] | `SET NX` |
//! | `cas(k, old, new)` | [`GlobalData::cas`] | one Lua script: compare the stored bytes, then `SET` |
//! | `increment(k, step)` | [`GlobalData::increment`] | `INCRBY` |
//!
//! Values are bytes; keys get the configured prefix (default `ringman:gd:`). A value of
//! any serde type can be stored by serialising it to bytes first: the comparison of `cas`
//! is then on the serialised bytes, which is what Workerman does with `serialize()`.

use ringman_protocols::resp::{Arg, Cmd, OwnedValue};

use crate::redis::{Redis, RedisError};

/// Compare-and-set: `ARGV[1]` is `1` when an old value is expected (`ARGV[2]`), `0` when
/// the key is expected absent; `ARGV[3]` is the new value.
const CAS: &str = "local v = redis.call('GET', KEYS[1]) \
if (ARGV[1] == '0' and v == false) or (ARGV[1] == '1' and v == ARGV[2]) then \
redis.call('SET', KEYS[1], ARGV[3]) return 1 end return 0";

/// Shared variables on Redis (see the module docs for the operations). Lives on a ring
/// thread, like its [`Redis`] client.
#[derive(Clone, Debug)]
pub struct GlobalData {
    redis: Redis,
    prefix: Vec<u8>,
}

impl GlobalData {
    /// Over `redis`, with keys prefixed by `ringman:gd:` (after the client's own prefix).
    pub fn new(redis: Redis) -> GlobalData {
        GlobalData::with_prefix(redis, "ringman:gd:")
    }

    /// Over `redis`, with keys prefixed by `prefix`.
    pub fn with_prefix(redis: Redis, prefix: &str) -> GlobalData {
        GlobalData { redis, prefix: prefix.as_bytes().to_vec() }
    }

    fn key(&self, k: impl Arg) -> Vec<u8> {
        let mut v = self.prefix.clone();
        k.write_arg(&mut v);
        v
    }

    /// The value, or `None` when unset.
    pub async fn get(&self, key: impl Arg) -> Result<Option<Vec<u8>>, RedisError> {
        self.redis.get(self.key(key)).await
    }

    /// Sets the value.
    pub async fn set(&self, key: impl Arg, value: impl Arg) -> Result<(), RedisError> {
        self.redis.set(self.key(key), value).await
    }

    /// Removes the value; true when there was one.
    pub async fn delete(&self, key: impl Arg) -> Result<bool, RedisError> {
        self.redis.del(self.key(key)).await
    }

    /// Sets the value only if unset; true when it was set.
    pub async fn add(&self, key: impl Arg, value: impl Arg) -> Result<bool, RedisError> {
        self.redis.set_nx(self.key(key), value).await
    }

    /// Sets `new` only if the stored bytes equal `old` (`None`: only if unset); true when
    /// it was set. Atomic on the server (one script).
    pub async fn cas(&self, key: impl Arg, old: Option<&[u8]>, new: impl Arg) -> Result<bool, RedisError> {
        let cmd = Cmd::new("EVAL")
            .arg(CAS)
            .arg(1)
            .key(self.key(key))
            .arg(if old.is_some() { "1" } else { "0" })
            .arg(old.unwrap_or_default())
            .arg(new);
        match self.redis.cmd(&cmd).await? {
            OwnedValue::Integer(n) => Ok(n == 1),
            v => Err(RedisError::Unexpected(format!("{v:?}"))),
        }
    }

    /// Adds `by` to the integer value (an unset one counts as 0); the new value.
    pub async fn increment(&self, key: impl Arg, by: i64) -> Result<i64, RedisError> {
        self.redis.incr_by(self.key(key), by).await
    }
}
