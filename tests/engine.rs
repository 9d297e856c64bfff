//! Integration tests of the engine with real sockets on loopback.

mod common;

use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use crossbeam_channel::{unbounded, Receiver};
use ringman::{ConnError, Connection, EngineError, SendMode, SendStatus, Server, Timer, Worker};

#[test]
fn echo_text() {
    let (_srv, addr) = start(echo_worker("text://127.0.0.1:0", 2));
    let mut s = connect(addr);
    write_all(&mut s, b"hello\r\nwor");
    write_all(&mut s, b"ld\n");
    assert_eq!(read_exact(&mut s, 12), b"hello\nworld\n");
}

#[test]
fn echo_frame_and_raw_tcp() {
    let (_a, fa) = start(echo_worker("frame://127.0.0.1:0", 1));
    let mut s = connect(fa);
    let mut wire = frame(b"abc");
    wire.extend(frame(b""));
    write_all(&mut s, &wire);
    assert_eq!(read_exact(&mut s, wire.len()), wire);

    let (_b, ta) = start(echo_worker("tcp://127.0.0.1:0", 1));
    let mut s = connect(ta);
    write_all(&mut s, b"raw bytes \x00\xff");
    assert_eq!(read_exact(&mut s, 12), b"raw bytes \x00\xff");
}

#[test]
fn echo_over_ipv6_loopback() {
    // A host without IPv6 loopback must say so explicitly (RINGMAN_NO_IPV6=1), or this fails.
    if let Err(e) = TcpListener::bind("[::1]:0") {
        if std::env::var_os("RINGMAN_NO_IPV6").is_some_and(|v| v == "1") {
            eprintln!("RINGMAN_NO_IPV6=1: IPv6 loopback test skipped ({e})");
            return;
        }
        panic!("cannot bind [::1] ({e}): enable IPv6 loopback, or set RINGMAN_NO_IPV6=1 to skip this test");
    }
    let (_srv, addr) = start(echo_worker("text://[::1]:0", 1));
    let mut s = connect(addr);
    write_all(&mut s, b"six\n");
    assert_eq!(read_exact(&mut s, 4), b"six\n");
}

#[test]
fn text_and_frame_workers_side_by_side() {
    let running = Server::new()
        .add(echo_worker("text://127.0.0.1:0", 1))
        .add(echo_worker("frame://127.0.0.1:0", 1))
        .start()
        .unwrap();
    let mut t = connect(running.local_addr(0).unwrap());
    let mut f = connect(running.local_addr(1).unwrap());
    write_all(&mut t, b"t\n");
    write_all(&mut f, &frame(b"f"));
    assert_eq!(read_exact(&mut t, 2), b"t\n");
    assert_eq!(read_exact(&mut f, 5), frame(b"f"));
}

#[test]
fn thousand_concurrent_connections() {
    let (_srv, addr) = start(echo_worker("frame://127.0.0.1:0", 2));
    let mut socks: Vec<TcpStream> = (0..1000).map(|_| connect(addr)).collect();
    for (i, s) in socks.iter_mut().enumerate() {
        write_all(s, &frame(format!("conn {i}").as_bytes()));
    }
    for (i, s) in socks.iter_mut().enumerate() {
        let want = frame(format!("conn {i}").as_bytes());
        assert_eq!(read_exact(s, want.len()), want);
    }
}

#[test]
fn five_mib_frame_round_trip() {
    let (_srv, addr) = start(echo_worker("frame://127.0.0.1:0", 1));
    let mut s = connect(addr);
    let payload: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let wire = frame(&payload);
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || write_all(&mut w, &wire));
    let got = read_exact(&mut s, payload.len() + 4);
    writer.join().unwrap();
    assert_eq!(&got[4..], &payload[..]);
}

#[test]
fn oversized_packet_errors_and_closes_only_that_connection() {
    let (etx, erx) = unbounded::<u32>();
    let mut w = echo_worker("frame://127.0.0.1:0", 1);
    w.max_package_size = 1024;
    w.on_error(move |_, e, _| {
        etx.send(e.code()).unwrap();
    });
    let (_srv, addr) = start(w);
    let mut good = connect(addr);
    let mut bad = connect(addr);
    write_all(&mut bad, &frame(&[0u8; 2000]));
    assert_eq!(erx.recv_timeout(PATIENCE).unwrap(), 3);
    assert!(read_to_eof(&mut bad).is_empty(), "bad connection is closed");
    write_all(&mut good, &frame(b"still here"));
    assert_eq!(read_exact(&mut good, 14), frame(b"still here"));
}

