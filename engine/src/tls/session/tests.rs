//! The sessions against a rustls client in memory: every byte of the conversation cut into
//! pieces of random sizes (single bytes among them) as receives would cut it, records written
//! into a send queue in miniature whose tail chunk has random room, key updates and
//! `close_notify` both ways; and the cost of each session per message (`#[ignore]`d).
//! The certificates come from the `openssl` command line, the configurations from the
//! engine's own loaders.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::OnceLock;

use super::*;
use crate::sim::rng::Rng;
use crate::tls::{ClientTls, TlsConfig};

/// A test CA and a `localhost` certificate it issued, made once per test binary.
fn pki() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ringman-session-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = r#"
ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 -subj "/CN=session test CA" 2>/dev/null
openssl req $ec -keyout key.pem -out leaf.csr -subj "/CN=localhost" 2>/dev/null
printf "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n" > leaf.ext
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile leaf.ext 2>/dev/null
"#;
        let out = std::process::Command::new("sh").arg("-ec").arg(script).current_dir(&dir).output().unwrap();
        assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
        dir
    })
}

fn server_config() -> Arc<rustls::ServerConfig> {
    let dir = pki();
    crate::tls::load_server_with(&TlsConfig::new(dir.join("cert.pem"), dir.join("key.pem")), false, None)
        .unwrap()
        .config
}

/// A rustls client trusting the test CA, speaking only `version` when given.
fn client(version: Option<&'static rustls::SupportedProtocolVersion>) -> rustls::ClientConnection {
    let config = match version {
        None => crate::tls::load_client(&ClientTls::with_ca(pki().join("ca.pem")), "localhost", false).unwrap().config,
        Some(v) => {
            let roots = crate::tls::ca_roots(&pki().join("ca.pem")).unwrap();
            let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                .with_protocol_versions(&[v])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        }
    };
    let mut c = rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
    c.set_buffer_limit(None);
    c
}

/// A send queue in miniature: chunks of [`CHUNK`] bytes (pooled), a block of its own for a
/// reservation beyond that; sending takes the bytes and may leave the tail chunk, partly
/// used, at the end (as a completed send leaves a chunk still being filled).
#[derive(Default)]
struct Queue {
    chunks: Vec<Chunk>,
    pool: Vec<Box<[u8]>>,
    len: usize,
}

struct Chunk {
    mem: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Queue {
    fn chunk(&mut self, n: usize) {
        let mem = if n <= CHUNK { self.pool.pop().unwrap_or_else(|| vec![0; CHUNK].into()) } else { vec![0; n].into() };
        self.chunks.push(Chunk { mem, start: 0, end: 0 });
    }

    /// Takes the queued bytes (appended to `to`), keeping the tail chunk when `keep_tail`.
    fn send(&mut self, to: &mut Vec<u8>, keep_tail: bool) {
        let keep = if keep_tail { self.chunks.pop() } else { None };
        for c in self.chunks.drain(..) {
            to.extend_from_slice(&c.mem[c.start..c.end]);
            if c.mem.len() == CHUNK {
                self.pool.push(c.mem);
            }
        }
        if let Some(mut c) = keep {
            to.extend_from_slice(&c.mem[c.start..c.end]);
            c.start = c.end;
            self.chunks.push(c);
        }
        self.len = 0;
    }
}

impl RecordSink for Queue {
    fn append(&mut self, mut bytes: &[u8]) {
        // (As the engine's `enqueue`: more than a chunk into an empty queue is a block of
        // its own.)
        if self.chunks.is_empty() && bytes.len() > CHUNK {
            self.chunk(bytes.len());
            self.room().copy_from_slice(bytes);
            return self.commit(bytes.len());
        }
        while !bytes.is_empty() {
            let room = self.room();
            if room.is_empty() {
                self.chunk(CHUNK);
                continue;
            }
            let n = room.len().min(bytes.len());
            room[..n].copy_from_slice(&bytes[..n]);
            self.commit(n);
            bytes = &bytes[n..];
        }
    }

    fn room(&mut self) -> &mut [u8] {
        match self.chunks.last_mut() {
            Some(c) => &mut c.mem[c.end..],
            None => &mut [],
        }
    }

    fn reserve(&mut self, n: usize) -> &mut [u8] {
        if self.room().len() < n {
            self.chunk(n);
        }
        self.room()
    }

    fn commit(&mut self, n: usize) {
        let c = self.chunks.last_mut().unwrap();
        assert!(c.end + n <= c.mem.len(), "a commit beyond the chunk");
        c.end += n;
        self.len += n;
    }

    fn queued(&self) -> usize {
        self.len
    }
}

/// A rustls client and a session under test, with the wire between them.
struct Pair {
    client: rustls::ClientConnection,
    server: Box<dyn TlsSession>,
    q: Queue,
    rng: Rng,
    /// Plaintext the server session delivered.
    plain: Vec<u8>,
    /// Pieces fed to the server: at most this many bytes each.
    max_piece: usize,
}

impl Pair {
    fn new(api: Api, version: Option<&'static rustls::SupportedProtocolVersion>, seed: u64) -> Pair {
        let server: Box<dyn TlsSession> = match api {
            Api::Unbuffered => {
                Box::new(Unbuffered::new(UnbufferedServerConnection::new(server_config()).unwrap(), true))
            }
            Api::Buffered => Box::new(Buffered::server(server_config()).unwrap()),
        };
        let rng = Rng::new(seed, 1);
        Pair { client: client(version), server, q: Queue::default(), rng, plain: Vec::new(), max_piece: 20_000 }
    }

