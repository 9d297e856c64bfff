//! Socket-level behaviour on loopback, with std clients and servers:
//!
//! * TCP keepalive: read back with `getsockopt` on the server's accepted sockets (from its
//!   own `on_connect`, through `Connection::keepalive`) and on outgoing sockets;
//!   the vanished-peer case is in `tests/netfaults.rs`;
//! * `max_connections`: at the cap a client is accepted and closed at once, a freed place
//!   lets the next one in, and the refusals show in `ops` status and metrics;
//! * runtime `unlisten()` / `listen()`: the port released (connections refused) and served
//!   again, with an accepted connection working throughout.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver};
use ringman::{AsyncTcpConnection, Connection, EngineError, Keepalive, Running, Server, Worker, WorkerHandle};

use common::PATIENCE;

/// The tests of this file run one at a time: the `unlisten` test releases its port and
/// serves it again, and in between another test's server (bound to port 0) can be given
/// that port; with SO_REUSEPORT on both listeners, connections meant for one would reach
/// the other (seen once under load: a capped server's places taken by the other test's
/// probes).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What `getsockopt` says about one connection's socket.
type Seen = (Option<Keepalive>, Option<Duration>);

fn seen(c: &Connection) -> Seen {
    (c.keepalive(), c.tcp_user_timeout())
}

/// The system's keepalive values (what a socket gets unless told otherwise).
fn system_keepalive() -> Keepalive {
    let read = |name: &str| -> u64 {
        let p = format!("/proc/sys/net/ipv4/{name}");
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}")).trim().parse().unwrap()
    };
    Keepalive::new(
        Duration::from_secs(read("tcp_keepalive_time")),
        Duration::from_secs(read("tcp_keepalive_intvl")),
        read("tcp_keepalive_probes") as u32,
    )
}

/// A `tcp://` worker on loopback whose `on_connect` reports its socket's options; one
/// client connects, and the report comes back.
fn accepted_with(keepalive: Option<Keepalive>) -> Seen {
    let (tx, rx) = unbounded();
    let mut w = Worker::<()>::new("tcp://127.0.0.1:0").unwrap();
    w.count = 1;
    w.keepalive = keepalive;
    w.on_connect(move |c, _| tx.send(seen(c)).unwrap());
    let (server, addr) = common::start(w);
    let _client = common::connect(addr);
    let got = rx.recv_timeout(PATIENCE).expect("on_connect reported");
    server.stop();
    got
}

#[test]
fn accepted_sockets_have_keepalive_on_by_default_with_the_system_timing() {
    let _serial = serial();
    assert_eq!(Worker::<()>::new("tcp://127.0.0.1:0").unwrap().keepalive, Some(Keepalive::default()));
    let (ka, user_timeout) = accepted_with(Some(Keepalive::default()));
    assert_eq!(ka, Some(system_keepalive()), "SO_KEEPALIVE on, TCP_KEEP* left to the system");
    assert_eq!(user_timeout, None, "TCP_USER_TIMEOUT is left alone with the system's timing");
}

#[test]
fn accepted_sockets_inherit_tuned_keepalive_and_a_matching_user_timeout() {
    let _serial = serial();
    let tuned = Keepalive::new(Duration::from_secs(7), Duration::from_secs(3), 4);
    let (ka, user_timeout) = accepted_with(Some(tuned));
    assert_eq!(ka, Some(tuned));
    assert_eq!(user_timeout, Some(Duration::from_secs(7 + 3 * 4)), "idle + interval x probes");
    // Only the idle time set: the others are the system's, and the user timeout spans them.
    let sys = system_keepalive();
    let idle_only = Keepalive { idle: Some(Duration::from_millis(1500)), ..Keepalive::default() };
    let (ka, user_timeout) = accepted_with(Some(idle_only));
    let want = Keepalive { idle: Some(Duration::from_secs(2)), ..sys };
    assert_eq!(ka, Some(want), "sub-second parts round up to whole seconds");
    assert_eq!(user_timeout, Some(Duration::from_secs(2) + sys.interval.unwrap() * sys.probes.unwrap()));
}

#[test]
fn accepted_sockets_without_keepalive_when_turned_off() {
    let _serial = serial();
    assert_eq!(accepted_with(None), (None, None));
}

