//! Async code on the rings: tasks spawned from callbacks, a connection's message stream
//! (and which of it and `on_message` gets a message), drained send buffers, connects,
//! sleeps, wakes from other threads, panics and closes. Real sockets; the outgoing peer is a
//! Python asyncio server.

mod common;

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ringman::future::Messages;
use ringman::{spawn, AsyncTcpConnection, ConnError, DialError, JoinError, SendStatus, Timer, Worker};

use common::{connect, free_port, py_echo, start, wait_until};

fn lines(s: &std::net::TcpStream) -> impl Iterator<Item = String> {
    BufReader::new(s.try_clone().unwrap()).lines().map(|l| l.expect("a line"))
}

/// While a stream exists it gets every message and `on_message` none; once dropped, the
/// messages it held unread go to `on_message` first, in order, then the later ones.
#[test]
fn a_stream_takes_messages_in_order_and_hands_back_the_unread_ones() {
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.on_message(|c, m, _| {
        c.send(format!("cb:{}", String::from_utf8_lossy(m)));
    });
    w.on_connect(|c, _| {
        let c = *c;
        // Created in the callback, so no message can come before it.
        let mut stream = c.messages().unwrap();
        c.spawn(async move {
            for _ in 0..2 {
                let m = stream.recv().await.expect("a message");
                c.send(format!("task:{}", String::from_utf8_lossy(&m.data)));
            }
            // Dropped here with "c" and "d" (one burst) unread.
        })
        .unwrap();
    });
    let (running, addr) = start(w);
    let mut s = connect(addr);
    s.write_all(b"a\nb\nc\nd\n").unwrap();
    let mut got = lines(&s);
    let first: Vec<String> = (0..4).map(|_| got.next().unwrap()).collect();
    assert_eq!(first, ["task:a", "task:b", "cb:c", "cb:d"]);
    s.write_all(b"e\n").unwrap();
    assert_eq!(got.next().unwrap(), "cb:e");
    running.stop();
}

/// A task that reads slowly: the stream stops the connection's reading at its high-water
/// mark and resumes it as it is read; every line of a large burst arrives, in order.
#[test]
fn a_slow_stream_slows_the_peer_and_loses_nothing() {
    const N: usize = 20_000;
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.on_connect(|c, _| {
        let c = *c;
        let mut stream = c.messages().unwrap();
        c.spawn(async move {
            let mut expect = 0usize;
            while let Some(m) = stream.recv().await {
                assert_eq!(m.data, format!("line {expect}").as_bytes(), "out of order");
                assert!(stream.len() < Messages::HIGH_WATER, "the stream grew past its mark");
                expect += 1;
                if expect.is_multiple_of(500) {
                    Timer::sleep(Duration::from_millis(2)).await;
                }
                if expect == N {
                    c.send(format!("got {expect}"));
                }
            }
        })
        .unwrap();
    });
    let (running, addr) = start(w);
    let mut s = connect(addr);
    let burst: String = (0..N).map(|i| format!("line {i}\n")).collect();
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || s.write_all(burst.as_bytes()).unwrap())
    };
    let mut reply = String::new();
    BufReader::new(&mut s).read_line(&mut reply).unwrap();
    assert_eq!(reply.trim(), format!("got {N}"));
    writer.join().unwrap();
    running.stop();
}

/// A task in `on_message` connects to another server (Python asyncio), asks it, and answers
/// with its reply: straight-line code over three connections' events, 50 clients at once.
#[test]
fn a_task_connects_asks_and_answers_for_many_clients() {
    let echo = py_echo();
    let upstream = format!("text://127.0.0.1:{}", echo.port);
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 2;
    w.on_message(move |c, m, _| {
        let c = *c;
        let ask = m.to_vec();
        let url = upstream.clone();
        c.spawn(async move {
            let up = AsyncTcpConnection::new(&url).unwrap().connect_async().await.expect("upstream");
            let mut replies = up.messages().unwrap();
            up.send(&ask);
            let r = replies.recv().await.expect("a reply");
            c.send([b"upstream said ".as_slice(), &r.data].concat());
            up.close(None);
        })
        .unwrap();
    });
    let (running, addr) = start(w);
    let clients: Vec<_> = (0..50)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                s.write_all(format!("hello {i}\n").as_bytes()).unwrap();
                let mut l = String::new();
                BufReader::new(&mut s).read_line(&mut l).unwrap();
                assert_eq!(l.trim_end(), format!("upstream said hello {i}"));
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    running.stop();
}

