//! Cron jobs on a real ring: they fire, a panicking job keeps its schedule, `remove` stops
//! a job (from another thread, and from inside the job itself).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use crossbeam_channel::{unbounded, Receiver};
use ringman::components::cron::{CronError, Crontab, Zone};
use ringman::{current_ring, run_on_ring, Server, Worker};

/// What the jobs report to the test thread.
#[derive(Debug)]
enum Event {
    Started {
        ring: u16,
        every_second: Crontab,
    },
    /// A firing of the job named, at this wall-clock second.
    Fired(&'static str, u64),
}

fn second_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Waits for `n` firings of `name` (counting those already in `seen`), keeping the other
/// events in `seen`.
fn await_fires(rx: &Receiver<Event>, name: &str, n: usize, seen: &mut Vec<Event>) -> Vec<u64> {
    // Firings that arrived while waiting for another job count too.
    let mut at = Vec::new();
    seen.retain(|e| match e {
        Event::Fired(job, s) if *job == name => {
            at.push(*s);
            false
        }
        _ => true,
    });
    // One deadline for all: the other jobs' events must not keep the wait alive.
    let deadline = std::time::Instant::now() + PATIENCE;
    while at.len() < n {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left).unwrap_or_else(|_| panic!("{name} fired {} of {n} times", at.len())) {
            Event::Fired(job, s) if job == name => at.push(s),
            other => seen.push(other),
        }
    }
    at
}

#[test]
fn cron_jobs_fire_survive_panics_and_stop_when_removed() {
    let (tx, rx) = unbounded::<Event>();
    let every_second_count = Arc::new(AtomicUsize::new(0));
    let self_removing_count = Arc::new(AtomicUsize::new(0));
    let (c1, c2) = (every_second_count.clone(), self_removing_count.clone());
    let removals: Arc<std::sync::Mutex<Vec<bool>>> = Arc::default();
    let r = removals.clone();
    let mut w = Worker::<()>::without_listener();
    w.count = 1;
    w.on_worker_start(move |_, _| {
        let (c1, c2, r) = (c1.clone(), c2.clone(), r.clone());
        let t = tx.clone();
        let every_second = Crontab::new("*/1 * * * * *", move || {
            c1.fetch_add(1, Ordering::SeqCst);
            let _ = t.send(Event::Fired("every second", second_now()));
        })
        .unwrap();
        let t = tx.clone();
        Crontab::with_zone("* * * * * *", Zone::Utc, move || {
            let _ = t.send(Event::Fired("panicking", second_now()));
            panic!("a job that always panics");
        })
        .unwrap();
        let t = tx.clone();
        Crontab::new("* * * * * *", move || {
            let _ = t.send(Event::Fired("witness", second_now()));
        })
        .unwrap();
        // A job that removes itself on its second run.
        let me: Arc<std::sync::Mutex<Option<Crontab>>> = Arc::default();
        let (me2, r) = (me.clone(), r.clone());
        let job = Crontab::new("* * * * * *", move || {
            if c2.fetch_add(1, Ordering::SeqCst) == 1 {
                let handle = me2.lock().unwrap().take().expect("set at creation");
                // The second call finds nothing left to remove.
                r.lock().unwrap().extend([handle.remove(), handle.remove()]);
            }
        })
        .unwrap();
        *me.lock().unwrap() = Some(job);
        let _ = tx.send(Event::Started { ring: current_ring().unwrap(), every_second });
    });
    let _srv = Server::new().add(w).start().unwrap();

    let (ring, every_second) = match rx.recv_timeout(PATIENCE).expect("the worker starts") {
        Event::Started { ring, every_second } => (ring, every_second),
        other => panic!("expected the start, got {other:?}"),
    };
    assert_eq!(every_second.schedule().as_str(), "*/1 * * * * *");
    let mut seen = Vec::new();
    // Each firing in its own second: no double firing, nothing replayed.
    let at = await_fires(&rx, "every second", 2, &mut seen);
    assert!(at[0] < at[1], "two firings in one second: {at:?}");
    // The panicking job keeps its schedule.
    let at = await_fires(&rx, "panicking", 3, &mut seen);
    assert!(at[0] < at[1] && at[1] < at[2], "{at:?}");

    // Remove from this thread (posted to the ring), then ask the ring for the count: the
    // mailbox keeps the order, so the answer comes after the removal.
    assert!(every_second.remove(), "the ring runs");
    let c = every_second_count.clone();
    let t = {
        let (tx2, rx2) = unbounded::<usize>();
        assert!(run_on_ring(ring, move || tx2.send(c.load(Ordering::SeqCst)).unwrap()));
        rx2
    };
    let removed_at = t.recv_timeout(PATIENCE).expect("the ring answers");
    // Only witness firings from now on count.
    seen.clear();
    // Two more witness firings: the removed job had two chances to fire and did not.
    await_fires(&rx, "witness", 2, &mut seen);
    await_fires(&rx, "witness", 1, &mut seen);
    assert_eq!(every_second_count.load(Ordering::SeqCst), removed_at, "the removed job fired again");
    assert_eq!(self_removing_count.load(Ordering::SeqCst), 2, "the job that removed itself fired again");
    assert_eq!(*removals.lock().unwrap(), [true, false], "remove() inside the job, twice");
}

#[test]
fn cron_refuses_bad_expressions_and_threads_without_a_ring() {
    assert_eq!(Crontab::new("* * * * * * *", || {}).unwrap_err(), CronError::FieldCount { found: 7 });
    assert_eq!(Crontab::new("* * * * *", || {}).unwrap_err(), CronError::NotOnRingThread);
}
