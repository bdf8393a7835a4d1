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

/// Renders like the reference: seconds precision, `Z` suffix.
pub fn render(at: Micros) -> String {
    let seconds = at.div_euclid(MICROS_PER_SECOND);
    let (days, second_of_day) = (
        seconds.div_euclid(SECONDS_PER_DAY),
        seconds.rem_euclid(SECONDS_PER_DAY),
    );
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// Parses `YYYY-MM-DD[T ]HH:MM[:SS[.ffffff]][Z|±HH:MM]`; a naive time is UTC. A date
/// alone is rejected, as the reference's log schema does.
pub fn parse_iso8601(text: &str) -> Option<Micros> {
    let text = text.trim();
    let bytes = text.as_bytes();
    if bytes.len() < 16 || !(bytes[10] == b'T' || bytes[10] == b't' || bytes[10] == b' ') {
        return None;
    }
    let (date, rest) = (&text[..10], &text[11..]);
    let year = number(&date[0..4])?;
    let month = number(&date[5..7])?;
    let day = number(&date[8..10])?;
    if &date[4..5] != "-" || &date[7..8] != "-" || !(1..=12).contains(&month) {
        return None;
    }
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let (clock, offset_seconds) = split_offset(rest)?;
    let mut parts = clock.splitn(3, ':');
    let hour = number(parts.next()?)?;
    let minute = number(parts.next()?)?;
    let (second, fraction) = match parts.next() {
        None => (0, 0),
        Some(s) => {
            let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
            if whole.len() != 2 {
                return None;
            }
            (number(whole)?, fraction_micros(frac)?)
        }
    };
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second - offset_seconds;
    Some(seconds * MICROS_PER_SECOND + fraction)
}

/// Splits `HH:MM:SS.fff+02:00` into the clock and the offset in seconds east of UTC.
fn split_offset(rest: &str) -> Option<(&str, i64)> {
    if let Some(clock) = rest.strip_suffix(['Z', 'z']) {
        return Some((clock, 0));
    }
    match rest.rfind(['+', '-']) {
        Some(at) => {
            let (clock, offset) = rest.split_at(at);
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let (hours, minutes) = offset[1..].split_once(':').unwrap_or((&offset[1..], "00"));
            if hours.len() != 2 || minutes.len() != 2 {
                return None;
            }
            Some((
                clock,
                sign * (number(hours)? * 3600 + number(minutes)? * 60),
            ))
        }
        None => Some((rest, 0)),
    }
}

fn number(digits: &str) -> Option<i64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn fraction_micros(digits: &str) -> Option<i64> {
    if digits.is_empty() {
        return Some(0);
    }
    if digits.len() > 6 {
        return None;
    }
    Some(number(digits)? * 10_i64.pow(6 - digits.len() as u32))
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
