//! Jobs as the store's callers and both backends see them: a job to store, one claimed,
//! a listing's line, search filters, the attachments gate, reports and results, and how a
//! stored row gives its outcome. The operations are in `operations/jobs.rs`, the SQL in
//! `sqlite/jobs.rs` and `postgres/jobs.rs`.

use std::borrow::Borrow;

use serde_json::{Map, Value};

use super::error::Result;
use crate::job::time::Micros;
use crate::job::{JobState, Outcome};

/// A validated job ready to be stored.
pub struct NewJob {
    pub job_id: String,
    pub queue: String,
    pub priority: i64,
    pub awaits_attachments: bool,
    pub exclude_agents: Vec<String>,
    /// The client whose token submitted the job; `None` when anonymous.
    pub submitter: Option<String>,
    pub data: Map<String, Value>,
}

/// A job as handed to an agent: the stored definition plus what the server added.
pub struct ClaimedJob {
    pub job_id: String,
    pub started_at: Micros,
    pub data: Map<String, Value>,
    pub attachments: Option<String>,
    pub submitter: Option<String>,
}

/// One line of a job listing.
pub struct JobSummary {
    pub job_id: String,
    pub queue: String,
    pub state: String,
    pub created_at: Micros,
    /// `None` while the job has not finished.
    pub outcome: Option<Outcome>,
}

#[derive(Default)]
pub struct JobFilter {
    pub tags: Vec<String>,
    pub match_all_tags: bool,
    /// Only jobs that have not finished (`active` in the API).
    pub active: bool,
    pub states: Vec<String>,
    /// Only jobs of this queue.
    pub queue: Option<String>,
    /// Only jobs whose id starts with this (hex digits and dashes only).
    pub id_prefix: Option<String>,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
    pub limit: Option<u64>,
    pub offset: u64,
}

/// Whether a job may receive its attachments archive.
#[derive(Debug, PartialEq, Eq)]
pub enum AttachmentGate {
    /// No waiting job with that id.
    NotWaiting,
    /// The job declared no attachments.
    NotExpected,
    /// Already uploaded: the first archive stays.
    AlreadyComplete { submitter: Option<String> },
    /// Waiting for its archive from `submitter` (anyone, when anonymous).
    Open { submitter: Option<String> },
}

impl AttachmentGate {
    /// The client that may upload the job's archive; `None` for anyone.
    pub fn submitter(&self) -> Option<&str> {
        match self {
            AttachmentGate::Open { submitter } | AttachmentGate::AlreadyComplete { submitter } => {
                submitter.as_deref()
            }
            AttachmentGate::NotWaiting | AttachmentGate::NotExpected => None,
        }
    }
}

/// What became of an uploaded attachments archive.
#[derive(Debug, PartialEq, Eq)]
pub enum AttachmentReceipt {
    /// Stored; the job is released for dispatch.
    Stored,
    /// An archive was stored before: this one was discarded, and it had the same bytes
    /// (a retry) or not (someone else's).
    AlreadyStored { identical: bool },
    /// The job does not take archives (any more).
    Refused(AttachmentGate),
}

/// What an agent reports about a job; absent fields are left as they were.
#[derive(Default)]
pub struct ResultUpdate {
    pub job_state: Option<String>,
    pub status: Option<Map<String, Value>>,
    pub device_info: Option<Value>,
}

/// The stored results of a job, without its logs.
pub struct ResultView {
    pub job_state: String,
    pub status: Map<String, Value>,
    pub device_info: Option<Value>,
    /// `None` while the job has not finished.
    pub outcome: Option<Outcome>,
}

/// A job's outcome from its row: the one stored when it completed, else (a job that
/// completed before outcomes were stored, or one that is cancelled or unfinished)
/// derived from its state and `statuses`.
/// `statuses` is asked only then; a caller that has the map parsed lends it.
pub(super) fn read_outcome<M: Borrow<Map<String, Value>>>(
    state: &str,
    stored: Option<&str>,
    statuses: impl FnOnce() -> Option<M>,
) -> Option<Outcome> {
    if let Some(outcome) = stored
        .filter(|_| JobState::is_complete_name(state))
        .and_then(Outcome::decode)
    {
        return Some(outcome);
    }
    if !JobState::is_finished_name(state) {
        return None;
    }
    match statuses() {
        Some(statuses) => Outcome::of(state, statuses.borrow(), |_| None),
        None => Outcome::of(state, &Map::new(), |_| None),
    }
}

/// A stored `{phase: exit code}` map; `None` when absent or unreadable.
pub(super) fn statuses(text: Option<&str>) -> Option<Map<String, Value>> {
    serde_json::from_str(text?).ok()
}

#[cfg(test)]
impl NewJob {
    /// A claimable job of `queue` with nothing but its queue in its definition.
    pub(crate) fn plain(id: &str, queue: &str, priority: i64) -> NewJob {
        NewJob {
            job_id: id.to_string(),
            queue: queue.to_string(),
            priority,
            awaits_attachments: false,
            exclude_agents: Vec::new(),
            submitter: None,
            data: Map::from_iter([("job_queue".to_string(), Value::from(queue))]),
        }
    }
}

impl AttachmentGate {
    /// The gate of a waiting job from its `attachments` state and submitter; `None` when
    /// no waiting job has that id.
    pub(super) fn of(waiting_job: Option<(Option<String>, Option<String>)>) -> AttachmentGate {
        match waiting_job {
            None => AttachmentGate::NotWaiting,
            Some((None, _)) => AttachmentGate::NotExpected,
            Some((Some(state), submitter)) if state == "complete" => {
                AttachmentGate::AlreadyComplete { submitter }
            }
            Some((Some(_), submitter)) => AttachmentGate::Open { submitter },
        }
    }
}

impl ResultUpdate {
    /// The report's `status` and `device_info` as stored (JSON text), when present.
    pub(super) fn texts(&self) -> Result<(Option<String>, Option<String>)> {
        Ok((
            self.status
                .as_ref()
                .map(serde_json::to_string)
                .transpose()?,
            self.device_info
                .as_ref()
                .map(serde_json::to_string)
                .transpose()?,
        ))
    }
}

impl JobFilter {
    /// How many different tags a job must carry to match them all.
    pub(super) fn distinct_tags(&self) -> usize {
        self.tags
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Phase;

    #[test]
    fn a_row_gives_its_stored_outcome_or_one_derived_from_its_state_and_statuses() {
        let failed = Outcome::Failed {
            phase: Phase::Test,
            exit_code: 1,
        };
        let statuses = || statuses(Some(r#"{"setup": 0, "test": 1}"#));
        let timed_out = "timed_out:test:output";
        assert_eq!(
            read_outcome(
                "complete",
                Some(timed_out),
                || -> Option<Map<String, Value>> { unreachable!() }
            ),
            Outcome::decode(timed_out)
        );
        // Completed before outcomes were stored.
        assert_eq!(read_outcome("complete", None, statuses), Some(failed));
        assert_eq!(
            read_outcome("completed", Some("garbage"), statuses),
            Some(failed)
        );
        // Put back to waiting, or cancelled, after it had completed once.
        assert_eq!(read_outcome("waiting", Some(timed_out), statuses), None);
        assert_eq!(
            read_outcome("cancelled", Some(timed_out), statuses),
            Some(Outcome::Cancelled)
        );
        assert_eq!(read_outcome("test", None, statuses), None);
    }
}
