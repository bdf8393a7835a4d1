//! `tf agent`: the phase runner on a device host. It registers with the server, waits
//! for jobs on its queues (long-polling when the server is `tf serve`), runs each job's
//! phase commands (see `job`), and reports everything through the job's on-disk outbox
//! so that nothing is lost while the server is away.

mod artifacts;
pub(crate) mod attachments;
pub mod config;
mod delivery;
mod events;
mod host;
mod job;
mod logging;
mod masking;
mod metrics;
mod outbox;
mod phase_groups;
mod plan;
mod process;
mod recovery;
mod reports;
mod serial_log;
#[cfg(test)]
mod stand_in;

use std::future::Future;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::api::{read_refresh_token, v1, Api, ApiError, Call, EXTENSIONS_HEADER};
use crate::job::Phase;
use config::{AgentArgs, Config};
use delivery::Transport;
use host::{JobHost, ServerLink};
use metrics::Metrics;

/// The longest a claim waits on a server that can long-poll. It waits
/// `polling_interval` otherwise, so the agent still looks at its server record (offline,
/// restart) as often as the reference does, while a job is picked up the moment it comes.
const MAX_CLAIM_WAIT_SECONDS: u64 = 30;
/// For the agent's small requests (the reference allows 30 s; during a job every such
/// wait holds the job up).
const SHORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Server-unreachable back-off: from 1 s, doubling, up to a minute.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);
/// How often a stopping agent repeats its request to end its claim's wait.
const STOP_WAITING_AGAIN: Duration = Duration::from_millis(250);
/// The reference refreshes the server's view of an idle agent once a day.
const HEARTBEAT_AFTER_SECONDS: i64 = 24 * 3600;

/// The exit status for a config that cannot be used (`EX_CONFIG`), which the systemd
/// unit tells apart from a requested restart (status 1) and does not restart on.
const EXIT_BAD_CONFIG: u8 = 78;

