//! `poll` and `poll-serial`: a job's output as it is produced. Against `tf serve` the log
//! request waits for the next fragment (or state change), so lines show up within a
//! second; against a reference server it asks every 10 s, as the reference does.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use serde_json::Value;

use super::command_name::CommandName;
use super::history::History;
use super::jobs::{self, job_state, INVALID_JOB_ID, NO_JOB_DATA};
use super::session::{Failure, Session};
use crate::api::{v1, Call, Json, EXTENSIONS_HEADER};
use crate::codec::pyjson;
use crate::job::outcome::KILLED;
use crate::job::reservation::{announced_target, asks_for_reservation};
use crate::job::LogType;
use crate::job::{JobState, Outcome, Phase};

/// How long one log request may wait for news on a server that can long-poll.
const LONG_POLL_SECONDS: u64 = 10;
/// The reference's pause between polls.
const POLL_INTERVAL: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Args, Debug)]
pub struct PollArgs {
    /// Get latest output and exit immediately
    #[arg(short = 'o', long)]
    pub oneshot: bool,
    /// Start fragment
    #[arg(
        short = 'f',
        long = "start_fragment",
        alias = "start-fragment",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub start_fragment: i64,
    /// Start timestamp (ISO 8601)
    #[arg(short = 't', long = "start_timestamp", alias = "start-timestamp", value_parser = parse_timestamp)]
    pub start_timestamp: Option<String>,
    /// Return logs from a specific phase
    #[arg(short = 'p', long, value_parser = clap::builder::PossibleValuesParser::new(Phase::NAMES))]
    pub phase: Option<String>,
    /// Return logs in JSON format and exit immediately
    #[arg(long)]
    pub json: bool,
    /// When the job ends, exit with the first non-zero phase exit code (1 if the job was
    /// cancelled), instead of 0 whatever happened: for CI
    #[arg(long)]
    pub exit_status: bool,
    /// The job's id, as `submit` printed it
    pub job_id: String,
    /// Which `State '…' lasted …` lines to print (`tf demo` shows fewer).
    #[arg(skip)]
    pub state_lines: StateLines,
}

impl PollArgs {
    /// Following `job_id` live from its first fragment, as `submit --poll` does.
    pub fn following(job_id: &str) -> PollArgs {
        PollArgs {
            oneshot: false,
            start_fragment: 0,
            start_timestamp: None,
            phase: None,
            json: false,
            exit_status: false,
            job_id: job_id.to_string(),
            state_lines: StateLines::Every,
        }
    }
}

/// The `State '…' lasted …` lines printed when a job moves on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum StateLines {
    /// One for every state seen, as the reference prints them.
    #[default]
    Every,
    /// Only for the phases that ran (they have an exit status): a newcomer has no use
    /// for a line about a phase without a command, or about a state never shown.
    PhasesThatRan,
}

impl StateLines {
    fn shows(self, state: &str, result: Option<&Value>) -> bool {
        match self {
            StateLines::Every => true,
            StateLines::PhasesThatRan => result
                .and_then(|r| r.get(format!("{state}_status")))
                .is_some_and(|status| !status.is_null()),
        }
    }
}

/// `datetime.fromisoformat` as the reference parses `--start_timestamp`, re-rendered
/// the way it sends it: `2025-10-15` → `2025-10-15T00:00:00`, `Z` → `+00:00`.
fn parse_timestamp(text: &str) -> Result<String, String> {
    let invalid = || format!("invalid fromisoformat value: '{text}'");
    if !text.is_ascii() {
        return Err(invalid());
    }
    let (date, rest) = text.split_at(text.len().min(10));
    let valid_date = date.len() == 10
        && date.as_bytes()[4] == b'-'
        && date.as_bytes()[7] == b'-'
        && date
            .chars()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !valid_date {
        return Err(invalid());
    }
    if rest.is_empty() {
        return Ok(format!("{date}T00:00:00"));
    }
    let time = rest.strip_prefix(['T', ' ']).ok_or_else(invalid)?;
    let (clock, offset) = match time.find(['Z', '+', '-']) {
        Some(at) => time.split_at(at),
        None => (time, ""),
    };
    let offset = if offset == "Z" { "+00:00" } else { offset };
    let valid_offset = offset.is_empty()
        || (offset.len() == 6
            && offset.as_bytes()[3] == b':'
            && offset[1..3]
                .chars()
                .chain(offset[4..].chars())
                .all(|c| c.is_ascii_digit()));
    if !valid_offset {
        return Err(invalid());
    }
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let parts: Vec<&str> = hms.split(':').collect();
    let two_digits = |p: &&str| p.len() == 2 && p.chars().all(|c| c.is_ascii_digit());
    if !(2..=3).contains(&parts.len()) || !parts.iter().all(two_digits) {
        return Err(invalid());
    }
    let seconds = parts.get(2).copied().unwrap_or("00");
    if fraction.len() > 6 || !fraction.chars().all(|c| c.is_ascii_digit()) {
        return Err(invalid());
    }
    let fraction = fraction.trim_end_matches('0');
    let fraction = if fraction.is_empty() {
        String::new()
    } else {
        format!(".{fraction:0<6}")
    };
    Ok(format!(
        "{date}T{}:{}:{seconds}{fraction}{offset}",
        parts[0], parts[1]
    ))
}

