//! IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) for the `Date` header, and the parser of
//! the three HTTP-date formats for conditional requests.

use std::time::{SystemTime, UNIX_EPOCH};

const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
const MONTHS: [&[u8; 3]; 12] =
    [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];

/// Formats `t` as an IMF-fixdate (RFC 9110 §5.6.7), always 29 bytes. Times before 1970 are
/// clamped to the epoch.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let d = ringman_protocols::http::http_date(UNIX_EPOCH + Duration::from_secs(784111777));
/// assert_eq!(&d, b"Sun, 06 Nov 1994 08:49:37 GMT");
/// ```
pub fn http_date(t: SystemTime) -> [u8; 29] {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let (y, mo, d) = civil_from_days(days as i64);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    two(&mut out[5..7], d);
    out[8..11].copy_from_slice(MONTHS[(mo - 1) as usize]);
    let y = y.clamp(0, 9999) as u64;
    two(&mut out[12..14], y / 100);
    two(&mut out[14..16], y % 100);
    two(&mut out[17..19], h);
    two(&mut out[20..22], m);
    two(&mut out[23..25], s);
    out
}

fn two(dst: &mut [u8], v: u64) {
    dst[0] = b'0' + (v / 10 % 10) as u8;
    dst[1] = b'0' + (v % 10) as u8;
}

/// Howard Hinnant's days-to-civil algorithm: (year, month 1..=12, day 1..=31).
fn civil_from_days(z: i64) -> (i64, u64, u64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses an HTTP-date (RFC 9110 §5.6.7) into seconds since the Unix epoch. All three
/// formats are accepted, as a recipient must: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`),
/// RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`, a two-digit year more than 50 years ahead
/// meaning the previous century) and asctime (`Sun Nov  6 08:49:37 1994`). `None` for
/// anything else, including dates before 1970.
///
/// ```
/// use ringman_protocols::http::parse_http_date;
/// assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
/// assert_eq!(parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"), Some(784111777));
/// assert_eq!(parse_http_date(b"Sun Nov  6 08:49:37 1994"), Some(784111777));
/// assert_eq!(parse_http_date(b"yesterday"), None);
/// ```
pub fn parse_http_date(v: &[u8]) -> Option<u64> {
    fn num(b: &[u8]) -> Option<u64> {
        if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(b.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
    }
    fn month(b: &[u8]) -> Option<u64> {
        MONTHS.iter().position(|m| &m[..] == b).map(|i| i as u64 + 1)
    }
    fn time(b: &[u8]) -> Option<(u64, u64, u64)> {
        match b {
            [h1, h2, b':', m1, m2, b':', s1, s2] => Some((num(&[*h1, *h2])?, num(&[*m1, *m2])?, num(&[*s1, *s2])?)),
            _ => None,
        }
    }
    let (y, mo, d, (h, mi, sec)) = if v.len() == 29 && v[3] == b',' {
        // IMF-fixdate: day-name "," SP DD SP Mon SP YYYY SP hh:mm:ss SP "GMT"
        if !DAYS.iter().any(|d| d[..] == v[..3])
            || &v[25..] != b" GMT"
            || v[4] != b' '
            || v[7] != b' '
            || v[11] != b' '
            || v[16] != b' '
        {
            return None;
        }
        (num(&v[12..16])?, month(&v[8..11])?, num(&v[5..7])?, time(&v[17..25])?)
    } else if let Some(comma) = v.iter().position(|&b| b == b',').filter(|&c| c > 3) {
        // RFC 850: day-name-l "," SP DD-Mon-YY SP hh:mm:ss SP "GMT"
        let rest = &v[comma + 1..];
        if rest.len() != 23
            || rest[0] != b' '
            || rest[3] != b'-'
            || rest[7] != b'-'
            || rest[10] != b' '
            || &rest[19..] != b" GMT"
        {
            return None;
        }
        let yy = num(&rest[8..10])?;
        let now_year =
            civil_from_days((SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs() / 86_400) as i64).0 as u64;
        let mut y = now_year / 100 * 100 + yy;
        if y > now_year + 50 {
            y -= 100;
        }
        (y, month(&rest[4..7])?, num(&rest[1..3])?, time(&rest[11..19])?)
    } else if v.len() == 24 && v[3] == b' ' && v[7] == b' ' && v[10] == b' ' && v[19] == b' ' {
        // asctime: day-name SP Mon SP ( DD / SP D ) SP hh:mm:ss SP YYYY
        let day = if v[8] == b' ' { num(&v[9..10])? } else { num(&v[8..10])? };
        if !DAYS.iter().any(|d| d[..] == v[..3]) {
            return None;
        }
        (num(&v[20..24])?, month(&v[4..7])?, day, time(&v[11..19])?)
    } else {
        return None;
    };
    if !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 || y < 1970 {
        return None;
    }
    let days = days_from_civil(y as i64, mo, d);
    Some(days as u64 * 86_400 + h * 3600 + mi * 60 + sec)
}

/// Howard Hinnant's civil-to-days algorithm, the inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: u64, d: u64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The `Date` value, re-formatted at most once per second.
///
/// ```
/// let mut cache = ringman_protocols::http::DateCache::default();
/// let now = std::time::SystemTime::now();
/// assert_eq!(cache.get(now), &ringman_protocols::http::http_date(now));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct DateCache {
    second: u64,
    value: [u8; 29],
}

impl Default for DateCache {
    fn default() -> Self {
        DateCache { second: 0, value: http_date(UNIX_EPOCH) }
    }
}

impl DateCache {
    /// The formatted date for `now`, reusing the last value within the same second.
    pub fn get(&mut self, now: SystemTime) -> &[u8; 29] {
        let s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if s != self.second {
            self.second = s;
            self.value = http_date(now);
        }
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_dates() {
        let at = |s| http_date(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(&at(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&at(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(&at(1_709_251_199), b"Thu, 29 Feb 2024 23:59:59 GMT");
        assert_eq!(&at(4_102_444_800), b"Fri, 01 Jan 2100 00:00:00 GMT");
        assert_eq!(&http_date(UNIX_EPOCH - Duration::from_secs(5)), b"Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn parses_what_it_formats_and_the_obsolete_formats() {
        for secs in [0, 951_782_400, 1_709_251_199, 4_102_444_800, 1_234_567_890] {
            let d = http_date(UNIX_EPOCH + Duration::from_secs(secs));
            assert_eq!(parse_http_date(&d), Some(secs), "{}", String::from_utf8_lossy(&d));
        }
        assert_eq!(parse_http_date(b"Thu Feb 29 23:59:59 2024"), Some(1_709_251_199));
        assert_eq!(parse_http_date(b"Friday, 31-Dec-99 23:59:59 GMT"), Some(946_684_799));
        for bad in [
            &b""[..],
            b"Sun, 06 Nov 1994 08:49:37 UTC",
            b"Sun, 06 Nov 1994 08:49:37 GMT ",
            b"Sun, 06 Foo 1994 08:49:37 GMT",
            b"Sun, 32 Nov 1994 08:49:37 GMT",
            b"Sun, 06 Nov 1994 24:49:37 GMT",
            b"Sun, 06 Nov 1969 08:49:37 GMT",
            b"Sun, 0x Nov 1994 08:49:37 GMT",
            b"Sun Nov 6 08:49:37 1994",
            b"784111777",
        ] {
            assert_eq!(parse_http_date(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
