//! The RESP codec against a real `redis-server`: commands written with the encoder, replies
//! read in odd-sized pieces through `Framer` and the decoder, then parsed with `Value`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringman_protocols::resp::{encode_command, Cmd, ErrorKind, OwnedValue, PubSub, Resp, SubscriptionKind, Value};
use ringman_protocols::{Decoder, Delivery, Flow, Framer, Protocol};

const MAX: usize = 1 << 20;

/// A `redis-server` on a free loopback port, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server does not start: {e} (CI installs redis-server)"));
        let mut r = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(r.child.try_wait().unwrap().is_none(), "redis-server exited");
            assert!(Instant::now() < deadline, "redis-server never accepted connections");
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client connection: replies are read in ever-changing piece sizes.
struct Conn {
    stream: TcpStream,
    framer: Framer,
    dec: Box<dyn Decoder>,
    reads: usize,
    ready: std::collections::VecDeque<OwnedValue>,
}

/// Read sizes cycled through, so replies and their headers split everywhere.
const PIECES: [usize; 10] = [1, 2, 3, 5, 8, 13, 64, 700, 4096, 65536];

impl Conn {
    fn open(redis: &Redis) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
        // A guard against a hang, not a timing assertion.
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Conn { stream, framer: Framer::new(), dec: Resp.decoder(), reads: 0, ready: Default::default() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn cmd(&mut self, args: &[&str]) {
        let mut out = Vec::new();
        encode_command(&mut out, &args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>());
        self.send(&out);
    }

    /// The next reply.
    fn recv(&mut self) -> OwnedValue {
        while self.ready.is_empty() {
            let mut buf = vec![0u8; PIECES[self.reads % PIECES.len()]];
            self.reads += 1;
            let n = self.stream.read(&mut buf).unwrap();
            assert!(n > 0, "redis closed the connection");
            let ready = &mut self.ready;
            self.framer
                .feed(self.dec.as_mut(), &mut buf[..n], MAX, |d| {
                    if let Delivery::Message(m) = d {
                        let (v, len) = Value::parse(m.data).unwrap();
                        assert_eq!(len, m.data.len(), "a packet is exactly one reply");
                        ready.push_back(v.to_owned_value());
                    }
                    Flow::Continue
                })
                .unwrap();
        }
        self.ready.pop_front().unwrap()
    }
}

fn bulk(s: &str) -> OwnedValue {
    OwnedValue::Bulk(Some(s.as_bytes().to_vec()))
}

fn ok(v: &OwnedValue) {
    assert!(v.is_ok(), "{v:?}");
}

/// The same burst in RESP2 and RESP3; `resp3` selects what the replies must look like.
fn burst(c: &mut Conn, resp3: bool, tag: &str) {
    let big = "b".repeat(300_000);
    let k = |name: &str| format!("{tag}:{name}");
    let mut out = Vec::new();
    Cmd::new("SET").key("str").arg("hello").encode_prefixed(format!("{tag}:").as_bytes(), &mut out);
    encode_command(&mut out, &[b"GET", k("str").as_bytes()]);
    encode_command(&mut out, &[b"INCR", k("n").as_bytes()]);
    Cmd::new("INCRBY").key("n").arg(41).encode_prefixed(format!("{tag}:").as_bytes(), &mut out);
    encode_command(&mut out, &[b"LPUSH", k("list").as_bytes(), b"a", b"b", b"c\r\nd"]);
    encode_command(&mut out, &[b"LRANGE", k("list").as_bytes(), b"0", b"-1"]);
    encode_command(&mut out, &[b"HSET", k("hash").as_bytes(), b"f1", b"v1", b"f2", b""]);
    encode_command(&mut out, &[b"HGETALL", k("hash").as_bytes()]);
    encode_command(&mut out, &[b"GET", k("missing").as_bytes()]);
    encode_command(&mut out, &[b"LPUSH", k("str").as_bytes(), b"x"]);
    encode_command(&mut out, &[b"SET", k("big").as_bytes(), big.as_bytes()]);
    encode_command(&mut out, &[b"GET", k("big").as_bytes()]);
    encode_command(&mut out, &[b"ZADD", k("z").as_bytes(), b"1.5", b"m"]);
    encode_command(&mut out, &[b"ZSCORE", k("z").as_bytes(), b"m"]);
    encode_command(&mut out, &[b"SADD", k("set").as_bytes(), b"only"]);
    encode_command(&mut out, &[b"SMEMBERS", k("set").as_bytes()]);
    encode_command(&mut out, &[b"EXISTS", k("str").as_bytes()]);
    encode_command(&mut out, &[b"NOSUCHCOMMAND"]);
    c.send(&out);

    ok(&c.recv());
    assert_eq!(c.recv(), bulk("hello"));
    assert_eq!(c.recv(), OwnedValue::Integer(1));
    assert_eq!(c.recv(), OwnedValue::Integer(42));
    assert_eq!(c.recv(), OwnedValue::Integer(3));
    assert_eq!(c.recv(), OwnedValue::Array(vec![bulk("c\r\nd"), bulk("b"), bulk("a")]));
    assert_eq!(c.recv(), OwnedValue::Integer(2));
    let hash = c.recv();
    assert_eq!(matches!(hash, OwnedValue::Map(_)), resp3, "{hash:?}");
    assert_eq!(hash.into_pairs().unwrap(), vec![(bulk("f1"), bulk("v1")), (bulk("f2"), bulk(""))]);
    let missing = c.recv();
    assert!(missing.is_nil());
    assert_eq!(missing, if resp3 { OwnedValue::Null } else { OwnedValue::Bulk(None) });
    let e = c.recv();
    let e = e.as_error().unwrap_or_else(|| panic!("not an error: {e:?}"));
    assert_eq!(e.kind(), ErrorKind::WrongType);
    assert_eq!(e.message(), b"Operation against a key holding the wrong kind of value");
    ok(&c.recv());
    assert_eq!(c.recv().as_bytes(), Some(big.as_bytes()));
    assert_eq!(c.recv(), OwnedValue::Integer(1));
    let score = c.recv();
    assert_eq!(score, if resp3 { OwnedValue::Double(1.5) } else { bulk("1.5") });
    assert_eq!(score.as_double(), Some(1.5));
    assert_eq!(c.recv(), OwnedValue::Integer(1));
    let set = c.recv();
    assert_eq!(set, if resp3 { OwnedValue::Set(vec![bulk("only")]) } else { OwnedValue::Array(vec![bulk("only")]) });
    assert_eq!(c.recv().as_bool(), Some(true));
    let e = c.recv();
    assert_eq!(e.as_error().map(|e| e.kind()), Some(ErrorKind::Err), "{e:?}");
}

#[test]
fn a_pipelined_burst_in_resp2_and_resp3_and_pubsub_pushes() {
    let redis = Redis::start();
    let mut c = Conn::open(&redis);
    burst(&mut c, false, "r2");

    // Switch to RESP3: HELLO answers a map.
    c.cmd(&["HELLO", "3"]);
    let hello = c.recv();
    let map = hello.as_map().unwrap_or_else(|| panic!("HELLO 3 answered {hello:?}"));
    let proto = map.iter().find(|(k, _)| k.as_bytes() == Some(b"proto")).map(|(_, v)| v.as_int());
    assert_eq!(proto, Some(Some(3)));
    burst(&mut c, true, "r3");

    // A RESP2 subscriber and a RESP3 one (c); a third connection publishes.
    let mut sub2 = Conn::open(&redis);
    sub2.cmd(&["SUBSCRIBE", "news"]);
    let conf = sub2.recv();
    assert!(matches!(conf, OwnedValue::Array(_)), "{conf:?}");
    assert_eq!(
        PubSub::from_value(&conf.as_value()),
        Some(PubSub::Subscribed { kind: SubscriptionKind::Channel, channel: b"news", count: 1 })
    );

    let mut out = Vec::new();
    for args in [&["SUBSCRIBE", "news"][..], &["PSUBSCRIBE", "n*"], &["SSUBSCRIBE", "shard"]] {
        encode_command(&mut out, &args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>());
    }
    c.send(&out);
    let kinds = [SubscriptionKind::Channel, SubscriptionKind::Pattern, SubscriptionKind::Shard];
    for (kind, (channel, count)) in kinds.into_iter().zip([(&b"news"[..], 1), (b"n*", 2), (b"shard", 1)]) {
        let v = c.recv();
        assert!(matches!(v, OwnedValue::Push(_)), "RESP3 confirmations are pushes: {v:?}");
        assert_eq!(PubSub::from_value(&v.as_value()), Some(PubSub::Subscribed { kind, channel, count }));
    }

    let mut publisher = Conn::open(&redis);
    publisher.cmd(&["PUBLISH", "news", "hello\r\nworld"]);
    // Three receivers: sub2's channel, c's channel and c's pattern.
    assert_eq!(publisher.recv(), OwnedValue::Integer(3));
    publisher.cmd(&["SPUBLISH", "shard", "s1"]);
    assert_eq!(publisher.recv(), OwnedValue::Integer(1));

    let got = sub2.recv();
    assert_eq!(
        PubSub::from_value(&got.as_value()),
        Some(PubSub::Message { channel: b"news", payload: b"hello\r\nworld" })
    );
    // In RESP3 a subscribed connection still runs ordinary commands; their replies
    // interleave with the pushes.
    c.cmd(&["GET", "r3:str"]);
    let mut events = Vec::new();
    let mut replies = Vec::new();
    while events.len() < 3 || replies.is_empty() {
        let v = c.recv();
        if matches!(v, OwnedValue::Push(_)) {
            events.push(v);
        } else {
            replies.push(v);
        }
    }
    assert_eq!(replies, vec![bulk("hello")]);
    let events: Vec<_> = events.iter().map(|v| v.as_value()).collect();
    let mut events: Vec<_> = events.iter().map(|v| PubSub::from_value(v).unwrap()).collect();
    events.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        events,
        vec![
            PubSub::Message { channel: b"news", payload: b"hello\r\nworld" },
            PubSub::PMessage { pattern: b"n*", channel: b"news", payload: b"hello\r\nworld" },
            PubSub::SMessage { channel: b"shard", payload: b"s1" },
        ]
    );

    // Shard subscriptions are counted apart (they made SSUBSCRIBE's count 1).
    c.cmd(&["UNSUBSCRIBE"]);
    let v = c.recv();
    assert_eq!(
        PubSub::from_value(&v.as_value()),
        Some(PubSub::Unsubscribed { kind: SubscriptionKind::Channel, channel: Some(b"news"), count: 1 })
    );
    c.cmd(&["PUNSUBSCRIBE"]);
    let v = c.recv();
    assert_eq!(
        PubSub::from_value(&v.as_value()),
        Some(PubSub::Unsubscribed { kind: SubscriptionKind::Pattern, channel: Some(b"n*"), count: 0 })
    );
    // RESP2 subscribed mode answers PING with a pong array.
    sub2.cmd(&["PING"]);
    let v = sub2.recv();
    assert_eq!(PubSub::from_value(&v.as_value()), Some(PubSub::Pong { payload: b"" }));
    drop(redis);
}
