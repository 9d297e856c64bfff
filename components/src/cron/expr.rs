//! The crontab grammar: an expression's text to one bit set per field.

use std::fmt;

use thiserror::Error;

/// One field of a cron expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// Seconds, 0-59 (the first of six fields).
    Second,
    /// Minutes, 0-59.
    Minute,
    /// Hours, 0-23.
    Hour,
    /// Day of the month, 1-31.
    DayOfMonth,
    /// Month, 1-12 or `JAN`-`DEC`.
    Month,
    /// Day of the week, 0-7 (0 and 7 are Sunday) or `SUN`-`SAT`.
    DayOfWeek,
}

impl Field {
    /// The smallest and largest value the field accepts.
    pub fn bounds(self) -> (u32, u32) {
        match self {
            Field::Second | Field::Minute => (0, 59),
            Field::Hour => (0, 23),
            Field::DayOfMonth => (1, 31),
            Field::Month => (1, 12),
            Field::DayOfWeek => (0, 7),
        }
    }

    /// The largest value `*` and `a/n` run to: the bound, except for the day of the week,
    /// where they stop at Saturday (6), so `*/2` is 0,2,4,6 and not also 7 (Sunday again).
    fn top(self) -> u32 {
        match self {
            Field::DayOfWeek => 6,
            f => f.bounds().1,
        }
    }

    fn names(self) -> &'static [&'static str] {
        const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
        const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
        match self {
            Field::Month => &MONTHS,
            Field::DayOfWeek => &DAYS,
            _ => &[],
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Second => "second",
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day-of-month",
            Field::Month => "month",
            Field::DayOfWeek => "day-of-week",
        })
    }
}

/// Why one element of a field was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// An empty element (`1,,2`, a trailing comma, `/5`).
    Empty,
    /// Neither a number nor one of the field's names.
    NotANumber,
    /// A number outside the field's bounds.
    OutOfRange {
        /// The field's smallest value.
        min: u32,
        /// The field's largest value.
        max: u32,
    },
    /// A range whose start is after its end (`5-2`).
    Backwards,
    /// A step that is not a positive number (`*/0`, `*/x`, `*/`).
    BadStep,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Empty => f.write_str("is empty"),
            Reason::NotANumber => f.write_str("is not a number or a name"),
            Reason::OutOfRange { min, max } => write!(f, "is outside {min}-{max}"),
            Reason::Backwards => f.write_str("is a range that runs backwards"),
            Reason::BadStep => f.write_str("has a step that is not a positive number"),
        }
    }
}

/// Errors of [`Schedule::parse`] and of [`Crontab`](super::Crontab)'s constructors.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CronError {
    /// The expression does not have 5 or 6 fields.
    #[error("a cron expression has 5 fields (minute resolution) or 6 (seconds first), this one has {found}")]
    FieldCount {
        /// The number of whitespace-separated fields found.
        found: usize,
    },
    /// One element of one field is malformed.
    #[error("{field} field: {value:?} {reason}")]
    Invalid {
        /// The field.
        field: Field,
        /// The offending element (or the whole field).
        value: String,
        /// What is wrong with it.
        reason: Reason,
    },
    /// The day-of-month field names only days that none of the allowed months has
    /// (`0 0 30 2 *`), and the day-of-week field does not add any.
    #[error("the day-of-month field {dom:?} never occurs in the months {month:?}")]
    NeverFires {
        /// The day-of-month field.
        dom: String,
        /// The month field.
        month: String,
    },
    /// A [`Crontab`](super::Crontab) was created off a ring thread.
    #[error("a Crontab is created on a ring thread (in a callback or a task)")]
    NotOnRingThread,
}

/// A parsed cron expression: which seconds, minutes, hours, days and months it fires in.
///
/// Compute fire times with [`Schedule::next_after`](Schedule::next_after); schedule a job
/// with [`Crontab`](super::Crontab).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub(crate) text: String,
    pub(crate) seconds: u64,
    pub(crate) minutes: u64,
    pub(crate) hours: u64,
    /// Bits 1-31.
    pub(crate) dom: u64,
    /// Bits 1-12.
    pub(crate) months: u64,
    /// Bits 0-6, Sunday = 0 (a 7 is folded into 0).
    pub(crate) dow: u64,
    /// The day-of-month field does not restrict the day (see the module docs).
    pub(crate) dom_star: bool,
    /// The day-of-week field does not restrict the day.
    pub(crate) dow_star: bool,
    pub(crate) with_seconds: bool,
}

const fn full(lo: u32, hi: u32) -> u64 {
    ((1u64 << (hi + 1)) - 1) & !((1u64 << lo) - 1)
}

