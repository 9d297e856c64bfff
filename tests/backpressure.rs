//! Backpressure and the send buffer's events against the rest of the state machine: a pause
//! stopping a batch, a protocol error on a throttled connection, `on_buffer_drain` after a
//! `Queued` answer, and user values dropped outside the engine. Each test names the sequence
//! it exercises; each failed before its fix.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use crossbeam_channel::unbounded;
use ringman::{SendStatus, Timer, Worker};

/// Backpressure pauses a connection in the middle of a batch (`Flow::Stop`); bytes that
/// arrive while paused are pushed into the framer. On resume, `Framer::drain` delivers until
/// the next throttle stops it and then checks `buffered() > limit` with `want == None`: a
/// buffer full of small *complete* packets is reported as `TooLarge` and the connection
/// dies although no packet exceeded `max_package_size`.
#[test]
fn backpressure_stop_does_not_report_buffered_small_packets_as_too_large() {
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    w.max_package_size = 1024;
    w.max_send_buffer_size = 8 * 1024;
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let e2 = errors.clone();
    w.on_error(move |_, e, _| e2.lock().unwrap().push(format!("{e:?}")));
    w.on_message(|c, m, _| {
        c.send(m);
    });
    let (conn_tx, conn_rx) = unbounded();
    w.on_connect(move |c, _| conn_tx.send(c.id()).unwrap());
    let (srv, addr) = start(w);
    let mut s = connect(addr);
    let id = conn_rx.recv_timeout(PATIENCE).unwrap();
    let line = {
        let mut l = vec![b'x'; 63];
        l.push(b'\n');
        l
    };
    let block: Vec<u8> = line.iter().copied().cycle().take(line.len() * 16 * 1024).collect(); // 1 MiB
    let blocks = 24;
    let total = block.len() * blocks;
    let mut wr = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for _ in 0..blocks {
            if wr.write_all(&block).is_err() {
                return;
            }
        }
    });
    // The server's output backs up until backpressure pauses the connection; then read
    // everything.
    wait_until("backpressure pauses the connection", || {
        let (rows, _) = ringman::ops::status::connections(srv.workers(), Duration::from_secs(5));
        rows.iter().any(|r| r.info.id == id && r.info.paused)
    });
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    while got < total {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    let errors = errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "on_error after {got} of {total} bytes: {errors:?}");
    assert_eq!(got, total);
}