    /// Everything the client has to write, fed to the server in pieces of random sizes.
    fn client_to_server(&mut self) -> Result<Fed, TlsFailure> {
        let mut wire = Vec::new();
        while self.client.wants_write() {
            self.client.write_tls(&mut wire).unwrap();
        }
        let mut fed = Fed::default();
        let mut rest = &wire[..];
        while !rest.is_empty() {
            let n = if self.rng.chance(100) { 1 } else { self.rng.size(self.max_piece).max(1) }.min(rest.len());
            let mut buf = rest[..n].to_vec();
            let f = self.server.feed(&mut buf, &mut self.plain, &mut self.q)?;
            fed.handshake_done |= f.handshake_done;
            fed.peer_closed |= f.peer_closed;
            rest = &rest[n..];
        }
        Ok(fed)
    }

    /// What the server queued, read by the client; returns the plaintext it carried.
    fn server_to_client(&mut self) -> Vec<u8> {
        let mut wire = Vec::new();
        let keep = self.rng.chance(500);
        self.q.send(&mut wire, keep);
        let mut rest = &wire[..];
        let mut got = Vec::new();
        while !rest.is_empty() {
            self.client.read_tls(&mut rest).unwrap();
            let state = self.client.process_new_packets().expect("the client accepts the server's records");
            let n = state.plaintext_bytes_to_read();
            let at = got.len();
            got.resize(at + n, 0);
            self.client.reader().read_exact(&mut got[at..]).unwrap();
        }
        got
    }

    fn handshake(&mut self) {
        for _ in 0..10 {
            let fed = self.client_to_server().unwrap();
            self.server_to_client();
            if fed.handshake_done {
                assert!(!self.client.is_handshaking() && !self.server.handshaking());
                return;
            }
        }
        panic!("no handshake");
    }

    /// The client sends `msg`; the server must deliver it, then echo it back encrypted.
    fn echo(&mut self, msg: &[u8]) {
        self.client.writer().write_all(msg).unwrap();
        self.client_to_server().unwrap();
        assert!(self.plain == msg, "the server delivered {} bytes of {}", self.plain.len(), msg.len());
        let plain = std::mem::take(&mut self.plain);
        self.server.encrypt(&plain, &mut self.q);
        let back = self.server_to_client();
        assert!(back == msg, "the client read {} bytes of {}", back.len(), msg.len());
    }
}

fn message(rng: &mut Rng, max: usize) -> Vec<u8> {
    let n = rng.size(max).max(1);
    (0..n).map(|_| rng.next() as u8).collect()
}

fn conversation(api: Api, version: Option<&'static rustls::SupportedProtocolVersion>, seed: u64) {
    let mut p = Pair::new(api, version, seed);
    if seed.is_multiple_of(3) {
        // Whole ClientHello bytes, one at a time.
        p.max_piece = 1;
    }
    p.handshake();
    p.max_piece = 20_000;
    let mut rng = Rng::new(seed, 2);
    for i in 0..40 {
        let msg = message(&mut rng, 100_000);
        if i % 10 == 5 && p.client.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
            // The client updates its keys and asks the server to update its own: the
            // server's KeyUpdate leaves with its next records.
            p.client.refresh_traffic_keys().unwrap();
        }
        p.echo(&msg);
    }
    // The client's close_notify is reported; the server's reaches the client.
    p.client.send_close_notify();
    let fed = p.client_to_server().unwrap();
    assert!(fed.peer_closed);
    p.server.close_notify(&mut p.q);
    assert!(p.server_to_client().is_empty());
    assert!(p.client.process_new_packets().unwrap().peer_has_closed());
}

#[test]
fn the_unbuffered_session_serves_a_conversation_cut_anywhere() {
    for seed in 0..12 {
        conversation(Api::Unbuffered, None, seed);
        conversation(Api::Unbuffered, Some(&rustls::version::TLS12), seed);
    }
}

#[test]
fn the_buffered_session_serves_the_same_conversations() {
    for seed in 0..4 {
        conversation(Api::Buffered, None, seed);
        conversation(Api::Buffered, Some(&rustls::version::TLS12), seed);
    }
}

