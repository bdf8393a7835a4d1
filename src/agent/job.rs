//! Running one job: the run directory, attachments, the six main phases in order and
//! cleanup at the end, with the reference's skip and failure rules, and every report
//! (states, statuses, output, events, provision logs, artifacts, the outcome) going
//! through the job's outbox.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::config::{Config, DEFAULT_GLOBAL_TIMEOUT, DEFAULT_OUTPUT_TIMEOUT};
use super::masking::Masker;
use super::outbox::{self, Outbox};
use super::process::{CancelCheck, OutputSink, PhaseCommand, Stop, StopConditions};
use super::{artifacts, attachments, requeue_report, Agent};
use crate::api::Api;
use crate::job::outcome::{AGENT_STOPPED_LINE, KILLED, RECOVERY_FAILED};
use crate::job::{is_truthy, is_valid_job_id, time, MAIN_PHASES};

/// Phases that run only when the job has `<phase>_data`.
const DATA_PHASES: &[&str] = &[
    "provision",
    "firmware_update",
    "test",
    "allocate",
    "reserve",
];
/// Phases whose data may carry attachments.
const ATTACHMENT_PHASES: &[&str] = &["provision", "firmware_update", "test"];
/// The reference's exit code when the agent could not run the phase command at all.
const RUNNER_FAILED: i32 = 100;
/// How long the end of a job waits for its reports to reach the server before the run
/// directory is set aside for later.
const DELIVERY_WAIT: Duration = Duration::from_secs(30);
/// The longest cleanup of an agent that was told to stop.
const STOPPING_CLEANUP_SECONDS: i64 = 60;
/// The serial log is sent in pieces of this many characters, as the reference does.
const SERIAL_CHUNK: usize = 1 << 20;

pub async fn run(agent: &Agent, job: Value) {
    let Some(job_id) = job
        .get("job_id")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        tracing::error!("the server sent a job without a job_id: {job}");
        return;
    };
    if !is_valid_job_id(&job_id) {
        tracing::error!("the server sent a job with an invalid job_id {job_id:?}");
        return;
    }
    agent.metrics.job_started();
    tracing::info!("Starting job {job_id}");
    let run_dir = agent.config.execution_basedir.join(&job_id);
    let runner = match JobRunner::start(agent, job, &job_id, &run_dir) {
        Ok(runner) => runner,
        Err(error) => {
            // Without a run directory there is no outbox: say so directly, and end the
            // job rather than leave it running forever.
            let message = format!("ERROR: the agent cannot start this job: {error:#}\n");
            tracing::error!("{}", message.trim_end());
            let fragment = json!({
                "fragment_number": 0, "phase": "setup", "log_data": message,
                "timestamp": time::render_micros(time::now()),
            });
            agent
                .post_quietly(&format!("/v1/result/{job_id}/log/output"), &fragment)
                .await;
            // A failure status, so that the job does not read as passed.
            agent
                .post_quietly(
                    &format!("/v1/result/{job_id}"),
                    &json!({"status": {"setup": RUNNER_FAILED}, "job_state": "complete"}),
                )
                .await;
            return;
        }
    };
    runner.run().await;
}

struct JobRunner<'a> {
    agent: &'a Agent,
    config: &'a Config,
    /// The job as it is being run: attachments and secrets are taken out as they are used.
    job: Value,
    job_id: String,
    run_dir: PathBuf,
    outbox: Outbox,
    events: Events,
    status: Map<String, Value>,
    end_reason: String,
}

/// Whether the agent keeps a job it started, or gives it back to its queue.
#[derive(PartialEq)]
enum Keep {
    Job,
    /// The agent was told to stop before any of the job's phases ran.
    GiveBack,
}

impl<'a> JobRunner<'a> {
    /// Creates the run directory with the reference's files in it.
    fn start(agent: &'a Agent, job: Value, job_id: &str, run_dir: &Path) -> anyhow::Result<Self> {
        let outbox = Outbox::create(
            &outbox::dir_of(&agent.config.execution_basedir, job_id),
            agent.api.clone(),
        )?;
        if run_dir.exists() {
            // Left by a run of the same job that the server handed out again.
            std::fs::remove_dir_all(run_dir)?;
        }
        std::fs::create_dir_all(run_dir)?;
        std::fs::write(run_dir.join("testflinger.json"), job.to_string())?;
        std::fs::write(run_dir.join("testflinger-outcome.json"), "{}")?;
        let events = Events::new(agent, &job, job_id);
        Ok(JobRunner {
            agent,
            config: &agent.config,
            job,
            job_id: job_id.to_string(),
            run_dir: run_dir.to_path_buf(),
            outbox,
            events,
            status: Map::new(),
            end_reason: "normal_exit".into(),
        })
    }

