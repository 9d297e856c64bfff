//! Recognising pub/sub traffic: messages and subscription confirmations.

use super::Value;

/// Which subscription family a confirmation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionKind {
    /// `SUBSCRIBE` / `UNSUBSCRIBE`: channels.
    Channel,
    /// `PSUBSCRIBE` / `PUNSUBSCRIBE`: patterns.
    Pattern,
    /// `SSUBSCRIBE` / `SUNSUBSCRIBE`: shard channels (Redis 7).
    Shard,
}

/// A pub/sub event: what a subscribed connection receives, as a RESP2 array or a RESP3 push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSub<'a> {
    /// `message`: a payload published to a subscribed channel.
    Message {
        /// The channel.
        channel: &'a [u8],
        /// The payload.
        payload: &'a [u8],
    },
    /// `pmessage`: a payload published to a channel matching a subscribed pattern.
    PMessage {
        /// The pattern that matched.
        pattern: &'a [u8],
        /// The channel.
        channel: &'a [u8],
        /// The payload.
        payload: &'a [u8],
    },
    /// `smessage`: a payload published to a subscribed shard channel.
    SMessage {
        /// The shard channel.
        channel: &'a [u8],
        /// The payload.
        payload: &'a [u8],
    },
    /// `subscribe`, `psubscribe`, `ssubscribe`: a subscription was made.
    Subscribed {
        /// The family.
        kind: SubscriptionKind,
        /// The channel or pattern.
        channel: &'a [u8],
        /// Subscriptions the connection now holds.
        count: i64,
    },
    /// `unsubscribe`, `punsubscribe`, `sunsubscribe`: a subscription ended. The channel is
    /// `None` when unsubscribing from everything while subscribed to nothing.
    Unsubscribed {
        /// The family.
        kind: SubscriptionKind,
        /// The channel or pattern.
        channel: Option<&'a [u8]>,
        /// Subscriptions the connection still holds.
        count: i64,
    },
    /// `pong`: the answer to `PING` on a RESP2 connection in subscribed mode.
    Pong {
        /// The `PING` argument (empty without one).
        payload: &'a [u8],
    },
}

impl<'a> PubSub<'a> {
    /// Recognises a pub/sub event in a RESP2 array or RESP3 push; `None` for anything else
    /// (an ordinary reply).
    ///
    /// ```
    /// use ringman_protocols::resp::{PubSub, Value};
    /// let (v, _) = Value::parse(b">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n").unwrap();
    /// assert_eq!(PubSub::from_value(&v), Some(PubSub::Message { channel: b"news", payload: b"hi" }));
    /// ```
    pub fn from_value(v: &Value<'a>) -> Option<PubSub<'a>> {
        let items = match v.strip() {
            Value::Array(items) | Value::Push(items) => items,
            _ => return None,
        };
        let (head, rest) = items.split_first()?;
        let name = head.as_bytes()?;
        let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        let bytes = |i: usize| rest.get(i).and_then(Value::as_bytes);
        let count = || rest.get(1).and_then(Value::as_int);
        let sub = |kind| Some(PubSub::Subscribed { kind, channel: bytes(0)?, count: count()? });
        let unsub = |kind| {
            let channel = match rest.first()? {
                c if c.is_nil() => None,
                c => Some(c.as_bytes()?),
            };
            Some(PubSub::Unsubscribed { kind, channel, count: count()? })
        };
        match rest.len() {
            3 if is("pmessage") => {
                Some(PubSub::PMessage { pattern: bytes(0)?, channel: bytes(1)?, payload: bytes(2)? })
            }
            2 if is("message") => Some(PubSub::Message { channel: bytes(0)?, payload: bytes(1)? }),
            2 if is("smessage") => Some(PubSub::SMessage { channel: bytes(0)?, payload: bytes(1)? }),
            2 if is("subscribe") => sub(SubscriptionKind::Channel),
            2 if is("psubscribe") => sub(SubscriptionKind::Pattern),
            2 if is("ssubscribe") => sub(SubscriptionKind::Shard),
            2 if is("unsubscribe") => unsub(SubscriptionKind::Channel),
            2 if is("punsubscribe") => unsub(SubscriptionKind::Pattern),
            2 if is("sunsubscribe") => unsub(SubscriptionKind::Shard),
            1 if is("pong") => Some(PubSub::Pong { payload: bytes(0)? }),
            _ => None,
        }
    }
}
