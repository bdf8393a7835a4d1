//! The seam between the `Store`, which the rest of tf calls with domain operations, and
//! the database behind it. Each trait is one resource's reads and writes, as the
//! database does them; both backends implement every trait, with their own SQL:
//! `sqlite/` (one file in the data dir) and `postgres/` (a server). What is not the
//! database's (waking long-polls, archive files, sealing secrets) stays in the `Store`.
//!
//! A write that returns has committed: the caller may tell its client "done".

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Map, Value};

use super::agents::{AgentFields, ProvisionLogEntry};
use super::blobs::{BlobKind, StoredBlob};
use super::clients::{Client, RefreshToken, RefreshTokens, Renewal, Revocation};
use super::error::Result;
use super::jobs::{
    AttachmentGate, ClaimedJob, JobFilter, JobSummary, NewJob, ResultUpdate, ResultView,
};
use super::legacy::LegacyResult;
use super::logs::{Fragment, FragmentQuery, PhaseLog};
use super::pages::{JobRecord, LogsSoFar, PhaseSpan, ProvisionAttempt};
use super::retention::Expired;
use super::secrets::Expiry;
use crate::job::time::Micros;

/// What recording an uploaded attachments archive came to.
pub(crate) enum AttachmentRecord {
    /// Recorded: the job's queue (its job is now claimable) and the archive file it
    /// replaced, if any (left by an upload that failed to commit).
    Recorded {
        queue: String,
        replaced: Option<String>,
    },
    /// The gate was not open; the archive stored before, if any.
    Refused {
        gate: AttachmentGate,
        stored: Option<String>,
    },
}

