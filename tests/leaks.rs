//! Descriptor and slot leak check, alone in its binary so no other test opens descriptors
//! while it counts them.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use crossbeam_channel::unbounded;

#[test]
fn connect_close_cycles_leak_nothing() {
    let closes = Arc::new(AtomicUsize::new(0));
    let mut w = echo_worker("text://127.0.0.1:0", 2);
    let c2 = closes.clone();
    w.on_close(move |_, _| {
        c2.fetch_add(1, Ordering::Relaxed);
    });
    let (srv, addr) = start(w);
    // Warm up once so lazily opened descriptors are counted in the baseline.
    drop(connect(addr));
    wait_until("the warm-up connection is closed", || closes.load(Ordering::Relaxed) >= 1);
    let before = open_fds();
    for i in 0..10_000 {
        let mut s = connect(addr);
        if i % 10 == 0 {
            write_all(&mut s, b"x\n");
            assert_eq!(read_exact(&mut s, 2), b"x\n");
        }
    }
    // Every connection must have been closed by the server: wait for the count, then check
    // descriptors and slab slots.
    wait_until("every connection is closed", || closes.load(Ordering::Relaxed) >= 10_001);
    assert_eq!(open_fds(), before);
    let (tx, rx) = unbounded();
    srv.worker(0).on_each_thread(move || {
        tx.send(ringman::ring_info().unwrap().connections).unwrap();
    });
    let mut slots = 0;
    for _ in 0..2 {
        slots += rx.recv_timeout(PATIENCE).unwrap();
    }
    assert_eq!(slots, 0, "every slab slot is freed");
}
