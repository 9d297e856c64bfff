//! Socket-level behaviour on loopback, with std clients and servers:
//!
//! * TCP keepalive: read back with `getsockopt` on the server's accepted sockets (from its
//!   own `on_connect`, through `Connection::keepalive`) and on outgoing sockets;
//!   the vanished-peer case is in `tests/netfaults.rs`.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver};
use ringman::{AsyncTcpConnection, Connection, Keepalive, Running, Server, Worker};

use common::PATIENCE;

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
    assert_eq!(Worker::<()>::new("tcp://127.0.0.1:0").unwrap().keepalive, Some(Keepalive::default()));
    let (ka, user_timeout) = accepted_with(Some(Keepalive::default()));
    assert_eq!(ka, Some(system_keepalive()), "SO_KEEPALIVE on, TCP_KEEP* left to the system");
    assert_eq!(user_timeout, None, "TCP_USER_TIMEOUT is left alone with the system's timing");
}

#[test]
fn accepted_sockets_inherit_tuned_keepalive_and_a_matching_user_timeout() {
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