#[test]
fn malformed_frame_is_rejected() {
    let (etx, erx) = unbounded::<String>();
    let mut w = echo_worker("frame://127.0.0.1:0", 1);
    w.on_error(move |_, e, _| {
        etx.send(e.to_string()).unwrap();
    });
    let (_srv, addr) = start(w);
    let mut s = connect(addr);
    write_all(&mut s, &[0, 0, 0, 1]);
    assert!(erx.recv_timeout(PATIENCE).unwrap().contains("malformed frame"));
    assert!(read_to_eof(&mut s).is_empty());
}

#[derive(Default)]
struct Flood {
    statuses: Vec<SendStatus>,
}

#[test]
fn peer_that_never_reads_gets_queued_then_failed() {
    let (tx, rx) = unbounded::<(&'static str, Vec<SendStatus>, usize)>();
    let mut w = Worker::<Flood>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    w.max_send_buffer_size = 256 * 1024;
    let t1 = tx.clone();
    w.on_buffer_full(move |c, _| {
        t1.send(("full", vec![], c.send_queue_len())).unwrap();
    });
    let t2 = tx.clone();
    w.on_error(move |c, e, _| {
        if matches!(e, ConnError::SendBufferFull { .. }) {
            t2.send(("send_fail", vec![], c.send_queue_len())).unwrap();
        }
    });
    w.on_message(move |c, _, st| {
        let chunk = vec![b'z'; 64 * 1024];
        // Far more than the socket buffers plus the limit can hold.
        for _ in 0..400 {
            st.statuses.push(c.send(&chunk));
        }
        tx.send(("done", std::mem::take(&mut st.statuses), c.send_queue_len())).unwrap();
    });
    let (_srv, addr) = start(w);
    let mut s = connect(addr);
    write_all(&mut s, b"go\n");
    // on_buffer_full / on_error are delivered after on_message returns.
    let mut saw_full = false;
    let mut saw_fail = false;
    let mut done = None;
    while !(saw_full && saw_fail && done.is_some()) {
        let (what, st, q) = rx.recv_timeout(PATIENCE).unwrap();
        match what {
            "full" => saw_full = true,
            "send_fail" => saw_fail = true,
            _ => done = Some((st, q)),
        }
    }
    let (statuses, queued) = done.unwrap();
    assert!(statuses.contains(&SendStatus::Queued));
    assert_eq!(*statuses.last().unwrap(), SendStatus::Failed);
    // Memory stays bounded: the queue never exceeds the limit plus one message.
    assert!(queued < 256 * 1024 + 64 * 1024 + 2, "queued {queued}");
    let first_fail = statuses.iter().position(|s| *s == SendStatus::Failed).unwrap();
    assert!(statuses[first_fail..].iter().all(|s| *s == SendStatus::Failed));
}

#[test]
fn buffer_drain_fires_when_queue_empties() {
    let (tx, rx) = unbounded::<&'static str>();
    let mut w = Worker::<()>::new("tcp://127.0.0.1:0").unwrap();
    w.count = 1;
    let t = tx.clone();
    w.on_buffer_drain(move |_, _| {
        t.send("drain").unwrap();
    });
    w.on_message(move |c, _, _| {
        let big = vec![1u8; 8 * 1024 * 1024];
        let st = c.send(&big);
        tx.send(if st == SendStatus::Queued { "queued" } else { "other" }).unwrap();
    });
    let (_srv, addr) = start(w);
    let mut s = connect(addr);
    write_all(&mut s, b"go");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "queued");
    let got = read_exact(&mut s, 8 * 1024 * 1024);
    assert!(got.iter().all(|&b| b == 1));
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "drain");
}

#[test]
fn small_send_completes_inline_as_sent() {
    let (tx, rx) = unbounded::<SendStatus>();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    w.send_mode = SendMode::Eager;
    w.on_message(move |c, m, _| {
        tx.send(c.send(m)).unwrap();
    });
    let (_srv, addr) = start(w);
    let mut s = connect(addr);
    write_all(&mut s, b"ping\n");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), SendStatus::Sent);
    assert_eq!(read_exact(&mut s, 5), b"ping\n");
}

#[test]
fn batched_mode_queues_and_delivers() {
    let (tx, rx) = unbounded::<SendStatus>();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    w.send_mode = SendMode::Batched;
    w.on_message(move |c, m, _| {
        tx.send(c.send(m)).unwrap();
    });
    let (_srv, addr) = start(w);
    let mut s = connect(addr);
    write_all(&mut s, b"a\nb\n");
    assert_eq!(read_exact(&mut s, 4), b"a\nb\n");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), SendStatus::Queued);
}