impl Schedule {
    /// Parses a 5-field (`minute hour day-of-month month day-of-week`, fires at second 0)
    /// or 6-field (`second minute hour day-of-month month day-of-week`) expression. Fields
    /// are separated by any whitespace; names are case-insensitive.
    ///
    /// ```
    /// use ringman_components::cron::{CronError, Field, Reason, Schedule};
    /// assert!(Schedule::parse("*/5 * * * * *").is_ok());
    /// assert!(Schedule::parse("0 9-17/2 * JAN-jun mon-FRI").is_ok());
    /// assert_eq!(
    ///     Schedule::parse("61 * * * * *"),
    ///     Err(CronError::Invalid {
    ///         field: Field::Second,
    ///         value: "61".into(),
    ///         reason: Reason::OutOfRange { min: 0, max: 59 },
    ///     })
    /// );
    /// ```
    pub fn parse(text: &str) -> Result<Schedule, CronError> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let (sec, rest) = match parts.len() {
            6 => (Some(parts[0]), &parts[1..]),
            5 => (None, &parts[..]),
            found => return Err(CronError::FieldCount { found }),
        };
        let seconds = match sec {
            Some(s) => parse_field(Field::Second, s)?,
            None => 1,
        };
        let minutes = parse_field(Field::Minute, rest[0])?;
        let hours = parse_field(Field::Hour, rest[1])?;
        let dom = parse_field(Field::DayOfMonth, rest[2])?;
        let months = parse_field(Field::Month, rest[3])?;
        let mut dow = parse_field(Field::DayOfWeek, rest[4])?;
        if dow & (1 << 7) != 0 {
            dow = (dow & !(1 << 7)) | 1;
        }
        let (dom_text, dow_text) = (rest[2], rest[4]);
        // croniter's rule (see the module docs): a day field is unrestricted when one of its
        // elements is `*`, or when it names every day and the other day field contains a `*`.
        let dom_star = has_star(dom_text) || (dom == full(1, 31) && dow_text.contains('*'));
        let dow_star = has_star(dow_text) || (dow == full(0, 6) && dom_text.contains('*'));
        let s = Schedule {
            text: parts.join(" "),
            seconds,
            minutes,
            hours,
            dom,
            months,
            dow,
            dom_star,
            dow_star,
            with_seconds: sec.is_some(),
        };
        if !dom_star && dow_star && !s.some_month_has_a_day() {
            return Err(CronError::NeverFires { dom: dom_text.into(), month: rest[3].into() });
        }
        Ok(s)
    }

    /// The expression, its fields joined by single spaces.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True for a 6-field expression (second resolution).
    pub fn has_seconds(&self) -> bool {
        self.with_seconds
    }

    /// True when the hour field allows every hour: such a schedule follows elapsed time
    /// across daylight-saving changes (its times in a gap never happen, a repeated hour
    /// fires in both passes); any other follows the wall clock (a gap time fires once at
    /// the gap's end, a repeated time once, in the first pass). See the module docs.
    pub fn every_hour(&self) -> bool {
        self.hours == full(0, 23)
    }

    fn some_month_has_a_day(&self) -> bool {
        const LONGEST: [u32; 13] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        (1..=12).any(|m| self.months & (1 << m) != 0 && self.dom & full(1, LONGEST[m]) != 0)
    }
}

/// One of the field's list elements is a bare `*`.
fn has_star(text: &str) -> bool {
    text.split(',').any(|e| e == "*")
}

fn parse_field(field: Field, text: &str) -> Result<u64, CronError> {
    let mut set = 0u64;
    for element in text.split(',') {
        set |= parse_element(field, element).map_err(|reason| CronError::Invalid {
            field,
            value: if element.is_empty() { text.to_string() } else { element.to_string() },
            reason,
        })?;
    }
    Ok(set)
}

/// One list element: `*`, `v`, `a-b`, each optionally followed by `/step`.
fn parse_element(field: Field, element: &str) -> Result<u64, Reason> {
    let (base, step) = match element.split_once('/') {
        Some((b, s)) => {
            let step: u32 = match s.parse() {
                Ok(n) if n > 0 && s.bytes().all(|c| c.is_ascii_digit()) => n,
                _ => return Err(Reason::BadStep),
            };
            (b, Some(step))
        }
        None => (element, None),
    };
    if base.is_empty() {
        return Err(Reason::Empty);
    }
    let (lo, hi) = if base == "*" {
        (field.bounds().0, field.top())
    } else if let Some((a, b)) = base.split_once('-') {
        let (a, b) = (value(field, a)?, value(field, b)?);
        if a > b {
            return Err(Reason::Backwards);
        }
        (a, b)
    } else {
        let a = value(field, base)?;
        match step {
            // `a/n` runs from a to the field's top (to 7 itself for a Sunday written 7).
            Some(_) => (a, field.top().max(a)),
            None => (a, a),
        }
    };
    let step = step.unwrap_or(1);
    let mut set = 0u64;
    let mut v = lo;
    while v <= hi {
        set |= 1 << v;
        v = match v.checked_add(step) {
            Some(n) => n,
            None => break,
        };
    }
    Ok(set)
}

fn value(field: Field, text: &str) -> Result<u32, Reason> {
    if text.is_empty() {
        return Err(Reason::Empty);
    }
    let (min, max) = field.bounds();
    let v = if text.bytes().all(|c| c.is_ascii_digit()) {
        // Long digit strings saturate, and are then out of range.
        text.parse::<u32>().unwrap_or(u32::MAX)
    } else {
        let lower = text.to_ascii_lowercase();
        let i = field.names().iter().position(|n| *n == lower).ok_or(Reason::NotANumber)?;
        i as u32 + min
    };
    if v < min || v > max {
        return Err(Reason::OutOfRange { min, max });
    }
    Ok(v)
}
