//! The connection state machine under every order its completions can arrive in.
//!
//! Each scenario drives a real ring and a real loopback TCP connection up to a point where
//! several completions are due (a cancel racing data, a multishot ending on ENOBUFS, late
//! completions after a destroy), collects exactly those completions from the kernel, and then
//! hands them to the core's handlers in **every** order that keeps the completions of one
//! operation in their own order (the kernel posts a multishot's CQEs in sequence, but nothing
//! orders different operations). Each order runs on a fresh core and connection, and the
//! invariants are checked after it:
//!
//! * no lost re-arm: an open, unpaused connection always ends up receiving again;
//! * every byte the peer wrote is delivered once and in order, every byte sent arrives once
//!   and in order;
//! * `on_close` is queued exactly once, and the slot is freed only after its last completion
//!   (and after `on_close` was delivered).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringman_protocols::{Delivery, Flow, MessageKind, Protocol};

use super::*;
use crate::ring::{Kind, Token};
use io_uring::{cqueue, opcode};

use crate::config::{SendMode, WorkerConfig};
use crate::mailbox::{self, Cmd, Enc};
use crate::stats::ThreadStats;

type Cqe = (u64, i32, u32);

/// Fails the test when the core's counters disagree with its slab (`Core::check_invariants`).
#[track_caller]
fn checked(core: &Core) {
    if let Err(e) = core.check_invariants() {
        panic!("invariant broken: {e}");
    }
}

const PATIENCE: Duration = Duration::from_secs(20);

/// One core, one accepted connection, and its peer.
struct Rig {
    core: Core,
    thread: u16,
    peer: TcpStream,
    key: usize,
    id: ConnectionId,
    delivered: Vec<u8>,
    closes: usize,
}

fn config(recv_buffers: u16, recv_buffer_size: u32, recv_incremental: bool) -> Arc<WorkerConfig> {
    Arc::new(WorkerConfig {
        name: "orders".into(),
        protocol: Arc::new(ringman_protocols::Raw),
        // Above every send here: these scenarios are about completion orders, not limits.
        max_send_buffer_size: 64 << 20,
        max_package_size: 1 << 20,
        send_mode: SendMode::Batched,
        backpressure: true,
        close_timeout: Duration::from_secs(5),
        stop_timeout: Duration::from_secs(5),
        default_kind: MessageKind::Binary,
        recv_buffers,
        recv_buffer_size,
        recv_incremental,
        max_requests: None,
        max_memory: None,
        idle_timeout: None,
        packet_timeout: None,
        ping_interval: None,
        decoder_config: None,
        listens_for_drain: true,
        handshake_first: false,
        tls: None,
        conn_cap: None,
        max_datagram: 65_527,
        udp_buffers: 16,
        udp_protocol: Arc::new(ringman_protocols::Raw),
    })
}

impl Rig {
    /// A core with one connection to `peer`, its receive buffers whole.
    fn new(recv_buffers: u16, recv_buffer_size: u32) -> Rig {
        Rig::with(recv_buffers, recv_buffer_size, false)
    }

    /// [`Rig::new`], the buffers consumed in pieces when `incremental` (and the kernel can).
    fn with(recv_buffers: u16, recv_buffer_size: u32, incremental: bool) -> Rig {
        let (thread, mailbox) = mailbox::register().expect("thread id");
        let cfg = config(recv_buffers, recv_buffer_size, incremental);
        let mut core = Core::new(thread, cfg, Vec::new(), mailbox, Arc::new(ThreadStats::default()), 0).expect("core");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        peer.set_read_timeout(Some(PATIENCE)).unwrap();
        let (server, _) = listener.accept().unwrap();
        core.open_conn(server.into());
        let key = core.conns.iter().next().map(|(k, _)| k).expect("connection opened");
        let id = core.id_of(key);
        let mut rig = Rig { core, thread, peer, key, id, delivered: Vec::new(), closes: 0 };
        rig.events();
        rig
    }

    /// Submits what is queued and collects completions until `enough` says so.
    fn collect(&mut self, enough: impl Fn(&[Cqe]) -> bool) -> Vec<Cqe> {
        let deadline = Instant::now() + PATIENCE;
        let mut all = Vec::new();
        while !enough(&all) {
            assert!(
                Instant::now() < deadline,
                "completions never arrived: {:?}",
                all.iter().map(|c| (Token::from_u64(c.0), c.1, c.2)).collect::<Vec<_>>()
            );
            // As the loop does: events first (a queued event makes the core skip the wait).
            self.events();
            self.core.submit_and_wait(Some(Duration::from_millis(5)));
            let mut got = Vec::new();
            self.core.reap(&mut got);
            all.extend(got);
        }
        all
    }

    /// Hands one completion to the core, as the worker loop does (minus user code).
    fn dispatch(&mut self, (ud, res, flags): Cqe) {
        let Some(tok) = Token::from_u64(ud) else { return };
        match tok.kind {
            Kind::Recv => {
                if let Some(w) = self.core.on_recv(tok, res, flags) {
                    self.deliver(w);
                }
            }
            Kind::Send => self.core.on_send(tok, res),
            Kind::Cancel => self.core.on_cancel(tok),
            Kind::Accept | Kind::Wake | Kind::Shutdown | Kind::Connect | Kind::Proxy | Kind::Udp | Kind::UdpSend => {}
        }
        checked(&self.core);
        self.events();
        checked(&self.core);
    }

