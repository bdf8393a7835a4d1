//! The user's commands (`tf submit`, `tf poll`, …, also installed as `testflinger-cli` /
//! `testflinger`), a drop-in replacement for the reference CLI: the same subcommands,
//! options, config file, token storage, history and output. Each group of commands has
//! its module; this one declares the command line and dispatches.

mod account;
mod admin;
mod command_name;
mod config;
mod history;
mod jobs;
mod lab;
mod login;
mod options;
mod poll;
mod reserve;
mod session;
mod submit;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::api::v1;
use crate::codec::yaml;
use crate::job::LogType;
pub use command_name::CommandName;
use config::{Settings, DEFAULT_SERVER};
use options::{Credentials, JobId};
use session::Session;

/// Options that come before the subcommand, as with the reference.
#[derive(Args, Debug, Default)]
pub struct GlobalOptions {
    /// Configuration file to use
    #[arg(short = 'c', long = "configfile", value_name = "CONFIGFILE")]
    pub configfile: Option<PathBuf>,
    /// Show the details of errors the poll loop retries
    #[arg(short = 'd', long)]
    pub debug: bool,
    #[arg(long, help = server_help())]
    pub server: Option<String>,
}

/// `--server`'s help, with where the server comes from when the flag is not given.
fn server_help() -> String {
    format!(
        "Testflinger server to use [default: from the config file or $TESTFLINGER_SERVER, \
         else {DEFAULT_SERVER}]"
    )
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Testflinger admin commands
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Download a tarball of artifacts saved for a specified job
    Artifacts(jobs::ArtifactsArgs),
    /// Tell the server to cancel a specified JOB_ID
    Cancel(JobId),
    /// Get or set configuration options
    Config(jobs::ConfigArgs),
    /// List the previously started test jobs
    Jobs(jobs::JobsArgs),
    /// List the agents on the Testflinger server
    ListAgents(lab::ListAgentsArgs),
    /// List the advertised queues on the Testflinger server
    ListQueues(lab::JsonFlag),
    /// Authenticate with server
    Login(Credentials),
    /// Poll for output from a job until it is complete
    Poll(poll::PollArgs),
    /// Poll for serial output from a job until it is complete
    PollSerial(poll::PollArgs),
    /// Install and reserve a system
    Reserve(reserve::ReserveArgs),
    /// Show the status of a specified JOB_ID
    Status(jobs::StatusArgs),
    /// Show the status of a specified agent
    AgentStatus(lab::AgentStatusArgs),
    /// Show the status of the agents and jobs of a queue
    QueueStatus(lab::QueueStatusArgs),
    /// Get the results of a specified JOB_ID
    Results(JobId),
    /// Show the requested job JOB_ID
    Show(jobs::ShowArgs),
    /// Submit a new test job to the server
    Submit(submit::SubmitArgs),
    /// Manage secrets stored on the server
    #[command(subcommand)]
    Secret(account::SecretCommand),
}

impl ClientCommand {
    /// The credentials given on the command line, if this command takes them.
    fn credentials(&self) -> Option<&Credentials> {
        match self {
            ClientCommand::Login(credentials) => Some(credentials),
            ClientCommand::Submit(args) => Some(&args.credentials),
            ClientCommand::Secret(command) => Some(command.credentials()),
            ClientCommand::Admin(command) => Some(command.credentials()),
            _ => None,
        }
    }
}

/// The message of the reference's "give both or neither" check, if it fails.
pub fn credential_pairing_error(command: &ClientCommand) -> Option<&'static str> {
    let credentials = command.credentials()?;
    (credentials.client_id.is_some() != credentials.secret_key.is_some())
        .then_some("Both --client-id and --secret-key must be provided together")
}

