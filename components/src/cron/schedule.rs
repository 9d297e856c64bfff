//! Jobs on a ring: one one-shot engine timer per job, armed for its next fire time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use ringman_engine::{current_ring, run_on_ring, Timer, TimerId};

use super::expr::{CronError, Schedule};
use super::next::Zone;

/// The longest a job's timer sleeps before the wall clock is read again, so a stepped
/// clock (NTP, an operator) delays a firing by at most this much.
const MAX_WAIT: Duration = Duration::from_secs(3600);

type Job = Rc<RefCell<Box<dyn FnMut()>>>;

struct Entry {
    schedule: Schedule,
    zone: Zone,
    job: Job,
    timer: Option<TimerId>,
    due: Option<i64>,
}

thread_local! {
    static JOBS: RefCell<HashMap<u64, Entry>> = RefCell::new(HashMap::new());
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A job run at the times of a cron expression, on the ring thread that created it
/// (Workerman's `Workerman\Crontab\Crontab`).
///
/// The handle is `Send`: [`Crontab::remove`] works from any thread. Dropping it does not
/// stop the job (as in Workerman, where the job lives on after the object goes out of
/// scope); call [`Crontab::remove`].
#[derive(Debug, Clone)]
pub struct Crontab {
    id: u64,
    ring: u16,
    schedule: Schedule,
    zone: Zone,
}

impl Crontab {
    /// Runs `job` at the times of `expr` in the local time zone ([`Zone::Local`]).
    /// Call it on a ring thread (in a worker callback or a task).
    ///
    /// ```no_run
    /// use ringman_components::cron::Crontab;
    /// // In `on_worker_start`: every 5 seconds, and at 02:30 every night.
    /// Crontab::new("*/5 * * * * *", || println!("tick")).unwrap();
    /// Crontab::new("30 2 * * *", || println!("nightly")).unwrap();
    /// ```
    pub fn new(expr: &str, job: impl FnMut() + 'static) -> Result<Crontab, CronError> {
        Crontab::with_zone(expr, Zone::Local, job)
    }

    /// Runs `job` at the times of `expr` read in `zone`.
    pub fn with_zone(expr: &str, zone: Zone, job: impl FnMut() + 'static) -> Result<Crontab, CronError> {
        let schedule = Schedule::parse(expr)?;
        let ring = current_ring().ok_or(CronError::NotOnRingThread)?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            schedule: schedule.clone(),
            zone,
            job: Rc::new(RefCell::new(Box::new(job))),
            timer: None,
            due: None,
        };
        JOBS.with(|j| j.borrow_mut().insert(id, entry));
        arm(id, now());
        Ok(Crontab { id, ring, schedule, zone })
    }

    /// Stops the job: it does not fire again (a firing in progress on its ring finishes).
    /// From another thread the removal is posted to the job's ring and happens there
    /// between completions. Returns false if the job was already removed (or, from another
    /// thread, if its ring no longer runs).
    pub fn remove(&self) -> bool {
        if current_ring() == Some(self.ring) {
            remove_here(self.id)
        } else {
            let id = self.id;
            run_on_ring(self.ring, move || {
                remove_here(id);
            })
        }
    }

    /// Stops every job created on the calling ring thread; returns how many there were.
    pub fn remove_all() -> usize {
        let all: Vec<Entry> = JOBS.with(|j| j.borrow_mut().drain().map(|(_, e)| e).collect());
        for e in &all {
            if let Some(t) = e.timer {
                Timer::del(t);
            }
        }
        all.len()
    }

    /// The job's schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The zone its times are read in.
    pub fn zone(&self) -> Zone {
        self.zone
    }

    /// The instant its timer is armed for; `None` off its ring, after [`Crontab::remove`],
    /// or when the expression has no further time.
    pub fn next_fire(&self) -> Option<DateTime<Utc>> {
        let due = JOBS.with(|j| j.borrow().get(&self.id).and_then(|e| e.due))?;
        DateTime::from_timestamp(due, 0)
    }
}

fn remove_here(id: u64) -> bool {
    let entry = JOBS.with(|j| j.borrow_mut().remove(&id));
    match entry {
        Some(e) => {
            if let Some(t) = e.timer {
                Timer::del(t);
            }
            // `e` (and the job's captures) drop here, outside the registry's borrow.
            drop(e);
            true
        }
        None => false,
    }
}

/// The wall clock, in nanoseconds since the epoch.
fn now() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// Computes the job's next time strictly after the wall-clock instant `now_ns` and arms
/// its timer for it.
fn arm(id: u64, now_ns: i128) {
    let after_s = now_ns.div_euclid(1_000_000_000) as i64;
    let plan = JOBS.with(|j| {
        let j = j.borrow();
        let e = j.get(&id)?;
        let after = DateTime::from_timestamp(after_s, 0)?;
        Some(e.schedule.next_after(e.zone, after).map(|d| d.timestamp()))
    });
    let Some(next) = plan else { return };
    let Some(due) = next else {
        log::warn!("cron job {id}: its expression has no further fire time; it stays idle");
        JOBS.with(|j| {
            if let Some(e) = j.borrow_mut().get_mut(&id) {
                (e.timer, e.due) = (None, None);
            }
        });
        return;
    };
    let wait_ns = (i128::from(due) * 1_000_000_000 - now_ns).max(0);
    let wait = Duration::from_nanos(wait_ns.min(u64::MAX as i128) as u64).min(MAX_WAIT);
    match Timer::add(wait, false, move || fire(id)) {
        Ok(timer) => JOBS.with(|j| {
            if let Some(e) = j.borrow_mut().get_mut(&id) {
                (e.timer, e.due) = (Some(timer), Some(due));
            }
        }),
        Err(err) => log::error!("cron job {id}: cannot arm its timer: {err}"),
    }
}

/// A job's timer fired: run it if its time has come (else the wall clock moved, or the
/// wait was capped: re-arm), after arming the next time, so a panic or a `remove` in the
/// job leaves the schedule consistent.
fn fire(id: u64) {
    let found = JOBS.with(|j| {
        let mut j = j.borrow_mut();
        let e = j.get_mut(&id)?;
        e.timer = None;
        Some((e.due, e.job.clone(), e.schedule.as_str().to_string()))
    });
    let Some((due, job, expr)) = found else { return };
    let now_ns = now();
    let due_ns = due.map_or(i128::MAX, |d| i128::from(d) * 1_000_000_000);
    if now_ns < due_ns {
        arm(id, now_ns);
        return;
    }
    // Missed times (a busy ring, a clock stepped forward) are not replayed: the next time
    // is the first one after now.
    arm(id, now_ns);
    let ran = catch_unwind(AssertUnwindSafe(|| (job.borrow_mut())()));
    if let Err(panic) = ran {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string payload".into());
        log::error!("cron job {id} ({expr}) panicked: {msg}; its schedule continues");
    }
}