#[test]
fn records_fit_the_chunks_behind_queued_bytes_and_take_one_block_in_an_empty_queue() {
    let mut p = Pair::new(Api::Unbuffered, None, 7);
    p.handshake();
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    // Into an empty queue: one block holding all its records (one send).
    p.server.encrypt(&big, &mut p.q);
    assert_eq!(p.q.chunks.len(), 1);
    assert!(p.q.chunks[0].mem.len() > CHUNK && p.q.chunks[0].end == p.q.chunks[0].mem.len());
    assert!(p.server_to_client() == big);
    // (A tail the send left, empty, goes.)
    p.q.chunks.clear();
    // Behind queued bytes: records laid out chunk by chunk, none beyond a chunk.
    p.server.encrypt(b"small first", &mut p.q);
    p.server.encrypt(&big, &mut p.q);
    assert!(p.q.chunks.iter().all(|c| c.mem.len() == CHUNK), "only chunks");
    let (last, full) = p.q.chunks.split_last().unwrap();
    let unused: Vec<usize> = full.iter().map(|c| CHUNK - c.end).collect();
    assert!(unused.iter().all(|&u| u < 64), "room left unused in chunks: {unused:?}");
    assert!(last.end > 0);
    let mut want = b"small first".to_vec();
    want.extend_from_slice(&big);
    assert!(p.server_to_client() == want);
}

#[test]
fn input_after_close_notify_is_ignored_and_garbage_fails_with_an_alert() {
    let mut p = Pair::new(Api::Unbuffered, None, 3);
    p.handshake();
    p.client.send_close_notify();
    assert!(p.client_to_server().unwrap().peer_closed);
    let mut junk = vec![0x17, 3, 3, 0, 40];
    junk.extend([0u8; 40]);
    assert!(p.server.feed(&mut junk.clone(), &mut p.plain, &mut p.q).is_ok(), "ignored after close_notify");
    let mut p = Pair::new(Api::Unbuffered, None, 4);
    p.handshake();
    match p.server.feed(&mut junk, &mut p.plain, &mut p.q) {
        Err(TlsFailure::Peer(why)) => assert!(why.contains("decrypt"), "{why}"),
        other => panic!("{other:?}"),
    }
    let mut alert = Vec::new();
    p.q.send(&mut alert, false);
    assert_eq!(alert.first(), Some(&0x17), "the alert, encrypted: {alert:?}");
}

/// CPU time of each session per echoed message, 64 B and 16 KiB lines: the client's records
/// (one per message) are made beforehand; what is timed (the thread's CPU time) is the
/// server's work: receives of the ring's default 8 KiB buffers, and of 64 KiB buffers
/// (`Worker::recv_buffer_size`), each fed to the session, each message echoed into the queue,
/// which is then sent. Seven rounds alternating the sessions; medians.
///
/// `cargo test --release -p ringman-engine session_cost -- --ignored --nocapture`
#[test]
#[ignore]
fn session_cost() {
    for recv in [8192usize, 65536] {
        for (size, count) in [(64usize, 100_000usize), (16 * 1024, 5_000)] {
            let mut runs = [(Api::Unbuffered, Vec::new()), (Api::Buffered, Vec::new())];
            for round in 0..7 {
                for k in 0..2 {
                    let (api, costs) = &mut runs[(round + k) % 2];
                    costs.push(cost(*api, recv, size, count));
                }
            }
            for (api, costs) in &mut runs {
                let median = |i: usize| {
                    let mut v: Vec<f64> = costs.iter().map(|c: &[f64; 3]| c[i]).collect();
                    v.sort_by(f64::total_cmp);
                    v[v.len() / 2]
                };
                println!(
                    "receives of {recv:>5} B, {size:>5} B messages, {:<10}: {:>6.0} ns per message (feed {:.0}, encrypt {:.0})",
                    format!("{api:?}"),
                    median(0),
                    median(1),
                    median(2)
                );
            }
        }
    }
}

/// The calling thread's CPU time.
fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid place for the answer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One run: ns per message in all, in `feed`, in `encrypt`.
fn cost(api: Api, recv: usize, size: usize, count: usize) -> [f64; 3] {
    let mut p = Pair::new(api, None, 1);
    p.handshake();
    let mut msg = vec![b'x'; size];
    msg[size - 1] = b'\n';
    let mut wire = Vec::new();
    for _ in 0..count {
        p.client.writer().write_all(&msg).unwrap();
        while p.client.wants_write() {
            p.client.write_tls(&mut wire).unwrap();
        }
    }
    let mut buf = vec![0u8; recv];
    let mut sent = Vec::with_capacity(recv * 4);
    let (mut feed, mut encrypt) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    let mut echoed = 0;
    let start = thread_cpu();
    for piece in wire.chunks(recv) {
        let t0 = thread_cpu();
        buf[..piece.len()].copy_from_slice(piece);
        p.plain.clear();
        p.server.feed(&mut buf[..piece.len()], &mut p.plain, &mut p.q).unwrap();
        let t1 = thread_cpu();
        // (The framer's part: the plaintext cut into its messages, each echoed.)
        for m in p.plain.chunks(size) {
            p.server.encrypt(m, &mut p.q);
            echoed += m.len();
        }
        encrypt += thread_cpu() - t1;
        feed += t1 - t0;
        // (As in the engine, a completed send releases every chunk.)
        sent.clear();
        p.q.send(&mut sent, false);
    }
    let all = thread_cpu() - start;
    assert_eq!(echoed, size * count);
    let per = |d: std::time::Duration| d.as_nanos() as f64 / count as f64;
    [per(all), per(feed), per(encrypt)]
}