    fn deliver(&mut self, mut w: RecvWork) {
        let data: &mut [u8] = match w.buf.as_mut() {
            Some(b) => b.bytes(),
            None => &mut [],
        };
        let mut got = Vec::new();
        let sink = |d: Delivery<'_>| {
            if let Delivery::Message(m) = d {
                got.extend_from_slice(m.data);
            }
            Flow::Continue
        };
        let r = if data.is_empty() {
            w.framer.drain(w.decoder.as_mut(), w.max, sink)
        } else {
            w.framer.feed(w.decoder.as_mut(), data, w.max, sink)
        };
        self.delivered.extend_from_slice(&got);
        self.core.recv_end(&mut Some(w), 0, r.err());
    }

    /// Delivers queued events: counts closes, resumes, and releases slots held for on_close.
    fn events(&mut self) {
        while let Some(ev) = self.core.events.pop_front() {
            match ev {
                Event::Close(c) => {
                    assert_eq!(c, self.id);
                    self.closes += 1;
                    self.core.close_delivered(c);
                }
                Event::Resume(c) => {
                    if let Some(w) = self.core.resume_begin(c) {
                        self.deliver(w);
                    }
                }
                _ => {}
            }
        }
    }

    /// Runs the loop until `done` holds.
    fn run_until(&mut self, what: &str, done: impl Fn(&Rig) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(self) {
            assert!(Instant::now() < deadline, "{what}: never happened");
            self.events();
            self.core.submit_and_wait(Some(Duration::from_millis(5)));
            let mut got = Vec::new();
            self.core.reap(&mut got);
            for cqe in got {
                self.dispatch(cqe);
            }
        }
    }

    fn conn(&self) -> Option<&ConnState> {
        self.core.conns.get(self.key).filter(|c| c.serial == self.id.serial())
    }

    fn write(&mut self, data: &[u8]) {
        self.peer.write_all(data).unwrap();
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        mailbox::unregister(self.thread);
    }
}

fn kind(c: &Cqe) -> Option<Kind> {
    Token::from_u64(c.0).map(|t| t.kind)
}

fn count(all: &[Cqe], k: Kind) -> usize {
    all.iter().filter(|c| kind(c) == Some(k)).count()
}

fn terminal_recv(all: &[Cqe]) -> bool {
    all.iter().any(|c| kind(c) == Some(Kind::Recv) && !cqueue::more(c.2))
}

/// A receive completion carrying bytes is among `all`.
fn data_completion(all: &[Cqe]) -> bool {
    all.iter().any(|c| kind(c) == Some(Kind::Recv) && c.1 > 0)
}

/// Asserts that data raced the other completions (without a data completion among them a
/// scenario only replays a cancel and proves nothing about data).
fn assert_data_raced(all: &[Cqe]) {
    assert!(data_completion(all), "no data completion raced the others: {all:?}");
}

/// Every order of `items` that keeps items with the same `user_data` in their order.
fn interleavings(items: &[Cqe]) -> Vec<Vec<Cqe>> {
    let mut lanes: Vec<Vec<Cqe>> = Vec::new();
    for &c in items {
        match lanes.iter_mut().find(|l| l[0].0 == c.0) {
            Some(l) => l.push(c),
            None => lanes.push(vec![c]),
        }
    }
    let mut out = Vec::new();
    let mut pos = vec![0usize; lanes.len()];
    let mut cur = Vec::new();
    fn go(lanes: &[Vec<Cqe>], pos: &mut [usize], cur: &mut Vec<Cqe>, out: &mut Vec<Vec<Cqe>>) {
        if lanes.iter().zip(pos.iter()).all(|(l, &p)| p == l.len()) {
            out.push(cur.clone());
            return;
        }
        for i in 0..lanes.len() {
            if pos[i] < lanes[i].len() {
                cur.push(lanes[i][pos[i]]);
                pos[i] += 1;
                go(lanes, pos, cur, out);
                pos[i] -= 1;
                cur.pop();
            }
        }
    }
    go(&lanes, &mut pos, &mut cur, &mut out);
    out
}

/// Runs `scenario` once to learn how many orders its completions allow, then once per order.
fn for_every_order(scenario: impl Fn(Option<usize>) -> usize) {
    let n = scenario(None);
    assert!(n >= 2, "the scenario produced only one order; it proves nothing");
    for i in 0..n {
        assert_eq!(scenario(Some(i)), n, "order {i}: the kernel produced different completions");
    }
}

/// Feeds `cqes` in order `which` (or in arrival order when `None`); returns the order count.
fn feed(rig: &mut Rig, cqes: &[Cqe], which: Option<usize>) -> usize {
    let orders = interleavings(cqes);
    let order = which.map_or_else(|| cqes.to_vec(), |i| orders[i].clone());
    for cqe in order {
        rig.dispatch(cqe);
    }
    checked(&rig.core);
    orders.len()
}

#[test]
fn interleavings_keep_each_operation_in_order() {
    let a1 = (1, 0, 0);
    let a2 = (1, 1, 0);
    let b = (2, 0, 0);
    let all = interleavings(&[a1, a2, b]);
    assert_eq!(all.len(), 3);
    for o in &all {
        let ia1 = o.iter().position(|x| *x == a1).unwrap();
        let ia2 = o.iter().position(|x| *x == a2).unwrap();
        assert!(ia1 < ia2);
    }
}

/// pause_recv and resume_recv in the same turn (what `send_file` does for a small file),
/// with data arriving before the cancel lands: the cancel's completion, the receive's end
/// and the data may come in any order; the connection must keep receiving.
#[test]
fn pause_and_resume_in_one_turn_never_lose_the_receive() {
    for incremental in [false, true] {
        for_every_order(|which| {
            let mut rig = Rig::with(64, 4096, incremental);
            rig.write(b"one ");
            rig.run_until("first bytes", |r| r.delivered == b"one ");
            // The data's completion is posted (not yet handled) before the cancel is issued.
            rig.write(b"two ");
            let mut cqes = rig.collect(data_completion);
            rig.core.pause(rig.key);
            rig.core.resume(rig.key);
            rig.events();
            cqes.extend(rig.collect(|a| count(a, Kind::Cancel) == 1 && terminal_recv(a)));
            assert_data_raced(&cqes);
            let n = feed(&mut rig, &cqes, which);
            rig.write(b"three");
            rig.run_until("all bytes after the race", |r| r.delivered.len() >= 13);
            assert_eq!(rig.delivered, b"one two three");
            let c = rig.conn().expect("open");
            assert!(c.recv_armed && !c.paused, "receive lost: armed {} paused {}", c.recv_armed, c.paused);
            assert_eq!(rig.closes, 0);
            n
        });
    }
}