/// A secret as it is stored: sealed under the server's master key.
pub(crate) struct SealedSecret {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

pub(crate) trait Jobs {
    /// Stores a new job in state `waiting`; `StoreError::DuplicateJob` when its id exists.
    async fn insert_job(&self, job: NewJob) -> Result<()>;
    /// The best claimable job of `queues` (highest priority, then oldest; archive
    /// complete; `agent` not excluded) becomes `agent`'s, `running`, with its wait
    /// recorded, in one step: no two claims get the same job. `None` when there is none.
    async fn claim_job(&self, queues: &[String], agent: &str) -> Result<Option<ClaimedJob>>;
    async fn job_definition(&self, job_id: &str) -> Result<Option<Map<String, Value>>>;
    /// `(queue, state, count)` for every queue and state that has jobs.
    async fn job_counts(&self) -> Result<Vec<(String, String, u64)>>;
    async fn search_jobs(&self, filter: JobFilter) -> Result<Vec<JobSummary>>;
    /// All jobs of one queue, in submission order.
    async fn queue_jobs(&self, queue: &str) -> Result<Vec<JobSummary>>;
    /// The last `limit` jobs `agent` took, newest first.
    async fn agent_jobs(&self, agent: &str, limit: u32) -> Result<Vec<JobSummary>>;
    /// Moves an unfinished job to `cancelled`; false when there was none to cancel.
    async fn cancel_job(&self, job_id: &str) -> Result<bool>;
    /// The 0-based place of a waiting job in its queue; `None` when it is not waiting.
    async fn queue_position(&self, job_id: &str) -> Result<Option<u64>>;
    async fn attachment_gate(&self, job_id: &str) -> Result<AttachmentGate>;
    /// Checks the gate again and, when open, records the archive and releases the job.
    async fn record_attachments(&self, job_id: &str, blob: StoredBlob) -> Result<AttachmentRecord>;
    async fn job_exists(&self, job_id: &str) -> Result<bool>;
    /// Points the job's artifact at `blob`: whether the job exists, and the file no
    /// longer used (the one replaced, or `blob`'s own when there is no such job).
    async fn record_artifact(
        &self,
        job_id: &str,
        blob: StoredBlob,
    ) -> Result<(bool, Option<String>)>;
    /// Applies an agent's report (unknown jobs are ignored). A final report completes
    /// the job and stores its outcome, once; a report that puts the job back to
    /// `waiting` gives its queue.
    async fn update_result(&self, job_id: &str, update: ResultUpdate) -> Result<Option<String>>;
    async fn result(&self, job_id: &str) -> Result<Option<ResultView>>;
    /// A job with everything its page shows.
    async fn job_record(&self, job_id: &str) -> Result<Option<JobRecord>>;
    /// The file name of a job's archive of `kind`, if one was stored.
    async fn blob_name(&self, job_id: &str, kind: BlobKind) -> Result<Option<String>>;
}

pub(crate) trait Logs {
    /// Stores fragments of one log, all or none; a number stored before is replaced (a
    /// resend).
    async fn insert_fragments(
        &self,
        job_id: &str,
        log_type: &str,
        fragments: Vec<Fragment>,
    ) -> Result<()>;
    /// The log per phase (every phase, or only `query.phase`), and, when asked
    /// (`with_end`), whether the job has finished.
    async fn read_log(
        &self,
        job_id: &str,
        log_type: &str,
        query: FragmentQuery,
        with_end: bool,
    ) -> Result<(Vec<PhaseLog>, bool)>;
    /// Every fragment of a job, concatenated per `(phase, log type)`.
    async fn full_logs(&self, job_id: &str) -> Result<Vec<(String, String, String)>>;
    /// Each phase's output span, in the order the phases started.
    async fn phase_spans(&self, job_id: &str) -> Result<Vec<PhaseSpan>>;
    /// The last `budget` bytes (whole fragments) of each of a job's logs.
    async fn logs_so_far(&self, job_id: &str, budget: usize) -> Result<LogsSoFar>;
}

pub(crate) trait Agents {
    /// Creates or updates an agent: given fields replace stored ones, log lines are
    /// appended and only the last hundred kept.
    async fn report_agent(
        &self,
        name: &str,
        fields: Map<String, Value>,
        log: Vec<String>,
    ) -> Result<()>;
    /// Every agent, in the order they first reported.
    async fn agents(&self) -> Result<Vec<AgentFields>>;
    async fn agent(&self, name: &str) -> Result<Option<AgentFields>>;
    /// The agents whose reported queues include `queue`.
    async fn agents_on_queue(&self, queue: &str) -> Result<Vec<AgentFields>>;
    /// Records a provision attempt, updates the agent's streak; false when no agent has
    /// that name. A success of a job with no provision status is no attempt.
    async fn record_provision(&self, name: &str, entry: ProvisionLogEntry) -> Result<bool>;
    /// An agent's provision attempts, newest first.
    async fn provision_history(&self, agent: &str) -> Result<Vec<ProvisionAttempt>>;
    /// The lines an agent posted in its reports, oldest first.
    async fn agent_log(&self, agent: &str) -> Result<Vec<String>>;
    async fn advertise_queues(&self, queues: BTreeMap<String, String>) -> Result<()>;
    /// `{queue: description}` for every known queue.
    async fn queue_descriptions(&self) -> Result<BTreeMap<String, String>>;
    async fn set_images(&self, images: BTreeMap<String, Map<String, Value>>) -> Result<()>;
    async fn images(&self, queue: &str) -> Result<Map<String, Value>>;
    /// Wait-time samples in seconds per queue, ascending; all queues when `queues` is
    /// empty.
    async fn wait_times(&self, queues: Vec<String>) -> Result<BTreeMap<String, Vec<i64>>>;
}

pub(crate) trait Clients {
    /// A client and its secret hash.
    async fn client(&self, client_id: &str) -> Result<Option<(Client, Option<String>)>>;
    /// Every client, in the order they were created.
    async fn clients(&self) -> Result<Vec<Client>>;
    /// Creates or replaces a client (a `None` hash keeps the stored one); whether it is
    /// new. `RefreshTokens::Revoke` revokes its tokens in the same transaction.
    async fn save_client(
        &self,
        client: Client,
        secret_hash: Option<String>,
        refresh_tokens: RefreshTokens,
    ) -> Result<bool>;
    /// Deletes a client with its refresh tokens and secrets; false when there was none.
    async fn remove_client(&self, client_id: &str) -> Result<bool>;
    /// Stores the first token of a family while the client exists and (with
    /// `secret_hash`) still has that secret; whether it was stored.
    async fn store_refresh_token(
        &self,
        token_hash: String,
        client_id: &str,
        lifetime: Duration,
        secret_hash: Option<String>,
    ) -> Result<bool>;
    /// Renews a token to its successor, at most once, in one transaction.
    async fn renew_refresh_token(
        &self,
        token_hash: String,
        successor_hash: String,
        lifetime: Duration,
    ) -> Result<Renewal>;
    /// Looks a token up by its hash and, when found, notes that it was used.
    async fn use_refresh_token(&self, token_hash: String) -> Result<Option<RefreshToken>>;
    /// Revokes a token with its whole family.
    async fn revoke_refresh_token(&self, token_hash: String) -> Result<Revocation>;
    /// Restricted queues (all, or only `only`) with their owners, by queue name.
    async fn restricted_queues(&self, only: Option<String>) -> Result<Vec<(String, Vec<String>)>>;
    /// Whether `queue` is restricted (asked by every submission).
    async fn is_restricted(&self, queue: &str) -> Result<bool>;
    /// Marks `queue` restricted and adds it to `client_id`'s allowed queues.
    async fn restrict_queue(&self, queue: &str, client_id: &str) -> Result<()>;
    /// Lifts the restriction of `queue` and removes it from `client_id`'s allowed queues.
    async fn unrestrict_queue(&self, queue: &str, client_id: &str) -> Result<()>;
}

/// Failed logins, counted for every server of the lab (`store/logins.rs`).
pub(crate) trait Logins {
    /// Counts an attempt to log in as `client_id` from `address`, before its secret is
    /// checked; `Some` is how long that source is locked out.
    async fn count_login_attempt(
        &self,
        client_id: &str,
        address: IpAddr,
    ) -> Result<Option<Duration>>;
    /// The source logged in: its failures are forgotten.
    async fn forget_login_failures(&self, client_id: &str, address: IpAddr) -> Result<()>;
}

pub(crate) trait Secrets {
    /// Stores (or replaces) a sealed secret.
    async fn put_secret(
        &self,
        client_id: &str,
        path: &str,
        sealed: SealedSecret,
        expiry: Expiry,
    ) -> Result<()>;
    async fn delete_secret(&self, client_id: &str, path: &str) -> Result<()>;
    /// The paths among `paths` that `client_id` has no unexpired secret at.
    async fn missing_secrets(&self, client_id: &str, paths: Vec<String>) -> Result<Vec<String>>;
    /// An unexpired secret; one readable once is deleted by this read.
    async fn take_secret(&self, client_id: &str, path: &str) -> Result<Option<SealedSecret>>;
}

pub(crate) trait Legacy {
    /// Merges a Redis-era result document into the job's, key by key.
    async fn merge_legacy_result(&self, job_id: &str, result: LegacyResult) -> Result<()>;
    async fn legacy_result(&self, job_id: &str) -> Result<Map<String, Value>>;
    /// Stores raw text as the next fragment of the job's log, in the phase the job is
    /// in; false for an unknown job.
    async fn append_legacy_output(
        &self,
        job_id: &str,
        log_type: &str,
        text: String,
    ) -> Result<bool>;
    /// The text of the log stored since the previous call, moving the read cursor: two
    /// readers never get the same text.
    async fn take_legacy_output(&self, job_id: &str, log_type: &str) -> Result<String>;
}

pub(crate) trait Retention {
    /// Deletes a bounded batch of each table's rows older than `cutoff` (refresh tokens
    /// by their idleness, secrets by their own expiry); the archive files whose rows went.
    /// `None`: another server on the same database is expiring now, and is left to it.
    async fn expire_batch(&self, cutoff: Micros) -> Result<Option<(Expired, Vec<String>)>>;
    /// Every archive file a row points to.
    async fn referenced_files(&self) -> Result<HashSet<String>>;
    /// The store's identity (written into its blob directory) and whether it has ever
    /// recorded an archive.
    async fn identity(&self) -> Result<(String, bool)>;
}

pub(crate) trait Reachability {
    /// Answers a trivial query: the database can be reached and read now.
    async fn answer(&self) -> Result<()>;
}
