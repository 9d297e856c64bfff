//! Server CPU time per echoed message over TLS, for each of the engine's TLS sessions
//! (rustls's unbuffered API, the default, and its buffered `Connection`, compiled with the
//! `tls-buffered` feature and selected with `RINGMAN_TLS_SESSION=buffered`): the numbers
//! behind the choice in ARCHITECTURE.md, "TLS".
//!
//! ```text
//! cargo bench -p ringman-engine --features tls-buffered --bench tls_cost [-- ROUNDS]
//! ```
//!
//! A TLS `text://` echo worker on one ring thread, and a rustls client on loopback that
//! writes a window of lines (each its own TLS record), reads their echoes, and repeats, for
//! lines of 64 B and of 16 KiB, with the default 8 KiB receive buffers (a 16 KiB record
//! straddles receives) and with 64 KiB ones (records lie whole in a receive). The measure
//! is the ring thread's CPU time (`CLOCK_THREAD_CPUTIME_ID` of that thread, read from
//! outside) divided by the messages echoed: what the server spends per message, whatever
//! else runs on the machine. Each round runs both sessions in fresh child processes (the
//! session is chosen once per process), alternating which goes first; the median of the
//! rounds (7 unless ROUNDS says otherwise) is reported. Needs the `openssl` command for the
//! test certificates.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringman_engine::{Server, TlsConfig, Worker};

/// Receive buffer size of the worker (`Worker::recv_buffer_size`: the default, and one a
/// whole record fits in), then message size (bytes, the newline included), window (messages
/// in flight) and count.
const CASES: [(u32, usize, usize, usize); 4] =
    [(8192, 64, 16, 200_000), (8192, 16 * 1024, 4, 20_000), (65536, 64, 16, 200_000), (65536, 16 * 1024, 4, 20_000)];

/// The ring thread's CPU clock, set by `on_worker_start` (0: not yet).
static RING_CLOCK: AtomicI32 = AtomicI32::new(0);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.first().map(String::as_str) == Some("child") {
        child(Path::new(&args[1]));
        return;
    }
    let rounds: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(7);
    let dir = std::env::temp_dir().join(format!("ringman-tls-cost-{}", std::process::id()));
    make_cert(&dir);
    let apis = ["unbuffered", "buffered"];
    // results[api][case] = ns per message, one per round.
    let mut results = vec![vec![Vec::new(); CASES.len()]; apis.len()];
    for round in 0..rounds {
        for k in 0..apis.len() {
            let a = (round + k) % apis.len();
            let out = Command::new(std::env::current_exe().unwrap())
                .arg("child")
                .arg(&dir)
                .env("RINGMAN_TLS_SESSION", apis[a])
                .output()
                .expect("child runs");
            assert!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8(out.stdout).unwrap();
            for (i, line) in text.lines().enumerate() {
                let ns: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
                results[a][i].push(ns);
                eprintln!("round {round} {:<10} {line}", apis[a]);
            }
        }
    }
    println!("server CPU per echoed message (median of {rounds} rounds; min..max):");
    for (i, (recv, size, window, count)) in CASES.iter().enumerate() {
        for (a, api) in apis.iter().enumerate() {
            let mut v = results[a][i].clone();
            v.sort_by(f64::total_cmp);
            println!(
                "  receives of {recv:>5} B, {size:>5} B messages, window {window:>2}, {count} msgs  {api:<10} {:>8.0} ns  ({:.0}..{:.0})",
                v[v.len() / 2],
                v[0],
                v[v.len() - 1]
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A test CA (`ca.pem`) and a certificate for `localhost` it issued (`cert.pem`,
/// `key.pem`) in `dir`.
fn make_cert(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let script = r#"
ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 -subj "/CN=tls_cost CA" 2>/dev/null
openssl req $ec -keyout key.pem -out leaf.csr -subj "/CN=localhost" 2>/dev/null
printf "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n" > leaf.ext
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile leaf.ext 2>/dev/null
"#;
    let out = Command::new("sh").arg("-ec").arg(script).current_dir(dir).output().expect("sh runs");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
}

/// One measurement run: a worker for each receive buffer size, then each of its cases;
/// prints `SIZE NS_PER_MSG MSGS_PER_S` per case.
fn child(dir: &Path) {
    let mut recvs: Vec<u32> = CASES.iter().map(|c| c.0).collect();
    recvs.dedup();
    for recv in recvs {
        RING_CLOCK.store(0, Ordering::SeqCst);
        let cases: Vec<_> = CASES.iter().filter(|c| c.0 == recv).map(|c| (c.1, c.2, c.3)).collect();
        serve_and_measure(dir, recv, &cases);
    }
}

fn serve_and_measure(dir: &Path, recv: u32, cases: &[(usize, usize, usize)]) {
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    w.recv_buffer_size = recv;
    w.tls = Some(TlsConfig::new(dir.join("cert.pem"), dir.join("key.pem")));
    w.on_worker_start(|_, _| {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: pthread_self() names the calling thread, alive for this call; `clock` is a
        // valid place for the answer.
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
        assert_eq!(rc, 0, "pthread_getcpuclockid");
        RING_CLOCK.store(clock, Ordering::SeqCst);
    });
    w.on_message(|c, m, _| {
        c.send(m);
    });
    let running = Server::new().add(w).start().expect("server starts");
    let addr = running.local_addr(0).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while RING_CLOCK.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < end, "no on_worker_start");
        std::thread::sleep(Duration::from_millis(1));
    }
    let clock = RING_CLOCK.load(Ordering::SeqCst);
    let mut tls = client(dir, addr);
    for &(size, window, count) in cases {
        let mut line = vec![b'x'; size];
        line[size - 1] = b'\n';
        // Warm up (allocator, socket buffers, the ring's queues), then measure.
        echo(&mut tls, &line, window, count / 10);
        let (cpu0, t0) = (cpu_ns(clock), Instant::now());
        echo(&mut tls, &line, window, count);
        let (cpu, wall) = (cpu_ns(clock) - cpu0, t0.elapsed());
        println!("{size} {:.1} {:.0}", cpu as f64 / count as f64, count as f64 / wall.as_secs_f64());
    }
    running.stop();
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A rustls client connection to the worker, verifying the test certificate.
fn client(dir: &Path, addr: std::net::SocketAddr) -> BufReader<Tls> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    // A window of records is made before any is written.
    conn.set_buffer_limit(None);
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_nodelay(true).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    BufReader::with_capacity(64 * 1024, rustls::StreamOwned::new(conn, sock))
}

/// Echoes `count` copies of `line`, `window` at a time: each line its own record, the
/// window's records in one write, then the window's echoes read back.
fn echo(tls: &mut BufReader<Tls>, line: &[u8], window: usize, count: usize) {
    let mut back = Vec::with_capacity(line.len());
    let mut left = count;
    while left > 0 {
        let n = window.min(left);
        let s = tls.get_mut();
        for _ in 0..n {
            // One writer().write_all per line: rustls makes it its own record(s).
            s.conn.writer().write_all(line).unwrap();
        }
        while s.conn.wants_write() {
            s.conn.write_tls(&mut s.sock).unwrap();
        }
        for _ in 0..n {
            back.clear();
            tls.read_until(b'\n', &mut back).unwrap();
            assert_eq!(back.len(), line.len(), "an echo of the wrong length");
        }
        left -= n;
    }
}

/// The thread CPU time of `clock` in nanoseconds.
fn cpu_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid place for the answer; a clock id of a live thread.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