/// A pause that stays: data that raced the cancel is kept and delivered after resume.
#[test]
fn data_racing_a_pause_is_kept_for_the_resume() {
    for incremental in [false, true] {
        for_every_order(|which| {
            let mut rig = Rig::with(64, 4096, incremental);
            rig.write(b"a");
            rig.run_until("first byte", |r| r.delivered == b"a");
            rig.write(b"bc");
            let mut cqes = rig.collect(data_completion);
            rig.core.pause(rig.key);
            cqes.extend(rig.collect(|a| count(a, Kind::Cancel) == 1 && terminal_recv(a)));
            assert_data_raced(&cqes);
            let n = feed(&mut rig, &cqes, which);
            assert!(!rig.conn().unwrap().recv_armed, "a paused connection must not re-arm");
            rig.core.resume(rig.key);
            rig.events();
            rig.write(b"d");
            rig.run_until("bytes after resume", |r| r.delivered.len() >= 4);
            assert_eq!(rig.delivered, b"abcd");
            n
        });
    }
}

/// The buffer ring runs dry (two 512-byte buffers for 4 KiB): the multishot ends with
/// ENOBUFS among data completions; it is re-armed after the batch returned its buffers, and
/// every byte arrives once, in order.
#[test]
fn enobufs_in_any_position_rearms_and_loses_nothing() {
    let payload: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    for incremental in [false, true] {
        for_every_order(|which| {
            let mut rig = Rig::with(2, 512, incremental);
            rig.write(&payload[..2048]);
            // Whatever the kernel delivered before the ring ran dry, then the ENOBUFS end; a
            // pause issued now adds its cancel to the race.
            let mut cqes = rig.collect(terminal_recv);
            rig.core.pause(rig.key);
            cqes.extend(rig.collect(|a| count(a, Kind::Cancel) == 1));
            assert_data_raced(&cqes);
            let n = feed(&mut rig, &cqes, which);
            rig.core.resume(rig.key);
            rig.events();
            rig.write(&payload[2048..]);
            rig.run_until("all 4 KiB", |r| r.delivered.len() >= payload.len());
            assert!(rig.delivered == payload, "bytes lost, repeated or reordered");
            assert!(rig.conn().unwrap().recv_armed);
            n
        });
    }
}

/// Whether this kernel consumes provided buffers in pieces (`IOU_PBUF_RING_INC`, 6.12).
fn kernel_has_incremental_buffers() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (6, 12)
}

/// One buffer consumed in pieces: each small message takes the next bytes of the same
/// buffer (the kernel says `F_BUF_MORE`), the buffer goes back only once the kernel used
/// it up and its last piece was delivered, and the bytes that follow land in it again from
/// its start — all of them once, in order, however the pieces and the ENOBUFS end fall.
#[test]
fn one_buffer_consumed_in_pieces_serves_message_after_message() {
    let mut rig = Rig::with(1, 4096, true);
    if !kernel_has_incremental_buffers() {
        assert!(!rig.core.recv.incremental());
        eprintln!("this kernel predates incremental buffers (6.12): the whole-buffer fallback ran");
        return;
    }
    assert!(rig.core.recv.incremental(), "the kernel has IOU_PBUF_RING_INC but the ring did not use it");
    let mut expect = Vec::new();
    let mut bids = Vec::new();
    for i in 0..8u8 {
        let msg = [b'a' + i; 100];
        rig.write(&msg);
        expect.extend_from_slice(&msg);
        let cqes = rig.collect(data_completion);
        for c in &cqes {
            if kind(c) == Some(Kind::Recv) && c.1 > 0 {
                assert!(cqueue::buffer_more(c.2), "a 100-byte piece of a 4 KiB buffer used it up: {c:?}");
                bids.push(cqueue::buffer_select(c.2));
            }
        }
        feed(&mut rig, &cqes, None);
        assert_eq!(rig.delivered, expect);
    }
    assert!(bids.windows(2).all(|w| w[0] == w[1]), "the pieces came from different buffers: {bids:?}");
    // 800 bytes in: the rest of the buffer (3,296 bytes) and then the same buffer again,
    // from its start, once the engine handed it back.
    let tail: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
    rig.write(&tail);
    expect.extend_from_slice(&tail);
    rig.run_until("all 20,800 bytes", |r| r.delivered.len() >= expect.len());
    assert!(rig.delivered == expect, "bytes lost, repeated or reordered across pieces");
    assert!(rig.conn().unwrap().recv_armed);
}

/// destroy() while a send is parked on a full socket and the receive is armed: the
/// receive's end, the send's end and the cancel's completion come in any order. on_close
/// is queued once; the slot is freed only after the last of them.
#[test]
fn late_completions_after_destroy_free_the_slot_once() {
    for_every_order(|which| {
        let mut rig = Rig::new(64, 4096);
        // Fill the socket so a send stays in flight.
        let big = vec![b'x'; 8 << 20];
        assert_eq!(rig.core.send(rig.key, &big, Enc::Raw), SendStatus::Queued);
        let deadline = Instant::now() + PATIENCE;
        let mut early = Vec::new();
        while !rig.conn().unwrap().send_inflight || rig.conn().unwrap().sendq.len == 0 {
            assert!(Instant::now() < deadline);
            rig.core.submit_and_wait(Some(Duration::from_millis(5)));
            rig.core.reap(&mut early);
        }
        for cqe in early {
            rig.dispatch(cqe);
        }
        rig.core.destroy(rig.key, None);
        // Hold on_close back to watch the slot: it must outlive every completion and on_close.
        let held = std::mem::take(&mut rig.core.events);
        assert!(held.iter().filter(|e| matches!(e, Event::Close(_))).count() == 1);
        let cqes = rig.collect(|a| count(a, Kind::Cancel) == 1 && terminal_recv(a) && count(a, Kind::Send) >= 1);
        let orders = interleavings(&cqes);
        let order = which.map_or_else(|| cqes.clone(), |i| orders[i].clone());
        for cqe in order {
            let Some(tok) = Token::from_u64(cqe.0) else { continue };
            match tok.kind {
                Kind::Recv => {
                    assert!(rig.core.on_recv(tok, cqe.1, cqe.2).is_none(), "delivery after destroy");
                }
                Kind::Send => rig.core.on_send(tok, cqe.1),
                Kind::Cancel => rig.core.on_cancel(tok),
                _ => {}
            }
            checked(&rig.core);
            assert!(rig.conn().is_some(), "slot freed before on_close ran");
            assert!(rig.core.events.iter().all(|e| !matches!(e, Event::Close(_))), "a second on_close");
        }
        assert_eq!(rig.conn().unwrap().inflight, 0, "completions outstanding after the last one");
        rig.core.events = held;
        rig.events();
        assert_eq!(rig.closes, 1);
        assert!(rig.conn().is_none(), "slot not freed after its last completion and on_close");
        assert!(rig.core.conns.is_empty());
        // A second destroy or a stale completion is harmless.
        rig.core.on_cancel(Token::new(Kind::Cancel, rig.key, gen_of(rig.id.serial())));
        assert_eq!(rig.closes, 1);
        orders.len()
    });
}