pub fn run(args: AgentArgs) -> ExitCode {
    let config = match Config::load(&args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("tf: {error:#}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if args.check {
        // Nothing else is touched: no log file, no directories, no server.
        println!("{}: valid agent config", args.config.display());
        return ExitCode::SUCCESS;
    }
    // Without a refresh token every request would be refused for as long as the agent
    // runs: that is a setup mistake to report, not a state to wait out.
    if let Err(reason) = read_refresh_token(&config.token_file) {
        eprintln!(
            "tf: cannot read the token file {}: {reason}",
            config.token_file.display()
        );
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    match start(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tf: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn start(config: Config) -> anyhow::Result<()> {
    logging::init(&config)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async move {
            let agent = Arc::new(Agent::new(config)?);
            agent.run().await
        })
}

/// What is to happen once no job runs.
#[derive(Default)]
struct Requests {
    /// The agent takes its device out of service itself (recovery failed), with why.
    offline: Option<String>,
    /// Restart (SIGUSR1, or the server's `restart` state), with why.
    restart: Option<String>,
    /// An admin's `offline`/`maintenance` (state, comment) seen during a job: the phase
    /// reports overwrite it on the server, so it is put back when the job ends.
    admin_hold: Option<(String, String)>,
}

impl Requests {
    /// The comment sent along with the agent's state reports during a job.
    fn comment(&self) -> String {
        self.offline
            .clone()
            .or_else(|| self.restart.clone())
            .unwrap_or_default()
    }
}

pub struct Agent {
    config: Config,
    server: Arc<ServerLink>,
    metrics: Arc<Metrics>,
    requests: Mutex<Requests>,
    /// SIGTERM or SIGINT: kill the running phase, clean up, report and exit.
    stopping: CancellationToken,
    /// A second SIGTERM or SIGINT: do not wait for the cleanup either.
    stopping_now: CancellationToken,
    /// The server's `tf-extensions` header as last seen (empty for a reference server;
    /// `None` until the server is reached): long-poll claims, cheap state checks, …
    extensions: Mutex<Option<String>>,
}

/// The agent's record on the server, as far as the agent uses it.
#[derive(Default)]
struct ServerView {
    state: Option<String>,
    comment: String,
    restricted_queues: Vec<String>,
    updated_at: Option<i64>,
}

impl Agent {
    fn new(config: Config) -> anyhow::Result<Agent> {
        let api = Api::new(&config.server_address)?
            .with_token_file(&config.token_file)
            .with_agent_cookie(&config.agent_id);
        Ok(Agent {
            metrics: Arc::new(Metrics::new(&config.agent_id, config.identifier.as_deref())),
            server: Arc::new(ServerLink::new(api)),
            config,
            requests: Mutex::default(),
            stopping: CancellationToken::new(),
            stopping_now: CancellationToken::new(),
            extensions: Mutex::default(),
        })
    }

    fn api(&self) -> &Api {
        self.server.api()
    }

    fn requests(&self) -> std::sync::MutexGuard<'_, Requests> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        for dir in [&self.config.logging_basedir, &self.config.results_basedir] {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        if let Some(port) = self.config.metrics_port {
            self.metrics.clone().serve(port).await?;
        }
        self.watch_signals()?;
        tracing::info!(
            "Starting agent {} for {}",
            self.config.agent_id,
            self.api().base()
        );
        // Queues first: a client that sees the agent waiting also finds it on its queues.
        self.advertise().await;
        self.come_online().await;
        recovery::finish_interrupted_jobs(self.as_ref()).await;

        while !self.stopping.is_cancelled() {
            self.wait_for_server().await;
            if self.stopping.is_cancelled() {
                break;
            }
            let view = self.server_view().await;
            self.heartbeat(&view).await;
            if let Some((state, comment)) = self.note_server_view(&view) {
                tracing::error!(
                    "Agent {} is {state}, not processing jobs! Reason: {}",
                    self.config.agent_id,
                    if comment.is_empty() {
                        "Unknown"
                    } else {
                        &comment
                    }
                );
                self.pause().await;
                continue;
            }
            if let Some(queues) = &self.config.advertised_queues {
                self.quietly(v1::advertise_queues(queues)).await;
            }
            recovery::retry_unsent_results(self.as_ref()).await;
            if self.carry_out_requests().await? {
                self.pause().await;
                continue;
            }
            let mut claimed = self.claim(&view).await;
            let idle_pass_waited = claimed.waited;
            if self.stopping.is_cancelled() {
                break;
            }
            while let Some(job) = claimed.job.take() {
                job::run(self.as_ref(), job).await;
                if self.stopping.is_cancelled() {
                    return Ok(());
                }
                self.wait_for_server().await;
                self.report(&json!({"job_id": ""})).await;
                let view = self.server_view().await;
                if let Some(hold) = self.note_server_view(&view) {
                    self.requests().admin_hold = Some(hold);
                }
                if self.carry_out_requests().await? {
                    break;
                }
                self.set_state("waiting", "").await;
                claimed = self.claim(&view).await;
            }
            if !idle_pass_waited {
                self.pause().await;
            }
        }
        tracing::info!("Caught a stop signal, exiting");
        Ok(())
    }

    /// SIGTERM/SIGINT stop the agent (a running phase is killed and the job wrapped up);
    /// SIGUSR1 asks for a restart once no job runs, as with the reference.
    fn watch_signals(self: &Arc<Self>) -> anyhow::Result<()> {
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut restart = signal(SignalKind::user_defined1())?;
        let agent = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = terminate.recv() => agent.stop(),
                    _ = interrupt.recv() => agent.stop(),
                    _ = restart.recv() => {
                        tracing::info!("Marked agent for restart");
                        agent.request_restart("Restart signal detected from supervisor process");
                    }
                }
            }
        });
        Ok(())
    }

    /// The first stop signal ends the job gracefully; the second ends the cleanup too.
    fn stop(&self) {
        if self.stopping.is_cancelled() {
            self.stopping_now.cancel();
        } else {
            self.stopping.cancel();
        }
    }

    /// Restart once idle; the first reason given is kept.
    fn request_restart(&self, comment: &str) {
        self.requests()
            .restart
            .get_or_insert_with(|| comment.to_string());
    }

    /// Take the device out of service once idle; the first reason given is kept.
    fn request_offline(&self, comment: &str) {
        self.requests()
            .offline
            .get_or_insert_with(|| comment.to_string());
    }

    /// Notes a restart the server asks for, and returns the admin's `offline` or
    /// `maintenance` state (with its comment) if the server has the agent in one.
    fn note_server_view(&self, view: &ServerView) -> Option<(String, String)> {
        match view.state.as_deref() {
            Some("restart") => {
                self.request_restart(&view.comment);
                None
            }
            Some(state @ ("offline" | "maintenance")) => {
                Some((state.to_string(), view.comment.clone()))
            }
            _ => None,
        }
    }

    /// Carries out what was asked for while a job ran. `Ok(true)`: the agent is out of
    /// service, so take no job. A restart ends the process with status 1 (the supervisor
    /// starts it again), as the reference does.
    async fn carry_out_requests(&self) -> anyhow::Result<bool> {
        let (offline, restart, hold) = {
            let mut requests = self.requests();
            (
                requests.offline.take(),
                requests.restart.clone(),
                requests.admin_hold.take(),
            )
        };
        if let Some(comment) = offline {
            tracing::error!("Agent {} goes offline: {comment}", self.config.agent_id);
            self.set_state("offline", &comment).await;
            return Ok(true);
        }
        if let Some(comment) = restart {
            self.set_state("offline", &comment).await;
            if let Err(error) = std::fs::write(self.restart_marker(), comment) {
                tracing::warn!("cannot note the restart: {error}");
            }
            anyhow::bail!("Restart Requested");
        }
        if let Some((state, comment)) = hold {
            // The job's phase reports replaced the admin's state: put it back.
            self.set_state(&state, &comment).await;
            return Ok(true);
        }
        Ok(false)
    }

    /// Reports the agent waiting for jobs, unless an admin set it offline or to
    /// maintenance: that stands across agent restarts (the reference resets it). The
    /// offline state the agent itself reports while restarting is lifted.
    async fn come_online(&self) {
        let marker = self.restart_marker();
        let restarted = marker.exists();
        let _ = std::fs::remove_file(&marker);
        let view = self.server_view().await;
        if let (Some(state @ ("offline" | "maintenance")), false) =
            (view.state.as_deref(), restarted)
        {
            tracing::warn!(
                "Agent {} is {state} on the server ({}); it stays so until set to waiting",
                self.config.agent_id,
                view.comment
            );
            return;
        }
        self.set_state("waiting", "").await;
    }

    /// Left by an agent that exits to be restarted, for the next one to find.
    fn restart_marker(&self) -> std::path::PathBuf {
        let name = format!(".tf-agent-restarting-{}", self.config.agent_id);
        self.config.logging_basedir.join(name)
    }

    async fn set_state(&self, state: &str, comment: &str) {
        self.report(&json!({"state": state, "comment": comment}))
            .await;
    }

    /// Updates the agent's record on the server.
    async fn report(&self, report: &Value) {
        self.quietly(v1::report_agent(&self.config.agent_id, report))
            .await;
    }

    /// Advertised queues and images, and the agent's description.
    async fn advertise(&self) {
        let config = &self.config;
        if let Some(queues) = &config.advertised_queues {
            self.quietly(v1::advertise_queues(queues)).await;
        }
        if let Some(images) = &config.advertised_images {
            self.quietly(v1::advertise_images(images)).await;
        }
        let mut data = json!({
            "location": config.location,
            "queues": config.job_queues,
            "provision_type": config.provision_type,
        });
        if let Some(identifier) = &config.identifier {
            data["identifier"] = json!(identifier);
        }
        self.report(&data).await;
    }

    /// A report whose failure is only worth a log line.
    async fn quietly(&self, call: Call<()>) {
        if let Err(error) = self.api().call(call, SHORT_TIMEOUT).await {
            tracing::warn!("{error}");
        }
    }

    /// Returns once `GET /v1` answers (below 500), backing off while it does not. Also
    /// notes whether the server is `tf serve`.
    async fn wait_for_server(&self) {
        let mut retry = FIRST_RETRY;
        loop {
            match self
                .api()
                .send(v1::version(), Duration::from_secs(10))
                .await
            {
                Ok(reply) if !reply.status.is_server_error() => {
                    let extensions = reply
                        .headers
                        .get(EXTENSIONS_HEADER)
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let changed = {
                        let mut seen = self.extensions.lock().unwrap_or_else(|p| p.into_inner());
                        let changed = seen.as_ref() != Some(&extensions);
                        *seen = Some(extensions);
                        changed
                    };
                    if changed {
                        self.note_token_renewal();
                        // Another server version may answer batches differently.
                        self.server.batches().forget();
                    }
                    return;
                }
                Ok(reply) => tracing::warn!("Testflinger server answers {}", reply.status),
                Err(error) => tracing::warn!(
                    "Testflinger server unreachable, waiting for connectivity: {error}"
                ),
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = self.stopping.cancelled() => return,
            }
            retry = (retry * 2).min(LAST_RETRY);
        }
    }

    fn extensions(&self) -> Option<String> {
        self.extensions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The server is `tf serve`: long-poll claims and cheap state checks.
    fn is_extended(&self) -> bool {
        self.extensions().is_some_and(|e| !e.is_empty())
    }

    /// Whether the server offers the extension `name`.
    fn offers(&self, name: &str) -> bool {
        self.extensions()
            .is_some_and(|e| e.split(',').any(|offered| offered.trim() == name))
    }

    /// Says once per server when the token file cannot be kept fresh.
    fn note_token_renewal(&self) {
        if !self.offers("refresh-token-renewal") {
            tracing::warn!(
                "{} does not renew refresh tokens: the one in {} stops working when it \
                 expires (6 days after it was issued, on a reference server); replace the \
                 file before then",
                self.api().base(),
                self.config.token_file.display()
            );
        }
    }

    async fn server_view(&self) -> ServerView {
        let record = v1::agent(&self.config.agent_id);
        let data: Value = match self.api().call(record, SHORT_TIMEOUT).await {
            Ok(data) => data,
            Err(error) => {
                if error.status() != Some(hyper::StatusCode::NOT_FOUND) {
                    tracing::warn!("Failed to retrieve agent data: {error}");
                }
                Value::Null
            }
        };
        let restricted_queues = data
            .get("restricted_to")
            .and_then(Value::as_object)
            .map(|queues| {
                queues
                    .iter()
                    .filter(|(_, owners)| owners.as_array().is_some_and(|o| !o.is_empty()))
                    .map(|(queue, _)| queue.clone())
                    .collect()
            })
            .unwrap_or_default();
        ServerView {
            state: data
                .get("state")
                .and_then(Value::as_str)
                .map(str::to_string),
            comment: data
                .get("comment")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            restricted_queues,
            updated_at: updated_at(&data),
        }
    }

    /// Tells the server the agent is still there when its record is a day old (the
    /// server forgets agents not heard from for a week), echoing the server's state.
    async fn heartbeat(&self, view: &ServerView) {
        let (Some(state), Some(updated_at)) = (&view.state, view.updated_at) else {
            return;
        };
        let now = crate::job::time::now() / 1_000_000;
        if now - updated_at >= HEARTBEAT_AFTER_SECONDS {
            tracing::info!("Sending heartbeat to Testflinger server");
            self.set_state(state, &view.comment).await;
        }
    }

    /// Asks for a job. Against `tf serve` the request waits for one to arrive.
    async fn claim(&self, view: &ServerView) -> Claimed {
        let queues = if view.restricted_queues.is_empty() {
            &self.config.job_queues
        } else {
            &view.restricted_queues
        };
        let long_poll = self.is_extended();
        let wait = long_poll.then(|| {
            self.config
                .polling_interval
                .clamp(1, MAX_CLAIM_WAIT_SECONDS)
        });
        let timeout = SHORT_TIMEOUT + Duration::from_secs(wait.unwrap_or(0));
        let claim = self.api().call(v1::claim(queues, wait), timeout);
        match self.claim_answer(claim).await {
            Ok(job) => {
                let is_job = job
                    .as_ref()
                    .is_some_and(|job| job.as_object().is_some_and(|o| !o.is_empty()));
                let mut job = job.filter(|_| is_job);
                if self.stopping.is_cancelled() {
                    if let Some(job) = job.take() {
                        self.give_back(&job).await;
                    }
                }
                Claimed {
                    job,
                    waited: long_poll,
                }
            }
            Err(error) => {
                if matches!(error.status().map(|s| s.as_u16()), Some(401 | 403)) {
                    tracing::error!("Agent not authorized to request jobs. {error}");
                } else {
                    log_claim_error(&error);
                }
                Claimed::default()
            }
        }
    }

    /// Awaits a claim's answer. Once the agent is told to stop, a server that can is asked
    /// to end the claim's wait, again and again until it answers (the claim may not have
    /// reached it yet). Dropping the claim instead could lose a job the server was
    /// handing out on it just then.
    async fn claim_answer<T>(&self, claim: impl Future<Output = T>) -> T {
        tokio::pin!(claim);
        tokio::select! {
            answer = &mut claim => return answer,
            _ = self.stopping.cancelled(), if self.offers("stop-waiting") => {}
        }
        loop {
            tokio::select! {
                answer = &mut claim => return answer,
                _ = async {
                    self.quietly(v1::stop_waiting(&self.config.agent_id)).await;
                    tokio::time::sleep(STOP_WAITING_AGAIN).await;
                } => {}
            }
        }
    }

    /// Puts a job taken just as the agent was told to stop back in its queue, so that
    /// another agent (or this one, restarted) runs it.
    async fn give_back(&self, job: &Value) {
        let Some(job_id) = job.get("job_id").and_then(Value::as_str) else {
            return;
        };
        tracing::info!("Stopping: giving job {job_id} back to its queue");
        self.quietly(v1::post_result(job_id, &reports::requeue()))
            .await;
    }

    /// Sleeps `polling_interval` (or until told to stop).
    async fn pause(&self) {
        let interval = Duration::from_secs(self.config.polling_interval);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = self.stopping.cancelled() => {}
        }
    }
}