    async fn run(mut self) {
        let job_page = format!("{}/jobs/{}", self.agent.api.base(), self.job_id);
        self.event("job_start", &job_page);
        self.agent
            .post_quietly(
                &format!("/v1/agents/data/{}", self.config.agent_id),
                &json!({"job_id": self.job_id}),
            )
            .await;
        match self.unpack_attachments().await {
            Ok(()) => {
                // The connector appends its errors here; it starts empty for every job.
                let _ = File::create(self.run_dir.join("device-connector-error.json"));
                if self.run_main_phases().await == Keep::GiveBack {
                    return self.give_back().await;
                }
            }
            Err(error) => {
                let message = format!("ERROR: cannot unpack the job's attachments: {error:#}\n");
                tracing::error!("{}", message.trim_end());
                self.outbox
                    .fragment(&self.job_id, "output", "setup", &message);
                self.record_status("setup", RUNNER_FAILED);
                self.end_reason = "setup_fail".into();
            }
        }
        self.event("cleanup_start", "");
        let exit_code = self.run_phase("cleanup").await;
        let event = if exit_code == 0 {
            "cleanup_success"
        } else {
            "cleanup_fail"
        };
        self.event(event, "");
        let end_reason = self.end_reason.clone();
        self.event("job_end", &end_reason);
        self.finish().await;
    }

    async fn run_main_phases(&mut self) -> Keep {
        for (index, phase) in MAIN_PHASES.iter().enumerate() {
            if self.agent.stopping.is_cancelled() {
                if self.status.is_empty() {
                    return Keep::GiveBack;
                }
                self.note_not_run(&MAIN_PHASES[index..]);
                return Keep::Job;
            }
            if self.state_checker().is_cancelled().await {
                tracing::info!("Job cancellation was requested, exiting.");
                self.event("cancelled", "");
                return Keep::Job;
            }
            let view = self.agent.server_view().await;
            if let Some(hold) = self.agent.note_server_view(&view) {
                self.agent.requests().admin_hold = Some(hold);
            }
            self.post_result(json!({"job_state": phase}));
            let comment = self.agent.requests().comment();
            self.agent.set_state(phase, &comment).await;
            self.event(&format!("{phase}_start"), "");

            let started = Instant::now();
            let exit_code = self.run_phase(phase).await;
            self.agent
                .metrics
                .phase_took(phase, started.elapsed().as_secs_f64());

            let event = if exit_code == 0 {
                format!("{phase}_success")
            } else {
                self.agent.metrics.phase_failed(phase);
                if exit_code == RECOVERY_FAILED {
                    self.recovery_failed().await;
                    "recovery_fail".to_string()
                } else {
                    format!("{phase}_fail")
                }
            };
            let detail = if exit_code == 0 {
                String::new()
            } else {
                self.connector_error(phase)
            };
            self.event(&event, &detail);
            if *phase == "provision" {
                self.outbox.post(
                    format!("/v1/agents/provision_logs/{}", self.config.agent_id),
                    json!({"job_id": self.job_id, "exit_code": exit_code, "detail": event}),
                );
            }
            // A failed test still lets allocate and reserve run; any other failure ends it.
            if exit_code != 0 && *phase != "test" {
                self.end_reason = event;
                return Keep::Job;
            }
        }
        Keep::Job
    }

    /// The agent was told to stop between phases: the first of the `remaining` phases
    /// that was due is recorded as killed, with the line that makes the outcome the lab's
    /// failure, so that a job cut short does not read as passed.
    fn note_not_run(&mut self, remaining: &[&str]) {
        let Some(phase) = remaining.iter().find(|p| self.due_command(p).is_ok()) else {
            return;
        };
        tracing::info!("The agent is stopping: the {phase} phase does not run");
        let note = format!("\n{AGENT_STOPPED_LINE}: it was told to stop before the phase began.\n");
        self.outbox.fragment(&self.job_id, "output", phase, &note);
        self.record_status(phase, KILLED);
        self.end_reason = format!("{phase}_fail");
    }

