//! Jobs whose reports did not all reach the server: outboxes left by an agent that was
//! killed (mid-job, or while still sending a finished job), and run directories the
//! reference agent set aside under `results_basedir`. They are sent again; an interrupted
//! job is ended on the server with a note saying so, instead of staying `running`, and
//! what its phase left running is killed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::host::JobHost;
use super::job::{queue_final_reports, read_outcome_file, remove_when_delivered};
use super::outbox::{self, OpenError, Outbox, AGENT_DIR};
use super::phase_groups;
use crate::job::outcome::{AGENT_STOPPED_LINE, KILLED};
use crate::job::{is_valid_job_id, LogType, Phase};

/// How long one pass waits for a job's reports before leaving the rest to the background.
const RETRY_WAIT: Duration = Duration::from_secs(10);

/// At startup: sends what the previous agent process left, ending interrupted jobs.
pub async fn finish_interrupted_jobs(agent: &impl JobHost) {
    let base = &agent.config().execution_basedir;
    for outbox_dir in subdirectories(&base.join(AGENT_DIR)) {
        let Some(job_id) = job_id_named(&outbox_dir) else {
            continue;
        };
        let Some(outbox) = open(agent, &outbox_dir) else {
            continue;
        };
        // The lock is ours, so no live agent runs this job: what its phase left goes.
        tokio::task::block_in_place(|| phase_groups::kill_left_behind(&outbox_dir, &job_id));
        let run_dir = base.join(&job_id);
        if !outbox.is_done() {
            tracing::warn!("Job {job_id} was interrupted; sending what it left and ending it");
            let phase = last_phase(&run_dir);
            let note = format!(
                "\n{AGENT_STOPPED_LINE}: it was killed or restarted while this job was \
                 running. The job was ended here; what ran before was kept.\n"
            );
            outbox.fragment(&job_id, LogType::Output, phase, &note);
            note_killed(&run_dir, phase);
            queue_final_reports(&run_dir, &job_id, &outbox);
        }
        outbox
            .close(RETRY_WAIT, remove_when_delivered(&run_dir, &outbox_dir))
            .await;
    }
}

/// Between jobs: sends the run directories the reference agent set aside because the
/// server was away (an agent switched from the reference finds them there).
pub async fn retry_unsent_results(agent: &impl JobHost) {
    for run_dir in subdirectories(&agent.config().results_basedir) {
        let Some(job_id) = job_id_in(&run_dir) else {
            continue;
        };
        let outbox_dir = outbox::dir_of(&agent.config().execution_basedir, &job_id);
        let Some(outbox) = open(agent, &outbox_dir) else {
            continue;
        };
        if !outbox.is_done() {
            queue_final_reports(&run_dir, &job_id, &outbox);
        }
        if outbox
            .close(RETRY_WAIT, remove_when_delivered(&run_dir, &outbox_dir))
            .await
        {
            tracing::info!("Sent the held-back results of job {job_id}");
        }
    }
}

/// The outbox in `dir`, unless another agent process is sending it.
fn open(agent: &impl JobHost, dir: &Path) -> Option<Outbox> {
    match Outbox::open(dir, agent.server().clone()) {
        Ok(outbox) => Some(outbox),
        Err(OpenError::Busy(_)) => None,
        Err(error) => {
            tracing::error!("cannot resend from {}: {error:#}", dir.display());
            None
        }
    }
}

fn subdirectories(base: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// An outbox directory is named after its job.
fn job_id_named(dir: &Path) -> Option<String> {
    let name = dir.file_name()?.to_str()?;
    is_valid_job_id(name).then(|| name.to_string())
}

/// The job id from a run directory's `testflinger.json`; `None` (and a log line) else.
fn job_id_in(run_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(run_dir.join("testflinger.json")).ok();
    let job_id = text
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|job| job.get("job_id")?.as_str().map(str::to_string))
        .filter(|id| is_valid_job_id(id));
    if job_id.is_none() {
        tracing::warn!(
            "Unable to read job ID from {}; leaving it alone",
            run_dir.display()
        );
    }
    job_id
}

/// Records `phase`, which the agent's death interrupted, as killed in the outcome file
/// the final report is made of, unless it had ended: the job must not read as passed.
fn note_killed(run_dir: &Path, phase: Phase) {
    let phase = phase.as_str();
    let mut outcome = read_outcome_file(run_dir);
    let status = &mut outcome["status"];
    if !status.is_object() {
        *status = json!({});
    }
    if status.get(phase).is_none() {
        status[phase] = json!(KILLED);
        let path = run_dir.join("testflinger-outcome.json");
        if let Err(error) = std::fs::write(&path, outcome.to_string()) {
            tracing::warn!("cannot write {}: {error}", path.display());
        }
    }
}

/// The last phase that wrote a log in the run directory (the note goes there).
fn last_phase(run_dir: &Path) -> Phase {
    Phase::ALL
        .into_iter()
        .rev()
        .find(|phase| run_dir.join(format!("{phase}.log")).exists())
        .unwrap_or(Phase::Setup)
}