/// The peer half-closes while our graceful close is flushing: its EOF, our send's
/// completions and the cancel may interleave. An EOF destroys (as Workerman's does: the rest
/// of the send buffer is dropped); on_close comes exactly once, and what the peer read is a
/// prefix of what was sent: no byte twice, none out of order.
#[test]
fn peer_eof_racing_a_flushing_close_closes_once() {
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    for_every_order(|which| {
        let mut rig = Rig::new(64, 4096);
        assert_eq!(rig.core.send(rig.key, &body, Enc::Raw), SendStatus::Queued);
        rig.core.close(rig.key, None);
        assert_eq!(rig.core.send(rig.key, b"late", Enc::Raw), SendStatus::Failed, "closing refuses sends");
        rig.peer.shutdown(std::net::Shutdown::Write).unwrap();
        let mut peer = rig.peer.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let mut received = Vec::new();
            let _ = peer.read_to_end(&mut received);
            received
        });
        let cqes = rig.collect(|a| terminal_recv(a) && count(a, Kind::Send) >= 1);
        let n = feed(&mut rig, &cqes, which);
        rig.run_until("closed", |r| r.conn().is_none());
        assert_eq!(rig.closes, 1);
        let received = reader.join().unwrap();
        assert!(received.len() <= body.len() && received == body[..received.len()], "bytes repeated or reordered");
        n
    });
}

#[test]
fn every_protocol_here_is_the_raw_one() {
    // The rig feeds raw bytes: a protocol change would make the byte checks above meaningless.
    assert_eq!(config(2, 512, false).protocol.name(), ringman_protocols::Raw.name());
}

/// The wake-up read completed and its CQE was moved aside (`early`) by a submit that met a
/// full completion queue, just as the loop stopped: quiesce must see it there and return,
/// not wait for a completion that already came.
#[test]
fn quiesce_finds_a_wake_completion_moved_aside() {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut rig = Rig::new(64, 4096);
        rig.core.arm_wake();
        assert!(mailbox::post(rig.thread, Cmd::PauseAccept));
        let wake = rig.collect(|a| count(a, Kind::Wake) == 1);
        rig.core.early.extend(wake);
        rig.core.quiesce();
        tx.send(rig.core.wake_armed).unwrap();
    });
    let still_armed = rx.recv_timeout(PATIENCE).expect("quiesce hung");
    assert!(!still_armed);
}

/// A stop that finds the submission queue full still cancels the multishot accept (through
/// `push`, which submits to make room) instead of dropping the cancel and waiting forever
/// for the accept to end.
#[test]
fn stop_with_a_full_submission_queue_still_ends_the_accept() {
    let (thread, mailbox) = mailbox::register().expect("thread id");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let slot = ListenerSlot::new(Arc::new(crate::addr::ListenSocket::inet(listener.into())));
    let mut core = Core::new(thread, config(64, 4096, false), vec![slot], mailbox, Arc::new(ThreadStats::default()), 0)
        .expect("core");
    core.arm_accept(0);
    core.submit_and_wait(Some(Duration::from_millis(1)));
    let nop = opcode::Nop::new().build().user_data(0);
    // SAFETY: a NOP references no memory.
    while unsafe { core.ring.push(&nop) } {}
    core.begin_stop(Instant::now() + PATIENCE);
    let deadline = Instant::now() + PATIENCE;
    let mut cqes = Vec::new();
    while !core.drained() {
        assert!(Instant::now() < deadline, "the accept was never cancelled: the stop would hang");
        core.submit_and_wait(Some(Duration::from_millis(5)));
        core.reap(&mut cqes);
        for (ud, res, flags) in cqes.drain(..) {
            if let Some(t) = Token::from_u64(ud).filter(|t| t.kind == Kind::Accept) {
                core.on_accept(t.slot as usize, res, flags);
            }
        }
    }
    // The listener closes with the core, its last holder.
    drop(core);
    mailbox::unregister(thread);
}

/// The completion queue overflows while data arrives (thousands of unrelated completions
/// sit unreaped): the kernel keeps the overflow (FEAT_NODROP) and ends the multishot
/// receive with a data completion that lacks `F_MORE`. With a pause's cancel racing it, in
/// every order: the bytes arrive once and in order, and the receive is armed again after the
/// resume.
#[test]
fn cq_overflow_ends_the_multishot_and_loses_nothing() {
    let ended_with_data = std::cell::Cell::new(false);
    for_every_order(|which| {
        let mut rig = Rig::new(64, 4096);
        rig.write(b"<");
        rig.run_until("first byte", |r| r.delivered == b"<");
        // More completions than the CQ holds, none reaped.
        let nop = opcode::Nop::new().build().user_data(0);
        for _ in 0..5 {
            for _ in 0..1024 {
                // SAFETY: a NOP references no memory.
                if !unsafe { rig.core.ring.push(&nop) } {
                    break;
                }
            }
            rig.core.ring.submit().unwrap();
        }
        rig.write(b"overflow");
        // Let the kernel try to post the data while the CQ is full.
        rig.core.ring.submit().unwrap();
        rig.core.pause(rig.key);
        let all = rig.collect(|a| count(a, Kind::Cancel) == 1 && terminal_recv(a));
        let cqes: Vec<Cqe> = all.into_iter().filter(|c| c.0 != 0).collect();
        if cqes.iter().any(|c| kind(c) == Some(Kind::Recv) && c.1 > 0 && !cqueue::more(c.2)) {
            ended_with_data.set(true);
        }
        let n = feed(&mut rig, &cqes, which);
        rig.core.resume(rig.key);
        rig.events();
        rig.write(b">");
        rig.run_until("all bytes", |r| r.delivered.len() >= 10);
        assert_eq!(rig.delivered, b"<overflow>");
        assert!(rig.conn().unwrap().recv_armed);
        n
    });
    // Otherwise this scenario would not reach the path it is named for (the kernel ends a
    // multishot whose CQE met a full queue; seen on 6.18).
    assert!(ended_with_data.get(), "the overflow never ended the multishot with a data completion");
}

