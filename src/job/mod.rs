//! The shared job domain: phases, states, outcomes, job ids, durations, timestamps and
//! the submission schema. Nothing here knows about HTTP or SQL.

pub mod definition;
pub mod duration;
pub mod log_type;
pub mod names;
pub mod outcome;
pub mod phase;
pub mod reservation;
pub mod state;
pub mod time;
mod truthy;
pub mod validate;

pub use definition::JobDefinition;
pub use log_type::LogType;
pub use outcome::Outcome;
pub use phase::Phase;
pub use state::JobState;
pub use truthy::is_truthy;

/// Accepts what Python's `uuid.UUID(s)` accepts (the reference's rule): optional `urn:` and
/// `uuid:` prefixes, optional braces, hyphens anywhere, then exactly 32 hex digits.
pub fn is_valid_job_id(id: &str) -> bool {
    is_canonical_uuid(id) || {
        let without_prefixes = id.replace("urn:", "").replace("uuid:", "");
        let digits: String = without_prefixes
            .trim_matches(|c| c == '{' || c == '}')
            .chars()
            .filter(|&c| c != '-')
            .collect();
        digits.len() == 32 && digits.chars().all(|c| c.is_ascii_hexdigit())
    }
}

/// `8-4-4-4-12` hex digits: what clients send, checked without allocating (every agent
/// request carries a job id).
fn is_canonical_uuid(id: &str) -> bool {
    id.len() == 36
        && id.bytes().enumerate().all(|(at, byte)| match at {
            8 | 13 | 18 | 23 => byte == b'-',
            _ => byte.is_ascii_hexdigit(),
        })
}

/// A new job id: a time-ordered UUID (v7), so new ids land at the end of the job id
/// index instead of at a random page of it (74 random bits keep them unguessable).
pub fn new_job_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_follow_python_uuid_parsing() {
        assert!(is_valid_job_id("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"));
        assert!(is_valid_job_id("AAAAAAAA-1111-2222-3333-444444444444"));
        assert!(is_valid_job_id("11111111111111111111111111111111"));
        assert!(is_valid_job_id("{11111111-1111-1111-1111-111111111111}"));
        assert!(is_valid_job_id(
            "urn:uuid:11111111-1111-1111-1111-111111111111"
        ));
        assert!(!is_valid_job_id("bad"));
        assert!(!is_valid_job_id(""));
        assert!(!is_valid_job_id("1111111111111111111111111111111g"));
        assert!(!is_valid_job_id("111111111111111111111111111111111"));
    }
}