/// The joined log of every phase (or one), and the last fragment number in it.
struct LogChunk {
    last_fragment: i64,
    text: String,
}

fn combine(response: &Value, log_type: LogType, phase: Option<&str>) -> LogChunk {
    let phases = response.get(log_type.as_str());
    let mut chunk = LogChunk {
        last_fragment: -1,
        text: String::new(),
    };
    let selected: Vec<&str> = match phase {
        Some(phase) => vec![phase],
        None => Phase::NAMES.to_vec(),
    };
    for name in selected {
        let Some(entry) = phases.and_then(|p| p.get(name)) else {
            continue;
        };
        let last = entry
            .get("last_fragment_number")
            .and_then(Value::as_i64)
            .unwrap_or(-1);
        chunk.last_fragment = chunk.last_fragment.max(last);
        chunk.text.push_str(
            entry
                .get("log_data")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
    }
    chunk
}

/// The read of the log `log_type` from fragment `start` on, as `args` asks.
fn log_call(
    args: &PollArgs,
    log_type: LogType,
    start: i64,
    wait: Option<u64>,
) -> Call<Json<Value>> {
    let wanted = v1::LogQuery {
        start_fragment: Some(start),
        start_timestamp: args.start_timestamp.as_deref(),
        phase: args.phase.as_deref().and_then(Phase::parse),
        wait,
    };
    v1::log(&args.job_id, log_type, &wanted)
}

pub async fn run(
    session: &Session,
    args: &PollArgs,
    log_type: LogType,
    debug: bool,
) -> anyhow::Result<ExitCode> {
    if args.oneshot {
        let response = session
            .call(log_call(args, log_type, args.start_fragment, None))
            .await
            .map_err(|f| f.into_error())?;
        let chunk = combine(&response, log_type, args.phase.as_deref());
        if chunk.last_fragment < 0 {
            println!("Waiting on Output");
        } else {
            print!("{}", chunk.text);
            println!("Last Fragment Number: {}", chunk.last_fragment);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.json {
        let response = session
            .call(log_call(args, log_type, args.start_fragment, None))
            .await
            .map_err(|f| f.into_error())?;
        println!("{}", pyjson::dumps_indented(&response, 4));
        return Ok(ExitCode::SUCCESS);
    }
    follow(session, args, log_type, debug).await
}

/// Follows a job to its end (also `submit --poll` and `reserve`).
pub async fn follow(
    session: &Session,
    args: &PollArgs,
    log_type: LogType,
    debug: bool,
) -> anyhow::Result<ExitCode> {
    let job_id = &args.job_id;
    let job = match session.call(v1::job(job_id)).await {
        Ok(job) => job,
        Err(failure) => match failure {
            Failure::Status { status: 204, .. } => bail!(NO_JOB_DATA),
            Failure::Status { status: 400, .. } => bail!(INVALID_JOB_ID),
            Failure::Fatal(message) => bail!(message),
            _ => bail!("Job details could not be fetched."),
        },
    };
    let initial_state = job_state(session, job_id)
        .await
        .map_err(|e| e.into_error())?;
    let extensions = server_extensions(session).await;
    let long_poll = extensions.contains("long-poll");
    // The state is all the loop needs from the result; tf serve can leave the logs out.
    let result = || {
        if extensions.contains("result-without-logs") {
            v1::result_state(job_id)
        } else {
            v1::result(job_id)
        }
    };
    let mut status_line = (std::io::stdout().is_terminal() && !is_terminal(&initial_state))
        .then(|| StatusLine::new(&job));
    let mut interrupts = listen_for_interrupts();
    let mut watch = Watch {
        session,
        job_id,
        interrupts: &mut interrupts,
    };

    let mut history = History::load();
    let mut next_fragment = args.start_fragment;
    let mut previous_state: Option<(String, Instant)> = None;
    let mut position: Option<String> = None;
    let mut backoff = Duration::from_secs(1);
    let mut failures = 0;
    let mut ssh_hint_shown = false;
    let mut reservation = ReservationWatch::new(args, log_type);
    let warn_every = session.settings.get_number("error_threshold", 3)?.max(1);
    loop {
        // The job's state: a change is reported before the output that follows it.
        let Some(result) = watch
            .interruptible(&mut status_line, next_fragment, session.call(result()))
            .await?
        else {
            continue;
        };
        if let Err(failure) = &result {
            end_on(failure)?;
        }
        let state = result
            .as_ref()
            .ok()
            .and_then(|r| r.get("job_state")?.as_str().map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
        history.update(job_id, &state);
        let mut trouble = result.as_ref().err().map(|f| f.message());
        if previous_state.as_ref().map(|(s, _)| s.as_str()) != Some(state.as_str())
            && state != "unknown"
        {
            if let Some((previous, since)) = previous_state
                .as_ref()
                .filter(|(previous, _)| args.state_lines.shows(previous, result.as_ref().ok()))
            {
                print_line(
                    &mut status_line,
                    &format!("State '{previous}' lasted {}", lasted(since.elapsed())),
                );
            }
            if let Some(line) = &mut status_line {
                line.set_state(&state);
            }
            previous_state = Some((state.clone(), Instant::now()));
        }
        // Once per reservation, when the reserve phase announced it: agents report the
        // `reserve` state for every job, and a reserve phase can fail before reserving.
        let awaiting_reservation =
            state == Phase::Reserve.as_str() && !ssh_hint_shown && asks_for_reservation(&job);
        if awaiting_reservation && !reservation.in_followed_output {
            let announced = watch
                .interruptible(
                    &mut status_line,
                    next_fragment,
                    reservation_target(session, job_id),
                )
                .await?;
            if let Some(Ok(Some(target))) = announced {
                ssh_hint_shown = show_reservation(&mut status_line, &target, job_id);
            }
        }
        if state == JobState::Waiting.as_str() {
            let reply = watch
                .interruptible(
                    &mut status_line,
                    next_fragment,
                    session.call(v1::position(job_id)),
                )
                .await?;
            if let Some(Ok(reply)) = reply {
                let now = String::from_utf8_lossy(&reply.body).trim().to_string();
                if position.as_deref() != Some(now.as_str()) {
                    print_line(&mut status_line, &position_message(&now));
                    position = Some(now);
                }
            }
        }

        // The output since last time; on tf serve the request waits for news.
        let wait = (long_poll && !is_terminal(&state)).then_some(LONG_POLL_SECONDS);
        let logs = session.call(log_call(args, log_type, next_fragment, wait));
        let Some(logs) = watch
            .interruptible(&mut status_line, next_fragment, logs)
            .await?
        else {
            continue;
        };
        match logs {
            Ok(response) => {
                let chunk = combine(&response, log_type, args.phase.as_deref());
                if chunk.last_fragment >= 0 {
                    // Even an empty fragment moves us on, or the same answer would repeat.
                    next_fragment = chunk.last_fragment + 1;
                    if !chunk.text.is_empty() {
                        print_output(&mut status_line, &chunk.text);
                    }
                    if awaiting_reservation && reservation.in_followed_output {
                        reservation.output.push_str(&chunk.text);
                        if let Some(target) = announced_target(&reservation.output) {
                            ssh_hint_shown = show_reservation(&mut status_line, target, job_id);
                        }
                    }
                }
            }
            Err(failure) => {
                end_on(&failure)?;
                trouble = Some(failure.message());
            }
        }

        if let (Some(phase), Ok(result)) = (&args.phase, &result) {
            let status = result
                .get(format!("{phase}_status"))
                .filter(|s| !s.is_null());
            if let Some(status) = status {
                if let Some(line) = &mut status_line {
                    line.clear();
                }
                eprintln!("\nPhase '{phase}' completed with exit code: {status}");
                eprintln!(
                    "Use '{} poll {job_id} --start_fragment {next_fragment}' to continue polling.",
                    CommandName::of_this_process()
                );
                return Ok(ExitCode::SUCCESS);
            }
        }
        if is_terminal(&state) {
            if let Some(line) = &mut status_line {
                line.clear();
            }
            return Ok(outcome(args, &state, result.ok().as_ref()));
        }
        let pause = match trouble {
            // Never a busy loop: errors back off, up to a minute.
            Some(reason) => {
                failures += 1;
                if debug {
                    eprintln!("ERROR: polling {job_id}: {reason}");
                } else if failures % warn_every == 0 {
                    eprintln!("WARNING: Error communicating with the server for the past {failures} requests, but will continue to retry. Last error: {reason}");
                }
                let pause = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                Some(pause)
            }
            None => {
                failures = 0;
                backoff = Duration::from_secs(1);
                (!long_poll).then_some(POLL_INTERVAL)
            }
        };
        if let Some(pause) = pause {
            watch
                .interruptible(&mut status_line, next_fragment, tokio::time::sleep(pause))
                .await?;
        }
    }
}

/// Ends the poll on failures that will not go away by asking again: a refused login,
/// the VPN wall, or a job the server does not know (any more).
fn end_on(failure: &Failure) -> anyhow::Result<()> {
    match failure {
        Failure::Fatal(message) => bail!("{message}"),
        Failure::Status { status: 204, .. } => bail!(NO_JOB_DATA),
        Failure::Status {
            status: 400,
            message,
        } => bail!("{message}"),
        _ => Ok(()),
    }
}

/// Ctrl-C, heard at any moment of the poll (a task keeps listening, so a signal that
/// arrives during a pause is not lost).
fn listen_for_interrupts() -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if sender.send(()).is_err() {
                return;
            }
        }
    });
    receiver
}

