//! Jobs: submission, dispatch (long-polls waiting for a claim), cancellation, the
//! attachments gate, results, search and queue views. The SQL is each backend's
//! (`sqlite/jobs.rs`, `postgres/jobs.rs`).

use std::borrow::Borrow;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::select_all;
use serde_json::{Map, Value};

use super::backend::{on_backend, AttachmentRecord, Jobs as _};
use super::blobs::{BlobKind, BlobUpload, StoredBlob};
use super::error::Result;
use super::open::Store;
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

impl Store {
    /// Stores a new job in state `waiting`. A job id that already exists is refused.
    pub async fn submit_job(&self, job: NewJob) -> Result<()> {
        let queue = job.queue.clone();
        let claimable = !job.awaits_attachments;
        on_backend!(self, db => db.insert_job(job).await)?;
        if claimable {
            self.signals.wake_queue(&queue);
        }
        Ok(())
    }

    /// Hands the best waiting job of `queues` to `agent`, or `None`. With a `wait`, an
    /// empty answer is given only after no job arrived for that long.
    pub async fn claim_job(
        &self,
        queues: &[String],
        agent: &str,
        wait: Duration,
    ) -> Result<Option<ClaimedJob>> {
        if wait.is_zero() {
            return self.claim_now(queues, agent).await;
        }
        let deadline = tokio::time::Instant::now() + wait;
        let subscriptions: Vec<_> = queues.iter().map(|q| self.signals.queue(q)).collect();
        // Agents without a name (before 2023) cannot be told apart, so cannot be stopped.
        let stopping = (!agent.is_empty()).then(|| self.signals.agent(agent));
        loop {
            let mut wakeups: Vec<_> = subscriptions
                .iter()
                .map(|s| Box::pin(s.notify.notified()))
                .collect();
            for wakeup in &mut wakeups {
                wakeup.as_mut().enable();
            }
            let mut stop = stopping.as_ref().map(|s| Box::pin(s.notify.notified()));
            if let Some(stop) = &mut stop {
                stop.as_mut().enable();
            }
            if let Some(job) = self.claim_now(queues, agent).await? {
                return Ok(Some(job));
            }
            let agent_stopping = async {
                match stop {
                    Some(stop) => stop.await,
                    None => std::future::pending().await,
                }
            };
            let job_queued = async {
                tokio::select! {
                    _ = select_all(wakeups) => true,
                    _ = agent_stopping => false,
                }
            };
            match self.signals.wait(job_queued, deadline).await {
                Some(true) => continue,
                Some(false) | None => return Ok(None),
            }
        }
    }

    /// Ends `agent`'s claims that wait for a job: they answer at once, with no job.
    pub fn stop_waiting(&self, agent: &str) {
        self.signals.wake_agent(agent);
    }

    async fn claim_now(&self, queues: &[String], agent: &str) -> Result<Option<ClaimedJob>> {
        on_backend!(self, db => db.claim_job(queues, agent).await)
    }

    /// A job's definition as submitted (validated and coerced), without its id.
    pub async fn job_definition(&self, job_id: &str) -> Result<Option<Map<String, Value>>> {
        on_backend!(self, db => db.job_definition(job_id).await)
    }

    /// How many jobs each queue holds in each state, for metrics.
    pub async fn job_counts(&self) -> Result<Vec<(String, String, u64)>> {
        on_backend!(self, db => db.job_counts().await)
    }

    pub async fn search_jobs(&self, filter: JobFilter) -> Result<Vec<JobSummary>> {
        on_backend!(self, db => db.search_jobs(filter).await)
    }

    /// All jobs of one queue, oldest first.
    pub async fn queue_jobs(&self, queue: &str) -> Result<Vec<JobSummary>> {
        on_backend!(self, db => db.queue_jobs(queue).await)
    }

    /// The last `limit` jobs an agent took, newest first.
    pub async fn agent_jobs(&self, agent: &str, limit: u32) -> Result<Vec<JobSummary>> {
        on_backend!(self, db => db.agent_jobs(agent, limit).await)
    }

