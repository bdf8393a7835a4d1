//! Log fragments: numbered pieces of a job's `output` or `serial` log, stored once per
//! `(job, log type, fragment number)` so an agent can resend freely.

use std::time::Duration;

use super::backend::{on_backend, Logs as _};
use super::error::Result;
use super::open::Store;
use crate::job::time::Micros;
use crate::job::Phase;

/// How many of a killed phase's last output fragments are searched for the agent's line
/// saying why: the line is followed only by what the phase printed while it was being
/// killed (the reference agent: one chunk; ours: a few seconds' worth).
pub(super) const KILL_LINE_WINDOW: i64 = 32;

pub struct Fragment {
    pub fragment_number: i64,
    pub phase: Phase,
    pub timestamp: Micros,
    pub log_data: String,
}

#[derive(Default, Clone)]
pub struct FragmentQuery {
    pub start_fragment: i64,
    pub start_timestamp: Option<Micros>,
    pub phase: Option<String>,
}

/// One phase's share of a log.
#[derive(Debug, PartialEq)]
pub struct PhaseLog {
    pub phase: &'static str,
    /// -1 when the phase has no matching fragment.
    pub last_fragment_number: i64,
    pub log_data: String,
}

impl PhaseLog {
    /// The empty log of every phase `query` asks for, in phase order.
    pub(super) fn each_asked(query: &FragmentQuery) -> Vec<PhaseLog> {
        let asked = |phase: &&&str| {
            query
                .phase
                .as_deref()
                .is_none_or(|wanted| wanted == **phase)
        };
        Phase::NAMES
            .iter()
            .filter(asked)
            .map(|phase| PhaseLog {
                phase,
                last_fragment_number: -1,
                log_data: String::new(),
            })
            .collect()
    }

    /// Adds a fragment (read in number order) to its phase's log, if that was asked for.
    pub(super) fn add(logs: &mut [PhaseLog], phase: &str, fragment_number: i64, text: &str) {
        if let Some(log) = logs.iter_mut().find(|log| log.phase == phase) {
            log.last_fragment_number = fragment_number;
            log.log_data.push_str(text);
        }
    }
}

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
                Some(wakeup) if !found && !woken => {
                    if self.signals.wait(wakeup, deadline).await.is_none() {
                        return Ok(logs);
                    }
                    woken = true;
                }
                _ => return Ok(logs),
            }
        }
    }

    /// Every fragment of a job, concatenated per `(phase, log type)`, for results.
    pub async fn full_logs(&self, job_id: &str) -> Result<Vec<(String, String, String)>> {
        on_backend!(self, db => db.full_logs(job_id).await)
    }
}
