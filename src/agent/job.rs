//! Running one job: the run directory, attachments, the main phases as `plan` decides
//! them and cleanup at the end, with every report (states, statuses, output, events,
//! provision logs, artifacts, the outcome) going through the job's outbox.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::config::{Config, DEFAULT_GLOBAL_TIMEOUT, DEFAULT_OUTPUT_TIMEOUT};
use super::events::Events;
use super::host::{JobHost, JobServer};
use super::masking::Masker;
use super::outbox::{self, Outbox};
use super::plan::{self, Progress, Step, RUNNER_FAILED};
use super::process::{CancelCheck, OutputSink, PhaseCommand, Stop, StopConditions};
use super::serial_log::{self, SERIAL_CHUNK};
use super::{artifacts, attachments, reports};
use crate::api::v1::{self, LogFragment};
use crate::job::outcome::{AGENT_STOPPED_LINE, KILLED, RECOVERY_FAILED};
use crate::job::{is_valid_job_id, JobDefinition, JobState, LogType, Phase};

/// How long the end of a job waits for its reports to reach the server before the run
/// directory is set aside for later.
const DELIVERY_WAIT: Duration = Duration::from_secs(30);

pub async fn run(agent: &impl JobHost, job: Value) {
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
    agent.metrics().job_started();
    tracing::info!("Starting job {job_id}");
    let run_dir = agent.config().execution_basedir.join(&job_id);
    let runner = match JobRunner::start(agent, job, &job_id, &run_dir) {
        Ok(runner) => runner,
        Err(error) => {
            // Without a run directory there is no outbox: say so directly, and end the
            // job rather than leave it running forever.
            let message = format!("ERROR: the agent cannot start this job: {error:#}\n");
            tracing::error!("{}", message.trim_end());
            let fragment = LogFragment::now(0, Phase::Setup, &message);
            let log = v1::post_log(&job_id, LogType::Output, &fragment);
            agent.quietly(log).await;
            agent
                .quietly(v1::post_result(&job_id, &reports::could_not_start()))
                .await;
            return;
        }
    };
    runner.run().await;
}

struct JobRunner<'a, H: JobHost> {
    agent: &'a H,
    config: &'a Config,
    job: JobDefinition,
    job_id: String,
    run_dir: PathBuf,
    outbox: Outbox,
    events: Events,
    progress: Progress,
    /// The attachments are unpacked: phase data that held only them no longer counts.
    attachments_unpacked: bool,
}

/// Whether the agent keeps a job it started, or gives it back to its queue.
#[derive(PartialEq)]
enum Keep {
    Job,
    /// The agent was told to stop before any of the job's phases ran.
    GiveBack,
}

impl<'a, H: JobHost> JobRunner<'a, H> {
    /// Reads the job and creates the run directory with the reference's files in it.
    fn start(agent: &'a H, received: Value, job_id: &str, run_dir: &Path) -> anyhow::Result<Self> {
        let job: JobDefinition = serde_json::from_value(received.clone())
            .map_err(|e| anyhow::anyhow!("the job's definition cannot be read: {e}"))?;
        let outbox = Outbox::create(
            &outbox::dir_of(&agent.config().execution_basedir, job_id),
            agent.server().clone(),
        )?;
        if run_dir.exists() {
            // Left by a run of the same job that the server handed out again.
            std::fs::remove_dir_all(run_dir)?;
        }
        std::fs::create_dir_all(run_dir)?;
        // The connector reads the job as it was received.
        std::fs::write(run_dir.join("testflinger.json"), received.to_string())?;
        std::fs::write(run_dir.join("testflinger-outcome.json"), "{}")?;
        let events = Events::new(agent.server(), &agent.config().agent_id, &job, job_id);
        Ok(JobRunner {
            agent,
            config: agent.config(),
            job,
            job_id: job_id.to_string(),
            run_dir: run_dir.to_path_buf(),
            outbox,
            events,
            progress: Progress::default(),
            attachments_unpacked: false,
        })
    }

