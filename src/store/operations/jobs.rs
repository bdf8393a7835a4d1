//! Jobs: submission, dispatch (long-polls waiting for a claim), cancellation, the
//! attachments gate, results, search and queue views.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::select_all;
use serde_json::{Map, Value};

use crate::store::backend::{AttachmentRecord, Jobs as _};
use crate::store::blobs::{BlobKind, BlobUpload, StoredBlob};
use crate::store::error::Result;
use crate::store::jobs::{
    AttachmentGate, AttachmentReceipt, ClaimedJob, JobFilter, JobSummary, NewJob, ResultUpdate,
    ResultView,
};
use crate::store::open::{on_backend, Store};
use crate::store::signals::Waited;

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
                Waited::Woken(true) | Waited::Recheck => continue,
                Waited::Woken(false) | Waited::Over => return Ok(None),
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