/// A client ring that dials `port` with `keepalive` and reports its socket's options once
/// connected.
fn dial_with(port: u16, keepalive: Option<Keepalive>) -> (Running, Receiver<Seen>) {
    let (tx, rx) = unbounded();
    let mut w = Worker::<()>::without_listener();
    w.count = 1;
    w.on_worker_start(move |_, _| {
        let mut a = AsyncTcpConnection::new(&format!("tcp://127.0.0.1:{port}")).unwrap();
        a.keepalive = keepalive;
        let conn = a.connect().unwrap();
        let tx = tx.clone();
        conn.on_connect(move |c| tx.send(seen(c)).unwrap());
    });
    (Server::new().add(w).start().expect("client ring starts"), rx)
}

#[test]
fn outgoing_sockets_have_keepalive_as_configured() {
    let _serial = serial();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let tuned = Keepalive::new(Duration::from_secs(5), Duration::from_secs(2), 3);
    for (ka, want) in [
        (Some(Keepalive::default()), (Some(system_keepalive()), None)),
        (Some(tuned), (Some(tuned), Some(Duration::from_secs(11)))),
        (None, (None, None)),
    ] {
        let (client, rx) = dial_with(port, ka);
        let (_peer, _) = l.accept().unwrap();
        assert_eq!(rx.recv_timeout(PATIENCE).expect("connected"), want, "configured {ka:?}");
        client.stop();
    }
}

