//! Unit tests of the RESP codec, driven through [`Framer`] as the engine drives it.

use proptest::prelude::*;

use super::*;
use crate::{Decoder, Delivery, Flow, Framer, Input, Protocol, ProtocolError};

const MAX: usize = 1 << 20;

/// Feeds `chunks` through a framer with a fresh decoder; returns the delivered packets and
/// the error the stream ended in, if any.
fn run(chunks: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, Option<ProtocolError>) {
    let mut dec = Resp.decoder();
    let mut framer = Framer::new();
    let mut got = Vec::new();
    for c in chunks {
        let r = framer.feed(dec.as_mut(), &mut c.to_vec(), max, |d| {
            if let Delivery::Message(m) = d {
                assert_eq!(m.kind, crate::MessageKind::Binary);
                got.push(m.data.to_vec());
            }
            Flow::Continue
        });
        if let Err(e) = r {
            return (got, Some(e));
        }
    }
    (got, None)
}

fn parse(wire: &[u8]) -> Value<'_> {
    let (v, n) = Value::parse(wire).unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(wire)));
    assert_eq!(n, wire.len(), "{:?}", String::from_utf8_lossy(wire));
    v
}

fn bulk(s: &[u8]) -> Value<'_> {
    Value::Bulk(Some(s))
}

/// One reply of every type (with nesting and an attribute), and what it parses to.
fn every_type() -> Vec<(&'static [u8], Value<'static>)> {
    vec![
        (b"+OK\r\n", Value::SimpleString(b"OK")),
        (b"+\r\n", Value::SimpleString(b"")),
        (b"-ERR unknown command 'FOO'\r\n", Value::Error(ServerError::new(b"ERR unknown command 'FOO'"))),
        (b":0\r\n", Value::Integer(0)),
        (b":-9223372036854775808\r\n", Value::Integer(i64::MIN)),
        (b":9223372036854775807\r\n", Value::Integer(i64::MAX)),
        (b"$5\r\nhel\rl\r\n", bulk(b"hel\rl")),
        (b"$0\r\n\r\n", bulk(b"")),
        (b"$-1\r\n", Value::Bulk(None)),
        (b"*-1\r\n", Value::Null),
        (b"*0\r\n", Value::Array(vec![])),
        (b"*2\r\n:1\r\n*1\r\n$1\r\nx\r\n", Value::Array(vec![Value::Integer(1), Value::Array(vec![bulk(b"x")])])),
        (b"_\r\n", Value::Null),
        (b",3.25\r\n", Value::Double(3.25)),
        (b",-inf\r\n", Value::Double(f64::NEG_INFINITY)),
        (b",1e300\r\n", Value::Double(1e300)),
        (b"#t\r\n", Value::Boolean(true)),
        (b"#f\r\n", Value::Boolean(false)),
        (
            b"(-3492890328409238509324850943850943825024385\r\n",
            Value::BigNumber(b"-3492890328409238509324850943850943825024385"),
        ),
        (b"!22\r\nSYNTAX invalid\r\nsyntax\r\n", Value::Error(ServerError::new(b"SYNTAX invalid\r\nsyntax"))),
        (b"=15\r\ntxt:Some string\r\n", Value::Verbatim { format: b"txt", text: b"Some string" }),
        (
            b"%2\r\n+first\r\n:1\r\n$6\r\nsecond\r\n_\r\n",
            Value::Map(vec![(Value::SimpleString(b"first"), Value::Integer(1)), (bulk(b"second"), Value::Null)]),
        ),
        (b"~2\r\n+a\r\n#f\r\n", Value::Set(vec![Value::SimpleString(b"a"), Value::Boolean(false)])),
        (
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\np\r\n",
            Value::Push(vec![bulk(b"message"), bulk(b"ch"), bulk(b"p")]),
        ),
        (
            b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*1\r\n:2039123\r\n",
            Value::Attributed {
                attributes: vec![(
                    Value::SimpleString(b"key-popularity"),
                    Value::Map(vec![(bulk(b"a"), Value::Double(0.19))]),
                )],
                value: Box::new(Value::Array(vec![Value::Integer(2039123)])),
            },
        ),
        (
            // An attribute on an element inside an aggregate, and two attributes in a row.
            b"*2\r\n|1\r\n+ttl\r\n:3\r\n|1\r\n+x\r\n_\r\n$1\r\nv\r\n:7\r\n",
            Value::Array(vec![
                Value::Attributed {
                    attributes: vec![
                        (Value::SimpleString(b"ttl"), Value::Integer(3)),
                        (Value::SimpleString(b"x"), Value::Null),
                    ],
                    value: Box::new(bulk(b"v")),
                },
                Value::Integer(7),
            ]),
        ),
    ]
}