/// What every wait of the poll loop watches besides its own work: Ctrl-C, and the
/// status line's clock.
struct Watch<'a> {
    session: &'a Session,
    job_id: &'a str,
    interrupts: &'a mut tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl Watch<'_> {
    /// Awaits `work`; `None` when Ctrl-C came first and the user chose to go on.
    async fn interruptible<T>(
        &mut self,
        status_line: &mut Option<StatusLine>,
        next_fragment: i64,
        work: impl std::future::Future<Output = T>,
    ) -> anyhow::Result<Option<T>> {
        tokio::select! {
            answer = work => Ok(Some(answer)),
            _ = redraw_every_second(status_line) => unreachable!("redraws forever"),
            _ = self.interrupts.recv() => {
                if let Some(line) = status_line {
                    line.clear();
                }
                ask_to_cancel(self.session, self.job_id, next_fragment, self.interrupts).await?;
                Ok(None)
            }
        }
    }
}

/// Where the reserve phase's announcement is looked for. Followed from its start, the
/// job's output carries it, so the output of the passes in the `reserve` state is
/// searched; otherwise (serial, another phase, a later start) the reserve log is read.
struct ReservationWatch {
    in_followed_output: bool,
    /// What the followed output said while the job was in the `reserve` state.
    output: String,
}

