//! Timestamps as microseconds since the Unix epoch (UTC), with the two text forms the
//! API uses: rendering `YYYY-MM-DDTHH:MM:SSZ` and parsing the ISO-8601 datetimes that
//! agents and clients send.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since 1970-01-01T00:00:00Z.
pub type Micros = i64;

const MICROS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

pub fn now() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Renders like the reference server: seconds precision, `Z` suffix.
pub fn render(at: Micros) -> String {
    format!("{}Z", render_seconds(at))
}

/// Renders like Python's `datetime.now(timezone.utc).isoformat()`, as the reference agent
/// stamps fragments and events: `2025-01-01T12:00:00.123456+00:00`.
pub fn render_micros(at: Micros) -> String {
    format!(
        "{}.{:06}+00:00",
        render_seconds(at),
        at.rem_euclid(MICROS_PER_SECOND)
    )
}

fn render_seconds(at: Micros) -> String {
    let seconds = at.div_euclid(MICROS_PER_SECOND);
    let (days, second_of_day) = (
        seconds.div_euclid(SECONDS_PER_DAY),
        seconds.rem_euclid(SECONDS_PER_DAY),
    );
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// Reads marshmallow's ISO-8601 datetime grammar (the reference validates with it):
/// `\d{4}-\d{1,2}-\d{1,2}[T ]\d{1,2}:\d{1,2}(:\d{1,2}(\.\d{1,6}\d{0,6})?)?(Z|[+-]\d{2}(:?\d{2})?)?`.
/// By hand rather than with a regex: every log fragment carries a timestamp.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl Cursor<'_> {
    /// Between `min` and `max` digits, as a number.
    fn digits(&mut self, min: usize, max: usize) -> Option<(i64, usize)> {
        let count = self
            .rest
            .iter()
            .take(max)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if count < min {
            return None;
        }
        let value = self.rest[..count]
            .iter()
            .fold(0, |n, b| n * 10 + i64::from(b - b'0'));
        self.rest = &self.rest[count..];
        Some((value, count))
    }

    fn number(&mut self, min: usize, max: usize) -> Option<i64> {
        self.digits(min, max).map(|(value, _)| value)
    }

    /// Takes one of `bytes` if it comes next.
    fn take(&mut self, bytes: &[u8]) -> Option<u8> {
        let first = *self.rest.first()?;
        bytes.contains(&first).then(|| {
            self.rest = &self.rest[1..];
            first
        })
    }
}

/// Parses what the reference accepts: `YYYY-MM-DD[T ]HH:MM[:SS[.ffffff]][Z|±HH[[:]MM]]`,
/// one-digit fields allowed; a naive time is UTC. A date alone is rejected.
pub fn parse_iso8601(text: &str) -> Option<Micros> {
    let mut at = Cursor {
        rest: text.as_bytes(),
    };
    let year = at.number(4, 4)?;
    at.take(b"-")?;
    let month = at.number(1, 2)?;
    at.take(b"-")?;
    let day = at.number(1, 2)?;
    at.take(b"T ")?;
    let hour = at.number(1, 2)?;
    at.take(b":")?;
    let minute = at.number(1, 2)?;
    let (mut second, mut fraction) = (0, 0);
    if at.take(b":").is_some() {
        second = at.number(1, 2)?;
        if at.take(b".").is_some() {
            let (micros, count) = at.digits(1, 6)?;
            fraction = micros * 10_i64.pow(6 - count as u32);
            at.digits(0, 6)?; // digits beyond microseconds are ignored
        }
    }
    let offset_seconds = match at.take(b"Z+-") {
        None => 0,
        Some(b'Z') => 0,
        Some(sign) => {
            let hours = at.number(2, 2)?;
            let colon = at.take(b":").is_some();
            let minutes = match at.number(2, 2) {
                Some(minutes) => minutes,
                None if colon => return None,
                None => 0,
            };
            if hours > 23 || minutes > 59 {
                return None;
            }
            let sign = if sign == b'-' { -1 } else { 1 };
            sign * (hours * 3600 + minutes * 60)
        }
    };
    if !at.rest.is_empty() {
        return None;
    }
    let valid = (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour <= 23
        && minute <= 59
        && second <= 59;
    if !valid {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second - offset_seconds;
    Some(seconds * MICROS_PER_SECOND + fraction)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days-from-civil algorithms (public domain).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_seconds_precision_with_z() {
        assert_eq!(render(0), "1970-01-01T00:00:00Z");
        assert_eq!(render(1_577_836_800_123_456), "2020-01-01T00:00:00Z");
        assert_eq!(render(1_709_210_096_000_000), "2024-02-29T12:34:56Z");
    }

    #[test]
    fn parses_the_forms_agents_send() {
        let base = parse_iso8601("2020-01-01T00:00:00").unwrap();
        assert_eq!(base, 1_577_836_800_000_000);
        assert_eq!(parse_iso8601("2020-01-01T00:00"), Some(base));
        assert_eq!(parse_iso8601("2020-01-01 00:00:00Z"), Some(base));
        assert_eq!(parse_iso8601("2020-01-01T00:00:00.5"), Some(base + 500_000));
        assert_eq!(parse_iso8601("2020-01-01T02:00:00+02:00"), Some(base));
        assert_eq!(parse_iso8601("2019-12-31T23:00:00-01:00"), Some(base));
        for bad in [
            "2020-01-01",
            "yesterday",
            "2020-13-01T00:00",
            "2020-02-30T00:00",
            "",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }
}
