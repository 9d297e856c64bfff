//! Supervision, recycling, status hooks and listener inheritance.

mod common;

use common::*;
use crossbeam_channel::unbounded;
use ringman::{Server, Worker};

#[test]
fn crashed_ring_thread_is_restarted_with_its_id() {
    let (tx, rx) = unbounded::<usize>();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 2;
    w.on_worker_start(move |info, _| tx.send(info.id).unwrap());
    w.on_message(|c, m, _| {
        c.send(m);
    });
    let (srv, addr) = start(w);
    let mut started: Vec<usize> = (0..2).map(|_| rx.recv_timeout(PATIENCE).unwrap()).collect();
    started.sort();
    assert_eq!(started, vec![0, 1]);
    assert!(srv.worker(0).crash_thread_for_test(1));
    // The same id starts again, and the server still serves.
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), 1);
    assert_eq!(srv.worker(0).stats()[1].restarts.get(), 1);
    for _ in 0..20 {
        let mut s = connect(addr);
        write_all(&mut s, b"up\n");
        assert_eq!(read_exact(&mut s, 3), b"up\n");
    }
}

#[test]
fn max_requests_recycles_the_thread() {
    let (tx, rx) = unbounded::<usize>();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    w.max_requests = Some(5);
    w.on_worker_start(move |info, _| tx.send(info.id).unwrap());
    w.on_message(|c, m, _| {
        c.send(m);
    });
    let (srv, addr) = start(w);
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), 0);
    let mut s = connect(addr);
    for _ in 0..5 {
        write_all(&mut s, b"m\n");
        assert_eq!(read_exact(&mut s, 2), b"m\n");
    }
    // Recycled: the old connection is closed after its flush, the thread starts again.
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), 0);
    assert!(read_to_eof(&mut s).is_empty());
    assert_eq!(srv.worker(0).stats()[0].restarts.get(), 1);
    let mut s = connect(addr);
    write_all(&mut s, b"again\n");
    assert_eq!(read_exact(&mut s, 6), b"again\n");
}

#[test]
fn max_memory_recycles_only_above_the_threshold() {
    // Two workers side by side: one with a threshold no process reaches, one with a
    // threshold every process exceeds. The memory check runs once a second per thread.
    let (tx, rx) = unbounded::<&'static str>();
    let mut huge = Worker::<()>::without_listener();
    huge.name = "huge".into();
    huge.count = 1;
    huge.max_memory = Some(1 << 50);
    let t = tx.clone();
    huge.on_worker_start(move |_, _| t.send("huge").unwrap());
    let mut tiny = Worker::<()>::without_listener();
    tiny.name = "tiny".into();
    tiny.count = 1;
    tiny.max_memory = Some(1);
    tiny.on_worker_start(move |_, _| tx.send("tiny").unwrap());
    let srv = Server::new().add(huge).add(tiny).start().expect("server starts");
    let (h, t) = (&srv.worker(0).stats()[0], &srv.worker(1).stats()[0]);
    wait_until("the huge-threshold thread runs", || h.heartbeat.get() != 0);
    let first = h.heartbeat.get();
    // Three seconds of loop turns on the huge-threshold thread: at least two memory checks.
    wait_until("three seconds of memory checks", || h.heartbeat.get() >= first + 3);
    wait_until("the tiny-threshold thread recycled twice", || t.restarts.get() >= 2);
    assert_eq!(h.restarts.get(), 0, "a thread under its max_memory must not be recycled");
    let starts: Vec<_> = rx.try_iter().collect();
    assert_eq!(starts.iter().filter(|s| **s == "huge").count(), 1, "{starts:?}");
    assert!(starts.iter().filter(|s| **s == "tiny").count() >= 3, "{starts:?}");
}

#[test]
fn stats_and_connection_listing() {
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    w.on_message(|c, m, _| {
        c.send(m);
    });
    let (srv, addr) = start(w);
    let mut s = connect(addr);
    for _ in 0..16 {
        write_all(&mut s, b"count me\n");
        assert_eq!(read_exact(&mut s, 9), b"count me\n");
    }
    let h = srv.worker(0);
    let st = &h.stats()[0];
    // The counter is published after the batch that carried the last message.
    wait_until("16 requests counted", || st.requests.get() >= 16);
    assert_eq!(st.requests.get(), 16);
    assert_eq!(st.connections.get(), 1);
    assert!(st.latency.count() >= 2);
    assert!(st.latency.quantile_ns(0.99).is_some());
    let (tx, rx) = unbounded();
    h.on_each_thread(move || tx.send(ringman::thread_connections()).unwrap());
    let list = rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].remote, Some(s.local_addr().unwrap()));
    assert_eq!(list[0].bytes_read, 16 * 9);
    assert_eq!(list[0].status, "ESTABLISHED");
}

#[test]
fn inherited_listener_keeps_the_accept_queue() {
    // A predecessor's listening socket, with a connection waiting in its accept queue.
    let old = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = old.local_addr().unwrap();
    let mut waiting = connect(addr);
    use std::os::fd::AsFd;
    let (name, value) = ringman::handover::successor_env(&[(old.as_fd(), addr)]).unwrap();
    std::env::set_var(name, value);
    let mut w = Worker::<()>::new(&format!("text://{addr}")).unwrap();
    w.count = 1;
    w.on_message(|c, m, _| {
        c.send(m);
    });
    let running = Server::new().add(w).start().expect("starts on the inherited socket");
    std::env::remove_var(name);
    std::mem::forget(old); // the ring thread owns the descriptor now
    assert_eq!(running.local_addr(0), Some(addr));
    write_all(&mut waiting, b"queued before start\n");
    assert_eq!(read_exact(&mut waiting, 20), b"queued before start\n");
    drop(running);
}