    /// Moves an unfinished job to `cancelled`; false when there was none to cancel.
    pub async fn cancel_job(&self, job_id: &str) -> Result<bool> {
        let cancelled = on_backend!(self, db => db.cancel_job(job_id).await)?;
        if cancelled {
            self.signals.wake_job(job_id);
        }
        Ok(cancelled)
    }

    /// The 0-based place of a waiting job in its queue, or `None` if it is not waiting.
    pub async fn queue_position(&self, job_id: &str) -> Result<Option<u64>> {
        on_backend!(self, db => db.queue_position(job_id).await)
    }

    pub async fn attachment_gate(&self, job_id: &str) -> Result<AttachmentGate> {
        on_backend!(self, db => db.attachment_gate(job_id).await)
    }

    /// Records an uploaded archive and releases the job for dispatch. The gate is checked
    /// again in the same transaction: the first archive wins, and a later one is compared
    /// with it and discarded.
    pub async fn complete_attachments(
        &self,
        job_id: &str,
        blob: StoredBlob,
    ) -> Result<AttachmentReceipt> {
        let file_name = blob.file_name.clone();
        let recorded = on_backend!(self, db => db.record_attachments(job_id, blob).await);
        match self.blobs.discard_on_error(&file_name, recorded)? {
            AttachmentRecord::Recorded { queue, replaced } => {
                self.blobs.remove(replaced.as_deref());
                self.signals.wake_queue(&queue);
                Ok(AttachmentReceipt::Stored)
            }
            AttachmentRecord::Refused {
                gate: AttachmentGate::AlreadyComplete { .. },
                stored: Some(stored),
            } => {
                let identical = self.blobs.same_content(&file_name, &stored).await;
                self.blobs.remove(Some(&file_name));
                Ok(AttachmentReceipt::AlreadyStored { identical })
            }
            AttachmentRecord::Refused { gate, .. } => {
                self.blobs.remove(Some(&file_name));
                Ok(AttachmentReceipt::Refused(gate))
            }
        }
    }

    pub async fn job_exists(&self, job_id: &str) -> Result<bool> {
        on_backend!(self, db => db.job_exists(job_id).await)
    }

    /// Stores a job's artifact archive, replacing an earlier one. `false` when there is
    /// no such job: then the file is discarded.
    pub async fn put_artifact(&self, job_id: &str, blob: StoredBlob) -> Result<bool> {
        let file_name = blob.file_name.clone();
        let recorded = on_backend!(self, db => db.record_artifact(job_id, blob).await);
        let (stored, unused_file) = self.blobs.discard_on_error(&file_name, recorded)?;
        self.blobs.remove(unused_file.as_deref());
        Ok(stored)
    }

    /// Applies an agent's report. Unknown jobs are ignored, like the reference does. The
    /// report that completes a job also stores its outcome.
    pub async fn update_result(&self, job_id: &str, update: ResultUpdate) -> Result<()> {
        let requeued = on_backend!(self, db => db.update_result(job_id, update).await)?;
        self.signals.wake_job(job_id);
        if let Some(queue) = requeued {
            self.signals.wake_queue(&queue);
        }
        Ok(())
    }

    pub async fn result(&self, job_id: &str) -> Result<Option<ResultView>> {
        on_backend!(self, db => db.result(job_id).await)
    }

    /// The agents that serve `queue` and are not in `excluded`.
    pub async fn eligible_agents(&self, queue: &str, excluded: &[String]) -> Result<usize> {
        let agents = self.agents_on_queue(queue).await?;
        Ok(agents
            .iter()
            .filter(|agent| !excluded.contains(&agent.name))
            .count())
    }

    /// Starts receiving an archive (attachments, artifact) of at most `limit` bytes.
    pub async fn start_upload(&self, limit: u64) -> Result<BlobUpload> {
        self.blobs.start_upload(limit).await
    }

    /// The file holding a job's archive of `kind`, if one was stored.
    pub async fn blob_path(&self, job_id: &str, kind: BlobKind) -> Result<Option<PathBuf>> {
        let name = on_backend!(self, db => db.blob_name(job_id, kind).await)?;
        Ok(name.map(|name| self.blobs.path(&name)))
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