#[test]
fn pause_and_resume_recv() {
    // A message delivered while its connection should be paused is recorded as a violation;
    // another connection's "resume" lifts the pause (no timer, no timing).
    let (tx, rx) = unbounded::<Vec<u8>>();
    let paused_conn = Arc::new(Mutex::new(None::<Connection>));
    let violations = Arc::new(AtomicUsize::new(0));
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    let (p, v) = (paused_conn.clone(), violations.clone());
    w.on_message(move |c, m, _| {
        if m == b"resume" {
            let target = p.lock().unwrap().take().expect("something to resume");
            target.resume_recv();
            return;
        }
        if p.lock().unwrap().is_some_and(|pc| pc == *c) {
            v.fetch_add(1, Ordering::SeqCst);
        }
        tx.send(m.to_vec()).unwrap();
        if m == b"pause" {
            c.pause_recv();
            *p.lock().unwrap() = Some(*c);
        }
    });
    let (_srv, addr) = start(w);
    let mut s = connect(addr);
    // "after1" shares the read with "pause": without a working pause it is delivered at once.
    write_all(&mut s, b"pause\nafter1\n");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"pause");
    write_all(&mut s, b"after2\n");
    let mut other = connect(addr);
    write_all(&mut other, b"resume\n");
    // Everything sent while paused arrives after the resume, in order.
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"after1");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"after2");
    assert_eq!(violations.load(Ordering::SeqCst), 0, "a message was delivered while paused");
}

#[test]
fn close_with_data_flushes_then_closes() {
    let closed = Arc::new(AtomicUsize::new(0));
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    w.on_message(|c, _, _| {
        c.close(Some(b"bye"));
        assert_eq!(c.send(b"late"), SendStatus::Failed);
    });
    let cl = closed.clone();
    w.on_close(move |_, _| {
        cl.fetch_add(1, Ordering::SeqCst);
    });
    let (srv, addr) = start(w);
    let mut s = connect(addr);
    write_all(&mut s, b"x\n");
    assert_eq!(read_to_eof(&mut s), b"bye\n");
    wait_until("on_close runs", || closed.load(Ordering::SeqCst) > 0);
    // Stopping joins the ring thread: any second on_close would have run by then.
    drop(srv);
    assert_eq!(closed.load(Ordering::SeqCst), 1, "on_close exactly once");
}

#[test]
fn destroy_closes_at_once() {
    let (tx, rx) = unbounded::<&'static str>();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    w.on_message(|c, _, _| c.destroy());
    w.on_close(move |_, _| tx.send("closed").unwrap());
    let (_srv, addr) = start(w);
    let mut s = connect(addr);
    write_all(&mut s, b"x\n");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "closed");
    assert!(read_to_eof(&mut s).is_empty());
}

#[test]
fn close_deadline_cuts_off_a_peer_that_never_reads() {
    let (tx, rx) = unbounded::<&'static str>();
    let mut w = Worker::<()>::new("tcp://127.0.0.1:0").unwrap();
    w.count = 1;
    w.close_timeout = Duration::from_millis(300);
    w.max_send_buffer_size = 64 * 1024 * 1024;
    w.on_message(|c, _, _| {
        c.send(vec![0u8; 32 * 1024 * 1024]);
        c.close(None);
    });
    w.on_close(move |_, _| tx.send("closed").unwrap());
    let (_srv, addr) = start(w);
    let mut s = connect(addr);
    write_all(&mut s, b"x");
    let _keep_unread = &s;
    // We never read: the close must still happen.
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "closed");
}

