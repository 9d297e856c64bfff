//! Cron on the rings (Workerman's `workerman/crontab`): jobs run at the times of a crontab
//! expression, with second resolution, in a configured time zone.
//!
//! ```no_run
//! use ringman_components::cron::{Crontab, Zone};
//! // On a ring thread (e.g. in `on_worker_start`):
//! let every5 = Crontab::new("*/5 * * * * *", || println!("every 5 seconds")).unwrap();
//! Crontab::with_zone("0 30 2 * * MON-FRI", Zone::Utc, || println!("02:30 UTC on weekdays")).unwrap();
//! every5.remove();
//! ```
//!
//! # Grammar
//!
//! Six fields `second minute hour day-of-month month day-of-week`, or five without the
//! seconds (the job then fires at second 0), separated by whitespace. Each field is a
//! comma-separated list of elements:
//!
//! | element | means |
//! |---|---|
//! | `*` | every value |
//! | `7` | one value |
//! | `1-5` | a range, both ends included |
//! | `*/15`, `1-30/7`, `5/20` | every n-th value of all values, of a range, or from a value to the field's end |
//!
//! Bounds: second and minute 0-59, hour 0-23, day of month 1-31, month 1-12, day of week
//! 0-7 (0 and 7 are Sunday). Months may be written `JAN`-`DEC` and days of the week
//! `SUN`-`SAT`, in any case, also as range ends (`MON-FRI`) and step starts (`MON/2`). In
//! the day-of-week field `*` and `a/n` stop at Saturday (`*/2` is Sun, Tue, Thu, Sat),
//! while an explicit range may end at 7 (`5-7` is Fri, Sat, Sun).
//!
//! **Day of month and day of week.** When both fields restrict the day, a day matches if
//! it matches *either* (Vixie cron's OR rule, croniter's default): `0 0 13 * FRI` fires on
//! every 13th and on every Friday. When only one restricts, that one decides. A field
//! counts as unrestricted when one of its list elements is `*`, or when it names every day and the other day
//! field contains a `*` (so `0 0 */1 * */2` fires on Sun, Tue, Thu and Sat only). This is croniter's reading; Vixie cron instead treats any field starting
//! with `*` as unrestricted, which differs for `*/n` written together with a restricted
//! other field (`0 0 */2 * MON`: croniter and ringman fire on odd days *or* Mondays,
//! Vixie cron on odd days that are Mondays).
//!
//! Errors are typed ([`CronError`]): the field, the offending element and the
//! [`Reason`]. An expression that can never fire (`0 0 30 2 *`) is refused.
//!
//! **Differences from Workerman's parser**, which accepts digits, `*`, `,`, `-` and `/`
//! only and silently drops what it cannot use: names are accepted; 7 is Sunday;
//! out-of-range values, empty elements, backwards ranges (`5-2`) and zero steps are errors
//! instead of being dropped; and the day fields follow the OR rule above where Workerman
//! requires both to match. Differences from croniter, whose extensions (`L`, `W`, `#`,
//! `?`, `H`, `R`, `@daily`, a year field) are not accepted: a written equal range `5-5`
//! means the value 5 (croniter reads it as the whole field), and a backwards range is an
//! error (croniter wraps it around).
//!
//! # Time zones and daylight saving
//!
//! A schedule's times are wall-clock times of its [`Zone`]: [`Zone::Utc`], or
//! [`Zone::Local`] (`chrono::Local`: the `TZ` environment variable, else
//! `/etc/localtime`). In a zone with daylight saving:
//!
//! * **Gap** (spring forward, e.g. 02:00-03:00 does not exist). A schedule whose hour field
//!   allows every hour ([`Schedule::every_hour`]: `*/10 * * * *`, `39 * * * *`,
//!   `* * * * * *`) follows elapsed time: its times in the gap never happen (`39 * * * *`
//!   fires at 01:39 and then 03:39). Any other schedule fires a time in the gap once,
//!   moved forward by whole minutes to the first wall-clock time that exists: `30 2 * * *`
//!   fires at 03:00 that day, `15 30 2 * * *` at 03:00:15; the gap's later times of the
//!   schedule are swallowed by that firing. Both are croniter's behaviour.
//! * **Repeat** (fall back, e.g. 01:00-02:00 happens twice): an every-hour schedule
//!   follows elapsed time and fires in both passes, as croniter does, so
//!   an every-second job does not go silent for an hour. Any other schedule fires each
//!   wall-clock time of the repeated hour once, in the **first** pass (still on daylight
//!   time): `30 1 * * *` fires at 01:30 EDT and not again at 01:30 EST.
//!
//! # Scheduling
//!
//! A [`Crontab`] lives on the ring thread that created it. It arms one one-shot engine
//! timer for its next fire time (no polling; a long wait is cut into waits of at most an
//! hour, after which the wall clock is read again so a stepped clock is noticed). When the
//! timer fires, the next time is computed from the current wall-clock time and armed
//! *before* the job runs; so firings missed while the ring was busy or the clock jumped are
//! not replayed, a panic in the job is caught and logged (`log::error!`) and the schedule
//! continues, and a job may [`remove`](Crontab::remove) itself.
//!
//! # Checked against croniter
//!
//! The tests compare [`Schedule::next_after`] with Python's croniter
//! (`second_at_beginning=True` for six fields) for 1,000 seeded random expressions, in
//! UTC and in New York's zone, where the only adjustment is the repeat rule above:
//! croniter's second-pass times are dropped for schedules that do not fire every hour.

mod expr;
mod next;
mod schedule;
#[cfg(test)]
mod tests;

pub use expr::{CronError, Field, Reason, Schedule};
pub use next::Zone;
pub use schedule::Crontab;
