//! What the web pages read: a job with everything shown about it, when each phase
//! printed, and the end of its logs.

use crate::store::backend::{Jobs as _, Logs as _};
use crate::store::error::Result;
use crate::store::open::{on_backend, Store};
use crate::store::pages::{JobRecord, LogsSoFar, PhaseSpan};

impl Store {
    pub async fn job_record(&self, job_id: &str) -> Result<Option<JobRecord>> {
        on_backend!(self, db => db.job_record(job_id).await)
    }

    /// Each phase's output span, in the order the phases started.
    pub async fn phase_spans(&self, job_id: &str) -> Result<Vec<PhaseSpan>> {
        on_backend!(self, db => db.phase_spans(job_id).await)
    }

    /// The last `budget` bytes (whole fragments) of each of a job's logs, up to now. The
    /// text stops exactly at `next_fragment`, so a page that follows from there neither
    /// repeats nor misses a line, and a job with gigabytes of output costs a page no more
    /// than the budget.
    pub async fn logs_so_far(&self, job_id: &str, budget: usize) -> Result<LogsSoFar> {
        on_backend!(self, db => db.logs_so_far(job_id, budget).await)
    }
}
