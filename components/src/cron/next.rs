//! Next-fire computation: the first matching wall-clock time of a time zone, with its
//! daylight-saving gaps and repeats (rules in the module docs).
//!
//! Instants are whole seconds since the Unix epoch; "naive" values are wall-clock times
//! counted the same way (the wall clock read as if it were UTC), so a zone's offset is
//! `naive - instant`.

use chrono::{DateTime, Datelike, NaiveDate, Offset, TimeZone, Timelike, Utc};

use super::expr::Schedule;

/// The time zone a schedule's wall-clock times are read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Zone {
    /// The process's local zone: the `TZ` environment variable, else `/etc/localtime`
    /// (through `chrono::Local`).
    #[default]
    Local,
    /// UTC: no daylight saving.
    Utc,
}

const DAY: i64 = 86_400;
/// How far ahead a match is looked for; every valid expression matches within 8 years
/// (a 29 February), so this only ends the search for instants near the calendar's end.
const HORIZON_YEARS: i32 = 10;

/// The offset (seconds east of UTC) of a zone at an instant.
pub(crate) trait Offsets {
    fn offset_at(&self, t: i64) -> i64;
}

impl<Tz: TimeZone> Offsets for Tz {
    fn offset_at(&self, t: i64) -> i64 {
        match DateTime::from_timestamp(t, 0) {
            Some(d) => i64::from(self.offset_from_utc_datetime(&d.naive_utc()).fix().local_minus_utc()),
            None => 0,
        }
    }
}

impl Schedule {
    /// The first fire time strictly after `after` (whole seconds: a fraction of a second in
    /// `after` counts as the second it is in), in `zone`'s wall clock. `None` only when no
    /// match lies within ten years (near the end of chrono's calendar).
    ///
    /// ```
    /// use chrono::{TimeZone, Utc};
    /// use ringman_components::cron::{Schedule, Zone};
    /// let s = Schedule::parse("0 30 9 * * MON-FRI").unwrap();
    /// let friday = Utc.with_ymd_and_hms(2024, 3, 8, 10, 0, 0).unwrap();
    /// let monday = Utc.with_ymd_and_hms(2024, 3, 11, 9, 30, 0).unwrap();
    /// assert_eq!(s.next_after(Zone::Utc, friday), Some(monday));
    /// ```
    pub fn next_after(&self, zone: Zone, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t = match zone {
            Zone::Utc => self.next_utc(after.timestamp()),
            Zone::Local => self.next_in(&chrono::Local, after.timestamp()),
        }?;
        DateTime::from_timestamp(t, 0)
    }

    fn next_utc(&self, after: i64) -> Option<i64> {
        self.next_naive(after.checked_add(1)?)
    }

    /// The first fire instant after `after` in a zone with offsets `tz`.
    pub(crate) fn next_in(&self, tz: &impl Offsets, after: i64) -> Option<i64> {
        let mut t = after.checked_add(1)?;
        // Each turn either answers or moves `t` past one offset change.
        for _ in 0..1000 {
            let off = tz.offset_at(t);
            let mut lower = t + off;
            if !self.every_hour() {
                // Inside the second pass of a repeated hour: its wall-clock times already
                // had their turn in the first pass.
                let before = tz.offset_at(t - DAY);
                if before > off {
                    if let Some(fold) = first_change(tz, t - DAY, t, before) {
                        lower = lower.max(fold + before);
                    }
                }
            }
            let n = self.next_naive(lower)?;
            let c = n - off;
            match first_change(tz, t, c, off) {
                None => return Some(c),
                Some(e) => {
                    let after_change = tz.offset_at(e);
                    let gap_end = e + after_change;
                    if after_change > off && n < gap_end && !self.every_hour() {
                        // `n` falls in a spring-forward gap: move it forward by whole
                        // minutes to the first wall-clock time that exists (croniter's rule).
                        let minutes = (gap_end - n + 59).div_euclid(60);
                        return Some(n + 60 * minutes - after_change);
                    }
                    // Past the change: an every-hour schedule's times in a gap never
                    // happen, so the search goes on from the gap's end.
                    t = e;
                }
            }
        }
        None
    }