// ---------------------------------------------------------------- outgoing connections

/// A core with no connection yet, for dialing.
fn client_core() -> (Core, u16) {
    let (thread, mailbox) = mailbox::register().expect("thread id");
    let core = Core::new(thread, config(64, 4096, false), Vec::new(), mailbox, Arc::new(ThreadStats::default()), 0)
        .expect("core");
    (core, thread)
}

fn dial_to(addr: std::net::SocketAddr, timeout: Duration) -> super::Dial {
    let opts = super::DialOptions { connect_timeout: timeout, bind: None, nodelay: true, keepalive: None };
    super::Dial::new(addr.ip().to_string(), addr.port(), "/".into(), opts, Arc::new(ringman_protocols::Raw), None, None)
}

/// Collects completions from `core` until `enough`, dispatching nothing. Queued events are
/// kept aside meanwhile (the loop delivers them before it waits; a core with events pending
/// does not wait, and under DEFER_TASKRUN completions are only posted by a waiting enter).
fn collect_from(core: &mut Core, enough: impl Fn(&[Cqe]) -> bool) -> Vec<Cqe> {
    let deadline = Instant::now() + PATIENCE;
    let mut all = Vec::new();
    let events = std::mem::take(&mut core.events);
    while !enough(&all) {
        assert!(Instant::now() < deadline, "completions never arrived: {all:?}");
        core.submit_and_wait(Some(Duration::from_millis(5)));
        core.reap(&mut all);
    }
    let mut late = std::mem::replace(&mut core.events, events);
    core.events.append(&mut late);
    all
}

/// Hands a completion of an outgoing connection to the core; returns the events it queued.
fn dispatch_client(core: &mut Core, (ud, res, flags): Cqe) {
    let Some(tok) = Token::from_u64(ud) else { return };
    match tok.kind {
        Kind::Connect => core.on_connect(tok, res),
        Kind::Cancel => core.on_cancel(tok),
        Kind::Recv => assert!(core.on_recv(tok, res, flags).is_none(), "delivery on a closed connection"),
        Kind::Send => core.on_send(tok, res),
        _ => {}
    }
    checked(core);
}

/// Feeds `cqes` to a client core in order `which` (arrival order when `None`) with its
/// events held back, checking after each that the slot outlives it (on_close has not run);
/// returns the number of orders.
fn feed_client(core: &mut Core, id: ConnectionId, cqes: &[Cqe], which: Option<usize>) -> usize {
    let orders = interleavings(cqes);
    let order = which.map_or_else(|| cqes.to_vec(), |i| orders[i].clone());
    let held = std::mem::take(&mut core.events);
    for cqe in order {
        dispatch_client(core, cqe);
        assert!(core.lookup(id).is_some(), "slot freed before on_close ran");
    }
    core.events = held;
    checked(core);
    orders.len()
}

/// Runs the due redial timer of a renewed slot, as the loop does (outside the core borrow,
/// with the core installed); returns the core.
fn fire_redial(mut core: Core) -> Core {
    let due = core.timers.pop_due(Instant::now() + Duration::from_millis(1));
    let (tid, mut redial) = due.expect("the redial timer");
    install(core);
    redial();
    let mut core = uninstall().expect("core");
    drop(core.timers.restore(tid, redial));
    core
}

/// Checks that a client core freed every slot, then drops it and frees its thread index.
fn retire_client(core: Core, thread: u16) {
    checked(&core);
    assert!(core.conns.is_empty(), "slot not freed");
    drop(core);
    mailbox::unregister(thread);
}

/// Counts the events of kinds a client reports, delivering on_close as the runner does.
fn drain_client_events(core: &mut Core, closes: &mut usize, errors: &mut Vec<String>, connects: &mut usize) {
    while let Some(ev) = core.events.pop_front() {
        match ev {
            Event::Close(id) => {
                *closes += 1;
                core.close_delivered(id);
            }
            Event::Error(_, e) => errors.push(e.to_string()),
            Event::Connect(_) => *connects += 1,
            _ => {}
        }
        checked(core);
    }
}

/// The application closes an outgoing connection while its CONNECT is still in flight (the
/// server's accept queue is full, so the handshake waits): the CONNECT's cancelled
/// completion and the cancel's own may come in either order. No on_connect, no on_error,
/// on_close once, and the slot is freed only after both.
#[test]
fn closing_a_connection_whose_connect_is_in_flight_closes_once() {
    // backlog 0: one queued connection fills the accept queue; later SYNs are dropped.
    let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let _fillers: Vec<TcpStream> =
        (0..2).filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()).collect();
    for_every_order(|which| {
        let (mut core, thread) = client_core();
        let id = core.connect(dial_to(addr, PATIENCE)).expect("dial");
        let key = core.lookup(id).unwrap();
        // Submitted and parked: no completion within a moment.
        core.submit_and_wait(Some(Duration::from_millis(20)));
        let mut early = Vec::new();
        core.reap(&mut early);
        assert!(early.is_empty(), "the CONNECT should wait on a full accept queue: {early:?}");
        assert_eq!(core.conns[key].status, Status::Connecting);
        core.close(key, None);
        let cqes = collect_from(&mut core, |a| count(a, Kind::Cancel) == 1 && count(a, Kind::Connect) == 1);
        let orders = feed_client(&mut core, id, &cqes, which);
        let (mut closes, mut errors, mut connects) = (0, Vec::new(), 0);
        drain_client_events(&mut core, &mut closes, &mut errors, &mut connects);
        assert_eq!((closes, connects), (1, 0));
        assert!(errors.is_empty(), "a close asked for is no failure: {errors:?}");
        retire_client(core, thread);
        orders
    });
}