impl ReservationWatch {
    fn new(args: &PollArgs, log_type: LogType) -> ReservationWatch {
        let in_followed_output = log_type == LogType::Output
            && args.start_fragment == 0
            && args
                .phase
                .as_deref()
                .is_none_or(|phase| phase == Phase::Reserve.as_str());
        ReservationWatch {
            in_followed_output,
            output: String::new(),
        }
    }
}

/// Prints how to reach the reserved device and starts the status line's countdown.
/// Returns true: the hint was shown.
fn show_reservation(status_line: &mut Option<StatusLine>, target: &str, job_id: &str) -> bool {
    let hint = format!(
        "The device is reserved: ssh {target} (to end the reservation early: {} cancel {job_id})",
        CommandName::of_this_process()
    );
    print_line(status_line, &hint);
    if let Some(line) = status_line {
        line.reservation_began();
    }
    true
}

/// The `user@host` the job's reserve phase announced, once it has: the device is then
/// reserved for the job's keys. An error when the reserve log could not be read.
pub async fn reservation_target(
    session: &Session,
    job_id: &str,
) -> Result<Option<String>, Failure> {
    let wanted = v1::LogQuery {
        phase: Some(Phase::Reserve),
        ..v1::LogQuery::default()
    };
    let response = session
        .call(v1::log(job_id, LogType::Output, &wanted))
        .await?;
    let output = combine(&response, LogType::Output, Some(Phase::Reserve.as_str())).text;
    Ok(announced_target(&output).map(str::to_string))
}

