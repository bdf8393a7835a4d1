//! What running a job needs from the agent around it (`JobHost`) and from the server
//! (`JobServer`). `job.rs` and `recovery.rs` see the agent and the server only through
//! these, so they do not depend on the agent's loop (which runs them), and a job can be
//! run in-process against a stand-in server in tests.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::config::Config;
use super::delivery::{Batches, Transport};
use super::metrics::Metrics;
use crate::api::{v1, Api, ApiError, Call, Upload};
use crate::job::{JobState, Phase};

/// How long a job's own reads of the server may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// An attachments archive may be large and the link slow; this only guards against a hang.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(2 * 3600);
/// A webhook relay goes through the server to the webhook; it may be slow.
const RELAY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one report (or batch of fragments) may take.
const REPORT_TIMEOUT: Duration = Duration::from_secs(60);
/// An artifact archive may be large and the link slow; this only guards against a hang.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(2 * 3600);

pub(super) trait JobHost {
    type Server: JobServer;

    fn config(&self) -> &Config;
    fn server(&self) -> &Arc<Self::Server>;
    fn metrics(&self) -> &Metrics;
    /// The first stop signal: end the job gracefully.
    fn stopping(&self) -> &CancellationToken;
    /// The second stop signal: do not wait for the cleanup either.
    fn stopping_now(&self) -> &CancellationToken;
    /// Whether the server is `tf serve` (cheap state checks).
    fn is_extended(&self) -> bool;

    /// Before a phase: reads the agent's record on the server and notes what an admin
    /// asked for meanwhile (a restart, offline or maintenance once the job is over).
    async fn check_in(&self);
    /// Reports the agent busy with `phase`.
    async fn report_phase(&self, phase: Phase);
    /// Updates the agent's record on the server.
    async fn report(&self, report: &Value);
    /// Sends `call`; a failure is only worth a log line.
    async fn quietly(&self, call: Call<()>);
    /// Takes the device out of service now and once the job is over, with why.
    async fn take_offline(&self, comment: &str);
}

/// The server as a running job uses it: where its reports go (`Transport`), and what it
/// reads back.
pub(super) trait JobServer: Transport {
    /// The server's address, for links to the job's page.
    fn base(&self) -> &str;
    /// The job's state; `cheap` asks without the logs (a server with
    /// `result-without-logs`). `None` when it cannot be read.
    async fn job_state(&self, job_id: &str, cheap: bool) -> Option<JobState>;
    /// Streams the job's attachments archive into `destination`; `Ok(false)` when the
    /// server has none.
    async fn download_attachments(
        &self,
        job_id: &str,
        destination: &Path,
    ) -> Result<bool, ApiError>;
    /// Relays the job's status events to its webhook.
    fn relay_events(
        &self,
        job_id: &str,
        events: &Value,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
}

/// The agent's server: the `Api` it is reached through, and what its jobs' outboxes
/// learned of it (whether it takes fragment batches).
pub(super) struct ServerLink {
    api: Api,
    batches: Batches,
}

impl ServerLink {
    pub fn new(api: Api) -> ServerLink {
        ServerLink {
            api,
            batches: Batches::default(),
        }
    }

    pub fn api(&self) -> &Api {
        &self.api
    }
}

impl Transport for ServerLink {
    async fn post(&self, path: &str, body: &Value) -> Result<(), ApiError> {
        self.api
            .post_json(path, body, REPORT_TIMEOUT)
            .await
            .map(drop)
    }

    async fn post_batch(&self, path: &str, fragments: &[&Value]) -> Result<(), ApiError> {
        self.api
            .call(v1::post_log_batch(path, fragments), REPORT_TIMEOUT)
            .await
    }

    async fn upload(&self, path: &str, upload: Upload) -> Result<(), ApiError> {
        self.api
            .upload(path, upload, UPLOAD_TIMEOUT)
            .await
            .map(drop)
    }

    fn batches(&self) -> &Batches {
        &self.batches
    }
}

impl JobServer for ServerLink {
    fn base(&self) -> &str {
        self.api.base()
    }

    async fn job_state(&self, job_id: &str, cheap: bool) -> Option<JobState> {
        let result = if cheap {
            v1::result_state(job_id)
        } else {
            v1::result(job_id)
        };
        let result = self.api.call(result, READ_TIMEOUT).await.ok()?;
        JobState::parse(result.get("job_state")?.as_str()?)
    }

    async fn download_attachments(
        &self,
        job_id: &str,
        destination: &Path,
    ) -> Result<bool, ApiError> {
        let path = v1::attachments_path(job_id);
        self.api
            .download(&path, destination, DOWNLOAD_TIMEOUT)
            .await
    }

    async fn relay_events(&self, job_id: &str, events: &Value) -> Result<(), ApiError> {
        self.api
            .call(v1::job_events(job_id, events), RELAY_TIMEOUT)
            .await
    }
}
