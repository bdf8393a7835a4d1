//! Timestamps as microseconds since the Unix epoch (UTC), with the two text forms the
//! API uses: rendering `YYYY-MM-DDTHH:MM:SSZ` and parsing the ISO-8601 datetimes that
//! agents and clients send.

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use regex_lite::Regex;

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

/// marshmallow's ISO-8601 datetime grammar, which the reference validates with.
static ISO_DATETIME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(\d{4})-(\d{1,2})-(\d{1,2})[T ](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,6})\d{0,6})?)?(Z|[+-]\d{2}(?::?\d{2})?)?$",
    )
    .expect("a valid regex")
});

/// Parses what the reference accepts: `YYYY-MM-DD[T ]HH:MM[:SS[.ffffff]][Z|±HH[[:]MM]]`,
/// one-digit fields allowed; a naive time is UTC. A date alone is rejected.
pub fn parse_iso8601(text: &str) -> Option<Micros> {
    let parts = ISO_DATETIME.captures(text)?;
    let field = |index: usize| {
        parts
            .get(index)
            .map_or(Some(0), |m| m.as_str().parse::<i64>().ok())
    };
    let (year, month, day) = (field(1)?, field(2)?, field(3)?);
    let (hour, minute, second) = (field(4)?, field(5)?, field(6)?);
    let fraction = parts.get(7).map_or(Some(0), |m| {
        Some(field(7)? * 10_i64.pow(6 - m.as_str().len() as u32))
    })?;
    let valid = (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour <= 23
        && minute <= 59
        && second <= 59;
    if !valid {
        return None;
    }
    let offset_seconds = match parts.get(8).map(|m| m.as_str()) {
        None | Some("Z") => 0,
        Some(offset) => {
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let digits: String = offset[1..].chars().filter(|c| *c != ':').collect();
            let hours: i64 = digits[..2].parse().ok()?;
            let minutes: i64 = if digits.len() > 2 {
                digits[2..].parse().ok()?
            } else {
                0
            };
            if hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 3600 + minutes * 60)
        }
    };
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
