//! `submit`: a job file (YAML 1.1 or JSON, or `-` for stdin) checked, sent, its attachments
//! packed and uploaded, and optionally followed to the end.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};

use super::history::History;
use super::options::Credentials;
use super::poll::{self, PollArgs};
use super::session::{Failure, Session};
use crate::api::{v1, Upload};
use crate::codec::yaml;
use crate::job::{LogType, Phase};

/// Phases whose data may carry attachments.
#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// Poll for output from the job once it is submitted
    #[arg(short = 'p', long)]
    pub poll: bool,
    /// Only print the job id
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Submit even if no agent is online for the queue yet
    #[arg(long)]
    pub wait_for_available_agents: bool,
    #[command(flatten)]
    pub credentials: Credentials,
    /// Directory that relative attachment paths start from (default: the job file's)
    #[arg(long, value_name = "DIR")]
    pub attachments_relative_to: Option<PathBuf>,
    /// YAML or JSON job file, or - for stdin
    pub filename: String,
}

pub async fn run(session: &Session, args: &SubmitArgs, debug: bool) -> anyhow::Result<ExitCode> {
    let (text, job_dir) = if args.filename == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("Cannot read the job from stdin")?;
        (
            String::from_utf8_lossy(&bytes).into_owned(),
            std::env::current_dir()?,
        )
    } else {
        let path = Path::new(&args.filename);
        let bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("Cannot read file {}: {e}", path.display()))?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or(std::env::current_dir()?);
        (String::from_utf8_lossy(&bytes).into_owned(), dir)
    };
    let job = yaml::parse(&text)
        .map_err(|e| anyhow::anyhow!("Cannot parse the job file {}: {e}", args.filename))?;
    if !job.is_object() {
        bail!(
            "The job file {} must hold a mapping of job fields",
            args.filename
        );
    }
    let relative_to = match &args.attachments_relative_to {
        Some(dir) if !dir.is_dir() => {
            bail!(
                "--attachments-relative-to {}: no such directory",
                dir.display()
            )
        }
        Some(dir) => dir.clone(),
        None => job_dir,
    };
    let job_id = submit_job(session, job, &relative_to, args.wait_for_available_agents).await?;
    if args.quiet {
        println!("{job_id}");
    } else {
        println!("Job submitted successfully!");
        println!("job_id: {job_id}");
    }
    if args.poll {
        return poll_from(session, &job_id, 0, debug).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows a job from `start_fragment` to its end.
pub async fn poll_from(
    session: &Session,
    job_id: &str,
    start_fragment: i64,
    debug: bool,
) -> anyhow::Result<ExitCode> {
    let args = PollArgs {
        start_fragment,
        ..PollArgs::following(job_id)
    };
    poll::follow(session, &args, LogType::Output, debug).await
}

/// Checks, sends and records a job; returns its id. Also used by `reserve`.
pub async fn submit_job(
    session: &Session,
    mut job: Value,
    relative_to: &Path,
    wait_for_agents: bool,
) -> anyhow::Result<String> {
    let Some(queue) = job
        .get("job_queue")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        bail!("Error: Queue was not specified in job");
    };
    let excluded: Vec<String> = match job.get("exclude_agents") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(names)) => names
            .iter()
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect(),
        Some(_) => bail!("Error: exclude_agents must be a list if provided."),
    };
    check_agents(session, &queue, &excluded, wait_for_agents).await?;

    let archive = pack_attachments(&mut job, relative_to)?;
    let job_id = match session.call(v1::submit(&job)).await {
        Ok(reply) => reply
            .json::<Value>()
            .ok()
            .and_then(|b| b.get("job_id")?.as_str().map(str::to_string))
            .unwrap_or_else(|| "None".into()),
        Err(failure) => bail!(submit_failure(failure)),
    };
    if let Some(archive) = archive {
        // Interrupted, the job is cancelled: it would wait for its attachments forever.
        tokio::select! {
            uploaded = upload_attachments(session, &job_id, archive.path()) => uploaded?,
            _ = tokio::signal::ctrl_c() => {
                cancel_unattached(session, &job_id).await;
                bail!("Job {job_id} submitted and cancelled: failed to submit attachments");
            }
        }
    }
    History::load().add(&job_id, &queue);
    Ok(job_id)
}

