//! Log fragments: stored by number, read per phase, waited for by followers.

use std::time::Duration;

use crate::store::backend::Logs as _;
use crate::store::error::Result;
use crate::store::logs::{Fragment, FragmentQuery, PhaseLog};
use crate::store::open::{on_backend, Store};
use crate::store::signals::Waited;

impl Store {
    pub async fn append_log_fragment(
        &self,
        job_id: &str,
        log_type: &str,
        fragment: Fragment,
    ) -> Result<()> {
        self.append_log_fragments(job_id, log_type, vec![fragment])
            .await
    }

    /// Stores several fragments of one log at once: all of them, or none if one fails.
    /// Each is stored as `append_log_fragment` stores it alone (a resent number replaces).
    pub async fn append_log_fragments(
        &self,
        job_id: &str,
        log_type: &str,
        fragments: Vec<Fragment>,
    ) -> Result<()> {
        on_backend!(self, db => db.insert_fragments(job_id, log_type, fragments).await)?;
        self.signals.wake_job(job_id);
        Ok(())
    }

    /// The log per phase (every phase, or only `query.phase`). With a `wait`, an answer
    /// without any fragment is given only once that long passed or the job changed (a
    /// fragment, or a new state a follower wants to see).
    pub async fn log(
        &self,
        job_id: &str,
        log_type: &str,
        query: FragmentQuery,
        wait: Duration,
    ) -> Result<Vec<PhaseLog>> {
        let subscription = (!wait.is_zero()).then(|| self.signals.job(job_id));
        let deadline = tokio::time::Instant::now() + wait;
        let mut woken = false;
        loop {
            let wakeup = subscription.as_ref().map(|s| {
                let mut notified = Box::pin(s.notify.notified());
                notified.as_mut().enable();
                notified
            });
            let waiting = subscription.is_some();
            let (logs, ended) = on_backend!(self, db => {
                db.read_log(job_id, log_type, query.clone(), waiting).await
            })?;
            let found = ended || logs.iter().any(|log| log.last_fragment_number >= 0);
            match wakeup {
                Some(wakeup) if !found && !woken => match self.signals.wait(wakeup, deadline).await
                {
                    Waited::Woken(()) => woken = true,
                    Waited::Recheck => {}
                    Waited::Over => return Ok(logs),
                },
                _ => return Ok(logs),
            }
        }
    }

    /// Every fragment of a job, concatenated per `(phase, log type)`, for results.
    pub async fn full_logs(&self, job_id: &str) -> Result<Vec<(String, String, String)>> {
        on_backend!(self, db => db.full_logs(job_id).await)
    }
}