/// `Connection::set_context` on a connection that is gone: `local` drops the closure (which
/// owns the value) inside `with_core`'s borrow, so the value's `Drop` runs under the core
/// borrow ("re-entrant core borrow" debug assertion; in release its engine calls fail).
#[test]
fn set_context_on_a_closed_connection_drops_the_value_outside_the_core() {
    struct CallsIn(crossbeam_channel::Sender<&'static str>);
    impl Drop for CallsIn {
        fn drop(&mut self) {
            let t = Timer::add(Duration::from_secs(3600), false, || {});
            let _ = self.0.send(if t.is_ok() { "dropped outside" } else { "engine busy" });
            if let Ok(id) = t {
                Timer::del(id);
            }
        }
    }
    let (tx, rx) = unbounded::<&'static str>();
    let (up_tx, up_rx) = unbounded();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    w.on_connect(move |_, _| up_tx.send(()).unwrap());
    w.on_close(move |c, _| {
        let (c, tx) = (*c, tx.clone());
        // Fires after the slot was freed (close_delivered ran after this on_close).
        Timer::add(Duration::from_millis(20), false, move || c.set_context(CallsIn(tx.clone()))).unwrap();
    });
    let (_srv, addr) = start(w);
    let s = connect(addr);
    up_rx.recv_timeout(PATIENCE).unwrap();
    drop(s);
    assert_eq!(rx.recv_timeout(PATIENCE), Ok("dropped outside"));
}

/// A batched `send` that takes the queue to the limit offers it to the kernel inline
/// (`offer_pending`). If the kernel takes everything, `on_send_done(.., from_loop=false)`
/// clears `drain_pending` without an event, yet `send` answers `Queued`: a producer that
/// waits for `on_buffer_drain` after `Queued` (Workerman's `null`) waits forever.
#[test]
fn queued_answer_is_followed_by_on_buffer_drain() {
    let (tx, rx) = unbounded::<SendStatus>();
    let drains = Arc::new(AtomicUsize::new(0));
    let d2 = drains.clone();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    w.max_send_buffer_size = 1024;
    w.on_message(move |c, _, _| {
        let _ = tx.send(c.send(vec![b'y'; 2000]));
    });
    w.on_buffer_drain(move |_, _| {
        d2.fetch_add(1, Ordering::SeqCst);
    });
    let (_srv, addr) = start(w);
    let mut s = connect(addr);
    write_all(&mut s, b"go\n");
    assert_eq!(read_exact(&mut s, 2001).len(), 2001);
    let status = rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(status, SendStatus::Queued);
    wait_until("on_buffer_drain follows the Queued answer whose bytes left", || drains.load(Ordering::SeqCst) > 0);
}

/// `fail()` (a protocol error on an established connection) pauses and `end()`s it, but when
/// the connection was already paused by backpressure `pause` is a no-op and `throttled`
/// stays set: once the queue drains to half, `on_send_done` resumes it, `Event::Resume`
/// runs `resume_begin` on the Closing connection and the errored decoder is fed again, so
/// requests are handed to user code after the 400 was queued. A pipelined stream of
/// requests to a client that does not read yet throttles the connection; a malformed
/// request in the stream, with more valid ones behind it, is the protocol error.
#[test]
fn no_request_reaches_user_code_after_a_protocol_error() {
    const BEFORE: usize = 20_000;
    let mut w = Worker::<()>::new("http://127.0.0.1:0").unwrap();
    w.count = 1;
    w.max_send_buffer_size = 8 * 1024;
    let failed = Arc::new(AtomicBool::new(false));
    let (delivered, late) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (f2, f3, d2, l2) = (failed.clone(), failed.clone(), delivered.clone(), late.clone());
    let (conn_tx, conn_rx) = unbounded();
    w.on_connect(move |c, _| conn_tx.send(c.id()).unwrap());
    w.on_error(move |_, e, _| {
        if matches!(e, ringman::ConnError::Protocol(_)) {
            f2.store(true, Ordering::SeqCst);
        }
    });
    let body = [b'b'; 200];
    w.on_request(move |conn, req, _| {
        d2.fetch_add(1, Ordering::SeqCst);
        if f3.load(Ordering::SeqCst) {
            l2.fetch_add(1, Ordering::SeqCst);
        }
        ringman::http::respond(conn, req, ringman::protocols::http::Response::new(200).body(&body[..]));
    });
    let (srv, addr) = start(w);
    let mut s = connect(addr);
    let id = conn_rx.recv_timeout(PATIENCE).unwrap();
    let req = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut stream: Vec<u8> = req.iter().copied().cycle().take(req.len() * BEFORE).collect();
    stream.extend_from_slice(b"NOT-A-REQUEST\r\n\r\n");
    stream.extend(req.iter().copied().cycle().take(req.len() * 20_000));
    let mut wr = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = wr.write_all(&stream);
    });
    // Backpressure has engaged (the connection is paused) before the client reads a byte.
    wait_until("backpressure pauses the connection", || {
        let (rows, _) = ringman::ops::status::connections(srv.workers(), Duration::from_secs(5));
        rows.iter().any(|r| r.info.id == id && r.info.paused)
    });
    // Then the client reads until the server ends the connection (a reset when requests it
    // never read are still pending).
    let (got, _ending) = read_to_end_or_reset(&mut s);
    let _ = writer.join();
    assert!(failed.load(Ordering::SeqCst), "the malformed request is a protocol error");
    assert_eq!(late.load(Ordering::SeqCst), 0, "requests delivered to on_request after the protocol error");
    assert_eq!(delivered.load(Ordering::SeqCst), BEFORE, "every request before the malformed one");
    assert!(got.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&got[..got.len().min(200)]));
}