#[test]
fn send_to_connection_of_another_thread_and_broadcast() {
    // Two threads; each connection registers its id; a message "to:<id>:<text>" is relayed.
    let (idtx, idrx) = unbounded::<(u64, usize)>();
    let mut w = Worker::<usize>::new("text://127.0.0.1:0").unwrap();
    w.count = 2;
    w.reuse_port = true;
    w.on_worker_start(|info, st| *st = info.id);
    w.on_connect(move |c, st| {
        idtx.send((c.id().as_u64(), *st)).unwrap();
    });
    w.on_message(|_c, m, _| {
        let m = std::str::from_utf8(m).unwrap();
        if let Some(rest) = m.strip_prefix("to:") {
            let (id, text) = rest.split_once(':').unwrap();
            let target = Connection::from_id(ringman::ConnectionId::from_u64(id.parse().unwrap()));
            assert!(target.send(text).is_ok());
        } else if let Some(text) = m.strip_prefix("all:") {
            ringman::ring_info().unwrap();
            // The worker handle is reachable from any callback through the connection's
            // worker; here we use the one captured at start.
            BROADCAST.with(|b| b.borrow().as_ref().unwrap().broadcast(text.to_string()));
        }
    });
    thread_local! {
        static BROADCAST: std::cell::RefCell<Option<ringman::WorkerHandle>> = const { std::cell::RefCell::new(None) };
    }
    w.on_worker_start(|info, st| {
        *st = info.id;
        BROADCAST.with(|b| *b.borrow_mut() = Some(info.handle.clone()));
    });
    let (_srv, addr) = start(w);
    // Open connections until both threads own at least one (SO_REUSEPORT spreads them).
    let mut conns: Vec<(TcpStream, u64, usize)> = Vec::new();
    while conns.iter().map(|c| c.2).collect::<std::collections::HashSet<_>>().len() < 2 {
        let s = connect(addr);
        let (id, thread) = idrx.recv_timeout(PATIENCE).unwrap();
        conns.push((s, id, thread));
        assert!(conns.len() < 200, "SO_REUSEPORT never used the second thread");
    }
    let a = conns.iter().position(|c| c.2 == 0).unwrap();
    let b = conns.iter().position(|c| c.2 == 1).unwrap();
    let target_id = conns[b].1;
    write_all(&mut conns[a].0, format!("to:{target_id}:hello from 0\n").as_bytes());
    assert_eq!(read_exact(&mut conns[b].0, 13), b"hello from 0\n");
    write_all(&mut conns[b].0, b"all:everyone\n");
    for c in conns.iter_mut() {
        assert_eq!(read_exact(&mut c.0, 9), b"everyone\n");
    }
}

#[test]
fn timers_fire_repeat_and_can_be_deleted() {
    let (tx, rx) = unbounded::<&'static str>();
    let mut w = Worker::<()>::without_listener();
    w.count = 1;
    w.on_worker_start(move |_, _| {
        let t = tx.clone();
        let mut n = 0;
        let id = std::rc::Rc::new(std::cell::Cell::new(None));
        let id2 = id.clone();
        let rep = Timer::add(Duration::from_millis(10), true, move || {
            n += 1;
            t.send("tick").unwrap();
            if n == 3 {
                assert!(Timer::del(id2.get().unwrap()));
                t.send("deleted").unwrap();
            }
        })
        .unwrap();
        id.set(Some(rep));
        let t = tx.clone();
        let never = Timer::add(Duration::from_millis(5), false, move || t.send("never").unwrap()).unwrap();
        assert!(Timer::del(never));
        let t = tx.clone();
        Timer::add(Duration::from_millis(1), false, move || t.send("once").unwrap()).unwrap();
        // Fires well after the third tick: ten more periods of the deleted timer.
        let t = tx.clone();
        Timer::add(Duration::from_millis(130), false, move || t.send("later").unwrap()).unwrap();
    });
    let running = Server::new().add(w).start().unwrap();
    let mut got = Vec::new();
    while !got.contains(&"later") {
        got.push(rx.recv_timeout(PATIENCE).unwrap());
    }
    assert!(got.contains(&"deleted"), "{got:?}");
    assert_eq!(got.iter().filter(|m| **m == "tick").count(), 3);
    assert_eq!(got.iter().filter(|m| **m == "once").count(), 1);
    assert!(!got.contains(&"never"));
    drop(running);
    assert_eq!(
        Timer::add(Duration::ZERO, false, || {}).unwrap_err().to_string(),
        EngineError::NotOnRingThread.to_string()
    );
}

#[test]
fn heartbeat_idiom_closes_idle_connections() {
    let (tx, rx) = unbounded::<&'static str>();
    let mut w =
        Worker::<std::rc::Rc<std::cell::RefCell<Vec<(Connection, std::time::Instant)>>>>::new("text://127.0.0.1:0")
            .unwrap();
    w.count = 1;
    w.on_worker_start(|_, st| {
        let conns = st.clone();
        Timer::add(Duration::from_millis(20), true, move || {
            conns.borrow_mut().retain(|(c, last)| {
                let idle = last.elapsed() > Duration::from_millis(100);
                if idle {
                    c.close(None);
                }
                !idle
            });
        })
        .unwrap();
    });
    w.on_connect(|c, st| st.borrow_mut().push((*c, std::time::Instant::now())));
    w.on_close(move |_, _| tx.send("closed").unwrap());
    let (_srv, addr) = start(w);
    let mut s = connect(addr);
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "closed");
    assert!(read_to_eof(&mut s).is_empty());
}

