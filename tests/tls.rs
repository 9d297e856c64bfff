//! TLS with real peers: curl over https, Python `websockets` over wss, Python's `ssl`
//! (close_notify both ways, a ClientHello written one byte at a time, sends made before the
//! handshake ends), `openssl s_client` against TLS text echo (key updates, early data the
//! server refuses), bad input on a TLS port, start errors, and ringman's own client over wss
//! against a Python TLS server. The certificates are made here with the `openssl`
//! command line: a test CA, a leaf for `localhost` and 127.0.0.1, and an unrelated CA.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use crossbeam_channel::{unbounded, Receiver, Sender};
use ringman::http::{respond, WebServer};
use ringman::protocols::http::Response;
use ringman::{
    AsyncTcpConnection, ClientTls, ConnError, EngineError, Running, SendStatus, Server, TlsConfig, TlsFailure,
    TlsSetupError, Worker,
};

/// The test PKI, made once per test binary.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    fn s(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }
}

fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh").arg("-ec").arg(script).current_dir(dir).output().expect("sh runs");
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ringman-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        sh(
            &dir,
            r#"
ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 -subj "/CN=ringman test CA" 2>/dev/null
openssl req -x509 $ec -keyout other-ca.key -out other-ca.pem -days 2 -subj "/CN=someone else" 2>/dev/null
openssl req $ec -keyout key.pem -out leaf.csr -subj "/CN=localhost" 2>/dev/null
printf "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n" > leaf.ext
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile leaf.ext 2>/dev/null
cat cert.pem ca.pem > chain.pem
cat ca.pem cert.pem > upside-down.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out other-key.pem 2>/dev/null
openssl req $ec -keyout other.key -out other.csr -subj "/CN=other.test" 2>/dev/null
printf "subjectAltName=DNS:other.test\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n" > other.ext
openssl x509 -req -in other.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out other.pem -days 2 -extfile other.ext 2>/dev/null
printf "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n" > client.ext
openssl req $ec -keyout client.key -out client.csr -subj "/CN=test client" 2>/dev/null
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 -extfile client.ext 2>/dev/null
openssl x509 -in client.pem -outform DER -out client.der
openssl req $ec -keyout stranger.key -out stranger.csr -subj "/CN=stranger" 2>/dev/null
openssl x509 -req -in stranger.csr -CA other-ca.pem -CAkey other-ca.key -CAcreateserial -out stranger.pem -days 2 -extfile client.ext 2>/dev/null
"#,
        );
        Pki { dir }
    })
}

fn tls() -> TlsConfig {
    TlsConfig::new(pki().path("chain.pem"), pki().path("key.pem"))
}

/// Errors the worker reported, as they arrive.
fn errors_to(w: &mut Worker<()>) -> Receiver<String> {
    let (tx, rx) = unbounded::<String>();
    w.on_error(move |_, e, _| {
        let tag = match e {
            ConnError::Tls(TlsFailure::NotTls { plain_http: true }) => "plain-http".to_string(),
            ConnError::Tls(TlsFailure::NotTls { plain_http: false }) => "not-tls".to_string(),
            ConnError::Tls(TlsFailure::HandshakeTimeout(_)) => "handshake-timeout".to_string(),
            ConnError::Tls(f) => format!("tls: {f}"),
            other => format!("other: {other}"),
        };
        tx.send(tag).unwrap();
    });
    rx
}

fn text_echo() -> (Running, SocketAddr, Receiver<String>) {
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    let mut t = tls();
    t.handshake_timeout = Duration::from_secs(1);
    w.tls = Some(t);
    w.on_message(|c, m, _| {
        if m.data == b"bye" {
            c.close(Some(b"closing".as_slice()));
        } else {
            c.send(m);
        }
    });
    let errors = errors_to(&mut w);
    let (r, a) = start(w);
    (r, a, errors)
}

/// Runs a Python script (the address and the PKI directory as argv[1..3]); returns stdout.
fn python(script: &str, addr: SocketAddr) -> String {
    let out = Command::new("timeout")
        .args(["60", "python3", "-c", script, &addr.ip().to_string(), &addr.port().to_string(), &pki().s("")])
        .stderr(Stdio::inherit())
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stdout).unwrap()
}

/// The opening of a Python TLS client driven through memory BIOs (`obj` the session, `inc`
/// and `out` its BIOs, `s` the socket to the address in argv[1..3]).
const BIO_CLIENT: &str = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3] + 'ca.pem')
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
obj = ctx.wrap_bio(inc, out, server_hostname='localhost')
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
"#;

/// A TLS client (Python `ssl`) is served by the text echo at `addr`: its line comes back.
fn served(addr: SocketAddr) {
    let out = python(
        r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3] + 'ca.pem')
with socket.create_connection((sys.argv[1], int(sys.argv[2]))) as raw:
    with ctx.wrap_socket(raw, server_hostname='localhost') as s:
        s.sendall(b'served\n')
        print(s.recv(100).decode().strip())
"#,
        addr,
    );
    assert_eq!(out.trim(), "served");
}

/// The next error the worker reported.
fn next_error(rx: &Receiver<String>) -> String {
    rx.recv_timeout(PATIENCE).expect("an on_error")
}

// ------------------------------------------------------------------------------ https

fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-s", "-S", "--max-time", "30", "--cacert", &pki().s("ca.pem")])
        .args(args)
        .output()
        .expect("curl runs")
}