    /// Puts the job back in its queue, after what was already queued for it (so that its
    /// state is not set again afterwards), and lets its directories go.
    async fn give_back(self) {
        tracing::info!("Stopping: giving job {} back to its queue", self.job_id);
        self.post_result(requeue_report());
        self.outbox.mark_done();
        let cleanup = remove_when_delivered(&self.run_dir, self.outbox.dir());
        self.outbox.close(DELIVERY_WAIT, cleanup).await;
    }

    /// The command `phase` runs for this job, or why the phase is skipped: no command is
    /// configured, or the job does not ask for the phase.
    fn due_command(&self, phase: &str) -> Result<String, String> {
        let Some(command) = self.config.command(phase) else {
            return Err(format!("No {phase}_command configured, skipping..."));
        };
        if DATA_PHASES.contains(&phase) {
            let data_key = format!("{phase}_data");
            let data = self.job.get(&data_key);
            if data.is_none_or(|d| !is_truthy(d)) {
                return Err(format!("No {data_key} defined in job data, skipping..."));
            }
            if data.and_then(|d| d.get("skip")).is_some_and(is_truthy) {
                return Err(format!("Skipping {phase} phase as requested in job data"));
            }
        }
        Ok(command.to_string())
    }

    /// Runs one phase's command if it is configured and the job asks for the phase;
    /// returns its exit code (0 when skipped).
    async fn run_phase(&mut self, phase: &str) -> i32 {
        let command = match self.due_command(phase) {
            Ok(command) => command,
            Err(skipped) => {
                tracing::info!("{skipped}");
                return 0;
            }
        };
        let data_key = format!("{phase}_data");
        // Secrets reach this phase's environment, and are hidden in what it prints.
        let secrets: Vec<(String, String)> = self
            .job
            .get_mut(&data_key)
            .and_then(|data| data.as_object_mut())
            .and_then(|data| data.remove("secrets"))
            .and_then(|secrets| secrets.as_object().cloned())
            .map(|secrets| {
                secrets
                    .into_iter()
                    .filter_map(|(name, value)| Some((name, value.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let masker = Masker::new(secrets.iter().map(|(_, value)| value.as_str()));
        let mut environment = self.config.environment.clone();
        environment.extend(secrets);

        let log_path = self.run_dir.join(format!("{phase}.log"));
        let mut output =
            match PhaseOutput::open(&log_path, &self.outbox, &self.job_id, phase, masker) {
                Ok(output) => output,
                Err(error) => {
                    tracing::error!("cannot open {}: {error}", log_path.display());
                    return RUNNER_FAILED;
                }
            };
        output.banner(&format!(
            "Starting testflinger {phase} phase on {}",
            self.config.agent_id
        ));
        if let Some(device_info) = self.device_info() {
            self.post_result(device_info);
        }

        let global_timeout = Config::effective_timeout(
            self.job.get("global_timeout").and_then(Value::as_i64),
            self.config.global_timeout,
            DEFAULT_GLOBAL_TIMEOUT,
        );
        // A stopping agent's cleanup gets at most a minute (supervisors kill soon after).
        let global_timeout = if self.agent.stopping.is_cancelled() {
            global_timeout.min(STOPPING_CLEANUP_SECONDS)
        } else {
            global_timeout
        };
        let output_timeout = Config::effective_timeout(
            self.job.get("output_timeout").and_then(Value::as_i64),
            self.config.output_timeout,
            DEFAULT_OUTPUT_TIMEOUT,
        );
        let checker = self.state_checker();
        let conditions = StopConditions {
            global_timeout: (phase != "reserve").then_some(global_timeout.max(0) as u64),
            output_timeout: (phase == "test").then_some(output_timeout.max(0) as u64),
            cancellation: (phase != "provision").then_some(&checker),
            cancel_every: checker.interval(),
            // Cleanup still runs when the agent is told to stop (the device must not be
            // left dirty); only a second signal cuts it short.
            agent_stopping: if phase == "cleanup" {
                &self.agent.stopping_now
            } else {
                &self.agent.stopping
            },
        };
        let command = PhaseCommand {
            phase,
            command: &command,
            run_dir: &self.run_dir,
            environment: &environment,
            notes_dir: self.outbox.dir(),
        };
        let exit_code = match command.run(&conditions, &mut output).await {
            Ok(finished) => {
                if let Some(stop) = &finished.stop {
                    self.events.emit(stop.event(), &stop.message());
                    if *stop == Stop::AgentStopping {
                        self.end_reason = format!("{phase}_fail");
                    }
                }
                finished.exit_code
            }
            Err(error) => {
                let message = format!("cannot run the {phase} command: {error}");
                tracing::error!("{message}");
                output.write(&format!("\nERROR: {message}\n"));
                self.events.emit(&format!("{phase}_fail"), &message);
                RUNNER_FAILED
            }
        };
        drop(output);
        self.send_serial_log(phase);
        self.record_status(phase, exit_code);
        if phase == "allocate" {
            self.allocate().await;
        }
        exit_code
    }

    /// Notes `phase`'s exit code in `testflinger-outcome.json` and tells the server (the
    /// whole status map: the server replaces it).
    fn record_status(&mut self, phase: &str, exit_code: i32) {
        self.status.insert(phase.into(), json!(exit_code));
        let outcome = json!({"status": self.status});
        if let Err(error) = std::fs::write(
            self.run_dir.join("testflinger-outcome.json"),
            outcome.to_string(),
        ) {
            tracing::warn!("cannot write testflinger-outcome.json: {error}");
        }
        self.post_result(outcome);
    }

    /// After the allocate command: publish the device's address, say `allocated`, and
    /// hold the device until this job or its multi-device parent is over.
    async fn allocate(&mut self) {
        match self.device_info() {
            Some(device_info) => self.post_result(device_info),
            None => tracing::error!("allocate: the connector wrote no device-info.json"),
        }
        self.post_result(json!({"job_state": "allocated"}));
        let parent = self
            .job
            .get("parent_job_id")
            .and_then(Value::as_str)
            .filter(|id| is_valid_job_id(id))
            .map(str::to_string);
        let checker = self.state_checker();
        loop {
            if checker.is_over(&self.job_id).await {
                return;
            }
            if let Some(parent) = &parent {
                if checker.is_over(parent).await {
                    return;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(checker.interval() * 5) => {}
                _ = self.agent.stopping.cancelled() => return,
            }
        }
    }

    async fn unpack_attachments(&mut self) -> anyhow::Result<()> {
        if self.job.get("attachments_status").and_then(Value::as_str) != Some("complete") {
            return Ok(());
        }
        let archive = self.outbox.dir().join("attachments.tar.gz");
        let path = format!("/v1/job/{}/attachments", self.job_id);
        if !self
            .agent
            .api
            .download(&path, &archive, Duration::from_secs(2 * 3600))
            .await?
        {
            anyhow::bail!("the server has no attachments for this job");
        }
        let destination = self.run_dir.join("attachments");
        let max_bytes = self.config.attachments_max_bytes;
        let unpacked =
            tokio::task::block_in_place(|| attachments::extract(&archive, &destination, max_bytes));
        // Refused or not, the archive is no longer needed.
        let _ = std::fs::remove_file(&archive);
        unpacked?;
        // As the reference: the phase data loses its `attachments`, and data that held
        // nothing else goes, so that phase is skipped.
        for phase in ATTACHMENT_PHASES {
            let key = format!("{phase}_data");
            if let Some(data) = self.job.get_mut(&key).and_then(Value::as_object_mut) {
                data.remove("attachments");
                if data.is_empty() {
                    self.job.as_object_mut().map(|job| job.remove(&key));
                }
            }
        }
        Ok(())
    }

    /// Uploads `<phase>-serial.log` (written by the device connector) as serial fragments,
    /// read a piece at a time (serial logs can be large).
    fn send_serial_log(&self, phase: &str) {
        use std::io::Read;
        let path = self.run_dir.join(format!("{phase}-serial.log"));
        let Ok(mut file) = File::open(&path) else {
            return;
        };
        let mut pending: Vec<u8> = Vec::new();
        let mut buffer = vec![0u8; SERIAL_CHUNK];
        loop {
            let read = match file.read(&mut buffer) {
                Ok(n) => n,
                Err(error) => {
                    tracing::warn!("cannot read {}: {error}", path.display());
                    0
                }
            };
            pending.extend_from_slice(&buffer[..read]);
            // Cut at a character boundary; an incomplete character waits for the next read.
            let cut = if read == 0 {
                pending.len()
            } else {
                match std::str::from_utf8(&pending) {
                    Err(error) if error.error_len().is_none() => error.valid_up_to(),
                    _ => pending.len(),
                }
            };
            let rest = pending.split_off(cut);
            if !pending.is_empty() {
                let text = String::from_utf8_lossy(&pending);
                self.outbox.fragment(&self.job_id, "serial", phase, &text);
            }
            pending = rest;
            if read == 0 {
                return;
            }
        }
    }

    /// Ends the job on the server: artifacts, then the outcome. The run directory goes
    /// once the server has everything; if it is away, sending goes on in the background
    /// while the agent takes its next job.
    async fn finish(self) {
        queue_final_reports(&self.run_dir, &self.job_id, &self.outbox);
        let cleanup = remove_when_delivered(&self.run_dir, self.outbox.dir());
        if !self.outbox.close(DELIVERY_WAIT, cleanup).await {
            tracing::warn!(
                "The server has not taken all of job {}'s results yet; they keep being sent",
                self.job_id
            );
        }
    }

    fn post_result(&self, body: Value) {
        self.outbox
            .post(format!("/v1/result/{}", self.job_id), body);
    }

    fn event(&mut self, name: &str, detail: &str) {
        self.events.emit(name, detail);
    }

    /// `device-info.json`, as the connector wrote it.
    fn device_info(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.run_dir.join("device-info.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The connector's description of why `phase` failed, if it left one.
    fn connector_error(&self, phase: &str) -> String {
        let path = self.run_dir.join("device-connector-error.json");
        let Ok(text) = std::fs::read_to_string(path) else {
            return String::new();
        };
        let Ok(errors) = serde_json::from_str::<Value>(&text) else {
            return String::new();
        };
        let Some(info) = errors.get(format!("{phase}_exception_info")) else {
            return String::new();
        };
        let field = |name: &str| match info.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let mut detail = format!(
            "{}: {}",
            field("exception_name"),
            field("exception_message")
        );
        let cause = field("exception_cause");
        if !cause.is_empty() {
            detail.push_str(&format!(" caused by {cause}"));
        }
        detail
    }

    async fn recovery_failed(&self) {
        let comment = format!(
            "Set to offline by agent. Recovery failed during job '{}' execution.",
            self.job_id
        );
        self.agent.request_offline(&comment);
        self.agent.set_state("offline", &comment).await;
        self.agent.metrics.recovery_failed();
    }

    fn state_checker(&self) -> StateChecker {
        StateChecker {
            api: self.agent.api.clone(),
            job_id: self.job_id.clone(),
            cheap: self.agent.is_extended(),
        }
    }
}

/// What runs once a job's reports are all delivered: its directories go.
pub fn remove_when_delivered(run_dir: &Path, outbox_dir: &Path) -> impl FnOnce() + Send + 'static {
    let (run_dir, outbox_dir) = (run_dir.to_path_buf(), outbox_dir.to_path_buf());
    move || {
        for dir in [&run_dir, &outbox_dir] {
            if let Err(error) = std::fs::remove_dir_all(dir) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("cannot remove {}: {error}", dir.display());
                }
            }
        }
    }
}

/// The run directory's `testflinger-outcome.json` (`{"status": {…}}`), `{}` if unreadable.
pub fn read_outcome_file(run_dir: &Path) -> Value {
    std::fs::read_to_string(run_dir.join("testflinger-outcome.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

/// Queues the end of a job: its artifacts archive and outcome, then the `Done` mark.
pub fn queue_final_reports(run_dir: &Path, job_id: &str, outbox: &Outbox) {
    let archive = outbox.dir().join("artifacts.tar.gz");
    match artifacts::pack(run_dir, &archive) {
        Ok(true) => outbox.upload(format!("/v1/result/{job_id}/artifact"), "artifacts.tar.gz"),
        Ok(false) => {}
        Err(error) => tracing::error!("Unable to save artifacts: {error:#}"),
    }
    let mut outcome = read_outcome_file(run_dir);
    if let Some(outcome) = outcome.as_object_mut() {
        outcome.remove("output");
        outcome.remove("serial");
        outcome.insert("job_state".into(), json!("complete"));
    }
    outbox.post(format!("/v1/result/{job_id}"), outcome);
    outbox.mark_done();
}

/// Asks the server for a job's state: cheaply (`?logs=false`, every second) on
/// `tf serve`, as the reference does (the full result, every 10 s) elsewhere.
struct StateChecker {
    api: Arc<Api>,
    job_id: String,
    cheap: bool,
}

impl StateChecker {
    fn interval(&self) -> Duration {
        Duration::from_secs(if self.cheap { 1 } else { 10 })
    }

    async fn state_of(&self, job_id: &str) -> Option<String> {
        let query = if self.cheap { "?logs=false" } else { "" };
        let reply = self
            .api
            .get(
                &format!("/v1/result/{job_id}{query}"),
                Duration::from_secs(10),
            )
            .await
            .ok()?;
        let result: Value = reply.json().ok()?;
        result.get("job_state")?.as_str().map(str::to_string)
    }

    /// Whether the job ended (completed or cancelled).
    async fn is_over(&self, job_id: &str) -> bool {
        matches!(
            self.state_of(job_id).await.as_deref(),
            Some("complete" | "completed" | "cancelled")
        )
    }
}

impl CancelCheck for StateChecker {
    async fn is_cancelled(&self) -> bool {
        self.state_of(&self.job_id).await.as_deref() == Some("cancelled")
    }
}

/// A phase's output on its way to `<phase>.log` and the server, secrets masked.
struct PhaseOutput<'o> {
    log: File,
    outbox: &'o Outbox,
    job_id: &'o str,
    phase: &'o str,
    masker: Option<Masker>,
}

impl<'o> PhaseOutput<'o> {
    fn open(
        path: &Path,
        outbox: &'o Outbox,
        job_id: &'o str,
        phase: &'o str,
        masker: Option<Masker>,
    ) -> std::io::Result<PhaseOutput<'o>> {
        let log = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(PhaseOutput {
            log,
            outbox,
            job_id,
            phase,
            masker,
        })
    }

    /// The reference's three-line banner.
    fn banner(&mut self, text: &str) {
        let stars = "*".repeat(text.len() + 4);
        self.write(&format!("{stars}\n* {text} *\n{stars}\n"));
    }
}

impl OutputSink for PhaseOutput<'_> {
    fn write(&mut self, text: &str) {
        let text = match &self.masker {
            Some(masker) => masker.mask(text),
            None => text.into(),
        };
        if let Err(error) = self.log.write_all(text.as_bytes()) {
            tracing::warn!("cannot write to the {} log: {error}", self.phase);
        }
        self.outbox
            .fragment(self.job_id, "output", self.phase, &text);
    }
}

/// Job status events, sent only when the job names a webhook. Each post carries the
/// whole list so far, as the reference's does. Posts are best effort and not spooled (a
/// later post repeats every earlier event), sent in order by a task of their own so a
/// slow webhook never holds the job up.
struct Events {
    sender: Option<mpsc::UnboundedSender<Value>>,
    envelope: Value,
    events: Vec<Value>,
}

impl Events {
    fn new(agent: &Agent, job: &Value, job_id: &str) -> Events {
        let webhook = job.get("job_status_webhook").and_then(Value::as_str);
        let sender = webhook.map(|_| {
            let (sender, mut bodies) = mpsc::unbounded_channel::<Value>();
            let api = agent.api.clone();
            let path = format!("/v1/job/{job_id}/events");
            tokio::spawn(async move {
                while let Some(body) = bodies.recv().await {
                    if let Err(error) = api.post_json(&path, &body, Duration::from_secs(30)).await {
                        tracing::warn!("cannot send the job event: {error}");
                    }
                }
            });
            sender
        });
        Events {
            sender,
            envelope: json!({
                "agent_id": agent.config.agent_id,
                "job_queue": job.get("job_queue").cloned().unwrap_or(Value::Null),
                "job_status_webhook": webhook,
            }),
            events: Vec::new(),
        }
    }

    fn emit(&mut self, name: &str, detail: &str) {
        let Some(sender) = &self.sender else {
            return;
        };
        self.events.push(json!({
            "event_name": name,
            "timestamp": time::render_micros(time::now()),
            "detail": detail,
        }));
        let mut body = self.envelope.clone();
        body["events"] = Value::Array(self.events.clone());
        let _ = sender.send(body);
    }
}