/// Runs a client command; errors are printed as the reference prints them (the message
/// alone on stderr, exit 1).
pub fn run(options: GlobalOptions, command: ClientCommand) -> ExitCode {
    end_quietly_on_closed_stdout();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(options, command)) {
        Ok(code) => code,
        Err(error) if error.is::<poll::Interrupted>() => ExitCode::from(130),
        Err(error) => {
            if error.downcast_ref::<submit::AlreadyReported>().is_none() {
                eprintln!("{error:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Output into a closed pipe (`tf jobs | head -1`) ends the process quietly, as with
/// any command-line tool, instead of a panic message. SIGPIPE stays ignored: the HTTP
/// client's sockets must get EPIPE as an error, not kill the process mid-upload.
fn end_quietly_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

async fn dispatch(options: GlobalOptions, command: ClientCommand) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(options.configfile.as_deref());
    if let ClientCommand::Config(args) = &command {
        return jobs::config(settings, args);
    }
    let credentials = command.credentials().cloned().unwrap_or_default();
    let session = Session::open(
        settings,
        options.server.as_deref(),
        credentials.client_id.as_deref(),
        credentials.secret_key.as_deref(),
    )?;
    use ClientCommand as C;
    match command {
        C::Admin(command) => admin::run(&session, command).await,
        C::Artifacts(args) => jobs::artifacts(&session, &args).await,
        C::Cancel(JobId { job_id }) => {
            let confirm = !CommandName::of_this_process().is_reference();
            jobs::cancel(&session, &job_id, confirm).await
        }
        C::Config(_) => unreachable!("handled before the session"),
        C::Jobs(args) => jobs::jobs(&session, &args).await,
        C::ListAgents(args) => lab::list_agents(&session, &args).await,
        C::ListQueues(args) => lab::list_queues(&session, &args).await,
        C::Login(_) => account::login(&session).await,
        C::Poll(args) => poll::run(&session, &args, LogType::Output, options.debug).await,
        C::PollSerial(args) => poll::run(&session, &args, LogType::Serial, options.debug).await,
        C::Reserve(args) => reserve::run(&session, &args).await,
        C::Status(args) => jobs::status(&session, &args).await,
        C::AgentStatus(args) => lab::agent_status(&session, &args).await,
        C::QueueStatus(args) => lab::queue_status(&session, &args).await,
        C::Results(JobId { job_id }) => jobs::results(&session, &job_id).await,
        C::Show(args) => jobs::show(&session, &args).await,
        C::Submit(args) => submit::run(&session, &args, options.debug).await,
        C::Secret(command) => account::secret(&session, command).await,
    }
}

/// Job ids from the local history, for shell completion.
pub fn history_job_ids() -> Vec<String> {
    history::History::load().ids().cloned().collect()
}

/// `tf demo`'s client part: submits the job file to `server`, follows it live, then
/// prints its results and saves its artifacts to `artifacts`. Returns the job id.
pub async fn demo_job(
    server: &str,
    job_file: &std::path::Path,
    artifacts: &std::path::Path,
) -> anyhow::Result<String> {
    let session = Session::open(Settings::load(None), Some(server), None, None)?;
    let text = std::fs::read_to_string(job_file)?;
    let job = yaml::parse(&text).map_err(anyhow::Error::msg)?;
    let base = job_file.parent().unwrap_or(std::path::Path::new("."));
    let job_id = submit::submit_job(&session, job, base, false).await?;
    println!("$ tf submit {}\njob_id: {job_id}\n", job_file.display());
    println!("$ tf poll {job_id}");
    let follow = poll::PollArgs {
        state_lines: poll::StateLines::PhasesThatRan,
        ..poll::PollArgs::following(&job_id)
    };
    poll::follow(&session, &follow, LogType::Output, false).await?;
    let result = session
        .call(v1::result(&job_id))
        .await
        .map_err(|f| f.into_error())?;
    let state = result["job_state"].as_str().unwrap_or("unknown");
    println!("\n$ tf status --outcome {job_id}\n{state}");
    if let Some(outcome) = jobs::outcome_in(&result, state) {
        println!("{outcome}");
    }
    println!("\nExit status per phase (tf results {job_id}):");
    for phase in crate::job::Phase::NAMES {
        if let Some(status) = result.get(format!("{phase}_status")) {
            println!("  {phase:<16} {status}");
        }
    }
    let path = v1::artifact_path(&job_id);
    if session
        .api
        .download(&path, artifacts, std::time::Duration::from_secs(60))
        .await?
    {
        println!("\nThe job's artifacts (tf artifacts {job_id}):");
        let file = std::fs::File::open(artifacts)?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        for entry in archive.entries()? {
            let entry = entry?;
            if entry.header().entry_type().is_file() {
                println!("  {}", entry.path()?.display());
            }
        }
    }
    Ok(job_id)
}