/// The connect timeout fires in the same turn the CONNECT succeeds: the connection is
/// destroyed with CONNECT_FAIL (timed out) before the success is seen, then the success and
/// the cancel come in either order. One on_error, one on_close, no on_connect.
#[test]
fn a_connect_that_succeeds_as_its_timeout_fires_fails_once() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    for_every_order(|which| {
        let (mut core, thread) = client_core();
        let id = core.connect(dial_to(addr, Duration::from_millis(1))).expect("dial");
        let key = core.lookup(id).unwrap();
        let mut cqes = collect_from(&mut core, |a| count(a, Kind::Connect) == 1);
        assert_eq!(cqes[0].1, 0, "loopback connect succeeds");
        // The deadline passed before the completion was handled.
        core.expire_closing(Instant::now() + Duration::from_secs(1));
        assert_eq!(core.conns[key].status, Status::Closed);
        cqes.extend(collect_from(&mut core, |a| count(a, Kind::Cancel) == 1));
        let orders = feed_client(&mut core, id, &cqes, which);
        let (mut closes, mut errors, mut connects) = (0, Vec::new(), 0);
        drain_client_events(&mut core, &mut closes, &mut errors, &mut connects);
        assert_eq!((closes, connects), (1, 0));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("timed out"), "{errors:?}");
        retire_client(core, thread);
        orders
    });
}

/// reconnect() while the connection is up: the destroy's cancel, the receive's end and the
/// renewal after on_close may interleave; the slot (and id) survives, dials again, and the
/// new connection is established once.
#[test]
fn reconnect_renews_the_slot_after_every_completion() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    for_every_order(|which| {
        let (mut core, thread) = client_core();
        let id = core.connect(dial_to(addr, PATIENCE)).expect("dial");
        let key = core.lookup(id).unwrap();
        let first = collect_from(&mut core, |a| count(a, Kind::Connect) == 1);
        for cqe in first {
            dispatch_client(&mut core, cqe);
        }
        assert_eq!(core.conns[key].status, Status::Established);
        let _accepted = listener.accept().unwrap();
        let (mut closes, mut errors, mut connects) = (0, Vec::new(), 0);
        drain_client_events(&mut core, &mut closes, &mut errors, &mut connects);
        assert_eq!(connects, 1);
        assert!(core.reconnect(key, Duration::ZERO));
        let cqes = collect_from(&mut core, |a| count(a, Kind::Cancel) == 1 && terminal_recv(a));
        let orders = interleavings(&cqes);
        let order = which.map_or_else(|| cqes.clone(), |i| orders[i].clone());
        let held = std::mem::take(&mut core.events);
        for cqe in order {
            dispatch_client(&mut core, cqe);
            assert_eq!(core.lookup(id), Some(key), "slot gone before on_close");
            assert_eq!(core.conns[key].status, Status::Closed, "renewed before on_close ran");
        }
        core.events = held;
        drain_client_events(&mut core, &mut closes, &mut errors, &mut connects);
        assert_eq!(closes, 1);
        // on_close ran: the same slot dials again, on the next turn.
        assert_eq!(core.lookup(id), Some(key));
        assert_eq!(core.conns[key].status, Status::Connecting);
        let mut core = fire_redial(core);
        let again = collect_from(&mut core, |a| count(a, Kind::Connect) == 1);
        for cqe in again {
            dispatch_client(&mut core, cqe);
        }
        drain_client_events(&mut core, &mut closes, &mut errors, &mut connects);
        assert_eq!(connects, 2, "established again");
        assert_eq!(core.conns[key].status, Status::Established);
        assert!(errors.is_empty(), "{errors:?}");
        let _second = listener.accept().unwrap();
        core.destroy(key, None);
        for cqe in collect_from(&mut core, |a| count(a, Kind::Cancel) == 1 && terminal_recv(a)) {
            dispatch_client(&mut core, cqe);
        }
        drain_client_events(&mut core, &mut closes, &mut errors, &mut connects);
        assert!(core.conns.is_empty());
        drop(core);
        mailbox::unregister(thread);
        orders.len()
    });
}

/// A name answer for an attempt that a reconnect replaced arrives after the renewal (slow
/// DNS): it is ignored — it would otherwise dial the renewed slot on a second socket and
/// replace the first under a CONNECT still queued. The renewed attempt dials once, when its
/// delay ended and its own answer came.
#[test]
fn a_stale_name_answer_after_a_reconnect_is_ignored() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (mut core, thread) = client_core();
    let opts = super::DialOptions { connect_timeout: PATIENCE, bind: None, nodelay: true, keepalive: None };
    // A name, so the dial waits for the resolver (whose answer this test plays itself).
    let dial = super::Dial::new(
        "slow.name.invalid".into(),
        addr.port(),
        "/".into(),
        opts,
        Arc::new(ringman_protocols::Raw),
        None,
        None,
    );
    let id = core.connect(dial).expect("dial");
    let key = core.lookup(id).unwrap();
    assert!(core.reconnect(key, Duration::ZERO));
    let (mut closes, mut errors, mut connects) = (0, Vec::new(), 0);
    drain_client_events(&mut core, &mut closes, &mut errors, &mut connects);
    assert_eq!(closes, 1);
    assert_eq!(core.conns[key].status, Status::Connecting, "renewed");
    let answer = || Ok(vec![addr]);
    // The first attempt's answer, late: ignored.
    core.on_resolved(id, 0, "slow.name.invalid".into(), addr.port(), answer());
    assert_eq!(core.conns[key].inflight, 0, "a stale answer dialled");
    // The renewed attempt's delay (zero) ends on the next turn, then its answer comes.
    let mut core = fire_redial(core);
    core.on_resolved(id, 1, "slow.name.invalid".into(), addr.port(), answer());
    assert_eq!(core.conns[key].inflight, 1, "one CONNECT");
    core.on_resolved(id, 1, "slow.name.invalid".into(), addr.port(), answer());
    assert_eq!(core.conns[key].inflight, 1, "a repeated answer does not dial again");
    for cqe in collect_from(&mut core, |a| count(a, Kind::Connect) == 1) {
        dispatch_client(&mut core, cqe);
    }
    drain_client_events(&mut core, &mut closes, &mut errors, &mut connects);
    assert_eq!(connects, 1);
    assert!(errors.is_empty(), "{errors:?}");
    core.destroy(key, None);
    for cqe in collect_from(&mut core, |a| count(a, Kind::Cancel) == 1 && terminal_recv(a)) {
        dispatch_client(&mut core, cqe);
    }
    drain_client_events(&mut core, &mut closes, &mut errors, &mut connects);
    assert!(core.conns.is_empty());
    drop(core);
    mailbox::unregister(thread);
}