/// Sends a line and reads its echo; `Err` describes how the server ended the connection
/// instead.
fn echo_line(s: &mut TcpStream, line: &str) -> Result<(), String> {
    s.write_all(format!("{line}\n").as_bytes()).map_err(|e| format!("write: {e}"))?;
    let mut got = String::new();
    match BufReader::new(&*s).read_line(&mut got) {
        Ok(0) => Err("closed by the server".into()),
        Ok(_) if got == format!("{line}\n") => Ok(()),
        Ok(_) => Err(format!("wrong echo {got:?}")),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// A client that got in: connected and answered.
fn served(addr: SocketAddr, n: usize) -> TcpStream {
    let mut s = common::connect(addr);
    echo_line(&mut s, &format!("client {n}")).unwrap_or_else(|e| panic!("client {n}: {e}"));
    s
}

fn refused(server: &Running) -> u64 {
    server.workers()[0].stats().iter().map(|s| s.refused.get()).sum()
}

#[test]
fn max_connections_refuses_at_the_cap_and_a_freed_place_lets_the_next_in() {
    let _serial = serial();
    let (closed_tx, closed) = unbounded();
    let mut w = common::echo_worker("text://127.0.0.1:0", 2);
    w.name = "capped".into();
    w.max_connections = Some(5);
    w.on_close(move |_, _| closed_tx.send(()).unwrap());
    let (server, addr) = common::start(w);
    // Five clients, over both ring threads, are served and stay connected.
    let mut clients: Vec<TcpStream> = (0..5).map(|n| served(addr, n)).collect();
    assert_eq!(server.workers()[0].stats().iter().map(|s| s.connections.get()).sum::<u64>(), 5);
    // The sixth (and seventh) are accepted and closed at once: end of stream, no data.
    for n in 5..7 {
        let mut s = common::connect(addr);
        let (got, how) = common::read_to_end_or_reset(&mut s);
        assert_eq!((got.len(), how), (0, common::Ending::Eof), "client {n}");
    }
    assert_eq!(refused(&server), 2);
    // The five still work.
    for (n, c) in clients.iter_mut().enumerate() {
        echo_line(c, "still here").unwrap_or_else(|e| panic!("client {n}: {e}"));
    }
    // One leaves: once its on_close ran, its place is freed (just after) and a new client
    // gets in. (A client that arrives in between is refused; it tries again.)
    drop(clients.remove(0));
    closed.recv_timeout(PATIENCE).expect("on_close of the client that left");
    let end = std::time::Instant::now() + PATIENCE;
    let mut tries = 0;
    let newcomer = loop {
        tries += 1;
        let mut s = common::connect(addr);
        match echo_line(&mut s, "newcomer") {
            Ok(()) => break s,
            Err(e) => assert!(std::time::Instant::now() < end, "no place freed after {tries} tries: {e}"),
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    clients.push(newcomer);
    assert_eq!(refused(&server), 2 + tries - 1);
    // At the cap again.
    let mut s = common::connect(addr);
    assert_eq!(common::read_to_end_or_reset(&mut s), (Vec::new(), common::Ending::Eof));
    let total = refused(&server);
    assert_eq!(total, 3 + tries - 1);
    // The refusals show in `status` (the refused column) and in the metrics.
    let rows = ringman::ops::status::rows(server.workers(), None, PATIENCE);
    assert_eq!(rows.iter().map(|r| r.refused).sum::<u64>(), total);
    let header = ringman::ops::status::Header { daemon: false, started: 0, pid: std::process::id() };
    let table = ringman::ops::status::render_status(&header, &rows);
    let cols: Vec<&str> = ringman::ops::status::STATUS_COLUMNS.split_whitespace().collect();
    let at = cols.iter().position(|c| *c == "refused").expect("a refused column");
    let shown: u64 = table
        .lines()
        .filter(|l| l.starts_with(&format!("{}\t", header.pid)))
        .map(|l| l.split_whitespace().nth(at).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(shown, total, "{table}");
    let metrics = ringman::ops::metrics::render(server.workers());
    let counted: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("ringman_refused_total{worker=\"capped\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, total, "{metrics}");
    server.stop();
}

#[test]
fn max_connections_places_of_a_dead_ring_are_freed() {
    let _serial = serial();
    let mut w = common::echo_worker("text://127.0.0.1:0", 1);
    w.max_connections = Some(2);
    let (server, addr) = common::start(w);
    let held: Vec<TcpStream> = (0..2).map(|n| served(addr, n)).collect();
    let h = &server.workers()[0];
    assert!(h.crash_thread_for_test(0));
    common::wait_until("the ring restarted", || h.stats()[0].restarts.get() == 1);
    // The dead ring's connections were closed with it: their places are free.
    let _again: Vec<TcpStream> = (2..4).map(|n| served(addr, n)).collect();
    assert_eq!(refused(&server), 0);
    drop(held);
    server.stop();
}

/// Connects until the kernel refuses (nothing listens any more); panics after PATIENCE.
/// A connection that still gets through (queued on a socket being closed) is dropped.
fn wait_refused(addr: SocketAddr) {
    let end = std::time::Instant::now() + PATIENCE;
    loop {
        match TcpStream::connect(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            other => assert!(std::time::Instant::now() < end, "{addr} still accepts connections: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn unlisten_releases_the_port_and_listen_serves_it_again() {
    let _serial = serial();
    for reuse_port in [true, false] {
        // The worker's handle, in each thread's state: `unlisten` / `listen` lines on a
        // connection call them from the ring thread; other lines are echoed.
        let mut w = Worker::<Option<WorkerHandle>>::new("text://127.0.0.1:0").unwrap();
        w.count = 2;
        w.reuse_port = reuse_port;
        w.on_worker_start(|info, st| *st = Some(info.handle.clone()));
        w.on_message(|c, m, st| {
            let h = st.as_ref().unwrap();
            match &m[..] {
                b"unlisten" => {
                    h.unlisten();
                    c.send("unlistened");
                }
                b"listen" => {
                    c.send(match h.listen() {
                        Ok(()) => "listening".to_string(),
                        Err(e) => format!("error: {e}"),
                    });
                }
                other => {
                    c.send(other);
                }
            }
        });
        let (server, addr) = common::start(w);
        let handle = server.workers()[0].clone();
        // An accepted connection, kept throughout; a second one from the other side.
        let mut kept = served(addr, 0);
        let mut other = served(addr, 1);
        kept.write_all(b"unlisten\n").unwrap();
        let mut reply = String::new();
        BufReader::new(&kept).read_line(&mut reply).unwrap();
        assert_eq!(reply, "unlistened\n");
        assert!(!handle.is_listening());
        wait_refused(addr);
        echo_line(&mut kept, "still here").expect("the kept connection works while unlistened");
        echo_line(&mut other, "me too").expect("so does the other");
        // Listening again from another thread: a client that arrives is served.
        let end = std::time::Instant::now() + PATIENCE;
        loop {
            match handle.listen() {
                Ok(()) => break,
                // The rings may still be letting go of the old sockets.
                Err(EngineError::AddrInUse { .. }) if std::time::Instant::now() < end => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(e) => panic!("listen again: {e}"),
            }
        }
        assert!(handle.is_listening());
        let mut fresh = served(addr, 2);
        echo_line(&mut kept, "still here").expect("the kept connection works after listen");
        // Unlistened from here (the handle, any thread), then from a ring thread again.
        handle.unlisten();
        wait_refused(addr);
        echo_line(&mut fresh, "after").expect("the newer connection works while unlistened");
        loop {
            kept.write_all(b"listen\n").unwrap();
            reply.clear();
            BufReader::new(&kept).read_line(&mut reply).unwrap();
            if reply == "listening\n" || std::time::Instant::now() > end {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(reply, "listening\n", "reuse_port {reuse_port}");
        served(addr, 3);
        assert_eq!(handle.listen_addr(), Some(addr), "the same address");
        server.stop();
    }
}

#[test]
fn listen_without_a_listen_address_is_an_error() {
    let _serial = serial();
    let mut w = Worker::<()>::without_listener();
    w.count = 1;
    let server = Server::new().add(w).start().unwrap();
    assert!(matches!(server.workers()[0].listen(), Err(EngineError::NoListenAddress)));
    assert!(!server.workers()[0].is_listening());
    server.workers()[0].unlisten();
    server.stop();
}

/// Server sockets on loopback port `port` left in CLOSE_WAIT (`/proc/net/tcp` and
/// `tcp6`): the client closed and the server's socket never did.
fn close_wait(port: u16) -> usize {
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port =
                cols.get(1).and_then(|a| a.rsplit(':').next()).and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && cols.get(3) == Some(&"08") {
                n += 1;
            }
        }
    }
    n
}

fn registered(server: &Running) -> u64 {
    server.workers()[0].stats().iter().map(|s| s.registered_files.get()).sum()
}

/// Accepted connections go into their ring's fixed-file table at their second send
/// (`ThreadStats::registered_files`), serve pipelined bursts from there, and leave it
/// before their sockets close: the server's close reaches the client (its last bytes,
/// then EOF), a client that vanishes mid-burst leaves no server socket in CLOSE_WAIT, and
/// the slots later connections reuse serve them. A connection answered once is never
/// registered.
#[test]
fn registered_sockets_serve_bursts_and_still_close() {
    let _serial = serial();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.on_message(|c, m, _| {
        if m == b"close" {
            c.close(Some(b"bye"));
        } else {
            c.send(m);
        }
    });
    let (server, addr) = common::start(w);

    // Answered once: still on its descriptor.
    let mut once = common::connect(addr);
    echo_line(&mut once, "only").unwrap();
    assert_eq!(registered(&server), 0, "a connection answered once is registered");

    // Its second answer registers it; then a burst of 200 lines written at once.
    let mut kept = common::connect(addr);
    echo_line(&mut kept, "one").unwrap();
    echo_line(&mut kept, "two").unwrap();
    common::wait_until("the second send registered the socket", || registered(&server) == 1);
    let burst: String = (0..200).map(|i| format!("line {i}\n")).collect();
    common::write_all(&mut kept, burst.as_bytes());
    assert_eq!(common::read_exact(&mut kept, burst.len()), burst.as_bytes(), "the burst's echoes");

    // The server closes it: the client reads "bye" and then EOF.
    common::write_all(&mut kept, b"close\n");
    assert_eq!(common::read_to_eof(&mut kept), b"bye\n", "the server's close reaches the client");
    drop((once, kept));
    common::wait_until("the kernel's tables hold no socket", || common::sockets_in_file_tables() == 0);
    common::wait_until("both slots cleared", || registered(&server) == 0);

    // Twenty clients at once register (twenty slots), then vanish mid-burst; twice, the
    // second time on the slots the first left.
    for batch in 0..2 {
        let mut clients: Vec<TcpStream> = (0..20).map(|_| common::connect(addr)).collect();
        for (i, c) in clients.iter_mut().enumerate() {
            echo_line(c, &format!("batch {batch} client {i} a")).unwrap();
            echo_line(c, &format!("batch {batch} client {i} b")).unwrap();
        }
        common::wait_until("twenty registered", || registered(&server) == 20);
        assert_eq!(common::sockets_in_file_tables(), 20, "the kernel's tables hold the twenty sockets");
        for mut c in clients {
            common::write_all(&mut c, burst.as_bytes());
        }
        common::wait_until("no server socket left in CLOSE_WAIT", || close_wait(addr.port()) == 0);
        common::wait_until("the kernel's tables hold no socket", || common::sockets_in_file_tables() == 0);
        common::wait_until("every registered slot cleared", || registered(&server) == 0);
    }
    let mut last = common::connect(addr);
    for i in 0..5 {
        echo_line(&mut last, &format!("after {i}")).unwrap();
    }
    common::wait_until("the last client registered", || registered(&server) == 1);
    server.stop();
}