/// A connect that fails resolves with the error `on_error` saw.
#[test]
fn a_failed_connect_resolves_with_its_error() {
    let refused = free_port();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.on_message(move |c, _, _| {
        let c = *c;
        c.spawn(async move {
            let r = AsyncTcpConnection::new(&format!("tcp://127.0.0.1:{refused}")).unwrap().connect_async().await;
            let said = match r {
                Err(DialError::Failed(e)) => format!("failed: {e}"),
                Err(e) => format!("other error: {e}"),
                Ok(_) => "connected".to_string(),
            };
            c.send(said);
        })
        .unwrap();
    });
    let (running, addr) = start(w);
    let mut s = connect(addr);
    s.write_all(b"go\n").unwrap();
    let l = lines(&s).next().unwrap();
    assert!(l.starts_with("failed: ") && l.contains("refused"), "{l}");
    running.stop();
}

/// A producer that awaits `drained()` whenever `send` queues: 16 MiB reach a slow reader
/// whole, without a single send refused at the buffer limit.
#[test]
fn a_producer_awaiting_drained_never_overflows_the_send_buffer() {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 256;
    let refused = Arc::new(AtomicUsize::new(0));
    let r2 = refused.clone();
    let mut w = Worker::<()>::new("tcp://127.0.0.1:0").unwrap();
    w.on_error(move |_, e, _| {
        if matches!(e, ConnError::SendBufferFull { .. }) {
            r2.fetch_add(1, Ordering::SeqCst);
        }
    });
    w.on_connect(|c, _| {
        let c = *c;
        c.set_max_send_buffer_size(256 * 1024);
        c.spawn(async move {
            let chunk = vec![b'x'; CHUNK];
            for _ in 0..CHUNKS {
                match c.send(&chunk) {
                    SendStatus::Failed => panic!("send failed"),
                    SendStatus::Queued if c.send_queue_len() + CHUNK > c.max_send_buffer_size() => {
                        assert!(c.drained().await, "closed while draining");
                    }
                    _ => {}
                }
            }
            c.close(None);
        })
        .unwrap();
    });
    let (running, addr) = start(w);
    let mut s = connect(addr);
    let mut total = 0usize;
    let mut buf = vec![0u8; 4096];
    loop {
        // A slow reader: small reads with pauses.
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|&b| b == b'x'));
        total += n;
        if total % (1 << 20) < 4096 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!(total, CHUNK * CHUNKS);
    assert_eq!(refused.load(Ordering::SeqCst), 0, "a send was refused at the limit");
    running.stop();
}

/// Sets a flag when dropped: shows a future was dropped.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A connection's pending tasks are dropped when it closes, and a join handle awaiting one
/// answers Aborted.
#[test]
fn a_connections_tasks_end_with_it() {
    let dropped = Arc::new(AtomicBool::new(false));
    let aborted = Arc::new(AtomicBool::new(false));
    let (d2, a2) = (dropped.clone(), aborted.clone());
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.on_connect(move |c, _| {
        let flag = DropFlag(d2.clone());
        let h = c
            .spawn(async move {
                let _flag = flag;
                Timer::sleep(Duration::from_secs(3600)).await;
            })
            .unwrap();
        let a = a2.clone();
        spawn(async move {
            if h.await == Err(JoinError::Aborted) {
                a.store(true, Ordering::SeqCst);
            }
        })
        .unwrap();
        c.send("ready");
    });
    let (running, addr) = start(w);
    let s = connect(addr);
    assert_eq!(lines(&s).next().unwrap(), "ready");
    assert!(!dropped.load(Ordering::SeqCst));
    drop(s);
    wait_until("the task was dropped", || dropped.load(Ordering::SeqCst));
    wait_until("its join handle answered Aborted", || aborted.load(Ordering::SeqCst));
    running.stop();
}