impl JobHost for Agent {
    type Server = ServerLink;

    fn config(&self) -> &Config {
        &self.config
    }

    fn server(&self) -> &Arc<ServerLink> {
        &self.server
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    fn stopping_now(&self) -> &CancellationToken {
        &self.stopping_now
    }

    fn is_extended(&self) -> bool {
        Agent::is_extended(self)
    }

    async fn check_in(&self) {
        let view = self.server_view().await;
        if let Some(hold) = self.note_server_view(&view) {
            self.requests().admin_hold = Some(hold);
        }
    }

    async fn report_phase(&self, phase: Phase) {
        let comment = self.requests().comment();
        self.set_state(phase.as_str(), &comment).await;
    }

    async fn report(&self, report: &Value) {
        Agent::report(self, report).await;
    }

    async fn quietly(&self, call: Call<()>) {
        Agent::quietly(self, call).await;
    }

    async fn take_offline(&self, comment: &str) {
        self.request_offline(comment);
        self.set_state("offline", comment).await;
    }
}

#[derive(Default)]
struct Claimed {
    job: Option<Value>,
    /// The request itself waited for a job, so no pause is needed before the next.
    waited: bool,
}

fn log_claim_error(error: &ApiError) {
    tracing::warn!("Cannot check for jobs: {error}");
}

/// `updated_at` of the agent record, in seconds: an ISO string, or Mongo's `{"$date": …}`.
fn updated_at(data: &Value) -> Option<i64> {
    let raw = data.get("updated_at")?;
    let text = raw
        .as_str()
        .or_else(|| raw.get("$date").and_then(Value::as_str))?;
    crate::job::time::parse_iso8601(text).map(|micros| micros / 1_000_000)
}
