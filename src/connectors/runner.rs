//! The one way connectors run external commands (`ssh`, `ssh-import-id`, `maas`,
//! `ilorest`, the reboot scripts, …): found on `PATH` (so tests put fakes first), with a
//! time limit, output captured, and the command line logged with credentials masked.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::log::Log;

/// What a command printed (stdout and stderr together) and how it ended.
#[derive(Debug)]
pub struct Output {
    pub status: i32,
    /// What the command printed on stdout: what callers parse.
    pub text: String,
    /// Its stderr (ssh's warnings, for one), kept apart so they never corrupt `text`.
    pub errors: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// Everything it printed, for error messages.
    pub fn all(&self) -> String {
        format!("{}{}", self.text, self.errors).trim().to_string()
    }
}

#[derive(Debug)]
pub enum RunError {
    /// The program is not installed (or not on `PATH`).
    Missing(String),
    /// It ran past its time limit and was killed.
    TimedOut(Duration),
    Io(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Missing(program) => {
                write!(f, "{program} is not installed (not found on PATH)")
            }
            RunError::TimedOut(limit) => write!(f, "timed out after {}s", limit.as_secs()),
            RunError::Io(reason) => f.write_str(reason),
        }
    }
}

/// ssh options for machines that are reinstalled all the time: no host-key checks.
pub const SSH_OPTIONS: [&str; 6] = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
];

pub struct Runner {
    log: Log,
    /// Values never to show in logged command lines (config credentials, and those a
    /// stage learns, such as a BMC password).
    secrets: std::cell::RefCell<Vec<String>>,
}

/// Config keys whose values are credentials.
fn is_secret_key(key: &str) -> bool {
    ["password", "secret", "token", "credential", "api_key"]
        .iter()
        .any(|word| key.to_ascii_lowercase().contains(word))
}

impl Runner {
    pub fn new(log: Log, config: &Map<String, Value>) -> Runner {
        let secrets = config
            .iter()
            .filter(|(key, _)| is_secret_key(key))
            .filter_map(|(_, value)| value.as_str().map(str::to_string))
            .filter(|value| !value.is_empty())
            .collect();
        Runner {
            log,
            secrets: std::cell::RefCell::new(secrets),
        }
    }

    /// Hides `secret` in every command line logged from now on.
    pub fn mask(&self, secret: &str) {
        if !secret.is_empty() {
            self.secrets.borrow_mut().push(secret.to_string());
        }
    }

    /// The command line as it may be logged.
    pub fn shown(&self, argv: &[&str]) -> String {
        let mut line = argv.join(" ");
        for secret in self.secrets.borrow().iter() {
            line = line.replace(secret.as_str(), "****");
        }
        line
    }

    /// Runs `command` on `target` (`user@host`) over ssh, without host-key prompts.
    pub fn ssh(&self, target: &str, command: &str, limit: Duration) -> Result<Output, RunError> {
        let mut argv = vec!["ssh"];
        argv.extend(SSH_OPTIONS);
        // Keys only (never a password prompt), and nothing taken for an option after `--`.
        argv.extend(["-o", "BatchMode=yes", "--", target, command]);
        self.run(&argv, Some(limit))
    }

    /// Runs `argv` (no shell), output captured, killed after `limit`.
    pub fn run(&self, argv: &[&str], limit: Option<Duration>) -> Result<Output, RunError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(RunError::Io("an empty command".into()));
        };
        self.log.info(&format!("Running: {}", self.shown(argv)));
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null());
        self.run_command(command, program, limit)
    }

    /// Runs `argv` with `input` as its stdin (streaming a file to a remote command).
    pub fn run_with_input(
        &self,
        argv: &[&str],
        input: std::fs::File,
        limit: Option<Duration>,
    ) -> Result<Output, RunError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(RunError::Io("an empty command".into()));
        };
        self.log.info(&format!("Running: {}", self.shown(argv)));
        let mut command = Command::new(program);
        command.args(args).stdin(input);
        self.run_command(command, program, limit)
    }

    fn run_command(
        &self,
        mut command: Command,
        program: &str,
        limit: Option<Duration>,
    ) -> Result<Output, RunError> {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a time-out stops everything it started.
            .process_group(0)
            .spawn()
            .map_err(|error| match error.kind() {
                std::io::ErrorKind::NotFound => RunError::Missing(program.to_string()),
                _ => RunError::Io(format!("cannot run {program}: {error}")),
            })?;
        let out = read_in_background(child.stdout.take().expect("stdout is piped"));
        let err = read_in_background(child.stderr.take().expect("stderr is piped"));
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(error) => return Err(RunError::Io(error.to_string())),
            }
            if let Some(limit) = limit {
                if started.elapsed() >= limit {
                    kill_group(&child);
                    let _ = child.wait();
                    return Err(RunError::TimedOut(limit));
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // A process it left in the background may hold the pipes open: its output is
        // not waited for beyond a moment.
        let collect = |reader: std::sync::mpsc::Receiver<Vec<u8>>| {
            let bytes = reader
                .recv_timeout(Duration::from_secs(1))
                .unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        Ok(Output {
            status: exit_status(status),
            text: collect(out),
            errors: collect(err),
        })
    }

    /// Runs a test command with `/bin/sh -c` in `environment` (replacing the process's),
    /// relaying its output line by line to stdout as it comes; returns its exit status.
    pub fn run_relayed(
        &self,
        program: &str,
        args: &[&str],
        environment: &[(String, String)],
    ) -> Result<i32, RunError> {
        let mut child = Command::new(program)
            .args(args)
            .env_clear()
            .envs(environment.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| match error.kind() {
                std::io::ErrorKind::NotFound => RunError::Missing(program.to_string()),
                _ => RunError::Io(format!("cannot run {program}: {error}")),
            })?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let relay_errors = std::thread::spawn(move || relay(stderr));
        if let Some(stdout) = child.stdout.take() {
            relay(stdout);
        }
        let _ = relay_errors.join();
        let status = child.wait().map_err(|e| RunError::Io(e.to_string()))?;
        Ok(exit_status(status))
    }
}

fn read_in_background(
    mut stream: impl Read + Send + 'static,
) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        let _ = sender.send(bytes);
    });
    receiver
}

fn kill_group(child: &std::process::Child) {
    // SAFETY: killpg only sends a signal to the group we created for this command.
    unsafe {
        libc::killpg(child.id() as i32, libc::SIGKILL);
    }
}

/// Copies lines to our stdout, flushing each (the agent streams it).
fn relay(stream: impl Read) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let stdout = std::io::stdout();
    while reader
        .read_until(b'\n', &mut line)
        .map(|n| n > 0)
        .unwrap_or(false)
    {
        let mut out = stdout.lock();
        let _ = out.write_all(&line);
        let _ = out.flush();
        line.clear();
    }
}

/// The status as Python reports it: a signal `n` is `-n`, i.e. `256 - n` on exit.
fn exit_status(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => -signal,
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::{Log, RunError, Runner};
    use std::time::Duration;

    #[test]
    fn commands_past_their_limit_are_killed_and_missing_ones_named() {
        let runner = Runner::new(Log::new("test".into()), &serde_json::Map::new());
        let slow = runner.run(&["sleep", "5"], Some(Duration::from_millis(100)));
        assert!(matches!(slow, Err(RunError::TimedOut(_))));
        let missing = runner.run(&["no-such-tool-anywhere"], None);
        assert!(matches!(missing, Err(RunError::Missing(name)) if name == "no-such-tool-anywhere"));
    }
}