#[test]
fn every_type_parses_and_is_one_packet() {
    for (wire, want) in every_type() {
        assert_eq!(parse(wire), want, "{:?}", String::from_utf8_lossy(wire));
        let mut c = RespCodec::new();
        assert_eq!(c.input(wire, MAX), Ok(Input::Packet(wire.len())), "{:?}", String::from_utf8_lossy(wire));
        // With trailing bytes of the next reply the length is the same.
        let mut more = wire.to_vec();
        more.extend_from_slice(b"+next\r\n");
        assert_eq!(c.input(&more, MAX), Ok(Input::Packet(wire.len())));
        // Every proper prefix is incomplete, for the decoder and the parser.
        for cut in 0..wire.len() {
            let mut c = RespCodec::new();
            assert_eq!(c.input(&wire[..cut], MAX), Ok(Input::Need), "{:?} cut at {cut}", String::from_utf8_lossy(wire));
            assert_eq!(Value::parse(&wire[..cut]), Err(RespError::Incomplete));
        }
    }
}

#[test]
fn written_values_parse_back() {
    for (wire, v) in every_type() {
        let mut out = Vec::new();
        v.write(&mut out);
        assert_eq!(parse(&out), v, "{:?}", String::from_utf8_lossy(wire));
        let owned = v.to_owned_value();
        assert_eq!(owned.as_value(), v);
        assert_eq!(OwnedValue::parse(wire).unwrap(), (owned, wire.len()));
    }
}

/// All replies of [`every_type`] back to back, as a pipelined burst.
fn pipelined() -> (Vec<u8>, Vec<Vec<u8>>) {
    let packets: Vec<Vec<u8>> = every_type().into_iter().map(|(w, _)| w.to_vec()).collect();
    (packets.concat(), packets)
}