fn submit_failure(failure: Failure) -> String {
    match failure {
        Failure::Status { status: 400, .. } => "The job you submitted contained bad data or bad formatting, or did not specify a job_queue.".into(),
        Failure::Status { status: 403, message } => format!("Received 403 error from server with reason: {message}\nThe specified client credentials do not have sufficient permissions for the resource(s) you are trying to access."),
        Failure::Status { status: 401, message } => format!("Received 401 error from server with reason: {message}\nYou are attempting to use a feature that requires client authorisation without using client credentials."),
        Failure::Status { status, message } => format!("Unexpected error status from testflinger server: [{status}] {message}"),
        other => other.into_error().to_string(),
    }
}

/// The reference's check that someone will run the job: an online agent (not `offline`,
/// `maintenance` counts as online) that the job does not exclude.
async fn check_agents(
    session: &Session,
    queue: &str,
    excluded: &[String],
    wait: bool,
) -> anyhow::Result<()> {
    let agents = match session.call(v1::queue_agents(queue)).await {
        Ok(Value::Array(agents)) => agents,
        Ok(_) => Vec::new(),
        Err(failure) => match failure {
            Failure::Status {
                status: 404,
                message,
            } => bail!("{message}"),
            Failure::Status { .. } => Vec::new(),
            other => return Err(other.into_error()),
        },
    };
    let online: Vec<&str> = agents
        .iter()
        .filter(|a| a.get("state").and_then(Value::as_str) != Some("offline"))
        .filter_map(|a| a.get("name").and_then(Value::as_str))
        .collect();
    if online
        .iter()
        .any(|name| !excluded.iter().any(|e| e == name))
    {
        return Ok(());
    }
    if wait {
        println!("WARNING: No online agents available for queue {queue}.  Waiting for agents to become available...");
        return Ok(());
    }
    let mut message = format!(
        "ERROR: No online agents available for queue {queue}. If you want to wait for agents to become available, use the --wait-for-available-agents option."
    );
    let excluded_online: Vec<&&str> = online
        .iter()
        .filter(|n| excluded.iter().any(|e| e == *n))
        .collect();
    if !excluded_online.is_empty() {
        message.push_str("\nAdditionally, the following agents ARE online, but they have been excluded from running this job in the job definition file:");
        for name in excluded_online {
            message.push_str(&format!("\n\t- {name}"));
        }
    }
    // The reference prints this on stdout, then exits 1.
    println!("{message}");
    Err(AlreadyReported.into())
}

/// A failure whose message was already printed (on stdout, where the reference prints
/// some): the command just exits 1.
#[derive(Debug)]
pub struct AlreadyReported;

impl std::fmt::Display for AlreadyReported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(reported above)")
    }
}

impl std::error::Error for AlreadyReported {}

