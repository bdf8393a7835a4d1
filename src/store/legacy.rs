//! The Redis-era result API that agents and CLIs from before 2024 still speak: free-form
//! result documents, and raw `output` text streams read by "everything since my last
//! read". The text of those streams is stored as ordinary log fragments, so current
//! clients see it too; only a read cursor per job and stream is kept apart.

use serde_json::{Map, Value};

use super::backend::{on_backend, Legacy as _};
use super::error::Result;
use super::open::Store;
use crate::job::{JobState, Phase};

/// What an old agent's result document adds to a job's results.
pub struct LegacyResult {
    /// `<phase>_status` exit codes, by phase: merged into the job's status map.
    pub statuses: Map<String, Value>,
    /// Every other key (`<phase>_output`, `exit_code`, …), kept as posted.
    pub document: Map<String, Value>,
}

impl Store {
    /// Merges a result document into the job's, key by key, as the old server's
    /// `dict.update` did (a key posted again replaces its value). Unknown jobs are
    /// ignored, like every result report.
    pub async fn merge_legacy_result(&self, job_id: &str, result: LegacyResult) -> Result<()> {
        on_backend!(self, db => db.merge_legacy_result(job_id, result).await)
    }

    /// The free-form keys old agents posted for a job (empty when none).
    pub async fn legacy_result(&self, job_id: &str) -> Result<Map<String, Value>> {
        on_backend!(self, db => db.legacy_result(job_id).await)
    }

    /// Stores raw text posted to a legacy stream as the next fragment of the job's log,
    /// in the phase the job is in. Unknown jobs are ignored.
    pub async fn append_legacy_output(
        &self,
        job_id: &str,
        log_type: &str,
        text: String,
    ) -> Result<()> {
        if on_backend!(self, db => db.append_legacy_output(job_id, log_type, text).await)? {
            self.signals.wake_job(job_id);
        }
        Ok(())
    }

    /// The text of the job's `log_type` fragments stored since the previous call (all of
    /// it the first time), and from then on not again. Empty when there is nothing new.
    pub async fn take_legacy_output(&self, job_id: &str, log_type: &str) -> Result<String> {
        on_backend!(self, db => db.take_legacy_output(job_id, log_type).await)
    }
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
