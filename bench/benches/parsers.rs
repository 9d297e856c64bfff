//! Criterion microbenchmarks of the protocol parsers, without sockets.
//!
//! * `http/engine/*`: a receive buffer through [`Framer`] + the `http` decoder, then the
//!   request view built the way `Worker::on_request` builds it: the per-request parse cost
//!   of the engine.
//! * `http/parse/*`: [`Request::parse`] alone on one complete request (the fully validating
//!   public API); `http/from_decoded/*`: [`Request::from_decoded`] alone, the read-back the
//!   engine does after the decoder.
//! * `ws/frame/*`: one masked client frame through [`Framer`] + the server WebSocket decoder
//!   (header parse, checks, unmask, delivery). `ws/unmask/*`: [`apply_mask`] alone.
//!
//! Run with `cargo bench -p ringman-bench --bench parsers`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringman_protocols::http::{Http, HttpError, Request};
use ringman_protocols::ws::{apply_mask, write_frame, OpCode, WsDecoder};
use ringman_protocols::{Decoder, Delivery, Flow, Framer, Protocol};

/// Largest packet accepted, as the engine's default.
const MAX: usize = ringman_protocols::DEFAULT_MAX_PACKAGE_SIZE;

/// The request wrk sends in TechEmpower's plaintext test (Host, Accept, Connection).
const PLAINTEXT: &[u8] = b"GET /plaintext HTTP/1.1\r\n\
Host: tfb-server:8080\r\n\
Accept: text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7\r\n\
Connection: keep-alive\r\n\r\n";

/// A browser navigation: 14 header fields, among them a cookie list.
const BROWSER: &[u8] = b"GET /account/orders?page=2&sort=date HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://shop.example.com/account\r\n\
Connection: keep-alive\r\n\
Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark; cart=3f2a9c1e; consent=\"analytics=0\"\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-Site: same-origin\r\n\
Sec-Fetch-User: ?1\r\n\
Priority: u=0, i\r\n\r\n";

/// Requests per buffer in the pipelined case (TFB's pipeline depth).
const PIPELINE: usize = 16;

/// Builds the request view exactly as the engine's `on_request` glue does on `http://`
/// workers (the decoder has validated the head already).
fn engine_request(data: &[u8]) -> Result<Request<'_>, HttpError> {
    Request::from_decoded(data)
}

/// `Request::parse` as a plain function (its lifetime is the impl's, so it does not coerce
/// to a `for<'a>` function pointer by itself).
fn full_parse(data: &[u8]) -> Result<Request<'_>, HttpError> {
    Request::parse(data)
}

/// One way of building a request view from message data.
type Parse = for<'a> fn(&'a [u8]) -> Result<Request<'a>, HttpError>;

/// Feeds `wire` through the framer and decoder, building a request view per message; returns
/// how many requests were seen (and a value derived from each, so nothing is optimized away).
fn feed_http(framer: &mut Framer, dec: &mut dyn Decoder, wire: &mut [u8]) -> usize {
    let mut n = 0;
    framer
        .feed(dec, wire, MAX, |d| {
            if let Delivery::Message(m) = d {
                let req = engine_request(m.data).expect("valid request");
                black_box((req.path().len(), req.keep_alive()));
                n += 1;
            }
            Flow::Continue
        })
        .expect("valid stream");
    n
}

fn http(c: &mut Criterion) {
    let pipelined = PLAINTEXT.repeat(PIPELINE);
    let cases: [(&str, &[u8], usize); 3] =
        [("plaintext", PLAINTEXT, 1), ("browser", BROWSER, 1), ("pipelined16", &pipelined, PIPELINE)];

    let mut g = c.benchmark_group("http/engine");
    for (name, wire, count) in cases {
        let mut buf = wire.to_vec();
        let mut framer = Framer::new();
        let mut dec = Http.decoder();
        assert_eq!(feed_http(&mut framer, dec.as_mut(), &mut buf), count);
        g.throughput(Throughput::Elements(count as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| feed_http(&mut framer, dec.as_mut(), black_box(&mut buf)))
        });
    }
    g.finish();

    let parsers: [(&str, Parse); 2] = [("http/parse", full_parse), ("http/from_decoded", engine_request)];
    for (group, parse) in parsers {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(1));
        for (name, wire) in [("plaintext", PLAINTEXT), ("browser", BROWSER)] {
            assert_eq!(parse(wire), Request::parse(wire));
            g.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| {
                    let req = parse(black_box(wire)).expect("valid request");
                    black_box((req.path().len(), req.keep_alive()))
                })
            });
        }
        g.finish();
    }
}

/// A masked binary client frame carrying `len` bytes.
fn client_frame(len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    let mut wire = Vec::new();
    write_frame(&mut wire, true, false, OpCode::Binary, &payload, Some([0x5a, 0x17, 0xc3, 0x81]));
    wire
}

const WS_SIZES: [(&str, usize); 3] = [("16B", 16), ("1KiB", 1024), ("64KiB", 64 * 1024)];

fn ws(c: &mut Criterion) {
    let mut g = c.benchmark_group("ws/frame");
    for (name, len) in WS_SIZES {
        // The decoder unmasks in place, so the buffer alternates between masked and clear
        // payload from one iteration to the next: binary payloads are not inspected, so the
        // work is the same either way and no copy is needed per iteration.
        let mut wire = client_frame(len);
        let mut framer = Framer::new();
        let mut dec = WsDecoder::server_open(None);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut got = 0;
                framer
                    .feed(&mut dec, black_box(&mut wire), MAX, |d| {
                        if let Delivery::Message(m) = d {
                            got += m.data.len();
                        }
                        Flow::Continue
                    })
                    .expect("valid frame");
                assert_eq!(got, len);
                got
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("ws/unmask");
    for (name, len) in WS_SIZES {
        let mut data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| apply_mask(black_box(&mut data), black_box([0x5a, 0x17, 0xc3, 0x81]), 0))
        });
    }
    g.finish();
}

criterion_group!(benches, http, ws);
criterion_main!(benches);