/// A reconnect delay too long for the clock retires the slot instead of panicking the ring;
/// `cancel_reconnect` during a delay frees the waiting slot without dialling.
#[test]
fn reconnect_delays_that_cannot_or_should_not_run_free_the_slot() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    for cancel in [false, true] {
        let (mut core, thread) = client_core();
        let id = core.connect(dial_to(addr, PATIENCE)).expect("dial");
        let key = core.lookup(id).unwrap();
        for cqe in collect_from(&mut core, |a| count(a, Kind::Connect) == 1) {
            dispatch_client(&mut core, cqe);
        }
        let after = if cancel { Duration::from_secs(3600) } else { Duration::MAX };
        assert!(core.reconnect(key, after));
        for cqe in collect_from(&mut core, |a| count(a, Kind::Cancel) == 1 && terminal_recv(a)) {
            dispatch_client(&mut core, cqe);
        }
        let (mut closes, mut errors, mut connects) = (0, Vec::new(), 0);
        drain_client_events(&mut core, &mut closes, &mut errors, &mut connects);
        assert_eq!(closes, 1);
        if cancel {
            assert_eq!(core.lookup(id), Some(key), "renewed, waiting for its delay");
            core.cancel_reconnect(key);
            assert_eq!(core.timers.len(), 0, "the redial timer is gone");
        }
        assert!(core.conns.is_empty(), "slot freed");
        assert_eq!(core.closing, 0);
        assert_eq!(core.stats.connections.get(), 0);
        drain_client_events(&mut core, &mut closes, &mut errors, &mut connects);
        assert_eq!(closes, 1, "no second on_close");
        drop(core);
        mailbox::unregister(thread);
    }
}

/// Closing a connection during its reconnect delay ends that attempt (one more on_close)
/// and takes its redial timer with it: a `cancel_reconnect` afterwards finds nothing to undo
/// (the counters are not decremented twice), and a `reconnect` afterwards is honoured once
/// that on_close ran.
#[test]
fn closing_during_a_reconnect_delay_drops_the_redial_and_keeps_the_counts() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    for then_reconnect in [false, true] {
        let (mut core, thread) = client_core();
        let id = core.connect(dial_to(addr, PATIENCE)).expect("dial");
        let key = core.lookup(id).unwrap();
        for cqe in collect_from(&mut core, |a| count(a, Kind::Connect) == 1) {
            dispatch_client(&mut core, cqe);
        }
        let _accepted = listener.accept().unwrap();
        let (mut closes, mut errors, mut connects) = (0, Vec::new(), 0);
        assert!(core.reconnect(key, Duration::from_secs(3600)));
        for cqe in collect_from(&mut core, |a| count(a, Kind::Cancel) == 1 && terminal_recv(a)) {
            dispatch_client(&mut core, cqe);
        }
        drain_client_events(&mut core, &mut closes, &mut errors, &mut connects);
        assert_eq!((closes, connects), (1, 1));
        assert_eq!(core.conns[key].status, Status::Connecting, "renewed, waiting for its delay");
        assert_eq!(core.timers.len(), 1, "the redial timer");
        // The application closes it while it waits, then (in the same callback) cancels.
        core.close(key, None);
        checked(&core);
        assert_eq!(core.timers.len(), 0, "the redial timer went with the attempt");
        core.cancel_reconnect(key);
        checked(&core);
        assert_eq!(core.closing, 0);
        if then_reconnect {
            assert!(core.reconnect(key, Duration::ZERO), "asked again after the close");
        }
        drain_client_events(&mut core, &mut closes, &mut errors, &mut connects);
        assert_eq!(closes, 2, "the waiting attempt's on_close");
        if !then_reconnect {
            assert!(core.conns.is_empty(), "slot freed");
            retire_client(core, thread);
            continue;
        }
        assert_eq!(core.lookup(id), Some(key), "renewed again");
        let mut core = fire_redial(core);
        checked(&core);
        for cqe in collect_from(&mut core, |a| count(a, Kind::Connect) == 1) {
            dispatch_client(&mut core, cqe);
        }
        drain_client_events(&mut core, &mut closes, &mut errors, &mut connects);
        assert_eq!(connects, 2, "the reconnect asked after the close dialled");
        assert!(errors.is_empty(), "{errors:?}");
        core.destroy(key, None);
        for cqe in collect_from(&mut core, |a| count(a, Kind::Cancel) == 1 && terminal_recv(a)) {
            dispatch_client(&mut core, cqe);
        }
        drain_client_events(&mut core, &mut closes, &mut errors, &mut connects);
        retire_client(core, thread);
    }
}