/// Packs the attachments the job declares (`local` files, relative to `relative_to`) into
/// a gzip-compressed tar with members `<phase>/<agent path>`, and rewrites each entry as
/// the server and agent expect (`local` gone, `agent` set). `None` when the job declares
/// no attachments at all.
fn pack_attachments(
    job: &mut Value,
    relative_to: &Path,
) -> anyhow::Result<Option<tempfile::NamedTempFile>> {
    let declared = Phase::WITH_ATTACHMENTS
        .iter()
        .any(|phase| job.pointer(&format!("/{phase}_data/attachments")).is_some());
    if !declared {
        return Ok(None);
    }
    let archive = tempfile::Builder::new()
        .suffix("tar.gz")
        .tempfile()
        .context("cannot create a temporary file for the attachments")?;
    let encoder = flate2::write::GzEncoder::new(archive.reopen()?, flate2::Compression::default());
    let mut tar = tar::Builder::new(encoder);
    tar.follow_symlinks(false);
    let base = relative_to
        .canonicalize()
        .unwrap_or_else(|_| relative_to.to_path_buf());
    for phase in Phase::WITH_ATTACHMENTS {
        let Some(entries) = job
            .pointer_mut(&format!("/{phase}_data/attachments"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for entry in entries.iter_mut() {
            let local = match entry.get("local") {
                None | Some(Value::Null) => continue,
                Some(Value::String(local)) if local.is_empty() => continue,
                Some(Value::String(local)) => local.clone(),
                Some(other) => bail!("attachment `local` must be a file name, not {other}"),
            };
            let local_path = base.join(local);
            let resolved = local_path.canonicalize().map_err(|e| {
                anyhow::anyhow!("Cannot read attachment {}: {e}", local_path.display())
            })?;
            let agent_path = match entry.get("agent").and_then(Value::as_str) {
                Some(agent) => normalize(agent),
                None => match resolved.strip_prefix(&base) {
                    Ok(inside) => inside.to_string_lossy().into_owned(),
                    Err(_) => resolved
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                },
            };
            let member = format!("{phase}/{agent_path}");
            if resolved.is_dir() {
                tar.append_dir_all(&member, &resolved)
            } else {
                tar.append_path_with_name(&resolved, &member)
            }
            .with_context(|| format!("cannot pack attachment {}", resolved.display()))?;
            if let Some(entry) = entry.as_object_mut() {
                entry.remove("local");
                entry.insert("agent".into(), json!(agent_path));
            }
        }
    }
    tar.into_inner()?.finish()?;
    Ok(Some(archive))
}

/// Python's `os.path.normpath`, then the leading `/` dropped: `data//dir/` → `data/dir`.
fn normalize(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<String> = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::ParentDir => {
                if parts.last().is_some_and(|p| p != "..") {
                    parts.pop();
                } else if !absolute {
                    // `..` above the root of an absolute path stays at the root.
                    parts.push("..".into());
                }
            }
            _ => {}
        }
    }
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

/// Uploads the attachments archive with the reference's retries; a job whose upload
/// fails for good is cancelled, so it does not wait for attachments forever.
async fn upload_attachments(session: &Session, job_id: &str, archive: &Path) -> anyhow::Result<()> {
    let settings = &session.settings;
    let tries = settings.get_number("attachments_tries", 3)?.max(1);
    let mut wait = settings.get_number("attachments_retry_wait", 10)? as f64;
    let timeout = Duration::from_secs(settings.get_number("attachments_timeout", 600)?);
    for attempt in 1..=tries {
        let upload = Upload {
            file: archive.to_path_buf(),
            field: "file".into(),
            filename: archive
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "attachments.tar.gz".into()),
            content_type: "application/x-gzip".into(),
        };
        match session
            .call_within(v1::upload_attachments(job_id, upload), timeout)
            .await
        {
            Ok(_) => return Ok(()),
            Err(Failure::Status { status: 400, .. }) => break,
            Err(Failure::Status { status, message }) => {
                bail!("Unexpected error status from testflinger server ({status}): {message}")
            }
            Err(Failure::Fatal(message)) => bail!("{message}"),
            Err(Failure::Network(reason)) => {
                eprintln!("ERROR: A connection error occured {reason}");
                if attempt < tries {
                    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                    wait *= 1.3;
                }
            }
        }
    }
    cancel_unattached(session, job_id).await;
    bail!("Job {job_id} submitted and cancelled: failed to submit attachments")
}

async fn cancel_unattached(session: &Session, job_id: &str) {
    let _ = session.call(v1::cancel(job_id)).await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn agent_paths_are_normalized_like_python() {
        assert_eq!(super::normalize("data//dir/"), "data/dir");
        assert_eq!(super::normalize("/abs/x.txt"), "abs/x.txt");
        assert_eq!(super::normalize("a/./b/../c"), "a/c");
        assert_eq!(super::normalize("/../x"), "x");
    }
}