fn is_terminal(state: &str) -> bool {
    JobState::is_finished_name(state)
}

/// The exit code at the end: 0, or with `--exit-status` the job's outcome: the failing
/// phase's exit status, 247 for a timeout, 1 when cancelled.
fn outcome(args: &PollArgs, state: &str, result: Option<&Value>) -> ExitCode {
    if !args.exit_status {
        return ExitCode::SUCCESS;
    }
    if state == "cancelled" {
        return ExitCode::from(1);
    }
    let failed_with = match result.and_then(|result| jobs::outcome_in(result, state)) {
        None | Some(Outcome::Passed) => return ExitCode::SUCCESS,
        Some(Outcome::Cancelled) => 1,
        Some(Outcome::TimedOut { .. }) => i64::from(KILLED),
        Some(
            Outcome::Failed { exit_code, .. } | Outcome::InfrastructureFailure { exit_code, .. },
        ) => exit_code,
    };
    ExitCode::from(u8::try_from(failed_with.clamp(1, 255)).unwrap_or(1))
}

/// The extensions the server announces in `GET /v1` (none for a reference server).
async fn server_extensions(session: &Session) -> String {
    match session.call(v1::version()).await {
        Ok(reply) => reply
            .headers
            .get(EXTENSIONS_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        Err(_) => String::new(),
    }
}

fn position_message(position: &str) -> String {
    if position == "0" {
        "This job will be picked up after the current job is complete (it is next in line)".into()
    } else {
        format!(
            "This job will be picked up after the current job and {position} job(s) ahead of it in the queue are complete"
        )
    }
}

/// `[H hours ]M minutes S seconds`.
fn lasted(elapsed: Duration) -> String {
    let total = elapsed.as_secs();
    let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
    if hours > 0 {
        format!("{hours} hours {minutes} minutes {seconds} seconds")
    } else {
        format!("{minutes} minutes {seconds} seconds")
    }
}

/// Ctrl-C: offer to cancel the job, as the reference does. `Ok` means go on polling;
/// otherwise the poll ends with a line saying what became of the job, and `Interrupted`.
/// A second Ctrl-C, or the end of input, answers no.
async fn ask_to_cancel(
    session: &Session,
    job_id: &str,
    next_fragment: i64,
    interrupts: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
) -> anyhow::Result<()> {
    print!("\nCancel job {job_id} before exiting (y)es/(N)o/(c)ontinue? ");
    let _ = std::io::stdout().flush();
    let answer = tokio::select! {
        answer = read_answer() => answer,
        _ = interrupts.recv() => None,
    };
    let choice = answer
        .as_deref()
        .and_then(|a| a.trim().chars().next())
        .map(|c| c.to_ascii_lowercase());
    if answer.is_none() {
        println!();
    }
    let stopped = format!("Stopped following job {job_id}");
    match choice {
        Some('c') => return Ok(()),
        Some('y') => {
            match session.call(v1::cancel(job_id)).await {
                Ok(_) => eprintln!("{stopped}; it was cancelled."),
                Err(failure) if failure.status() == Some(400) => {
                    eprintln!("{stopped}; it was not cancelled: it is already complete or cancelled.")
                }
                Err(failure) => eprintln!(
                    "{stopped}; it was not cancelled: {:#}",
                    failure.into_error()
                ),
            }
        }
        _ => eprintln!(
            "{stopped}; it was not cancelled. To follow it again: {} poll --start_fragment {next_fragment} {job_id}",
            CommandName::of_this_process()
        ),
    }
    Err(Interrupted.into())
}

/// One line from stdin (`None` at its end), read on a thread of its own so that Ctrl-C
/// is still heard meanwhile.
async fn read_answer() -> Option<String> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = std::io::stdin().read_line(&mut line);
        let _ = sender.send(matches!(read, Ok(n) if n > 0).then_some(line));
    });
    receiver.await.ok().flatten()
}

