//! The Redis-era result API: merged result documents and raw output streams.

use serde_json::{Map, Value};

use crate::store::backend::Legacy as _;
use crate::store::error::Result;
use crate::store::legacy::LegacyResult;
use crate::store::open::{on_backend, Store};

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