    /// The first matching wall-clock time at or after `from` (both naive seconds).
    pub(crate) fn next_naive(&self, from: i64) -> Option<i64> {
        let start = DateTime::from_timestamp(from, 0)?.naive_utc();
        let limit = start.year() + HORIZON_YEARS;
        let (mut y, mut mo, mut d) = (start.year(), start.month(), start.day());
        let (mut h, mut mi, mut s) = (start.hour(), start.minute(), start.second());
        loop {
            if y > limit {
                return None;
            }
            match next_bit(self.months, mo) {
                Some(m) if m == mo => {}
                Some(m) => (mo, d, h, mi, s) = (m, 1, 0, 0, 0),
                None => {
                    (y, mo, d, h, mi, s) = (y + 1, 1, 1, 0, 0, 0);
                    continue;
                }
            }
            if d > days_in_month(y, mo) {
                (mo, d, h, mi, s) = (mo + 1, 1, 0, 0, 0);
                if mo > 12 {
                    (y, mo) = (y + 1, 1);
                }
                continue;
            }
            if !self.day_matches(y, mo, d) {
                (d, h, mi, s) = (d + 1, 0, 0, 0);
                continue;
            }
            match next_bit(self.hours, h) {
                Some(x) if x == h => {}
                Some(x) => (h, mi, s) = (x, 0, 0),
                None => {
                    (d, h, mi, s) = (d + 1, 0, 0, 0);
                    continue;
                }
            }
            match next_bit(self.minutes, mi) {
                Some(x) if x == mi => {}
                Some(x) => (mi, s) = (x, 0),
                None => {
                    (h, mi, s) = (h + 1, 0, 0);
                    if h > 23 {
                        (d, h) = (d + 1, 0);
                    }
                    continue;
                }
            }
            match next_bit(self.seconds, s) {
                Some(x) => s = x,
                None => {
                    (mi, s) = (mi + 1, 0);
                    if mi > 59 {
                        (h, mi) = (h + 1, 0);
                        if h > 23 {
                            (d, h) = (d + 1, 0);
                        }
                    }
                    continue;
                }
            }
            let date = NaiveDate::from_ymd_opt(y, mo, d)?;
            return Some(date.and_hms_opt(h, mi, s)?.and_utc().timestamp());
        }
    }

    fn day_matches(&self, y: i32, mo: u32, d: u32) -> bool {
        let dom = self.dom & (1 << d) != 0;
        let dow = match NaiveDate::from_ymd_opt(y, mo, d) {
            Some(date) => self.dow & (1 << date.weekday().num_days_from_sunday()) != 0,
            None => false,
        };
        match (self.dom_star, self.dow_star) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            // The day-of-month / day-of-week OR rule.
            (false, false) => dom || dow,
        }
    }
}

/// The first instant in `(from, to]` whose offset is not `off` (the offset at `from`),
/// probing a day at a time and bisecting the day it changed in. Offsets are assumed not
/// to change twice within a day.
fn first_change(tz: &impl Offsets, from: i64, to: i64, off: i64) -> Option<i64> {
    let mut lo = from;
    while lo < to {
        let hi = (lo + DAY).min(to);
        if tz.offset_at(hi) != off {
            let (mut a, mut b) = (lo, hi);
            while b - a > 1 {
                let mid = a + (b - a) / 2;
                if tz.offset_at(mid) == off {
                    a = mid;
                } else {
                    b = mid;
                }
            }
            return Some(b);
        }
        lo = hi;
    }
    None
}

/// The smallest set bit of `set` at or above `from`.
fn next_bit(set: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let above = set & !((1u64 << from) - 1);
    (above != 0).then(|| above.trailing_zeros())
}

fn days_in_month(y: i32, mo: u32) -> u32 {
    match mo {
        2 if NaiveDate::from_ymd_opt(y, 2, 29).is_some() => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}