/// A panic in a connection's task closes that connection (on_error: Panic) and nothing
/// else; a panic in a free task is logged and the ring runs on.
#[test]
fn a_panicking_task_ends_only_its_connection() {
    let panics = Arc::new(AtomicUsize::new(0));
    let p2 = panics.clone();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.on_error(move |_, e, _| {
        if matches!(e, ConnError::Panic(m) if m.contains("boom in task")) {
            p2.fetch_add(1, Ordering::SeqCst);
        }
    });
    w.on_message(|c, m, _| match m.data {
        b"boom" => {
            c.spawn(async {
                Timer::sleep(Duration::from_millis(1)).await;
                panic!("boom in task");
            })
            .unwrap();
        }
        b"free boom" => {
            let h = spawn(async {
                Timer::sleep(Duration::from_millis(1)).await;
                panic!("boom in a free task");
            })
            .unwrap();
            let c = *c;
            spawn(async move {
                let r = h.await;
                c.send(format!("{r:?}"));
            })
            .unwrap();
        }
        _ => {
            c.send(m);
        }
    });
    let (running, addr) = start(w);
    let mut bystander = connect(addr);
    let mut victim = connect(addr);
    victim.write_all(b"boom\n").unwrap();
    let mut rest = Vec::new();
    victim.read_to_end(&mut rest).expect("closed cleanly");
    wait_until("on_error saw the panic", || panics.load(Ordering::SeqCst) == 1);
    bystander.write_all(b"free boom\n").unwrap();
    let mut got = lines(&bystander);
    let l = got.next().unwrap();
    assert!(l.contains("Panicked") && l.contains("boom in a free task"), "{l}");
    bystander.write_all(b"still here\n").unwrap();
    assert_eq!(got.next().unwrap(), "still here");
    running.stop();
}

/// A future whose waker another thread calls: the ring is woken through its mailbox.
struct FromThread {
    done: Arc<AtomicBool>,
    started: bool,
}

impl Future for FromThread {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.done.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        if !self.started {
            self.started = true;
            let (done, waker) = (self.done.clone(), cx.waker().clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                done.store(true, Ordering::SeqCst);
                waker.wake();
            });
        }
        Poll::Pending
    }
}

#[test]
fn a_waker_called_from_another_thread_wakes_the_ring() {
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.on_message(|c, _, _| {
        let c = *c;
        c.spawn(async move {
            FromThread { done: Arc::new(AtomicBool::new(false)), started: false }.await;
            c.send("woken");
        })
        .unwrap();
    });
    let (running, addr) = start(w);
    let mut s = connect(addr);
    s.write_all(b"go\n").unwrap();
    assert_eq!(lines(&s).next().unwrap(), "woken");
    running.stop();
}

/// Off a ring thread nothing can be spawned.
#[test]
fn spawning_off_a_ring_thread_is_refused() {
    assert!(matches!(spawn(async {}), Err(ringman::EngineError::NotOnRingThread)));
}

/// `timeout`: a receive that gets nothing in time answers `Elapsed`; one that gets its
/// message answers it.
#[test]
fn timeout_bounds_an_await() {
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.on_connect(|c, _| {
        let c = *c;
        let mut m = c.messages().unwrap();
        c.spawn(async move {
            let first = ringman::timeout(Duration::from_millis(50), m.recv()).await;
            c.send(format!("{first:?}"));
            let second = ringman::timeout(Duration::from_secs(60), m.recv()).await;
            c.send(format!("{:?}", second.map(|m| m.map(|m| m.data))));
        })
        .unwrap();
    });
    let (running, addr) = start(w);
    let mut s = connect(addr);
    let mut got = lines(&s);
    assert_eq!(got.next().unwrap(), "Err(Elapsed)");
    s.write_all(b"in time\n").unwrap();
    assert_eq!(got.next().unwrap(), "Ok(Some(b\"in time\"))");
    running.stop();
}
