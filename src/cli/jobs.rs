//! Looking at one job (`status`, `show`, `results`, `artifacts`, `cancel`), the local
//! history (`jobs`) and the settings file (`config`).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use serde_json::Value;

use super::command_name::CommandName;
use super::config::Settings;
use super::history::History;
use super::options::JobId;
use super::session::{Failure, Session};
use crate::api::v1;
use crate::codec::{pyjson, yaml};
use crate::job::outcome::KillReason;
use crate::job::{JobState, Outcome, Phase};

pub const NO_JOB_DATA: &str =
    "No data found for that job id. Check the job id to be sure it is correct";
pub const INVALID_JOB_ID: &str =
    "Invalid job id specified. Check the job id to be sure it is correct";

/// Why a job's state could not be had.
pub enum StateError {
    /// The server says there is no such job (204) or the id is invalid (400): the
    /// reference's wording, exit 1.
    NoSuchJob(&'static str),
    /// A refused login or the VPN wall: the message, exit 1.
    Fatal(String),
    /// Anything else (the network, the server failing).
    Unavailable(Failure),
}

impl StateError {
    pub fn into_error(self) -> anyhow::Error {
        match self {
            StateError::NoSuchJob(message) => anyhow::anyhow!(message),
            StateError::Fatal(message) => anyhow::anyhow!(message),
            StateError::Unavailable(failure) => failure.into_error(),
        }
    }
}

/// Where a job is, from `GET /v1/result/<id>`.
pub struct JobStatus {
    /// The state word (`None` printed as the reference does).
    pub state: String,
    /// How it ended; `None` until it has.
    pub outcome: Option<Outcome>,
}

pub async fn job_status(session: &Session, job_id: &str) -> Result<JobStatus, StateError> {
    match session.call(v1::result(job_id)).await {
        Ok(result) => {
            let state = match result.get("job_state") {
                Some(Value::String(state)) => state.clone(),
                _ => "None".into(),
            };
            Ok(JobStatus {
                outcome: outcome_in(&result, &state),
                state,
            })
        }
        Err(failure) => Err(match failure {
            Failure::Status { status: 204, .. } => StateError::NoSuchJob(NO_JOB_DATA),
            Failure::Status { status: 400, .. } => StateError::NoSuchJob(INVALID_JOB_ID),
            Failure::Fatal(message) => StateError::Fatal(message),
            other => StateError::Unavailable(other),
        }),
    }
}

/// The job's state word alone.
pub async fn job_state(session: &Session, job_id: &str) -> Result<String, StateError> {
    job_status(session, job_id).await.map(|status| status.state)
}

/// The `outcome` of a job's results; from a server that gives none (the reference),
/// derived from the phases' exit codes and output instead (a job cancelled while it ran
/// then reads as however its phases ended).
pub fn outcome_in(result: &Value, state: &str) -> Option<Outcome> {
    if let Some(outcome) = result.get("outcome") {
        return serde_json::from_value(outcome.clone()).ok();
    }
    let statuses = Phase::ALL
        .into_iter()
        .filter_map(|phase| {
            let status = result.get(format!("{phase}_status"))?;
            Some((phase.to_string(), status.clone()))
        })
        .collect();
    Outcome::of(state, &statuses, |phase| {
        KillReason::found_in(result.get(format!("{phase}_output"))?.as_str()?)
    })
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Also print how a finished job ended (passed, failed, cancelled, timed out,
    /// infrastructure failure), on a second line
    #[arg(long)]
    pub outcome: bool,
    #[command(flatten)]
    pub job: JobId,
}

pub async fn status(session: &Session, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let job_id = &args.job.job_id;
    match job_status(session, job_id).await {
        Ok(status) => {
            History::load().note(job_id, &status.state, status.outcome);
            println!("{}", status.state);
            if let Some(outcome) = status.outcome.filter(|_| args.outcome) {
                println!("{outcome}");
            }
        }
        // The reference's soft failure: stdout, exit 0.
        Err(StateError::Unavailable(_)) => println!(
            "Unable to retrieve job state from the server, check your connection or try again later."
        ),
        Err(other) => return Err(other.into_error()),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Print the job in YAML instead of JSON
    #[arg(long)]
    pub yaml: bool,
    /// The job's id, as `submit` printed it
    pub job_id: String,
}

pub async fn show(session: &Session, args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let job = match session.call(v1::job(&args.job_id)).await {
        Ok(job) => job,
        Err(failure) => match failure.status() {
            Some(204) => bail!("No data found for that job id."),
            Some(400) => bail!(INVALID_JOB_ID),
            Some(_) => bail!("{}", failure.message()),
            None => return Err(failure.into_error()),
        },
    };
    if args.yaml {
        // PyYAML's text already ends in a newline and print() adds one.
        println!("{}", yaml::dump(&job));
    } else {
        println!("{}", pyjson::dumps_sorted(&job));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn results(session: &Session, job_id: &str) -> anyhow::Result<ExitCode> {
    match session.call(v1::result(job_id)).await {
        Ok(results) => {
            println!("{}", pyjson::dumps_sorted(&results));
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => match failure.status() {
            Some(204) => bail!("No results found for that job id."),
            Some(400 | 404) => bail!(INVALID_JOB_ID),
            Some(status) => {
                bail!("ERROR: Unexpected error status from testflinger server: {status}")
            }
            None => Err(failure.into_error()),
        },
    }
}

#[derive(Args, Debug)]
pub struct ArtifactsArgs {
    /// Where to save the tarball
    #[arg(long, default_value = "artifacts.tgz")]
    pub filename: std::path::PathBuf,
    /// The job's id, as `submit` printed it
    pub job_id: String,
}

pub async fn artifacts(session: &Session, args: &ArtifactsArgs) -> anyhow::Result<ExitCode> {
    println!("Downloading artifacts tarball...");
    let path = v1::artifact_path(&args.job_id);
    // Into a temporary name first: a failed download never clobbers an older tarball.
    let mut partial = args.filename.clone().into_os_string();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| Progress::start(&partial));
    let outcome = session
        .api
        .download(&path, &partial, Duration::from_secs(3600))
        .await;
    if let Some(progress) = progress {
        progress.stop();
    }
    match outcome {
        Ok(true) => {
            std::fs::rename(&partial, &args.filename)?;
            println!("Artifacts downloaded to {}", args.filename.display());
            Ok(ExitCode::SUCCESS)
        }
        Ok(false) => bail!("No artifacts tarball found for that job id."),
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            match error.status().map(|s| s.as_u16()) {
                Some(204) => bail!("No artifacts tarball found for that job id."),
                Some(400) => bail!(INVALID_JOB_ID),
                Some(status) => {
                    bail!("ERROR: Unexpected error status from testflinger server: {status}")
                }
                None => match error {
                    crate::api::ApiError::Auth(message) => bail!("{message}"),
                    crate::api::ApiError::File { path, source } => {
                        bail!("cannot write {}: {source}", path.display())
                    }
                    other => bail!("Unable to communicate with specified server. ({other})"),
                },
            }
        }
    }
}

/// A byte counter on stderr while a download runs (only on a terminal).
struct Progress {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Progress {
    fn start(file: &std::path::Path) -> Progress {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (flag, file) = (stop.clone(), file.to_path_buf());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                eprint!("\r\x1b[K{:.1} MiB downloaded", bytes as f64 / 1048576.0);
                let _ = std::io::stderr().flush();
                std::thread::sleep(Duration::from_millis(200));
            }
            eprint!("\r\x1b[K");
        });
        Progress { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// `cancel`; with `confirm`, says so when it worked (the reference prints nothing).
pub async fn cancel(session: &Session, job_id: &str, confirm: bool) -> anyhow::Result<ExitCode> {
    match session.call(v1::cancel(job_id)).await {
        Ok(_) => {
            History::load().update(job_id, "cancelled");
            if confirm {
                println!("Job {job_id} cancelled");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) if failure.status() == Some(400) => {
            bail!("Invalid job ID specified or the job is already complete/cancelled.")
        }
        Err(Failure::Status { status, message }) => {
            bail!("Unable to cancel the job: the server answered {status}: {message}")
        }
        Err(failure) => Err(failure.into_error()),
    }
}

#[derive(Args, Debug)]
pub struct JobsArgs {
    /// Include job status (may add delay)
    #[arg(short = 's', long)]
    pub status: bool,
}

pub async fn jobs(session: &Session, args: &JobsArgs) -> anyhow::Result<ExitCode> {
    let mut history = History::load();
    let entries: Vec<(String, Value)> = history.entries().cloned().collect();
    let mut rows = Vec::new();
    for (job_id, entry) in entries {
        let status = if args.status {
            Some(current_status(session, &mut history, &job_id, &entry).await)
        } else {
            None
        };
        let submitted = entry
            .get("submission_time")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        let queue = entry
            .get("queue")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        rows.push((job_id, status, short_utc(submitted as i64), queue));
    }
    // With --status, `tf` says how finished jobs ended in a last column, after the queue
    // (what scripts read, the columns before it, stays where it was); under the
    // reference's names the table stays the reference's.
    let with_outcome = args.status && !CommandName::of_this_process().is_reference();
    let queue_width = rows.iter().map(|row| row.3.len()).fold(5, usize::max);
    let outcome_column = |queue: &str, outcome: String| {
        if with_outcome {
            format!("{queue:<queue_width$}  {outcome}")
                .trim_end()
                .to_string()
        } else {
            queue.to_string()
        }
    };
    println!(
        "{:<36} {:<9} Submission Time  {}",
        "Job ID",
        if args.status { "Status" } else { "" },
        outcome_column("Queue", "Outcome".into())
    );
    println!("{}", "-".repeat(79));
    for (job_id, status, submitted, queue) in rows {
        let (state, outcome) = match status {
            Some(JobStatus { state, outcome }) => {
                (state, outcome.map(|o| o.to_string()).unwrap_or_default())
            }
            None => (String::new(), String::new()),
        };
        println!(
            "{job_id} {state:<9} {submitted} {}",
            outcome_column(&queue, outcome)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A history entry's state and outcome for `jobs --status`: as noted for a finished job
/// whose outcome is known, else asked from the server (and noted); `unknown` when the
/// server cannot say.
async fn current_status(
    session: &Session,
    history: &mut History,
    job_id: &str,
    entry: &Value,
) -> JobStatus {
    let state = entry
        .get("job_state")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let noted = JobStatus {
        outcome: match state.as_str() {
            "cancelled" => Some(Outcome::Cancelled),
            _ => History::outcome_of(entry),
        },
        state,
    };
    let finished = JobState::is_finished_name(&noted.state);
    if finished && noted.outcome.is_some() {
        return noted;
    }
    match job_status(session, job_id).await {
        Ok(status) => {
            history.note(job_id, &status.state, status.outcome);
            status
        }
        // A finished job stays as noted; of the others, nothing is known.
        Err(_) if finished => noted,
        Err(_) => {
            history.update(job_id, "unknown");
            JobStatus {
                state: "unknown".into(),
                outcome: None,
            }
        }
    }
}

/// `Www Mmm DD HH:MM` in UTC, as `time.strftime("%a %b %d %H:%M")`.
fn short_utc(seconds: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // Clamped to years 1970–9999 so that a damaged history cannot overflow the arithmetic.
    let seconds = seconds.clamp(0, 253_402_300_799);
    let iso = crate::job::time::render(seconds * 1_000_000); // YYYY-MM-DDTHH:MM:SSZ
    let day_index = seconds.div_euclid(86400).rem_euclid(7) as usize;
    let month: usize = iso[5..7].parse().unwrap_or(1);
    format!(
        "{} {} {} {}",
        DAYS[day_index],
        MONTHS[month.clamp(1, 12) - 1],
        &iso[8..10],
        &iso[11..16]
    )
}

#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// setting=value
    pub setting: Option<String>,
}

pub fn config(mut settings: Settings, args: &ConfigArgs) -> anyhow::Result<ExitCode> {
    match args.setting.as_deref() {
        None => {
            println!("Current Configuration\n---------------------");
            for (key, value) in &settings.file.entries {
                println!("{key} = {value}");
            }
            println!();
        }
        // Split at the first `=` only (the reference gives up on a second one).
        Some(setting) => match setting.split_once('=') {
            Some((key, value)) => {
                settings.file.set(key.trim(), value.trim());
                settings.save()?;
            }
            None => println!(
                "{setting} = {}",
                settings.file.get(setting).unwrap_or("None")
            ),
        },
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn submission_times_print_like_strftime() {
        // 2026-11-24 20:14 UTC was a Tuesday.
        assert_eq!(super::short_utc(1_795_551_240), "Tue Nov 24 20:14");
    }
}