/// The user stopped the poll with Ctrl-C; what became of the job is printed already.
/// The command exits 130, as an interrupted program does.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

fn print_output(status_line: &mut Option<StatusLine>, text: &str) {
    match status_line {
        Some(line) => {
            line.clear();
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            line.draw();
        }
        None => {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
    }
}

fn print_line(status_line: &mut Option<StatusLine>, text: &str) {
    match status_line {
        Some(line) => {
            line.clear();
            println!("{text}");
            line.draw();
        }
        None => println!("{text}"),
    }
}

async fn redraw_every_second(status_line: &mut Option<StatusLine>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(line) = status_line {
            line.draw();
        }
    }
}

/// The terminal's last line: `[elapsed] [state] what is happening` (reserve: the time
/// left), redrawn every second and cleared before anything else is printed.
struct StatusLine {
    started: Instant,
    state: String,
    reserve_seconds: u64,
    reserve_until: Option<Instant>,
}

impl StatusLine {
    fn new(job: &Value) -> StatusLine {
        let reserve_seconds = job
            .pointer("/reserve_data/timeout")
            .and_then(|t| crate::job::duration::parse_duration(t).ok())
            .unwrap_or(3600);
        StatusLine {
            started: Instant::now(),
            state: String::new(),
            reserve_seconds,
            reserve_until: None,
        }
    }

    fn set_state(&mut self, state: &str) {
        self.state = state.to_string();
        if state != Phase::Reserve.as_str() {
            self.reserve_until = None;
        }
        self.draw();
    }

    /// The reserve phase announced the reservation: from now on the line counts down
    /// its time. (Every job passes through the `reserve` state, reserved or not.)
    fn reservation_began(&mut self) {
        self.reserve_until = Instant::now().checked_add(Duration::from_secs(self.reserve_seconds));
        self.draw();
    }

    fn message(&self) -> String {
        match self.state.as_str() {
            "waiting" => "Waiting on a node to become available...".into(),
            "provision" => "Provisioning device...".into(),
            _ if self.reserve_until.is_some() => "Reserved: time left shown on the left".into(),
            _ => "Waiting on output...".into(),
        }
    }

    fn draw(&mut self) {
        let shown = match self.reserve_until {
            Some(until) => until.saturating_duration_since(Instant::now()),
            None => self.started.elapsed(),
        };
        let total = shown.as_secs();
        let clock = if total >= 3600 {
            format!(
                "{:02}:{:02}:{:02}",
                total / 3600,
                total / 60 % 60,
                total % 60
            )
        } else {
            format!("{:02}:{:02}", total / 60, total % 60)
        };
        print!("\r\x1b[K[{clock}] [{}] {}", self.state, self.message());
        let _ = std::io::stdout().flush();
    }

    fn clear(&mut self) {
        print!("\r\x1b[K");
        let _ = std::io::stdout().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_are_sent_as_python_renders_them() {
        assert_eq!(
            parse_timestamp("2025-10-15").unwrap(),
            "2025-10-15T00:00:00"
        );
        assert_eq!(
            parse_timestamp("2025-10-15T10:20Z").unwrap(),
            "2025-10-15T10:20:00+00:00"
        );
        assert_eq!(
            parse_timestamp("2025-10-15 10:20:30.5+02:00").unwrap(),
            "2025-10-15T10:20:30.500000+02:00"
        );
        assert!(parse_timestamp("yesterday").is_err());
    }

    #[test]
    fn phases_are_joined_in_order() {
        let response = json!({"output": {
            "test": {"last_fragment_number": 2, "log_data": "t"},
            "setup": {"last_fragment_number": 0, "log_data": "s"},
            "provision": {"last_fragment_number": -1, "log_data": ""},
        }});
        let chunk = combine(&response, LogType::Output, None);
        assert_eq!((chunk.last_fragment, chunk.text.as_str()), (2, "st"));
        assert_eq!(
            lasted(Duration::from_secs(3725)),
            "1 hours 2 minutes 5 seconds"
        );
    }
}