#[test]
fn panic_in_callback_closes_only_that_connection() {
    let (tx, rx) = unbounded::<u32>();
    let mut w = echo_worker("text://127.0.0.1:0", 1);
    w.on_message(|c, m, _| {
        if m == b"boom" {
            panic!("user bug");
        }
        c.send(m);
    });
    w.on_error(move |_, e, _| tx.send(e.code()).unwrap());
    let (_srv, addr) = start(w);
    let mut good = connect(addr);
    let mut bad = connect(addr);
    write_all(&mut bad, b"boom\n");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), 4);
    assert!(read_to_eof(&mut bad).is_empty());
    write_all(&mut good, b"alive\n");
    assert_eq!(read_exact(&mut good, 6), b"alive\n");
    // The thread still accepts.
    let mut again = connect(addr);
    write_all(&mut again, b"new\n");
    assert_eq!(read_exact(&mut again, 4), b"new\n");
}

#[test]
fn per_connection_context_and_addresses() {
    let (tx, rx) = unbounded::<(String, u64)>();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    w.on_connect(|c, _| c.set_context(0u64));
    w.on_message(move |c, _, _| {
        let n = c.with_context(|n: &mut u64| {
            *n += 1;
            *n
        });
        let peer = c.remote_addr().unwrap();
        assert_eq!(c.local_addr().unwrap().ip(), peer.ip());
        tx.send((peer.to_string(), n.unwrap())).unwrap();
        assert!(c.bytes_read() > 0);
    });
    let (_srv, addr) = start(w);
    let mut s = connect(addr);
    write_all(&mut s, b"a\nb\n");
    let me = s.local_addr().unwrap().to_string();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), (me.clone(), 1));
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), (me, 2));
}

#[test]
fn bad_addresses_and_taken_ports_are_typed_errors() {
    assert!(matches!(Worker::<()>::new("text:/127.0.0.1:1"), Err(EngineError::BadAddress { .. })));
    assert!(matches!(Worker::<()>::new("text://nonsense"), Err(EngineError::BadAddress { .. })));
    assert!(matches!(Worker::<()>::new("gopher://127.0.0.1:1"), Err(EngineError::UnknownScheme(_))));
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let w = Worker::<()>::new(&format!("text://{addr}")).unwrap();
    match Server::new().add(w).start() {
        Err(EngineError::AddrInUse { addr: a }) => assert_eq!(a, addr),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("started on a taken port"),
    }
    // A second ringman on the same port is refused too (SO_REUSEPORT would silently share).
    let (_srv, a) = start(echo_worker("text://127.0.0.1:0", 1));
    let w = Worker::<()>::new(&format!("text://{a}")).unwrap();
    assert!(matches!(Server::new().add(w).start(), Err(EngineError::AddrInUse { .. })));
}

#[test]
fn peer_reset_mid_stream_is_harmless() {
    let (_srv, addr) = start(echo_worker("tcp://127.0.0.1:0", 1));
    for _ in 0..50 {
        let mut s = connect(addr);
        write_all(&mut s, &[7u8; 100_000]);
        let _ = s.shutdown(Shutdown::Both);
    }
    let mut s = connect(addr);
    write_all(&mut s, b"ok");
    let mut buf = [0u8; 2];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ok");
}

#[test]
fn stop_runs_on_worker_stop_and_closes_connections() {
    let (tx, rx): (_, Receiver<&'static str>) = unbounded();
    let mut w = echo_worker("text://127.0.0.1:0", 2);
    let t = tx.clone();
    w.on_worker_stop(move |_, _| t.send("stopped").unwrap());
    w.on_close(move |_, _| tx.send("closed").unwrap());
    let (srv, addr) = start(w);
    let mut s = connect(addr);
    write_all(&mut s, b"x\n");
    assert_eq!(read_exact(&mut s, 2), b"x\n");
    srv.stop();
    srv.wait();
    let got: Vec<_> = rx.try_iter().collect();
    assert_eq!(got.iter().filter(|m| **m == "stopped").count(), 2);
    assert_eq!(got.iter().filter(|m| **m == "closed").count(), 1);
    assert!(read_to_eof(&mut s).is_empty());
}