#[test]
fn https_keep_alive_and_a_big_file_with_range_through_the_webserver() {
    let root = std::env::temp_dir().join(format!("ringman-tls-www-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let big: Vec<u8> = (0..10 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(root.join("big.bin"), &big).unwrap();
    let mut w = Worker::<()>::new("http://127.0.0.1:0").unwrap();
    w.count = 2;
    w.tls = Some(tls());
    WebServer::new(&root).unwrap().install(&mut w, |conn, req, _| {
        respond(conn, req, Response::new(200).header("Content-Type", "text/plain").body("Hello World"));
    });
    let (_srv, addr) = start(w);
    let port = addr.port();
    // Two requests on one connection (keep-alive): curl reports one connect in all.
    let u = format!("https://localhost:{port}/hello");
    let out = curl(&[&u, &u, "-w", " %{num_connects}|", "--http1.1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello World 1|Hello World 0|");
    // The whole 10 MB file, then a range of it.
    let u = format!("https://localhost:{port}/big.bin");
    let out = curl(&[&u]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == big, "10 MB over https: {} bytes, equal: false", out.stdout.len());
    let out = curl(&["-r", "1000-4000999", "-w", "|%{http_code}", &u]);
    let (body, code) = out.stdout.split_at(out.stdout.len() - 4);
    assert_eq!(code, b"|206");
    assert!(body == &big[1000..4_001_000], "the range's bytes");
    // ALPN: the server agrees on http/1.1.
    let out = curl(&["-v", "-o", "/dev/null", &format!("https://localhost:{port}/hello")]);
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(verbose.contains("ALPN: server accepted http/1.1"), "{verbose}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_plaintext_http_request_on_the_tls_port_gets_a_400_that_says_so() {
    let mut w = Worker::<()>::new("http://127.0.0.1:0").unwrap();
    w.count = 1;
    w.tls = Some(tls());
    w.on_message(|c, _, _| {
        c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".as_slice());
    });
    let errors = errors_to(&mut w);
    let (_srv, addr) = start(w);
    let mut s = connect(addr);
    write_all(&mut s, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let got = String::from_utf8(read_to_eof(&mut s)).unwrap();
    assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
    assert!(got.contains("plain HTTP") && got.contains("https"), "{got}");
    assert_eq!(next_error(&errors), "plain-http");
    // The next client speaks TLS and is served.
    let out = curl(&["-i", &format!("https://localhost:{}/", addr.port())]);
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("\r\n\r\nok"), "{out:?}");
}

// ------------------------------------------------------------------------------ bad input

#[test]
fn bad_input_is_closed_with_on_error_and_the_next_handshake_is_served() {
    let (_srv, addr, errors) = text_echo();
    let served = || served(addr);
    // Random bytes: not a TLS record.
    let mut s = connect(addr);
    write_all(&mut s, &[0x42, 0x99, 0x00, 0x13, 0x37, 0xfe, 0x01, 0x02]);
    assert!(read_to_eof(&mut s).is_empty(), "nothing but the close");
    assert_eq!(next_error(&errors), "not-tls");
    served();
    // A record header that claims to be a handshake, then garbage: refused by the session
    // (its alert, then the close).
    let mut s = connect(addr);
    write_all(&mut s, &[0x16, 0x03, 0x01, 0x00, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    let (got, _) = read_to_end_or_reset(&mut s);
    assert!(got.first() == Some(&0x15) || got.is_empty(), "an alert record or nothing: {got:?}");
    assert!(next_error(&errors).starts_with("tls: handshake failed"));
    served();
    // A handshake that stops halfway: half a ClientHello, then silence. Cut off by the
    // handshake timeout (1 s here).
    let mut s = connect(addr);
    write_all(&mut s, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]);
    let (got, _) = read_to_end_or_reset(&mut s);
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(next_error(&errors), "handshake-timeout");
    served();
}

#[test]
fn a_record_that_fails_to_decrypt_is_one_error_however_much_follows_it() {
    let (_srv, addr, errors) = text_echo();
    // After the handshake, 4.8 MB of application records in one write, the first with a
    // byte of its ciphertext flipped: the session fails on it, and the records behind it
    // keep arriving (receives already posted) while the alert goes out. One on_error.
    let out = python(
        &(BIO_CLIENT.to_string()
            + r#"
while True:
    try:
        obj.do_handshake()
        break
    except ssl.SSLWantReadError:
        s.sendall(out.read())
        d = s.recv(65536)
        if not d:
            sys.exit('closed during the handshake')
        inc.write(d)
s.sendall(out.read())
for i in range(300):
    obj.write(b'x' * 16000 + b'\n')
records = bytearray(out.read())
assert records[0] == 0x17, records[:5]
records[20] ^= 0x55
try:
    s.sendall(records)
except OSError:
    pass
s.settimeout(30)
try:
    while s.recv(65536):
        pass
except ConnectionResetError:
    pass
print('closed')
"#),
        addr,
    );
    assert_eq!(out.trim(), "closed");
    assert_eq!(next_error(&errors), "tls: cannot decrypt peer's message");
    // A connection served after it: whatever the failed one reported is in by then.
    served(addr);
    let more: Vec<String> = errors.try_iter().collect();
    assert!(more.is_empty(), "one failure, more errors: {} ({:?})", more.len(), more.first());
}

#[test]
fn a_client_hello_written_one_byte_at_a_time_is_served() {
    let (_srv, addr, errors) = text_echo();
    // Python drives its TLS client through memory BIOs, so the ClientHello can be written
    // to the socket one byte per send (TCP_NODELAY: each its own segment).
    let out = python(
        &(BIO_CLIENT.to_string()
            + r#"
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def pump(bytewise):
    data = out.read()
    if bytewise:
        for i in range(len(data)):
            s.sendall(data[i:i+1])
    else:
        s.sendall(data)
first = True
while True:
    try:
        obj.do_handshake()
        break
    except ssl.SSLWantReadError:
        pump(first)
        first = False
        d = s.recv(65536)
        if not d:
            raise SystemExit('closed during the handshake')
        inc.write(d)
pump(False)
obj.write(b'one byte at a time\n')
pump(False)
got = b''
while not got.endswith(b'\n'):
    try:
        got += obj.read(100)
    except ssl.SSLWantReadError:
        inc.write(s.recv(65536))
print(got.decode().strip())
"#),
        addr,
    );
    assert_eq!(out.trim(), "one byte at a time");
    assert!(errors.try_recv().is_err(), "no error reported");
}

// ------------------------------------------------------------------------------ close_notify

#[test]
fn close_notify_is_sent_on_close_and_honoured_on_receive() {
    let (_srv, addr, errors) = text_echo();
    // Our close: the last message, then close_notify (a ragged EOF would raise here, as
    // ragged EOFs are not suppressed).
    let out = python(
        r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3] + 'ca.pem')
raw = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s = ctx.wrap_socket(raw, server_hostname='localhost', suppress_ragged_eofs=False)
s.sendall(b'bye\n')
got = b''
while True:
    d = s.recv(100)
    if not d:
        break
    got += d
print(got.decode().strip(), 'clean-eof')
"#,
        addr,
    );
    assert_eq!(out.trim(), "closing clean-eof");
    // The peer's close_notify: unwrap() sends it and waits for ours.
    let out = python(
        r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3] + 'ca.pem')
raw = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s = ctx.wrap_socket(raw, server_hostname='localhost', suppress_ragged_eofs=False)
s.sendall(b'x\n')
assert s.recv(100) == b'x\n'
plain = s.unwrap()
print('unwrapped', plain.recv(10) == b'')
"#,
        addr,
    );
    assert_eq!(out.trim(), "unwrapped True");
    assert!(errors.try_recv().is_err(), "no error reported");
}

// ------------------------------------------------------------------------------ openssl s_client

#[test]
fn openssl_s_client_against_tls_text_echo() {
    let (_srv, addr, _errors) = text_echo();
    for version in ["-tls1_2", "-tls1_3"] {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-verify_return_error", version, "-CAfile", &pki().s("ca.pem")])
            .args(["-connect", &addr.to_string(), "-servername", "localhost"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl runs");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hello over TLS\nbye\n").unwrap();
        let mut out = String::new();
        child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        drop(stdin);
        let _ = child.wait();
        assert_eq!(out, "hello over TLS\nclosing\n", "{version}");
    }
}

/// `openssl s_client` (TLS 1.3) against TLS text echo, with its interactive commands on:
/// writes `first`, then the key-update command `cmd` ("K": update and ask the server to
/// update too; "k": update ours only), then `second`; returns the two echoes as read.
fn s_client_key_update(addr: SocketAddr, cmd: &str, first: &str, second: &str) -> String {
    use std::io::BufRead;
    let mut child = Command::new("openssl")
        .args(["s_client", "-tls1_3", "-verify_return_error", "-CAfile", &pki().s("ca.pem")])
        .args(["-connect", &addr.to_string(), "-servername", "localhost"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    let mut stdin = child.stdin.take().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut echoes = String::new();
    let mut echo_of = |line: &str, stdin: &mut std::process::ChildStdin| {
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        for l in out.by_ref() {
            let l = l.unwrap();
            if l == line {
                echoes.push_str(&l);
                echoes.push('\n');
                return;
            }
        }
        panic!("s_client ended before the echo of {line:?}");
    };
    echo_of(first, &mut stdin);
    // A line holding only the command letter is the command (not data); s_client says
    // KEYUPDATE on stderr once it has sent the KeyUpdate message.
    stdin.write_all(format!("{cmd}\n").as_bytes()).unwrap();
    assert!(err.any(|l| l.unwrap().contains("KEYUPDATE")), "s_client sent no KeyUpdate");
    echo_of(second, &mut stdin);
    drop(stdin);
    let _ = child.wait();
    echoes
}

#[test]
fn key_updates_from_the_client_are_honoured() {
    let (_srv, addr, errors) = text_echo();
    // "K" asks the server to update its keys too: its KeyUpdate goes out before the next
    // echo, which the client then reads with the server's new keys.
    for cmd in ["K", "k"] {
        let got = s_client_key_update(addr, cmd, "before the update", "after the update");
        assert_eq!(got, "before the update\nafter the update\n", "{cmd}");
    }
    assert!(errors.try_recv().is_err(), "no error reported");
}

#[test]
fn early_data_is_refused_and_the_connection_served_without_it() {
    use std::io::BufRead;
    let (_srv, addr, errors) = text_echo();
    // A session from a server that accepts early data (openssl s_server, the same
    // certificate): with it, s_client sends early data on its next connection. ringman cannot
    // use that session's ticket, does a full handshake and refuses the early data (its records
    // are skipped), and the connection then works as any other.
    let dir = pki().path("");
    let early = dir.join("early.txt");
    std::fs::write(&early, "sent as early data\n").unwrap();
    let sess = dir.join("early-session.pem");
    let mut server = Command::new("openssl")
        .args(["s_server", "-accept", "127.0.0.1:0", "-early_data", "-naccept", "1", "-tls1_3"])
        .args(["-cert", &pki().s("chain.pem"), "-key", &pki().s("key.pem")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server runs");
    let mut lines = std::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let accept = lines.find(|l| l.as_ref().is_ok_and(|l| l.starts_with("ACCEPT"))).expect("s_server listens").unwrap();
    let port = accept.rsplit(':').next().unwrap().trim().to_string();
    // s_server sends what it reads on stdin: a line the client waits for, which arrives
    // after the session tickets.
    server.stdin.as_mut().unwrap().write_all(b"ticketed\n").unwrap();
    let first =
        s_client_session(format!("127.0.0.1:{port}").parse().unwrap(), "-tls1_3", ("-sess_out", &sess), "ticketed");
    drop(lines);
    let _ = server.kill();
    let _ = server.wait();
    assert!(first.contains("New, TLSv1.3"), "{first}");
    let mut child = Command::new("openssl")
        .args(["s_client", "-tls1_3", "-CAfile", &pki().s("ca.pem"), "-servername", "localhost"])
        .args(["-connect", &addr.to_string(), "-sess_in"])
        .arg(&sess)
        .arg("-early_data")
        .arg(&early)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"after the handshake\n").unwrap();
    let mut report = String::new();
    for l in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let l = l.unwrap();
        report.push_str(&l);
        report.push('\n');
        if l == "after the handshake" {
            break;
        }
    }
    drop(stdin);
    let _ = child.wait();
    assert!(report.contains("Early data was rejected"), "{report}");
    assert!(report.ends_with("\nafter the handshake\n"), "only the later line is echoed: {report}");
    assert!(!report.contains("sent as early data"), "{report}");
    assert!(errors.try_recv().is_err(), "no error reported");
}

// ------------------------------------------------------------------------------ sends before the handshake

/// What a worker's connection reported while it sent before its handshake ended.
#[derive(Debug)]
enum Early {
    /// `on_connect` sent; each send's answer, and the unsent bytes then.
    Sent(Vec<SendStatus>, usize),
    Full,
    SendFail,
    Drain,
    Error(String),
}

/// A TLS text worker (send limit 64 KiB, handshake timeout 2 s) whose `on_connect` sends
/// 200 lines of 1000 bytes at once, before any handshake; it echoes what it receives.
fn early_sender() -> (Running, SocketAddr, Receiver<Early>) {
    let (tx, rx) = unbounded::<Early>();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    w.max_send_buffer_size = 64 * 1024;
    let mut t = tls();
    t.handshake_timeout = Duration::from_secs(2);
    w.tls = Some(t);
    let t1 = tx.clone();
    w.on_connect(move |c, _| {
        let statuses = (0..200).map(|i| c.send(format!("{i:04} {}", "x".repeat(994)))).collect();
        t1.send(Early::Sent(statuses, c.send_queue_len())).unwrap();
    });
    let t2 = tx.clone();
    w.on_buffer_full(move |_, _| t2.send(Early::Full).unwrap());
    let t3 = tx.clone();
    w.on_buffer_drain(move |_, _| t3.send(Early::Drain).unwrap());
    w.on_error(move |_, e, _| {
        tx.send(match e {
            ConnError::SendBufferFull { .. } => Early::SendFail,
            other => Early::Error(other.to_string()),
        })
        .unwrap();
    });
    w.on_message(|c, m, _| {
        c.send(m);
    });
    let (r, a) = start(w);
    (r, a, rx)
}

/// Checks what `on_connect`'s 200 sends of 1000 bytes (1 KB lines) answered against the
/// 64 KiB limit, and the events they caused; returns the number queued.
fn check_early_sends(rx: &Receiver<Early>) -> usize {
    let Early::Sent(statuses, unsent) = rx.recv_timeout(PATIENCE).unwrap() else { panic!("on_connect first") };
    // Held in plaintext until the handshake ends, counted as a plaintext connection counts
    // its queue: accepted while below the limit, refused from the send that finds it full.
    let queued = (64 * 1024usize).div_ceil(1000);
    let mut want = vec![SendStatus::Queued; queued];
    want.resize(200, SendStatus::Failed);
    assert_eq!(statuses, want);
    assert_eq!(unsent, queued * 1000, "the held bytes, bounded by the limit and one message");
    // One on_buffer_full (from the send that reached the limit), one SEND_FAIL per refusal.
    let events: Vec<Early> = (0..1 + 200 - queued).map(|_| rx.recv_timeout(PATIENCE).unwrap()).collect();
    assert!(matches!(events[0], Early::Full), "{events:?}");
    assert!(events[1..].iter().all(|e| matches!(e, Early::SendFail)), "{events:?}");
    queued
}

#[test]
fn sends_before_a_handshake_that_never_ends_are_bounded_and_refused_past_the_limit() {
    let (srv, addr, rx) = early_sender();
    // Half a ClientHello, then silence.
    let mut s = connect(addr);
    write_all(&mut s, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]);
    let queued = check_early_sends(&rx);
    assert_eq!(srv.worker(0).stats()[0].send_fail.get(), (200 - queued) as u64, "send_fail counts the refusals");
    // Nothing of it ever reaches the wire: the handshake timeout ends the connection, and
    // the held bytes go with it.
    let (got, _) = read_to_end_or_reset(&mut s);
    assert!(got.is_empty(), "{} bytes arrived", got.len());
    match rx.recv_timeout(PATIENCE).unwrap() {
        Early::Error(e) => assert!(e.contains("handshake not complete"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn sends_before_the_handshake_follow_it_in_order_and_the_refused_ones_never_do() {
    let (_srv, addr, rx) = early_sender();
    // The client connects, and does its handshake only once the server has sent (told on
    // stdin); then it reads every line, and an echo after them.
    let mut py = Command::new("timeout")
        .args(["60", "python3", "-c"])
        .arg(
            r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3] + 'ca.pem')
raw = socket.create_connection((sys.argv[1], int(sys.argv[2])))
print('connected', flush=True)
sys.stdin.readline()
s = ctx.wrap_socket(raw, server_hostname='localhost')
f = s.makefile('rb')
nums = []
while True:
    line = f.readline()
    if len(line) != 1000:
        raise SystemExit('a line of %d bytes: %r' % (len(line), line[:20]))
    nums.append(int(line[:4]))
    if nums[-1] == int(sys.argv[4]) - 1:
        break
s.sendall(b'end\n')
print(len(nums), nums == list(range(len(nums))), f.readline().decode().strip(), flush=True)
"#,
        )
        .args([&addr.ip().to_string(), &addr.port().to_string(), &pki().s("")])
        .arg("66")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut out = std::io::BufReader::new(py.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "connected");
    let queued = check_early_sends(&rx);
    assert_eq!(queued, 66);
    py.stdin.take().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let _ = py.wait();
    // Every queued line, in order, and then the echo: nothing refused came in between.
    assert_eq!(line.trim(), "66 True end");
    // The queue that held them drained.
    match rx.recv_timeout(PATIENCE).unwrap() {
        Early::Drain => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_close_before_the_handshake_ends_sends_its_message_once_it_does() {
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    w.tls = Some(tls());
    w.on_connect(|c, _| c.close(Some(b"goodbye".as_slice())));
    // (Longer than the tests wait: a close that waited for a handshake that failed must
    // not last until this deadline.)
    w.close_timeout = Duration::from_secs(60);
    let errors = errors_to(&mut w);
    let (_srv, addr) = start(w);
    // The close waits for the handshake, then the message and close_notify go (a ragged
    // EOF would raise here).
    let out = python(
        r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3] + 'ca.pem')
raw = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s = ctx.wrap_socket(raw, server_hostname='localhost', suppress_ragged_eofs=False)
got = b''
while True:
    d = s.recv(100)
    if not d:
        break
    got += d
print(got.decode().strip(), 'clean-eof')
"#,
        addr,
    );
    assert_eq!(out.trim(), "goodbye clean-eof");
    assert!(errors.try_recv().is_err(), "no error reported");
    // A handshake that fails instead: the message is dropped, the connection ends once the
    // alert is out.
    let mut s = connect(addr);
    write_all(&mut s, &[0x16, 0x03, 0x01, 0x00, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    let (got, _) = read_to_end_or_reset(&mut s);
    assert!(got.first() == Some(&0x15) || got.is_empty(), "an alert record or nothing: {got:?}");
    assert!(next_error(&errors).starts_with("tls: handshake failed"));
}

// ------------------------------------------------------------------------------ wss

#[test]
fn wss_with_python_websockets_text_binary_big_and_50_connections() {
    let mut w = Worker::<()>::new("websocket://127.0.0.1:0").unwrap();
    w.count = 2;
    w.tls = Some(tls());
    w.on_message(|c, m, _| {
        c.send_as(m.data, m.kind);
    });
    let (_srv, addr) = start(w);
    let out = python(
        r#"
import asyncio, ssl, sys
from websockets.asyncio.client import connect
ctx = ssl.create_default_context(cafile=sys.argv[3] + 'ca.pem')
url = 'wss://localhost:%s/' % sys.argv[2]
async def one(i):
    async with connect(url, ssl=ctx, max_size=None) as ws:
        await ws.send('text %d' % i)
        assert await ws.recv() == 'text %d' % i
        await ws.send(bytes([i % 256, 0, 255]))
        assert await ws.recv() == bytes([i % 256, 0, 255])
        big = ('%06d' % i) * 34000
        await ws.send(big)
        assert await ws.recv() == big
    return 1
async def main():
    print(sum(await asyncio.gather(*(one(i) for i in range(50)))))
asyncio.run(main())
"#,
        addr,
    );
    assert_eq!(out.trim(), "50");
}

// ------------------------------------------------------------------------------ start errors

fn start_error(cert: &str, key: &str) -> String {
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    w.tls = Some(TlsConfig::new(pki().path(cert), pki().path(key)));
    match Server::new().add(w).start() {
        Ok(_) => panic!("{cert} + {key} started"),
        Err(EngineError::Tls(e)) => {
            // The same error from the up-front check.
            let again = TlsConfig::new(pki().path(cert), pki().path(key)).check().unwrap_err();
            assert_eq!(again.to_string(), e.to_string());
            if cert == "missing.pem" {
                assert!(matches!(e, TlsSetupError::Read { .. }));
            }
            e.to_string()
        }
        Err(e) => panic!("not a TLS error: {e}"),
    }
}

#[test]
fn start_errors_name_the_file_and_the_mistake() {
    let e = start_error("missing.pem", "key.pem");
    assert!(e.contains("missing.pem") && e.contains("cannot read"), "{e}");
    let e = start_error("chain.pem", "other-key.pem");
    assert!(e.contains("does not match") && e.contains("other-key.pem") && e.contains("chain.pem"), "{e}");
    let e = start_error("upside-down.pem", "key.pem");
    assert!(e.contains("wrong order") && e.contains("number 2 of 2") && e.contains("upside-down.pem"), "{e}");
    let e = start_error("key.pem", "key.pem");
    assert!(e.contains("no PEM certificate"), "{e}");
    let e = start_error("chain.pem", "cert.pem");
    assert!(e.contains("no PEM private key") && e.contains("cert.pem"), "{e}");
    // A ticket-key rotation period TLS cannot honour (tickets live two periods, TLS 1.3
    // allows 7 days at most).
    for bad in [Duration::ZERO, Duration::from_secs(85 * 3600)] {
        let mut t = tls();
        t.ticket_key_rotation = bad;
        assert!(matches!(t.check(), Err(TlsSetupError::TicketKeyRotation(d)) if d == bad), "{bad:?}");
    }
    let mut t = tls();
    t.ticket_key_rotation = Duration::from_secs(84 * 3600);
    t.check().unwrap();
}

// ------------------------------------------------------------------------------ client

/// A Python `websockets` server over TLS with the test certificate; echoes.
fn py_wss_echo() -> PyServer {
    let p = pki();
    py_ws_server(
        &["ssl"],
        "echo",
        "ssl=ctx",
        &format!(
            r#"
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain({:?}, {:?})
async def echo(ws):
    async for m in ws:
        await ws.send(m)
"#,
            p.s("chain.pem"),
            p.s("key.pem")
        ),
    )
}

#[derive(Debug, PartialEq)]
enum Got {
    Message(Vec<u8>),
    Error(u32, String),
    Close,
}

fn client_ring(open: impl Fn(Sender<Got>) + Send + Sync + 'static) -> (Running, Receiver<Got>) {
    let (tx, rx) = unbounded();
    let mut w = Worker::<()>::without_listener();
    w.count = 1;
    w.on_worker_start(move |_, _| open(tx.clone()));
    (Server::new().add(w).start().expect("client ring starts"), rx)
}

fn dial_wss(port: u16, tls: ClientTls, tx: Sender<Got>) {
    let mut c = AsyncTcpConnection::new(&format!("wss://localhost:{port}/")).unwrap();
    c.tls = Some(tls);
    let conn = c.connect().unwrap();
    let t = tx.clone();
    conn.on_message(move |_, m| t.send(Got::Message(m.data.to_vec())).unwrap());
    let t = tx.clone();
    conn.on_error(move |_, e: &ConnError| t.send(Got::Error(e.code(), e.to_string())).unwrap());
    conn.on_close(move |_| tx.send(Got::Close).unwrap());
    // Sent before the TCP connect, the handshake and the 101: held, then encrypted.
    conn.send("held until the upgrade");
    let big = "z".repeat(300_000);
    conn.send(big);
}

#[test]
fn ringman_client_over_wss_against_python_with_the_test_ca() {
    let server = py_wss_echo();
    let port = server.port;
    let ca = pki().path("ca.pem");
    let (_ring, rx) = client_ring(move |tx| dial_wss(port, ClientTls::with_ca(ca.clone()), tx));
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), Got::Message(b"held until the upgrade".to_vec()));
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), Got::Message(vec![b'z'; 300_000]));
}

#[test]
fn ringman_client_refuses_a_server_its_ca_does_not_vouch_for() {
    let server = py_wss_echo();
    let port = server.port;
    for (ca, why) in [(Some("other-ca.pem"), "UnknownIssuer"), (None, "UnknownIssuer")] {
        let tls = ClientTls { ca: ca.map(|c| pki().path(c)), ..Default::default() };
        let (_ring, rx) = client_ring(move |tx| dial_wss(port, tls.clone(), tx));
        match rx.recv_timeout(PATIENCE).unwrap() {
            Got::Error(code, msg) => {
                assert_eq!(code, 1, "CONNECT_FAIL: {msg}");
                assert!(msg.contains("TLS handshake failed") && msg.contains(why), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), Got::Close);
    }
    // The right CA but another name than the certificate's.
    let tls =
        ClientTls { ca: Some(pki().path("ca.pem")), server_name: Some("example.org".into()), ..Default::default() };
    let (_ring, rx) = client_ring(move |tx| dial_wss(port, tls.clone(), tx));
    match rx.recv_timeout(PATIENCE).unwrap() {
        Got::Error(1, msg) => assert!(msg.contains("not valid for name \"example.org\""), "{msg}"),
        other => panic!("{other:?}"),
    }
}

// ------------------------------------------------------------------------------ HTTP client

#[test]
fn http_client_fetches_https_from_python_with_the_test_ca_and_refuses_an_unknown_ca() {
    use ringman::components::http_client::{ClientConfig, HttpClient};
    let p = pki();
    let server = PyServer::start(&format!(
        r#"
import http.server, ssl
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        body = ('hello over https ' + self.path).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain({:?}, {:?})
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#,
        p.s("chain.pem"),
        p.s("key.pem")
    ));
    let port = server.port;
    let ca = p.path("ca.pem");
    let (tx, rx) = unbounded::<Result<String, String>>();
    let (_ring, _) = client_ring(move |_| {
        for (n, trusted) in [(1, true), (2, true), (3, false)] {
            let cfg = ClientConfig {
                tls: if trusted { ClientTls::with_ca(ca.clone()) } else { ClientTls::new() },
                ..Default::default()
            };
            let (c, tx) = (HttpClient::new(cfg), tx.clone());
            ringman::spawn(async move {
                let r = c.get(&format!("https://localhost:{port}/n{n}")).await;
                let _ = tx.send(match r {
                    Ok(r) => Ok(format!("{} {}", r.status(), String::from_utf8_lossy(&r.body))),
                    Err(e) => Err(e.to_string()),
                });
            })
            .unwrap();
        }
    });
    let mut got: Vec<Result<String, String>> = (0..3).map(|_| rx.recv_timeout(PATIENCE).unwrap()).collect();
    got.sort();
    assert_eq!(got[0], Ok("200 hello over https /n1".into()));
    assert_eq!(got[1], Ok("200 hello over https /n2".into()));
    let e = got[2].clone().unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");
}

// ------------------------------------------------------------------------------ Redis

#[test]
fn redis_client_over_rediss_against_redis_server_with_tls() {
    use ringman::redis::{Redis, RedisConfig};
    let p = pki();
    let port = free_port();
    // Killed when the test ends, passed or failed.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(
        Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
            .args(["--tls-cert-file", &p.s("chain.pem"), "--tls-key-file", &p.s("key.pem")])
            .args(["--tls-ca-cert-file", &p.s("ca.pem"), "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs"),
    );
    wait_until("redis-server listens", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let ca = p.path("ca.pem");
    let (tx, rx) = unbounded::<String>();
    let (_ring, _) = client_ring(move |_| {
        let mut cfg = RedisConfig::from_url(&format!("rediss://localhost:{port}")).unwrap();
        assert!(cfg.tls.is_some());
        cfg.tls = Some(ClientTls::with_ca(ca.clone()));
        let redis = Redis::connect(cfg).unwrap();
        let tx = tx.clone();
        ringman::spawn(async move {
            redis.set("tls-key", "over rediss").await.unwrap();
            let v = redis.get("tls-key").await.unwrap().unwrap();
            tx.send(String::from_utf8(v).unwrap()).unwrap();
        })
        .unwrap();
    });
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "over rediss");
}

// ------------------------------------------------------------------------------ resumption

/// One `openssl s_client` session against `addr`: writes `line`, reads until its echo,
/// then closes; returns s_client's report (its "New," / "Reused," line among it).
fn s_client_session(addr: SocketAddr, version: &str, sess: (&str, &Path), line: &str) -> String {
    use std::io::BufRead;
    let mut child = Command::new("openssl")
        .args(["s_client", version, "-CAfile", &pki().s("ca.pem"), "-servername", "localhost"])
        .args(["-connect", &addr.to_string(), sess.0])
        .arg(sess.1)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut report = String::new();
    for l in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let l = l.unwrap();
        let echoed = l == line;
        report.push_str(&l);
        report.push('\n');
        if echoed {
            break;
        }
    }
    drop(stdin);
    let _ = child.wait();
    report
}

#[test]
fn sessions_resume_with_tickets_on_every_ring_for_tls_1_2_and_1_3() {
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 2;
    w.tls = Some(tls());
    w.on_message(|c, m, _| {
        c.send(m);
    });
    let (_srv, addr) = start(w);
    for (version, name) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let sess = pki().path(&format!("session{version}.pem"));
        let first = s_client_session(addr, version, ("-sess_out", &sess), "first");
        assert!(first.contains(&format!("New, {name}")), "{first}");
        // Several resumptions: the connections spread over both rings, which share the
        // ticket keys.
        for i in 0..4 {
            let again = s_client_session(addr, version, ("-sess_in", &sess), &format!("again {i}"));
            assert!(again.contains(&format!("Reused, {name}")), "resumption {i} with {version}: {again}");
        }
    }
}

// ------------------------------------------------------------------------------ mutual TLS

/// An HTTP worker asking for client certificates of the test CA; it answers with the DER
/// length of the certificate it saw (0: none).
fn mtls_server(required: bool) -> (Running, SocketAddr, Receiver<String>) {
    let mut w = Worker::<()>::new("http://127.0.0.1:0").unwrap();
    w.count = 1;
    let mut t = tls();
    t.client_ca = Some(pki().path("ca.pem"));
    t.client_cert_required = required;
    w.tls = Some(t);
    w.on_message(|c, _, _| {
        let der = c.tls_peer_certificate().unwrap_or_default();
        let want = std::fs::read(pki().path("client.der")).unwrap();
        let body = format!("cert {} {}", der.len(), der == want);
        c.send(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    });
    let errors = errors_to(&mut w);
    let (r, a) = start(w);
    (r, a, errors)
}

#[test]
fn mutual_tls_with_curl_client_certificates_required_and_optional() {
    let p = pki();
    let (_srv, addr, errors) = mtls_server(true);
    let url = format!("https://localhost:{}/", addr.port());
    let with = curl(&["--cert", &p.s("client.pem"), "--key", &p.s("client.key"), &url]);
    assert!(with.status.success(), "{}", String::from_utf8_lossy(&with.stderr));
    let len = std::fs::metadata(p.path("client.der")).unwrap().len();
    assert_eq!(String::from_utf8_lossy(&with.stdout), format!("cert {len} true"));
    // No certificate: refused, and the server says why.
    let without = curl(&[&url]);
    assert!(!without.status.success(), "served without a certificate: {without:?}");
    let e = next_error(&errors);
    assert!(e.starts_with("tls: handshake failed") && e.contains("no certificates"), "{e}");
    // A certificate from a CA the server does not trust.
    let stranger = curl(&["--cert", &p.s("stranger.pem"), "--key", &p.s("stranger.key"), &url]);
    assert!(!stranger.status.success(), "served a stranger: {stranger:?}");
    let e = next_error(&errors);
    assert!(e.starts_with("tls: handshake failed") && e.contains("UnknownIssuer"), "{e}");
    // Optional: served without, and with a valid one the application sees it.
    let (_srv2, addr2, errors2) = mtls_server(false);
    let url = format!("https://localhost:{}/", addr2.port());
    let out = curl(&[&url]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "cert 0 false");
    let out = curl(&["--cert", &p.s("client.pem"), "--key", &p.s("client.key"), &url]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("cert {len} true"));
    assert!(errors2.try_recv().is_err(), "no error in optional mode");
}

// ------------------------------------------------------------------------------ SNI

#[test]
fn sni_chooses_between_two_certificates() {
    let p = pki();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    let mut t = tls();
    t.sni.push(("other.test".into(), p.path("other.pem"), p.path("other.key")));
    w.tls = Some(t);
    w.on_message(|c, m, _| {
        c.send(m);
    });
    let (_srv, addr) = start(w);
    // Python verifies the certificate against the name it sent: each handshake succeeds
    // only if the server picked the certificate for that name (none: the default).
    let out = python(
        r#"
import socket, ssl, sys
for name in ['other.test', 'localhost', None]:
    ctx = ssl.create_default_context(cafile=sys.argv[3] + 'ca.pem')
    if name is None:
        ctx.check_hostname = False
    with socket.create_connection((sys.argv[1], int(sys.argv[2]))) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            cn = dict(x[0] for x in s.getpeercert()['subject'])['commonName']
            s.sendall(b'hi\n')
            assert s.recv(10) == b'hi\n'
            print(name, cn)
"#,
        addr,
    );
    assert_eq!(out, "other.test other.test\nlocalhost localhost\nNone localhost\n");
    // A certificate that is not valid for the name it is to serve: refused at start.
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    let mut t = tls();
    t.sni.push(("wrong.test".into(), p.path("other.pem"), p.path("other.key")));
    w.tls = Some(t);
    match Server::new().add(w).start() {
        Err(EngineError::Tls(e @ TlsSetupError::SniName { .. })) => {
            assert!(e.to_string().contains("wrong.test") && e.to_string().contains("other.pem"), "{e}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("started with a certificate for another name"),
    }
}

// ------------------------------------------------------------------------------ kTLS probe

#[test]
fn the_ktls_probe_agrees_with_the_kernel_and_status_shows_it() {
    // The kernel's own list of TCP upper-layer protocols says whether `tls` is there.
    let listed = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp").unwrap_or_default();
    let has_tls = listed.split_whitespace().any(|u| u == "tls");
    let probe = ringman::ktls_probe();
    // (Loading the module on demand would make the probe succeed on a kernel that lists
    // it only once loaded: accept that direction.)
    assert!(probe.is_ok() || !has_tls, "listed {listed:?}, probe {probe:?}");
    if let Err(e) = &probe {
        assert!(e.contains("TCP_ULP"), "{e}");
    }
    let header = ringman::ops::status::Header { daemon: false, started: 0, pid: 1 };
    let text = ringman::ops::status::render_status(&header, &[]);
    let line = text.lines().find(|l| l.starts_with("kernel TLS offload: ")).expect("a kTLS line");
    assert_eq!(line.contains("unavailable"), probe.is_err(), "{line}");
}

// ------------------------------------------------------------------------------ reload

#[test]
fn reload_tls_swaps_the_certificate_while_connections_stay_up() {
    let p = pki();
    // The worker's files, in a directory of their own: replaced below.
    let dir = p.path(&format!("reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(p.path("chain.pem"), &cert).unwrap();
    std::fs::copy(p.path("key.pem"), &key).unwrap();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 2;
    w.tls = Some(TlsConfig::new(&cert, &key));
    w.on_message(|c, m, _| {
        c.send(m);
    });
    let (srv, addr) = start(w);
    // The certificate a new handshake gets, as Python sees it (not verified here: the
    // name changes).
    let served = || {
        python(
            r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3] + 'ca.pem')
ctx.check_hostname = False
with socket.create_connection((sys.argv[1], int(sys.argv[2]))) as raw:
    with ctx.wrap_socket(raw) as s:
        print(dict(x[0] for x in s.getpeercert()['subject'])['commonName'])
"#,
            addr,
        )
        .trim()
        .to_string()
    };
    assert_eq!(served(), "localhost");
    // A connection that stays up across the reload: ringman's own client over TLS.
    let (tx, rx) = unbounded::<Got>();
    let (say, said) = unbounded::<String>();
    let ca = p.path("ca.pem");
    let port = addr.port();
    let (_ring, _) = client_ring(move |_| {
        let mut c = AsyncTcpConnection::new(&format!("text://localhost:{port}")).unwrap();
        c.tls = Some(ClientTls::with_ca(ca.clone()));
        let conn = c.connect().unwrap();
        let t = tx.clone();
        conn.on_message(move |_, m| t.send(Got::Message(m.data.to_vec())).unwrap());
        conn.send("before");
        // Later lines come from the test thread through a timer that polls the channel.
        let said = said.clone();
        ringman::Timer::add(Duration::from_millis(5), true, move || {
            while let Ok(l) = said.try_recv() {
                conn.send(l);
            }
        })
        .unwrap();
    });
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), Got::Message(b"before".to_vec()));
    // A broken file: refused, the old certificate stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    let e = srv.worker(0).reload_tls().unwrap_err();
    assert!(matches!(e, TlsSetupError::NoCertificate { .. }), "{e}");
    assert_eq!(served(), "localhost");
    // The other certificate: new handshakes get it, on every ring.
    std::fs::copy(p.path("other.pem"), &cert).unwrap();
    std::fs::copy(p.path("other.key"), &key).unwrap();
    srv.worker(0).reload_tls().unwrap();
    for _ in 0..4 {
        assert_eq!(served(), "other.test");
    }
    // The connection from before still talks through its session.
    say.send("after".into()).unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), Got::Message(b"after".to_vec()));
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------------------ examples

/// Runs an example to its end (killed after PATIENCE); returns (success, stdout + stderr).
fn run_example(name: &str, args: &[&str]) -> (bool, String) {
    let mut child = Command::new(example_binary(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example starts");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut s = String::new();
    let _ = out.read_to_string(&mut s);
    let ok = child.wait().unwrap().success();
    (ok, s + &t.join().unwrap())
}

#[test]
fn the_examples_serve_and_dial_tls() {
    let p = pki();
    // The client example over wss against Python, with the test CA and without it.
    let server = py_wss_echo();
    let url = format!("wss://localhost:{}/", server.port);
    let (ok, out) =
        run_example("client", &[&url, "--conns", "3", "--messages", "20", "--size", "5000", "--ca", &p.s("ca.pem")]);
    assert!(ok && out.contains("ok: 3 connections x 20 messages"), "{out}");
    let (ok, out) = run_example("client", &[&url]);
    assert!(!ok && out.contains("UnknownIssuer"), "{out}");
    // The echo example over TLS text, checked by the client example (--tls --ca).
    let port = free_port();
    let pid_file = p.path(&format!("echo-{}.pid", std::process::id()));
    let mut echo = Command::new(example_binary("echo"))
        .args([&format!("text://127.0.0.1:{port}"), "--threads", "1", "--cert", &p.s("chain.pem")])
        .args(["--key", &p.s("key.pem"), "--pid-file", &pid_file.to_string_lossy()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the echo example starts");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(echo.stdout.take().unwrap()), &mut line).unwrap();
    assert!(line.starts_with("listening on"), "{line}");
    let url = format!("text://localhost:{port}");
    let (ok, out) = run_example("client", &[&url, "--tls", "--ca", &p.s("ca.pem"), "--conns", "2", "--messages", "50"]);
    let _ = echo.kill();
    let _ = echo.wait();
    assert!(ok && out.contains("ok: 2 connections x 50 messages"), "{out}");
    // A key that does not match: the echo example refuses to start, naming the file.
    let (ok, out) =
        run_example("echo", &["text://127.0.0.1:0", "--cert", &p.s("chain.pem"), "--key", &p.s("other-key.pem")]);
    assert!(!ok && out.contains("does not match") && out.contains("other-key.pem"), "{out}");
}

#[test]
fn ringman_client_presents_a_certificate_to_a_python_server_that_requires_one() {
    let p = pki();
    // Python's ssl server: requires a client certificate of the test CA, answers with the
    // client's common name, then echoes.
    let server = PyServer::start(&format!(
        r#"
import asyncio, ssl
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain({:?}, {:?})
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations({:?})
async def handle(r, w):
    cert = w.get_extra_info('peercert')
    w.write(('cn=' + dict(x[0] for x in cert['subject'])['commonName'] + '\n').encode())
    while d := await r.read(65536):
        w.write(d)
    w.close()
async def main():
    s = await asyncio.start_server(handle, '127.0.0.1', 0, ssl=ctx)
    print(s.sockets[0].getsockname()[1], flush=True)
    await s.serve_forever()
asyncio.run(main())
"#,
        p.s("chain.pem"),
        p.s("key.pem"),
        p.s("ca.pem")
    ));
    let port = server.port;
    let (ca, cert, key) = (p.path("ca.pem"), p.path("client.pem"), p.path("client.key"));
    let dial = move |with_cert: bool, tx: Sender<Got>| {
        let mut c = AsyncTcpConnection::new(&format!("text://localhost:{port}")).unwrap();
        c.tls = Some(ClientTls {
            ca: Some(ca.clone()),
            cert: with_cert.then(|| (cert.clone(), key.clone())),
            ..Default::default()
        });
        let conn = c.connect().unwrap();
        let t = tx.clone();
        conn.on_message(move |_, m| drop(t.send(Got::Message(m.data.to_vec()))));
        let t = tx.clone();
        conn.on_error(move |_, e: &ConnError| drop(t.send(Got::Error(e.code(), e.to_string()))));
        conn.on_close(move |_| drop(tx.send(Got::Close)));
        conn.send("ping");
    };
    let d = dial.clone();
    let (_ring, rx) = client_ring(move |tx| d(true, tx));
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), Got::Message(b"cn=test client".to_vec()));
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), Got::Message(b"ping".to_vec()));
    // Without one the server refuses it. (In TLS 1.3 the client's side of the handshake
    // is over before the server has checked its certificate, so the refusal arrives on an
    // established connection: its alert, or just the server's close.)
    let (_ring2, rx2) = client_ring(move |tx| dial(false, tx));
    loop {
        match rx2.recv_timeout(PATIENCE).unwrap() {
            Got::Error(code, msg) => assert!(code == 1 || code == 7, "{code} {msg}"),
            Got::Close => break,
            other => panic!("served without a certificate: {other:?}"),
        }
    }
}

#[test]
fn a_server_that_hangs_up_during_the_handshake_is_a_connect_failure() {
    // It reads the ClientHello (one segment on loopback), then closes: a FIN.
    let server = py_tcp_server(&[], "async def handle(r, w):\n    await r.read(65536)\n    w.close()\n");
    handshake_cut_is_a_connect_failure(server.port, "closed the connection");
}

/// The same server, resetting instead (SO_LINGER 0). A server that closes at once sends a
/// FIN or, when the ClientHello is already in its receive queue unread, a reset: which one
/// depends on timing alone, so both are tested.
#[test]
fn a_server_that_resets_during_the_handshake_is_a_connect_failure() {
    let server = py_tcp_server(
        &[],
        "import socket, struct\n\
         async def handle(r, w):\n    await r.read(65536)\n    \
         w.get_extra_info('socket').setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))\n    \
         w.transport.abort()\n",
    );
    handshake_cut_is_a_connect_failure(server.port, "reset");
}

fn handshake_cut_is_a_connect_failure(port: u16, why: &'static str) {
    let (_ring, rx) = client_ring(move |tx| {
        let mut c = AsyncTcpConnection::new(&format!("ssl://127.0.0.1:{port}")).unwrap();
        c.tls = Some(ClientTls { server_name: Some("localhost".into()), ..ClientTls::with_ca(pki().path("ca.pem")) });
        let conn = c.connect().unwrap();
        let t = tx.clone();
        conn.on_error(move |_, e: &ConnError| t.send(Got::Error(e.code(), e.to_string())).unwrap());
        conn.on_close(move |_| tx.send(Got::Close).unwrap());
    });
    match rx.recv_timeout(PATIENCE).unwrap() {
        Got::Error(1, msg) => assert!(msg.contains("TLS handshake failed") && msg.contains(why), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), Got::Close);
}

// ------------------------------------------------------------------------------ scanner

/// testssl.sh (Debian's package) against TLS text echo: nothing of medium severity or
/// above, and no protocol below TLS 1.2. Findings about the test certificate itself (its
/// two-day validity, no revocation URL, no CAA record for a test name) judge the test PKI,
/// not the server, and are left out.
#[test]
fn testssl_finds_nothing_of_medium_severity_and_no_protocol_below_tls_1_2() {
    let (_srv, addr, _errors) = text_echo();
    let json = pki().path(&format!("testssl-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&json);
    let out = Command::new("timeout")
        .args(["600", "testssl", "--quiet", "--warnings", "off", "--color", "0", "--add-ca", &pki().s("ca.pem")])
        .arg("--jsonfile")
        .arg(&json)
        .arg(addr.to_string())
        .output()
        .expect("testssl runs (Debian package testssl.sh)");
    let report = std::fs::read_to_string(&json)
        .unwrap_or_else(|_| panic!("no report; testssl said: {}", String::from_utf8_lossy(&out.stdout)));
    let findings: Vec<serde_json::Value> = serde_json::from_str(&report).expect("testssl's JSON");
    let field = |f: &serde_json::Value, k: &str| f[k].as_str().unwrap_or("").to_string();
    let mut bad = Vec::new();
    for f in &findings {
        let (id, severity, finding) = (field(f, "id"), field(f, "severity"), field(f, "finding"));
        if id == "scanProblem" || severity == "FATAL" {
            bad.push(format!("{id}: {finding}"));
        }
        if id.starts_with("cert") || id == "DNS_CAArecord" {
            continue;
        }
        if matches!(severity.as_str(), "MEDIUM" | "HIGH" | "CRITICAL") {
            bad.push(format!("{id} {severity}: {finding}"));
        }
        if matches!(id.as_str(), "SSLv2" | "SSLv3" | "TLS1" | "TLS1_1") && finding != "not offered" {
            bad.push(format!("{id} offered: {finding}"));
        }
    }
    let offered =
        |id: &str| findings.iter().any(|f| field(f, "id") == id && field(f, "finding").starts_with("offered"));
    assert!(offered("TLS1_2") && offered("TLS1_3"), "TLS 1.2 and 1.3 offered");
    assert!(bad.is_empty(), "testssl findings: {bad:#?}");
}

// ------------------------------------------------------------------------------ back-pressure

#[test]
fn a_burst_from_a_client_that_reads_late_is_echoed_whole_over_tls() {
    // The echo server, told when a connection's send queue is full.
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    w.tls = Some(tls());
    w.on_message(|c, m, _| {
        c.send(m);
    });
    let (full_tx, full) = unbounded::<()>();
    w.on_buffer_full(move |_, _| {
        let _ = full_tx.send(());
    });
    let errors = errors_to(&mut w);
    let (_srv, addr) = start(w);
    // 20 MB of lines, written as fast as the server takes them; the client reads nothing
    // until the server's queue is full (it says so on the client's stdin), so back-pressure
    // pauses the server's reading meanwhile (plaintext already decrypted waits in the
    // framer), and every line must still come back in order. One thread, non-blocking: an
    // OpenSSL session read and written from two threads at once corrupts its own records
    // (the server saw them fail to decrypt).
    let mut child = Command::new("timeout")
        .args(["120", "python3", "-c"])
        .arg(
            r#"
import socket, ssl, sys, select, hashlib, os
ctx = ssl.create_default_context(cafile=sys.argv[3] + 'ca.pem')
raw = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s = ctx.wrap_socket(raw, server_hostname='localhost')
s.setblocking(False)
data = b''.join((b'%07d' % i) * (1 + i % 300) + b'\n' for i in range(20000))
off, got, reading, written_before = 0, bytearray(), False, 0
while len(got) < len(data):
    r = [s] if reading else [0]
    w = [s] if off < len(data) else []
    rr, ww, _ = select.select(r, w, [])
    if 0 in rr:
        if os.read(0, 1) != b'f':
            sys.exit('stdin closed before the server said full')
        reading, written_before = True, off
        continue
    if ww:
        try:
            off += s.send(data[off:off + 65536])
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            pass
    if rr:
        while True:
            try:
                d = s.recv(1 << 16)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            if not d:
                sys.exit('the server closed after %d of %d bytes' % (len(got), len(data)))
            got += d
print(len(data), written_before, hashlib.sha256(bytes(got)).hexdigest() == hashlib.sha256(data).hexdigest())
"#,
        )
        .args([&addr.ip().to_string(), &addr.port().to_string(), &pki().s("")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs");
    let mut stdin = child.stdin.take().unwrap();
    let told = full.recv_timeout(PATIENCE).is_ok();
    let _ = stdin.write_all(b"f");
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(told, "the server's send queue never filled: {out}");
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(f.len(), 3, "python failed: {out}");
    assert!(f[0].parse::<usize>().unwrap() > 20_000_000, "{out}");
    assert!(f[1].parse::<usize>().unwrap() > 0, "written before the server was full: {out}");
    assert_eq!(f[2], "True", "the echo differs");
    assert!(errors.try_recv().is_err(), "no error reported");
}
