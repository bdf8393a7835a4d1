//! Jobs whose reports did not all reach the server: run directories left behind by an
//! agent that was killed mid-job, and those set aside under `results_basedir` because the
//! server was away when the job ended. Their outboxes are sent again; an interrupted job
//! is ended on the server with a note saying so, instead of staying `running` forever.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::job::queue_final_reports;
use super::outbox::Outbox;
use super::Agent;

/// How long one pass waits for a set-aside job's reports to get through.
const RETRY_WAIT: Duration = Duration::from_secs(10);

const INTERRUPTED_NOTE: &str = "\nERROR: the agent stopped while this job was running \
(killed or restarted). The job was ended here; what ran before was kept.\n";

/// At startup: ends the jobs the previous agent process left unfinished.
pub async fn finish_interrupted_jobs(agent: &Agent) {
    for run_dir in job_dirs(&agent.config.execution_basedir) {
        let Some((job_id, outbox)) = reopen(agent, &run_dir) else {
            continue;
        };
        tracing::warn!("Job {job_id} was interrupted; sending what it left and ending it");
        if !outbox.is_done() {
            let phase = last_phase(&run_dir);
            outbox.fragment(&job_id, "output", &phase, INTERRUPTED_NOTE);
            queue_final_reports(&run_dir, &job_id, &outbox);
        }
        let delivered = outbox.close(RETRY_WAIT).await;
        dispose(agent, &run_dir, delivered);
    }
}

/// Between jobs: sends what the set-aside jobs still hold.
pub async fn retry_unsent_results(agent: &Agent) {
    for run_dir in job_dirs(&agent.config.results_basedir) {
        let Some((job_id, outbox)) = reopen(agent, &run_dir) else {
            continue;
        };
        // A directory the reference agent set aside has no outbox yet.
        if !outbox.is_done() {
            queue_final_reports(&run_dir, &job_id, &outbox);
        }
        if outbox.close(RETRY_WAIT).await {
            tracing::info!("Sent the held-back results of job {job_id}");
            remove(&run_dir);
        }
    }
}

/// After a job: its run directory goes once everything was delivered; otherwise it moves
/// under `results_basedir` to be sent later.
pub fn dispose(agent: &Agent, run_dir: &Path, delivered: bool) {
    if delivered {
        remove(run_dir);
        return;
    }
    let Some(name) = run_dir.file_name() else {
        return;
    };
    let target = agent.config.results_basedir.join(name);
    if target == run_dir {
        return;
    }
    tracing::warn!(
        "The server did not take all of job {}'s results yet; keeping them in {}",
        name.to_string_lossy(),
        target.display()
    );
    let _ = std::fs::remove_dir_all(&target);
    if let Err(error) = std::fs::rename(run_dir, &target) {
        tracing::error!(
            "cannot move {} to {}: {error}; it is resent when the agent restarts",
            run_dir.display(),
            target.display()
        );
    }
}

fn remove(run_dir: &Path) {
    if let Err(error) = std::fs::remove_dir_all(run_dir) {
        tracing::warn!("cannot remove {}: {error}", run_dir.display());
    }
}

fn job_dirs(base: &Path) -> Vec<PathBuf> {
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

/// The job of a run directory and its outbox, sending again; `None` (and a log line)
/// when the directory is not a job's or cannot be used.
fn reopen(agent: &Agent, run_dir: &Path) -> Option<(String, Outbox)> {
    let job_id = job_id_of(run_dir)?;
    match Outbox::open(run_dir, agent.api.clone()) {
        Ok(outbox) => Some((job_id, outbox)),
        Err(error) => {
            tracing::error!("cannot resend job {job_id}: {error:#}");
            None
        }
    }
}

/// The job id from `testflinger.json`; `None` (and a log line) for anything else.
fn job_id_of(run_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(run_dir.join("testflinger.json")).ok();
    let job_id = text
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|job| job.get("job_id")?.as_str().map(str::to_string))
        .filter(|id| crate::job::is_valid_job_id(id));
    if job_id.is_none() {
        tracing::warn!(
            "Unable to read job ID from {}; leaving it alone",
            run_dir.display()
        );
    }
    job_id
}

/// The last phase that wrote a log in the run directory (the note goes there).
fn last_phase(run_dir: &Path) -> String {
    crate::job::PHASES
        .iter()
        .rev()
        .find(|phase| run_dir.join(format!("{phase}.log")).exists())
        .unwrap_or(&"setup")
        .to_string()
}
