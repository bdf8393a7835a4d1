//! Runs one phase command: `/bin/sh -c <command>` in the run directory, in its own
//! process group, stdout and stderr merged into one pipe. The output is handed on in
//! pieces (at most half a second late, or sooner when a lot arrives), and the stop
//! conditions are checked every second; a stop kills the whole process group.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures_util::future::{Fuse, FusedFuture, FutureExt};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::phase_groups;
use crate::job::outcome::{AGENT_STOPPED_LINE, KILLED};

/// A piece of output waits at most this long before it is passed on.
const FLUSH_DELAY: Duration = Duration::from_millis(500);
/// …or until this much has gathered (then it is cut at the last line end).
const FLUSH_BYTES: usize = 64 * 1024;
/// How often timeouts are checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Between SIGTERM and SIGKILL to a stopped phase's process group.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// After the shell exits, how long output from processes it left behind is still read.
const LINGER: Duration = Duration::from_millis(500);

/// Why a phase was stopped before its command ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    GlobalTimeout(u64),
    OutputTimeout(u64),
    Cancelled,
    /// The agent itself was told to stop (SIGTERM or SIGINT).
    AgentStopping,
}

impl Stop {
    /// The line written into the phase's log, word for word the reference's (ours, for a
    /// stopping agent: the outcome reads it).
    pub fn message(&self) -> String {
        match self {
            Stop::GlobalTimeout(seconds) => format!("ERROR: Global timeout reached! ({seconds}s)"),
            Stop::OutputTimeout(seconds) => format!("ERROR: Output timeout reached! ({seconds}s)"),
            Stop::Cancelled => "Job cancellation was requested, exiting.".into(),
            Stop::AgentStopping => {
                format!(
                    "{AGENT_STOPPED_LINE}: it was told to stop, and killed the phase's command."
                )
            }
        }
    }

    /// The job event reported for it.
    pub fn event(&self) -> &'static str {
        match self {
            Stop::GlobalTimeout(_) => "global_timeout",
            Stop::OutputTimeout(_) => "output_timeout",
            Stop::Cancelled | Stop::AgentStopping => "cancelled",
        }
    }
}

/// Asks the server whether the job was cancelled.
pub trait CancelCheck {
    async fn is_cancelled(&self) -> bool;
}

/// When to stop a phase early.
pub struct StopConditions<'a, C: CancelCheck> {
    pub global_timeout: Option<u64>,
    pub output_timeout: Option<u64>,
    /// Checked every `cancel_every`, if present.
    pub cancellation: Option<&'a C>,
    pub cancel_every: Duration,
    pub agent_stopping: &'a CancellationToken,
}

/// Where a phase's output goes.
pub trait OutputSink {
    fn write(&mut self, text: &str);
}

pub struct Finished {
    pub exit_code: i32,
    pub stop: Option<Stop>,
}

pub struct PhaseCommand<'a> {
    pub phase: &'a str,
    pub command: &'a str,
    pub run_dir: &'a Path,
    pub environment: &'a [(String, String)],
    /// Where the running command's process group is noted (the job's outbox directory).
    pub notes_dir: &'a Path,
}

impl PhaseCommand<'_> {
    /// Runs the command to its end (or until a stop condition), passing output to `sink`.
    /// An error means the command could not be started at all.
    pub async fn run<C: CancelCheck>(
        &self,
        conditions: &StopConditions<'_, C>,
        sink: &mut dyn OutputSink,
    ) -> std::io::Result<Finished> {
        let (reader, writer) = std::io::pipe()?;
        let (marker_variable, marker) = phase_groups::new_marker();
        let mut command = tokio::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(self.command)
            .current_dir(self.run_dir)
            .envs(self.environment.iter().map(|(k, v)| (k, v)))
            .env(marker_variable, &marker)
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .process_group(0);
        // Noted before the start: an agent killed just after it still finds the phase.
        let _noted = phase_groups::note(self.notes_dir, self.phase, &marker);
        // The command (and with it our copies of the pipe's write end, which would keep
        // the output from ever ending) is gone once this returns.
        let mut child = phase_groups::spawn(command).await?;
        let group = child.id().map(|pid| pid as i32);
        let mut output = read_in_background(reader);

        let started = Instant::now();
        let mut pending = Pending::default();
        let mut last_output = Instant::now();
        let mut next_check = started + CHECK_EVERY;
        let mut next_cancel_check = started + conditions.cancel_every;
        let mut stop: Option<Stop> = None;
        let mut kill_at: Option<Instant> = None;
        let mut exit_status = None;
        let mut output_open = true;
        let mut linger_until: Option<Instant> = None;
        let mut cancel_check = std::pin::pin!(Fuse::terminated());

        loop {
            let output_done = !output_open || linger_until.is_some_and(|t| Instant::now() >= t);
            if exit_status.is_some() && output_done {
                break;
            }
            let flush_at = pending.flush_at();
            let wake_at = [Some(next_check), flush_at, kill_at, linger_until]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(next_check);
            tokio::select! {
                chunk = output.recv(), if output_open => match chunk {
                    Some(bytes) => {
                        last_output = Instant::now();
                        pending.push(&bytes);
                        if pending.len() >= FLUSH_BYTES {
                            pending.flush_lines(sink);
                        }
                    }
                    None => output_open = false,
                },
                status = child.wait(), if exit_status.is_none() => {
                    exit_status = Some(status?);
                    linger_until = Some(Instant::now() + LINGER);
                }
                _ = conditions.agent_stopping.cancelled(), if stop.is_none() && exit_status.is_none() => {
                    stop = Some(Stop::AgentStopping);
                }
                cancelled = &mut cancel_check, if !cancel_check.is_terminated() => {
                    if cancelled && stop.is_none() && exit_status.is_none() {
                        stop = Some(Stop::Cancelled);
                    }
                }
                _ = sleep_until(wake_at) => {}
            }
            let now = Instant::now();
            if pending.flush_at().is_some_and(|t| t <= now) {
                // Whole lines where there are some, so a secret is seldom cut in two
                // before it is masked; a line still being written follows later.
                pending.flush_lines(sink);
            }
            if stop.is_none() && exit_status.is_none() && now >= next_check {
                next_check = now + CHECK_EVERY;
                stop = timed_out(conditions, started, last_output, now);
                // The check runs alongside (output keeps flowing, timeouts keep counting);
                // a new one starts only when the last has answered.
                if now >= next_cancel_check && cancel_check.is_terminated() {
                    next_cancel_check = now + conditions.cancel_every;
                    if let Some(check) = conditions.cancellation {
                        cancel_check.set(check.is_cancelled().fuse());
                    }
                }
            }
            if let Some(reason) = &stop {
                if kill_at.is_none() {
                    // What the command printed before it was stopped comes first.
                    pending.flush_all(sink);
                    sink.write(&format!("\n{}\n", reason.message()));
                    signal_group(group, libc::SIGTERM);
                    kill_at = Some(Instant::now() + KILL_GRACE);
                }
            }
            if kill_at.is_some_and(|t| Instant::now() >= t) {
                signal_group(group, libc::SIGKILL);
                kill_at = Some(Instant::now() + KILL_GRACE);
            }
        }
        pending.flush_rest(sink);
        let exit_status = exit_status.expect("the loop ends once the command exited");
        if stop.is_some() {
            // Whatever the command left running goes with it.
            signal_group(group, libc::SIGKILL);
        }
        let exit_code = match &stop {
            Some(_) => KILLED,
            None => exit_code_of(exit_status),
        };
        Ok(Finished { exit_code, stop })
    }
}

