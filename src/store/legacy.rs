//! The Redis-era result API that agents and CLIs from before 2024 still speak: free-form
//! result documents, and raw `output` text streams read by "everything since my last
//! read". The text of those streams is stored as ordinary log fragments, so current
//! clients see it too; only a read cursor per job and stream is kept apart.

use serde_json::{Map, Value};

use crate::job::{JobState, Phase};

/// What an old agent's result document adds to a job's results.
pub struct LegacyResult {
    /// `<phase>_status` exit codes, by phase: merged into the job's status map.
    pub statuses: Map<String, Value>,
    /// Every other key (`<phase>_output`, `exit_code`, …), kept as posted.
    pub document: Map<String, Value>,
}

/// The phase output belongs to while a job is in `state`. Old agents report each phase
/// as the job state, except cleanup, whose output therefore lands in the phase before.
pub(super) fn phase_of_state(state: &str) -> &'static str {
    if let Some(phase) = Phase::parse(state) {
        return phase.as_str();
    }
    match JobState::parse(state) {
        Some(JobState::Allocated) => Phase::Allocate.as_str(),
        Some(finished) if finished.is_finished() => Phase::Cleanup.as_str(),
        // `waiting`, or `running` between the claim and the first phase report.
        _ => Phase::Setup.as_str(),
    }
}