    async fn run(mut self) {
        let job_page = format!("{}/jobs/{}", self.agent.server().base(), self.job_id);
        self.events.emit("job_start", &job_page);
        self.agent.report(&json!({"job_id": self.job_id})).await;
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
                self.output(Phase::Setup, &message);
                self.record_status(Phase::Setup, RUNNER_FAILED);
                self.progress.note_end_reason("setup_fail");
            }
        }
        self.events.emit("cleanup_start", "");
        let exit_code = self.run_phase(Phase::Cleanup).await;
        let event = if exit_code == 0 {
            "cleanup_success"
        } else {
            "cleanup_fail"
        };
        self.events.emit(event, "");
        let end_reason = self.progress.end_reason().to_string();
        self.events.emit("job_end", &end_reason);
        self.finish().await;
    }

    /// Runs the main phases as `plan` decides.
    async fn run_main_phases(&mut self) -> Keep {
        loop {
            let stopping = self.agent.stopping().is_cancelled();
            let phase = match self.progress.next_step(stopping, |p| self.due(p).is_ok()) {
                Step::Run(phase) => phase,
                Step::GiveBack => return Keep::GiveBack,
                Step::NotRun(phase) => {
                    self.note_not_run(phase);
                    return Keep::Job;
                }
                Step::Cleanup => return Keep::Job,
            };
            if self.state_checker().is_cancelled().await {
                tracing::info!("Job cancellation was requested, exiting.");
                self.events.emit("cancelled", "");
                return Keep::Job;
            }
            self.agent.check_in().await;
            self.post_result(reports::state(JobState::Phase(phase)));
            self.agent.report_phase(phase).await;
            self.events.emit(&format!("{phase}_start"), "");

            let started = Instant::now();
            let exit_code = self.run_phase(phase).await;
            let metrics = self.agent.metrics();
            metrics.phase_took(phase.as_str(), started.elapsed().as_secs_f64());

            let event = if exit_code == 0 {
                format!("{phase}_success")
            } else {
                metrics.phase_failed(phase.as_str());
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
            self.events.emit(&event, &detail);
            if phase == Phase::Provision {
                self.outbox.post(
                    v1::provision_log_path(&self.config.agent_id),
                    reports::provision_log(&self.job_id, exit_code, &event),
                );
            }
            self.progress.record(phase, exit_code, &event);
        }
    }

    /// The agent was told to stop between phases: `phase`, the first that was due, is
    /// recorded as killed, with the line that makes the outcome the lab's failure, so
    /// that a job cut short does not read as passed.
    fn note_not_run(&mut self, phase: Phase) {
        tracing::info!("The agent is stopping: the {phase} phase does not run");
        let note = format!("\n{AGENT_STOPPED_LINE}: it was told to stop before the phase began.\n");
        self.output(phase, &note);
        self.record_status(phase, KILLED);
        self.progress.note_end_reason(&format!("{phase}_fail"));
    }

    /// Puts the job back in its queue, after what was already queued for it (so that its
    /// state is not set again afterwards), and lets its directories go.
    async fn give_back(self) {
        tracing::info!("Stopping: giving job {} back to its queue", self.job_id);
        self.post_result(reports::requeue());
        self.outbox.mark_done();
        let cleanup = remove_when_delivered(&self.run_dir, self.outbox.dir());
        self.outbox.close(DELIVERY_WAIT, cleanup).await;
    }

    /// The command `phase` runs for this job, or why the phase is skipped.
    fn due(&self, phase: Phase) -> Result<String, String> {
        let configured = self.config.command(phase.as_str());
        plan::due_command(&self.job, phase, configured, self.attachments_unpacked)
            .map(str::to_string)
    }

    /// Runs one phase's command if it is configured and the job asks for the phase;
    /// returns its exit code (0 when skipped).
    async fn run_phase(&mut self, phase: Phase) -> i32 {
        let command = match self.due(phase) {
            Ok(command) => command,
            Err(skipped) => {
                tracing::info!("{skipped}");
                return 0;
            }
        };
        // Secrets reach this phase's environment, and are hidden in what it prints.
        let secrets = self.job.secrets(phase);
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
            self.job.global_timeout,
            self.config.global_timeout,
            DEFAULT_GLOBAL_TIMEOUT,
        );
        let output_timeout = Config::effective_timeout(
            self.job.output_timeout,
            self.config.output_timeout,
            DEFAULT_OUTPUT_TIMEOUT,
        );
        let stopping = self.agent.stopping().is_cancelled();
        let limits = plan::limits(phase, global_timeout, output_timeout, stopping);
        let checker = self.state_checker();
        let conditions = StopConditions {
            global_timeout: limits.global_timeout,
            output_timeout: limits.output_timeout,
            cancellation: limits.cancellable.then_some(&checker),
            cancel_every: checker.interval(),
            // Cleanup still runs when the agent is told to stop (the device must not be
            // left dirty); only a second signal cuts it short.
            agent_stopping: if phase == Phase::Cleanup {
                self.agent.stopping_now()
            } else {
                self.agent.stopping()
            },
        };
        let command = PhaseCommand {
            phase: phase.as_str(),
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
                        self.progress.note_end_reason(&format!("{phase}_fail"));
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
        if phase == Phase::Allocate {
            self.allocate().await;
        }
        exit_code
    }

    /// Notes `phase`'s exit code in `testflinger-outcome.json` and tells the server (the
    /// whole status map: the server replaces it).
    fn record_status(&mut self, phase: Phase, exit_code: i32) {
        self.progress.record_status(phase, exit_code);
        let outcome = reports::statuses(self.progress.statuses());
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
        self.post_result(reports::state(JobState::Allocated));
        let parent = self
            .job
            .parent_job_id
            .clone()
            .filter(|id| is_valid_job_id(id));
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
                _ = self.agent.stopping().cancelled() => return,
            }
        }
    }

    async fn unpack_attachments(&mut self) -> anyhow::Result<()> {
        if !self.job.has_attachments() {
            return Ok(());
        }
        let archive = self.outbox.dir().join("attachments.tar.gz");
        if !self
            .agent
            .server()
            .download_attachments(&self.job_id, &archive)
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
        self.attachments_unpacked = true;
        Ok(())
    }

    /// Uploads `<phase>-serial.log` (written by the device connector) as serial fragments,
    /// read a piece at a time (serial logs can be large).
    fn send_serial_log(&self, phase: Phase) {
        let path = self.run_dir.join(format!("{phase}-serial.log"));
        let Ok(file) = File::open(&path) else {
            return;
        };
        serial_log::send_in_pieces(file, SERIAL_CHUNK, |text| {
            self.outbox
                .fragment(&self.job_id, LogType::Serial, phase, text)
        });
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
        self.outbox.post(v1::result_path(&self.job_id), body);
    }

    fn output(&self, phase: Phase, text: &str) {
        self.outbox
            .fragment(&self.job_id, LogType::Output, phase, text);
    }

    /// `device-info.json`, as the connector wrote it.
    fn device_info(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.run_dir.join("device-info.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The connector's description of why `phase` failed, if it left one.
    fn connector_error(&self, phase: Phase) -> String {
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
        self.agent.take_offline(&comment).await;
        self.agent.metrics().recovery_failed();
    }

    fn state_checker(&self) -> StateChecker<H::Server> {
        StateChecker {
            server: self.agent.server().clone(),
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
        Ok(true) => outbox.upload(v1::artifact_path(job_id), "artifacts.tar.gz"),
        Ok(false) => {}
        Err(error) => tracing::error!("Unable to save artifacts: {error:#}"),
    }
    let completion = reports::completion(read_outcome_file(run_dir));
    outbox.post(v1::result_path(job_id), completion);
    outbox.mark_done();
}

/// Asks the server for a job's state: cheaply (`?logs=false`, every second) on
/// `tf serve`, as the reference does (the full result, every 10 s) elsewhere.
struct StateChecker<S> {
    server: Arc<S>,
    job_id: String,
    cheap: bool,
}

impl<S: JobServer> StateChecker<S> {
    fn interval(&self) -> Duration {
        Duration::from_secs(if self.cheap { 1 } else { 10 })
    }

    async fn state_of(&self, job_id: &str) -> Option<JobState> {
        self.server.job_state(job_id, self.cheap).await
    }

    /// Whether the job ended (completed or cancelled).
    async fn is_over(&self, job_id: &str) -> bool {
        self.state_of(job_id)
            .await
            .is_some_and(JobState::is_finished)
    }
}

impl<S: JobServer> CancelCheck for StateChecker<S> {
    async fn is_cancelled(&self) -> bool {
        self.state_of(&self.job_id).await == Some(JobState::Cancelled)
    }
}

/// A phase's output on its way to `<phase>.log` and the server, secrets masked.
struct PhaseOutput<'o> {
    log: File,
    outbox: &'o Outbox,
    job_id: &'o str,
    phase: Phase,
    masker: Option<Masker>,
}

impl<'o> PhaseOutput<'o> {
    fn open(
        path: &Path,
        outbox: &'o Outbox,
        job_id: &'o str,
        phase: Phase,
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
            .fragment(self.job_id, LogType::Output, self.phase, &text);
    }
}

/// One job run in-process, phase commands and all, against a stand-in server that fails
/// on cue: what the server ends up with is what the black-box tests see through a real
/// `tf serve`, without one.
#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use tokio_util::sync::CancellationToken;

    use crate::agent::config::AgentArgs;
    use crate::agent::metrics::Metrics;
    use crate::agent::stand_in::{Fault, StandIn};
    use crate::api::Call;

    const JOB_ID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

    /// The agent around the job: its config in a temporary directory, and a log of what
    /// the job asked of it.
    struct Lab {
        config: Config,
        server: Arc<StandIn>,
        metrics: Metrics,
        stopping: CancellationToken,
        stopping_now: CancellationToken,
        asked: Mutex<Vec<String>>,
        _home: tempfile::TempDir,
    }

    impl Lab {
        fn new(server: Arc<StandIn>, commands: &str) -> Lab {
            let home = tempfile::tempdir().unwrap();
            let dir = |name: &str| home.path().join(name).display().to_string();
            let config = format!(
                "agent_id: a1\nserver_address: http://stand-in\njob_queues: [q]\n\
                 execution_basedir: {}\nlogging_basedir: {}\nresults_basedir: {}\n{commands}",
                dir("run"),
                dir("log"),
                dir("results"),
            );
            let path = home.path().join("agent.conf");
            std::fs::write(&path, config).unwrap();
            let args = AgentArgs {
                config: path,
                metrics_port: None,
                token_file: home.path().join("token"),
                check: false,
            };
            Lab {
                config: Config::load(&args).unwrap(),
                server,
                metrics: Metrics::new("a1", None),
                stopping: CancellationToken::new(),
                stopping_now: CancellationToken::new(),
                asked: Mutex::default(),
                _home: home,
            }
        }

        fn note(&self, what: String) {
            self.asked.lock().unwrap().push(what);
        }

        /// The `job_state` reports the server stored, in order.
        fn states(&self) -> Vec<String> {
            self.reports()
                .iter()
                .filter_map(|body| body["job_state"].as_str().map(str::to_string))
                .collect()
        }

        /// The bodies posted to the job's result, in order.
        fn reports(&self) -> Vec<Value> {
            let result = v1::result_path(JOB_ID);
            let stored = self.server.stored().into_iter();
            stored
                .filter(|(path, _)| *path == result)
                .map(|(_, body)| body)
                .collect()
        }

        /// Asserts that the job ended with setup and cleanup passed and the test failed
        /// (the `COMMANDS`), and returns its output.
        fn completed_with_a_failed_test(&self) -> String {
            let completion = self.reports().pop().unwrap();
            let output = self.output();
            let statuses = json!({"setup": 0, "test": 3, "cleanup": 0});
            assert_eq!(completion["status"], statuses, "{output}");
            output
        }

        /// The job's output as the server stored it.
        fn output(&self) -> String {
            let log = v1::log_path(JOB_ID, LogType::Output);
            let stored = self.server.stored().into_iter();
            stored
                .filter(|(path, _)| *path == log)
                .map(|(_, body)| body["log_data"].as_str().unwrap().to_string())
                .collect()
        }
    }

    impl JobHost for Lab {
        type Server = StandIn;

        fn config(&self) -> &Config {
            &self.config
        }
        fn server(&self) -> &Arc<StandIn> {
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
            true
        }
        async fn check_in(&self) {}
        async fn report_phase(&self, phase: Phase) {
            self.note(format!("busy with {phase}"));
        }
        async fn report(&self, report: &Value) {
            self.note(format!("record {report}"));
        }
        async fn quietly(&self, call: Call<()>) {
            self.note(format!("{} {}", call.method, call.path));
        }
        async fn take_offline(&self, comment: &str) {
            self.note(format!("offline: {comment}"));
        }
    }

    /// Runs `test` on the one runtime all these tests share: tokio reaps child processes
    /// through the first runtime that started one, so a runtime per test would leave the
    /// later tests unable to run their phases once the first test's runtime is gone.
    fn on_shared_runtime(test: impl std::future::Future<Output = ()>) {
        static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
        let runtime = RUNTIME.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime")
        });
        runtime.block_on(test);
    }

    fn job(definition: Value) -> Value {
        let mut job = definition;
        job["job_id"] = json!(JOB_ID);
        job["job_queue"] = json!("q");
        job
    }

    const COMMANDS: &str = "setup_command: echo setting up\n\
                            provision_command: echo provisioning\n\
                            test_command: echo testing; exit 3\n\
                            cleanup_command: echo cleaning up\n";

    #[test]
    fn a_failed_test_is_reported_and_the_job_still_cleans_up() {
        on_shared_runtime(async {
            let lab = Lab::new(StandIn::failing(&[]), COMMANDS);
            run(&lab, job(json!({"test_data": {"test_cmds": "x"}}))).await;

            // Every main phase is announced; provision is skipped (no provision_data).
            assert_eq!(
                lab.states()[..6],
                Phase::MAIN.map(|phase| phase.to_string())
            );
            assert_eq!(lab.states().last().map(String::as_str), Some("complete"));
            let output = lab.completed_with_a_failed_test();
            assert!(
                output.contains("setting up\n") && output.contains("testing\n"),
                "{output}"
            );
            assert!(!output.contains("provisioning"), "{output}");
            assert!(output.contains("cleaning up\n"), "{output}");
            assert!(lab
                .asked
                .lock()
                .unwrap()
                .contains(&"busy with test".to_string()));
        });
    }

    #[test]
    fn a_server_that_is_away_and_loses_answers_still_gets_the_whole_job_in_order() {
        on_shared_runtime(async {
            let faults = [
                Fault::Away,
                Fault::LostAnswer,
                Fault::Away,
                Fault::LostAnswer,
            ];
            let lab = Lab::new(StandIn::failing(&faults), COMMANDS);
            run(&lab, job(json!({"test_data": {"test_cmds": "x"}}))).await;

            lab.completed_with_a_failed_test();
            // Lost answers mean resends: the server sees some reports twice, each fragment
            // with its own number, so it stores the log once.
            let mut numbers = lab.server.fragment_numbers();
            numbers.dedup();
            assert!(
                numbers.windows(2).all(|pair| pair[0] < pair[1]),
                "{numbers:?}"
            );
        });
    }

    #[test]
    fn a_job_cancelled_before_it_starts_runs_only_the_cleanup() {
        on_shared_runtime(async {
            let server = StandIn::failing(&[]);
            server.set_job_state(JobState::Cancelled);
            let lab = Lab::new(server, COMMANDS);
            run(&lab, job(json!({"test_data": {"test_cmds": "x"}}))).await;

            assert_eq!(lab.states(), ["complete"]);
            let completion = lab.reports().pop().unwrap();
            assert_eq!(completion["status"], json!({"cleanup": 0}));
            assert!(!lab.output().contains("setting up"));
        });
    }

    #[test]
    fn a_job_the_agent_stops_before_any_phase_goes_back_to_its_queue() {
        on_shared_runtime(async {
            let lab = Lab::new(StandIn::failing(&[]), COMMANDS);
            lab.stopping.cancel();
            run(&lab, job(json!({"test_data": {"test_cmds": "x"}}))).await;

            assert_eq!(lab.states(), ["waiting"]);
            assert_eq!(lab.output(), "");
        });
    }
}