fn timed_out<C: CancelCheck>(
    conditions: &StopConditions<'_, C>,
    started: Instant,
    last_output: Instant,
    now: Instant,
) -> Option<Stop> {
    if let Some(limit) = conditions.global_timeout {
        if now.duration_since(started) >= Duration::from_secs(limit) {
            return Some(Stop::GlobalTimeout(limit));
        }
    }
    if let Some(limit) = conditions.output_timeout {
        if now.duration_since(last_output) >= Duration::from_secs(limit) {
            return Some(Stop::OutputTimeout(limit));
        }
    }
    None
}

/// The exit code as the reference reports it: a signal `n` reads as `256 - n`.
fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code & 0xff,
        (None, Some(signal)) => (256 - signal) & 0xff,
        (None, None) => 100,
    }
}

fn signal_group(group: Option<i32>, signal: i32) {
    if let Some(group) = group {
        // SAFETY: killpg only sends a signal; a group that is gone gives ESRCH.
        unsafe {
            libc::killpg(group, signal);
        }
    }
}

/// Reads the pipe on a thread of its own (a blocking read is the simplest way to catch
/// everything), handing chunks over; the bounded channel makes a chatty command wait
/// rather than fill memory.
fn read_in_background(mut reader: std::io::PipeReader) -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if sender.blocking_send(buffer[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    receiver
}

/// Output read but not yet passed on.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    since: Option<Instant>,
}

impl Pending {
    fn push(&mut self, bytes: &[u8]) {
        if self.bytes.is_empty() {
            self.since = Some(Instant::now());
        }
        self.bytes.extend_from_slice(bytes);
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    fn flush_at(&self) -> Option<Instant> {
        self.since.map(|since| since + FLUSH_DELAY)
    }

    /// Passes on the complete lines (all of it if there is no line end at all).
    fn flush_lines(&mut self, sink: &mut dyn OutputSink) {
        let cut = match self.bytes.iter().rposition(|b| *b == b'\n') {
            Some(newline) => newline + 1,
            None => self.bytes.len(),
        };
        self.flush_up_to(cut, sink);
    }

    fn flush_all(&mut self, sink: &mut dyn OutputSink) {
        self.flush_up_to(self.bytes.len(), sink);
    }

    /// At the end: everything, an incomplete character included.
    fn flush_rest(&mut self, sink: &mut dyn OutputSink) {
        self.flush_all(sink);
        if !self.bytes.is_empty() {
            sink.write(&String::from_utf8_lossy(&std::mem::take(&mut self.bytes)));
            self.since = None;
        }
    }

    fn flush_up_to(&mut self, cut: usize, sink: &mut dyn OutputSink) {
        // Never split a UTF-8 character: an incomplete one at the end waits for the rest.
        let cut = match std::str::from_utf8(&self.bytes[..cut]) {
            Err(error) if error.error_len().is_none() => error.valid_up_to(),
            _ => cut,
        };
        if cut == 0 {
            // Only part of a character so far: look again after the next delay.
            self.since = Some(Instant::now());
            return;
        }
        let rest = self.bytes.split_off(cut);
        let text = String::from_utf8_lossy(&self.bytes).into_owned();
        self.bytes = rest;
        self.since = if self.bytes.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
        sink.write(&text);
    }
}
