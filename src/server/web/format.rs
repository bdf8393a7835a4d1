//! How times, durations and states read on the pages.

use crate::job::time::{self, Micros};
use crate::job::Outcome;

/// `2026-11-24 20:02:01` (UTC), as the reference's pages show times.
pub fn when(at: Micros) -> String {
    time::render(at).trim_end_matches('Z').replacen('T', " ", 1)
}

/// `3h 02m 05s`, `2m 05s`, `5s`: a length of time in its largest useful units.
pub fn duration(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m {seconds:02}s"),
        _ => format!("{hours}h {minutes:02}m {seconds:02}s"),
    }
}

/// How long ago `at` was, from `now`: `5s ago`, `3m 10s ago`.
pub fn ago(at: Micros, now: Micros) -> String {
    format!("{} ago", duration((now - at) / 1_000_000))
}

/// The CSS class that colours a job or agent state: in trouble, busy, idle. A finished
/// job's state is plain grey: whether it went well is its outcome's to say, and a failed
/// test must not look green.
pub fn state_class(state: &str) -> &'static str {
    match state {
        "complete" | "completed" => "idle",
        "cancelled" | "offline" | "maintenance" => "bad",
        "waiting" => "idle",
        _ => "busy",
    }
}

/// The colour of a finished job's outcome: failures in red.
pub fn outcome_class(outcome: Option<Outcome>) -> &'static str {
    match outcome {
        Some(Outcome::Passed) => "ok",
        Some(Outcome::Cancelled) | None => "idle",
        Some(_) => "bad",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_use_their_largest_units() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(125), "2m 05s");
        assert_eq!(duration(3 * 3600 + 125), "3h 02m 05s");
        assert_eq!(duration(-4), "0s");
        assert_eq!(when(0), "1970-01-01 00:00:00");
    }
}