#[test]
fn a_pipelined_stream_splits_identically_at_every_byte() {
    let (stream, packets) = pipelined();
    assert_eq!(run(&[&stream], MAX), (packets.clone(), None));
    for i in 0..=stream.len() {
        let (a, b) = stream.split_at(i);
        assert_eq!(run(&[a, b], MAX), (packets.clone(), None), "split at {i}");
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(run(&bytes, MAX), (packets.clone(), None), "one byte at a time");
    for step in 2..40 {
        let chunks: Vec<&[u8]> = stream.chunks(step).collect();
        assert_eq!(run(&chunks, MAX), (packets.clone(), None), "chunks of {step}");
    }
}

#[test]
fn a_pipelined_stream_splits_identically_at_every_pair_of_bytes() {
    let (stream, packets) = pipelined();
    let stream = &stream[..stream.len().min(200)];
    let whole = run(&[stream], MAX);
    assert!(whole.0.len() > 10, "the prefix holds many replies");
    for i in 0..=stream.len() {
        for j in i..=stream.len() {
            assert_eq!(run(&[&stream[..i], &stream[i..j], &stream[j..]], MAX), whole, "split at {i} and {j}");
        }
    }
    assert_eq!(whole.0, packets[..whole.0.len()]);
}

#[test]
fn malformed_replies_are_refused_with_their_error() {
    let cases: &[(&[u8], RespError)] = &[
        (b"?\r\n", RespError::BadType(b'?')),
        (b"\r\n", RespError::BadType(b'\r')),
        (b"PONG\r\n", RespError::BadType(b'P')),
        (b";3\r\nabc\r\n", RespError::BadType(b';')),
        (b"$?\r\n;3\r\nabc\r\n;0\r\n", RespError::Streamed),
        (b"*?\r\n:1\r\n.\r\n", RespError::Streamed),
        (b"%?\r\n", RespError::Streamed),
        (b"$x\r\n", RespError::BadLength),
        (b"$\r\n", RespError::BadLength),
        (b"$+3\r\nabc\r\n", RespError::BadLength),
        (b"$99999999999999999999\r\n", RespError::BadLength),
        (b"$000000000000000000003\r\n", RespError::BadLength),
        (b"*1x\r\n", RespError::BadLength),
        (b"$-2\r\n", RespError::NegativeLength),
        (b"*-5\r\n", RespError::NegativeLength),
        (b"%-1\r\n", RespError::NegativeLength),
        (b"~-1\r\n", RespError::NegativeLength),
        (b"!-1\r\n", RespError::NegativeLength),
        (b"+OK\n", RespError::MissingCrlf),
        (b"+OK\rX", RespError::MissingCrlf),
        (b"$3\r\nabcd\r\n", RespError::MissingCrlf),
        (b"$3\r\nab\r\n\r\n", RespError::MissingCrlf),
        (b":12a\r\n", RespError::BadInteger),
        (b":\r\n", RespError::BadInteger),
        (b":-\r\n", RespError::BadInteger),
        (b":9223372036854775808\r\n", RespError::BadInteger),
        (b":123456789012345678901", RespError::BadInteger),
        (b",\r\n", RespError::BadDouble),
        (b",infinity\r\n", RespError::BadDouble),
        (b",1.2.3\r\n", RespError::BadDouble),
        (b"#x\r\n", RespError::BadBoolean),
        (b"#tt", RespError::BadBoolean),
        (b"(\r\n", RespError::BadBigNumber),
        (b"(12x\r\n", RespError::BadBigNumber),
        (b"_x", RespError::BadNull),
        (b"=3\r\ntxt\r\n", RespError::BadVerbatim),
        (b"=5\r\ntxt-x\r\n", RespError::BadVerbatim),
        (b"*2\r\n:1\r\n&\r\n", RespError::BadType(b'&')),
        (b"|1\r\n+a\r\n+b\r\n$-3\r\n", RespError::NegativeLength),
    ];
    for (wire, err) in cases {
        let what = String::from_utf8_lossy(wire);
        assert_eq!(Value::parse(wire).map(|(v, n)| (v.to_owned_value(), n)), Err(*err), "{what}");
        let want = ProtocolError::Malformed { protocol: "resp", reason: err.reason() };
        assert_eq!(RespCodec::new().input(wire, MAX), Err(want.clone()), "{what}");
        // After a good reply, through the framer, at every split: the good one is delivered,
        // then the stream fails.
        let mut stream = b"+OK\r\n".to_vec();
        stream.extend_from_slice(wire);
        for i in 0..=stream.len() {
            let (a, b) = stream.split_at(i);
            assert_eq!(run(&[a, b], MAX), (vec![b"+OK\r\n".to_vec()], Some(want.clone())), "{what} split at {i}");
        }
    }
}

#[test]
fn lengths_beyond_max_are_refused_before_the_data_arrives() {
    let mut c = RespCodec::new();
    assert_eq!(c.input(b"$2000\r\n", 1000), Err(ProtocolError::TooLarge { len: 2009, max: 1000 }));
    // The 6-byte header, 992 bytes and CR LF make 1000 bytes: fits exactly.
    assert_eq!(c.input(b"$992\r\n", 1000), Ok(Input::Need));
    let mut c = RespCodec::new();
    assert_eq!(c.input(b"$993\r\n", 1000), Err(ProtocolError::TooLarge { len: 1001, max: 1000 }));
    // A count no packet within max can hold.
    let mut c = RespCodec::new();
    assert!(matches!(c.input(b"*1000\r\n", 1000), Err(ProtocolError::TooLarge { .. })));
    let mut c = RespCodec::new();
    assert!(matches!(c.input(b"%18446744073709551615\r\n", MAX), Err(ProtocolError::TooLarge { .. })));
    // A simple string that never ends.
    let mut c = RespCodec::new();
    assert_eq!(c.input(&[b'+'; 1000], 1000), Ok(Input::Need));
    assert!(matches!(c.input(&[b'+'; 1001], 1000), Err(ProtocolError::TooLarge { len: 1001, max: 1000 })));
    // Through the framer, one byte at a time.
    let big = format!("${}\r\n{}\r\n", 2000, "x".repeat(2000));
    let chunks: Vec<&[u8]> = big.as_bytes().chunks(1).collect();
    assert_eq!(run(&chunks, 1000), (vec![], Some(ProtocolError::TooLarge { len: 2009, max: 1000 })));
    assert_eq!(run(&chunks, 2009).0, vec![big.as_bytes().to_vec()]);
}

fn nested(depth: usize) -> Vec<u8> {
    let mut v = b"*1\r\n".repeat(depth);
    v.extend_from_slice(b":1\r\n");
    v
}

#[test]
fn nesting_is_limited_without_recursion_in_the_decoder() {
    let ok = nested(MAX_DEPTH);
    assert_eq!(RespCodec::new().input(&ok, MAX), Ok(Input::Packet(ok.len())));
    let mut v = parse(&ok);
    for _ in 0..MAX_DEPTH {
        v = v.into_array().unwrap().pop().unwrap();
    }
    assert_eq!(v, Value::Integer(1));

    let too_deep = nested(MAX_DEPTH + 1);
    let err = ProtocolError::Malformed { protocol: "resp", reason: RespError::TooDeep.reason() };
    assert_eq!(RespCodec::new().input(&too_deep, MAX), Err(err.clone()));
    assert_eq!(Value::parse(&too_deep).unwrap_err(), RespError::TooDeep);
    // Empty aggregates count too, and maps, sets, pushes and attributes nest the same way.
    let mut mixed = b"%1\r\n+k\r\n~1\r\n>1\r\n|1\r\n+a\r\n+b\r\n".repeat(MAX_DEPTH / 3 + 1);
    mixed.extend_from_slice(b"*0\r\n");
    let deep = (MAX_DEPTH / 3 + 1) * 3 + 1;
    assert!(deep > MAX_DEPTH, "the mix reaches past the limit");
    assert_eq!(Value::parse(&mixed).unwrap_err(), RespError::TooDeep);
    assert_eq!(RespCodec::new().input(&mixed, MAX), Err(err.clone()));
    // A million levels: an error, not a stack overflow.
    let huge = b"*1\r\n".repeat(1_000_000);
    assert_eq!(RespCodec::new().input(&huge, 8 << 20), Err(err));
    assert_eq!(Value::parse(&huge).unwrap_err(), RespError::TooDeep);
}

#[test]
fn a_large_reply_arriving_in_pieces_is_delivered_once() {
    // 20 000 elements, a 300 KB bulk string among them, fed in 1000-byte reads.
    let mut wire = b"*20001\r\n".to_vec();
    for i in 0..10_000 {
        wire.extend_from_slice(format!(":{i}\r\n").as_bytes());
    }
    let blob = vec![b'z'; 300_000];
    push_bulk_for_test(&mut wire, &blob);
    for i in 0..10_000 {
        wire.extend_from_slice(format!("+s{i}\r\n").as_bytes());
    }
    let chunks: Vec<&[u8]> = wire.chunks(1000).collect();
    let (got, err) = run(&chunks, MAX);
    assert_eq!(err, None);
    assert_eq!(got, vec![wire.clone()]);
    let items = parse(&got[0]).into_array().unwrap();
    assert_eq!(items.len(), 20_001);
    assert_eq!(items[9_999].as_int(), Some(9_999));
    assert_eq!(items[10_000].as_bytes(), Some(&blob[..]));
    assert_eq!(items[20_000].as_str(), Some("s9999"));
}

fn push_bulk_for_test(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

#[test]
fn the_decoder_starts_over_on_unrelated_bytes() {
    let mut c = RespCodec::new();
    assert_eq!(c.input(b"*2\r\n:1\r\n", MAX), Ok(Input::Need));
    // Shorter than where the walk stopped: not the same packet, so walked from the start.
    assert_eq!(c.input(b"+OK\r\n", MAX), Ok(Input::Packet(5)));
}

#[test]
fn the_encoder_sends_payloads_unchanged() {
    let mut e = Resp.encoder();
    assert!(e.is_identity());
    let mut out = b"x".to_vec();
    e.encode(b"*1\r\n$4\r\nPING\r\n", crate::MessageKind::Binary, &mut out);
    assert_eq!(out, b"x*1\r\n$4\r\nPING\r\n");
    assert_eq!(Resp.name(), "resp");
}

#[test]
fn commands_encode_as_arrays_of_bulk_strings() {
    let mut out = Vec::new();
    encode_command(&mut out, &[b"SET", b"k", b"a\r\nb", b""]);
    assert_eq!(out, b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n$0\r\n\r\n");
    let v = parse(&out);
    assert_eq!(
        v.as_array().unwrap().iter().map(|a| a.as_bytes().unwrap()).collect::<Vec<_>>(),
        [&b"SET"[..], b"k", b"a\r\nb", b""]
    );

    let key = String::from("k2");
    let cmd =
        Cmd::new("MSET").key("k1").arg(&b"v1"[..]).key(&key).arg(-42i64).arg(1.5f64).arg(u64::MAX).arg(vec![0u8, 255]);
    assert_eq!(cmd.len(), 8);
    let mut plain = Vec::new();
    cmd.encode(&mut plain);
    assert_eq!(plain, cmd.to_bytes());
    let mut prefixed = Vec::new();
    cmd.encode_prefixed(b"app:", &mut prefixed);
    let args = |wire: &[u8]| -> Vec<Vec<u8>> {
        parse(wire).into_array().unwrap().iter().map(|a| a.as_bytes().unwrap().to_vec()).collect()
    };
    assert_eq!(args(&plain), [&b"MSET"[..], b"k1", b"v1", b"k2", b"-42", b"1.5", b"18446744073709551615", &[0, 255]]);
    assert_eq!(
        args(&prefixed),
        [&b"MSET"[..], b"app:k1", b"v1", b"app:k2", b"-42", b"1.5", b"18446744073709551615", &[0, 255]]
    );
    let keys: Vec<&[u8]> = cmd.args().filter(|a| a.1).map(|a| a.0).collect();
    assert_eq!(keys, [&b"k1"[..], b"k2"]);
    let mut looped = Cmd::new("DEL");
    for k in ["a", "b"] {
        looped.push_key(k);
    }
    looped.push_arg(0u8);
    assert_eq!(looped.to_bytes(), b"*4\r\n$3\r\nDEL\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\n0\r\n");
}

#[test]
fn server_errors_split_into_code_and_message() {
    let v = parse(b"-MOVED 3999 127.0.0.1:6381\r\n");
    let e = v.as_error().unwrap();
    assert_eq!((e.code(), e.message(), e.kind()), (&b"MOVED"[..], &b"3999 127.0.0.1:6381"[..], ErrorKind::Moved));
    let e = parse(b"-NOAUTH\r\n").as_error().unwrap();
    assert_eq!((e.code(), e.message(), e.kind()), (&b"NOAUTH"[..], &b""[..], ErrorKind::NoAuth));
    let owned = parse(b"-custom failure here\r\n").to_owned_value();
    let e = owned.as_error().unwrap();
    assert_eq!((e.code(), e.message(), e.kind()), (&b"custom"[..], &b"failure here"[..], ErrorKind::Other));
    assert_eq!(e.to_string(), "custom failure here");
    assert!(parse(b"+OK\r\n").as_error().is_none());
}

#[test]
fn accessors_look_through_attributes_and_convert() {
    let v = parse(b"|1\r\n+a\r\n+b\r\n$2\r\n42\r\n");
    assert_eq!(
        (v.as_bytes(), v.as_str(), v.as_int(), v.as_double()),
        (Some(&b"42"[..]), Some("42"), Some(42), Some(42.0))
    );
    assert!(parse(b"_\r\n").is_nil() && parse(b"$-1\r\n").is_nil() && parse(b"*-1\r\n").is_nil());
    assert!(!parse(b"$0\r\n\r\n").is_nil());
    assert!(parse(b"+OK\r\n").is_ok() && parse(b"+OK\r\n").to_owned_value().is_ok());
    assert_eq!(parse(b":1\r\n").as_bool(), Some(true));
    assert_eq!(parse(b"#f\r\n").as_bool(), Some(false));
    assert_eq!(parse(b"(123\r\n").as_int(), Some(123));
    // RESP2 HGETALL (a flat array) and RESP3 (a map) give the same pairs.
    let flat = parse(b"*4\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n").into_pairs().unwrap();
    let map = parse(b"%2\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n").into_pairs().unwrap();
    assert_eq!(flat, map);
    assert!(parse(b"*1\r\n:1\r\n").into_pairs().is_err());
    let owned = OwnedValue::parse(b"~2\r\n:1\r\n:2\r\n").unwrap().0;
    assert_eq!(owned.as_array().unwrap().iter().map(|v| v.as_int().unwrap()).collect::<Vec<_>>(), [1, 2]);
    assert!(owned.as_bytes().is_none());
}

#[test]
fn pubsub_events_are_recognised_in_arrays_and_pushes() {
    let cases: &[(&[u8], Option<PubSub<'_>>)] = &[
        (b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n", Some(PubSub::Message { channel: b"ch", payload: b"hi" })),
        (
            b">4\r\n$8\r\npmessage\r\n$2\r\nc*\r\n$2\r\nch\r\n$0\r\n\r\n",
            Some(PubSub::PMessage { pattern: b"c*", channel: b"ch", payload: b"" }),
        ),
        (b">3\r\n$8\r\nsmessage\r\n$1\r\ns\r\n$1\r\np\r\n", Some(PubSub::SMessage { channel: b"s", payload: b"p" })),
        (
            b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n",
            Some(PubSub::Subscribed { kind: SubscriptionKind::Channel, channel: b"ch", count: 1 }),
        ),
        (
            b">3\r\n$10\r\npsubscribe\r\n$2\r\nc*\r\n:2\r\n",
            Some(PubSub::Subscribed { kind: SubscriptionKind::Pattern, channel: b"c*", count: 2 }),
        ),
        (
            b">3\r\n$10\r\nssubscribe\r\n$1\r\ns\r\n:1\r\n",
            Some(PubSub::Subscribed { kind: SubscriptionKind::Shard, channel: b"s", count: 1 }),
        ),
        (
            b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n",
            Some(PubSub::Unsubscribed { kind: SubscriptionKind::Channel, channel: None, count: 0 }),
        ),
        (
            b">3\r\n$12\r\npunsubscribe\r\n_\r\n:0\r\n",
            Some(PubSub::Unsubscribed { kind: SubscriptionKind::Pattern, channel: None, count: 0 }),
        ),
        (
            b">3\r\n$12\r\nsunsubscribe\r\n$1\r\ns\r\n:0\r\n",
            Some(PubSub::Unsubscribed { kind: SubscriptionKind::Shard, channel: Some(b"s"), count: 0 }),
        ),
        (b"*2\r\n$4\r\npong\r\n$0\r\n\r\n", Some(PubSub::Pong { payload: b"" })),
        // Ordinary replies.
        (b"*2\r\n$7\r\nmessage\r\n$2\r\nch\r\n", None),
        (b"*3\r\n$3\r\nfoo\r\n$2\r\nch\r\n$2\r\nhi\r\n", None),
        (b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n$1\r\nx\r\n", None),
        (b"$7\r\nmessage\r\n", None),
        (b"*0\r\n", None),
    ];
    for (wire, want) in cases {
        assert_eq!(PubSub::from_value(&parse(wire)), *want, "{:?}", String::from_utf8_lossy(wire));
    }
}

/// Any value (no NaN, which is not equal to itself; no empty attribute list, which parses
/// as the bare value).
fn arb_value() -> impl Strategy<Value = OwnedValue> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..20);
    let line = || "[a-zA-Z0-9 :*$-]{0,12}".prop_map(String::into_bytes);
    let leaf = prop_oneof![
        line().prop_map(OwnedValue::SimpleString),
        "[A-Z]{1,6}( [a-z ]{0,10})?".prop_map(|s| OwnedValue::parse(format!("-{s}\r\n").as_bytes()).unwrap().0),
        bytes().prop_map(|b| OwnedValue::parse(&[format!("!{}\r\n", b.len()).as_bytes(), &b, b"\r\n"].concat())
            .unwrap()
            .0),
        any::<i64>().prop_map(OwnedValue::Integer),
        proptest::option::of(bytes()).prop_map(OwnedValue::Bulk),
        Just(OwnedValue::Null),
        any::<f64>().prop_filter("NaN", |d| !d.is_nan()).prop_map(OwnedValue::Double),
        any::<bool>().prop_map(OwnedValue::Boolean),
        "-?[0-9]{1,40}".prop_map(|s| OwnedValue::BigNumber(s.into_bytes())),
        ("[a-z]{3}", bytes()).prop_map(|(f, text)| OwnedValue::Verbatim { format: f.into_bytes(), text }),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        let list = proptest::collection::vec(inner.clone(), 0..6);
        let pairs = || proptest::collection::vec((inner.clone(), inner.clone()), 0..4);
        prop_oneof![
            list.clone().prop_map(OwnedValue::Array),
            list.clone().prop_map(OwnedValue::Set),
            list.prop_map(OwnedValue::Push),
            pairs().prop_map(OwnedValue::Map),
            (pairs().prop_filter("empty", |p| !p.is_empty()), inner.clone()).prop_map(|(attributes, v)| {
                // Consecutive attributes merge when parsed: annotate only a bare value.
                OwnedValue::Attributed { attributes, value: Box::new(v.into_stripped()) }
            }),
        ]
    })
}

proptest! {
    #[test]
    fn values_round_trip_through_the_wire(values in proptest::collection::vec(arb_value(), 1..5), cut in any::<prop::sample::Index>()) {
        let mut stream = Vec::new();
        let mut packets = Vec::new();
        for v in &values {
            let at = stream.len();
            v.write(&mut stream);
            packets.push(stream[at..].to_vec());
            let (back, n) = OwnedValue::parse(&stream[at..]).unwrap();
            prop_assert_eq!(n, stream.len() - at);
            prop_assert_eq!(&back, v);
        }
        let i = cut.index(stream.len() + 1);
        prop_assert_eq!(run(&[&stream[..i], &stream[i..]], MAX), (packets, None));
    }

    #[test]
    fn input_never_panics_and_its_packets_parse(wire in proptest::collection::vec(prop_oneof![
        Just(b'\r'), Just(b'\n'), Just(b'*'), Just(b'$'), Just(b'1'), Just(b'2'), Just(b'-'), Just(b'+'),
        Just(b'%'), Just(b'|'), Just(b'>'), Just(b':'), Just(b'0'), Just(b'_'), Just(b'='), any::<u8>()
    ], 0..64)) {
        if let Ok(Input::Packet(n)) = RespCodec::new().input(&wire, MAX) {
            prop_assert_eq!(Value::parse(&wire[..n]).map(|(_, len)| len), Ok(n));
        }
    }
}