/// Sends held while connecting count against the limit like any others: the one that
/// reaches it fires on_buffer_full (while still connecting, as in Workerman), the next is
/// refused, and once the connection is up the held bytes throttle its receiving until they
/// drained, then on_buffer_drain fires, with no second on_buffer_full.
#[test]
fn held_sends_fill_the_buffer_and_drain_through_the_limit_logic() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (mut core, thread) = client_core();
    let id = core.connect(dial_to(addr, PATIENCE)).expect("dial");
    let key = core.lookup(id).unwrap();
    core.conns[key].max_send_buffer_size = 100;
    let fulls = |core: &Core| core.events.iter().filter(|e| matches!(e, Event::BufferFull(_))).count();
    assert_eq!(core.send(key, &[b'a'; 60], Enc::Raw), SendStatus::Queued);
    assert_eq!(fulls(&core), 0);
    assert_eq!(core.send(key, &[b'b'; 60], Enc::Raw), SendStatus::Queued, "below the limit before it: taken");
    assert_eq!(fulls(&core), 1, "on_buffer_full while connecting");
    assert_eq!(core.send(key, b"c", Enc::Raw), SendStatus::Failed, "at the limit: refused");
    assert!(core
        .events
        .iter()
        .any(|e| matches!(e, Event::Error(_, b) if matches!(**b, ConnError::SendBufferFull { .. }))));
    checked(&core);
    let connected = collect_from(&mut core, |a| count(a, Kind::Connect) == 1);
    for cqe in connected {
        dispatch_client(&mut core, cqe);
    }
    let c = &core.conns[key];
    assert_eq!(c.status, Status::Established);
    assert!(c.buffer_full && c.throttled && c.paused, "the held bytes throttle like any full buffer");
    assert_eq!(fulls(&core), 1, "no second on_buffer_full");
    let deadline = Instant::now() + PATIENCE;
    while core.conns[key].sendq.len > 0 || core.conns[key].send_inflight {
        assert!(Instant::now() < deadline, "the held bytes never went out");
        let done = collect_from(&mut core, |a| count(a, Kind::Send) >= 1);
        for cqe in done {
            dispatch_client(&mut core, cqe);
        }
    }
    let (mut peer, _) = listener.accept().unwrap();
    let mut got = vec![0u8; 120];
    peer.set_read_timeout(Some(PATIENCE)).unwrap();
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got[..60], &[b'a'; 60]);
    assert_eq!(&got[60..], &[b'b'; 60]);
    let c = &core.conns[key];
    assert!(!c.buffer_full && !c.throttled && !c.paused, "drained: resumed");
    assert!(core.events.iter().any(|e| matches!(e, Event::BufferDrain(_))), "on_buffer_drain");
    assert!(core.events.iter().any(|e| matches!(e, Event::Resume(_))));
    core.destroy(key, None);
    let (mut closes, mut errors, mut connects) = (0, Vec::new(), 0);
    drain_client_events(&mut core, &mut closes, &mut errors, &mut connects);
    for cqe in collect_from(&mut core, |a| count(a, Kind::Cancel) == 1) {
        dispatch_client(&mut core, cqe);
    }
    drain_client_events(&mut core, &mut closes, &mut errors, &mut connects);
    retire_client(core, thread);
}

/// The peer sends its last bytes and closes while our side is in a WebSocket close
/// handshake (or a graceful close) with receiving paused: its data, its EOF and the pause's
/// cancel complete in any order. The bytes (for WebSocket, the peer's close frame among
/// them) are kept for the resume and delivered then; the connection closes once, after.
#[test]
fn an_eof_while_paused_in_a_close_keeps_what_came_before_it() {
    for ws_closing in [true, false] {
        for_every_order(|which| {
            let mut rig = Rig::new(64, 4096);
            rig.write(b"<");
            rig.run_until("first byte", |r| r.delivered == b"<");
            if ws_closing {
                let now = rig.core.stamp;
                rig.core.conns[rig.key].ws = Some(slot::WsSession::new(now, None));
                rig.core.start_ws_close(rig.key);
                assert_eq!(rig.conn().unwrap().status, Status::WsClosing);
            } else {
                // A graceful close still flushing: a send parked on a full socket.
                let big = vec![b'x'; 8 << 20];
                assert_eq!(rig.core.send(rig.key, &big, Enc::Raw), SendStatus::Queued);
                rig.core.close(rig.key, None);
                assert_eq!(rig.conn().unwrap().status, Status::Closing);
            }
            rig.write(b"last words>");
            rig.peer.shutdown(std::net::Shutdown::Write).unwrap();
            // The data and the EOF are in the kernel's hands before the pause's cancel.
            let mut cqes =
                rig.collect(|a| a.iter().any(|c| kind(c) == Some(Kind::Recv) && c.1 == 0 && !cqueue::more(c.2)));
            cqes.retain(|c| kind(c) == Some(Kind::Recv));
            rig.core.user_pause(rig.key);
            cqes.extend(rig.collect(|a| count(a, Kind::Cancel) == 1));
            let n = feed(&mut rig, &cqes, which);
            assert_eq!(rig.closes, 0, "closed with bytes undelivered");
            assert_eq!(rig.delivered, b"<", "delivered while paused");
            rig.core.resume(rig.key);
            rig.events();
            assert_eq!(rig.delivered, b"<last words>", "the bytes before the EOF were dropped");
            // The socket reports the EOF again: now it closes.
            if ws_closing {
                rig.run_until("closed", |r| r.closes == 1);
            } else {
                // (Its flush never ends: the peer does not read. Cut it off.)
                rig.core.destroy(rig.key, None);
                rig.run_until("closed", |r| r.closes == 1);
            }
            checked(&rig.core);
            n
        });
    }
}

/// Batched sends that reach [`send::FLUSH_BYTES`] within a turn are on the wire before the
/// turn ends (no `submit_and_wait` in between): the peer reads them at once. A smaller batch
/// waits for the turn's end, as before.
#[test]
fn a_turn_that_queues_bulk_data_sends_it_before_the_turn_ends() {
    let mut rig = Rig::new(16, 8192);
    rig.peer.set_nonblocking(true).unwrap();
    let small = vec![b's'; 1000];
    assert_eq!(rig.core.send(rig.key, &small, Enc::Raw), SendStatus::Queued);
    let mut buf = vec![0u8; 256 * 1024];
    let nothing = rig.peer.read(&mut buf);
    assert!(
        matches!(&nothing, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a small batch left before its turn ended: {nothing:?}"
    );
    let bulk: Vec<u8> = (0..send::FLUSH_BYTES).map(|i| (i % 251) as u8).collect();
    assert_eq!(rig.core.send(rig.key, &bulk, Enc::Raw), SendStatus::Queued);
    // Only reads from here: the core is not entered again.
    let want = [&small[..], &bulk[..]].concat();
    let mut got = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while got.len() < want.len() {
        match rig.peer.read(&mut buf) {
            Ok(0) => panic!("the connection closed"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "only {} of {} bytes left within the turn", got.len(), want.len());
                std::thread::yield_now();
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(got == want, "the bytes that left are not the two sends in order");
    checked(&rig.core);
}
