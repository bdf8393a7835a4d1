//! Nothing a phase started outlives an agent that was killed. Two guards:
//!
//! - Each phase command gets `PR_SET_PDEATHSIG` (SIGKILL), so its shell dies with the
//!   agent. The kernel sends it when the *thread* that forked the child ends, and the
//!   async runtime's threads come and go, so commands are started from one thread that
//!   lives as long as the agent (`spawn`).
//! - The signal reaches only the shell, not what it started. So every phase process
//!   carries a marker in its environment (unique per phase run, inherited by children),
//!   the running phase's marker is noted in the job's outbox directory before the phase
//!   starts, and an agent starting up kills the processes carrying a marker noted there
//!   before it takes a job (`kill_left_behind`). A process id the kernel handed out again
//!   is never killed: it lacks the marker.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// The environment variable that marks a phase's processes (its value is unique per
/// phase run); children inherit it.
const MARKER_VARIABLE: &str = "TF_AGENT_PHASE_RUN";
/// The note's file name in the outbox directory.
const NOTE: &str = "phase-group";
/// How long a start-up waits for the killed processes to be gone.
const DEATH_WAIT: Duration = Duration::from_secs(5);

/// What is noted about a running phase.
#[derive(Serialize, Deserialize)]
struct Note {
    phase: String,
    marker: String,
}

/// The marker for a phase run about to start, as an environment entry.
pub fn new_marker() -> (String, String) {
    (MARKER_VARIABLE.into(), uuid::Uuid::new_v4().to_string())
}

/// Notes the marker of a phase about to start; the note goes when this is dropped.
pub struct Noted(Option<PathBuf>);

pub fn note(outbox_dir: &Path, phase: &str, marker: &str) -> Noted {
    let path = outbox_dir.join(NOTE);
    let note = Note {
        phase: phase.into(),
        marker: marker.into(),
    };
    let written = serde_json::to_vec(&note)
        .map_err(io::Error::from)
        .and_then(|bytes| std::fs::write(&path, bytes));
    match written {
        Ok(()) => Noted(Some(path)),
        Err(error) => {
            tracing::warn!("cannot note the {phase} phase's marker: {error}");
            Noted(None)
        }
    }
}

impl Drop for Noted {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// At start-up, for the outbox of an interrupted job: kills what its phase left running
/// and waits (briefly) until it is gone.
pub fn kill_left_behind(outbox_dir: &Path, job_id: &str) {
    let path = outbox_dir.join(NOTE);
    let Some(note) = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Note>(&bytes).ok())
    else {
        return;
    };
    let marker = format!("{MARKER_VARIABLE}={}", note.marker);
    let left_running = || running_with_entry(&marker);
    let mut left = left_running();
    if !left.is_empty() {
        tracing::warn!(
            "Killing what the {} phase of job {job_id} left running (processes {left:?})",
            note.phase
        );
        let deadline = Instant::now() + DEATH_WAIT;
        while !left.is_empty() && Instant::now() < deadline {
            for pid in &left {
                // SAFETY: kill only sends a signal, to a process carrying the marker.
                unsafe {
                    libc::kill(*pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
            left = left_running();
        }
    }
    let _ = std::fs::remove_file(path);
}

/// The running (not zombie) processes whose environment holds `entry`.
fn running_with_entry(entry: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| is_running(*pid))
        .filter(|pid| environment_of(*pid).is_some_and(|env| has_entry(&env, entry)))
        .collect()
}

/// Whether a process exists and is not a zombie, from `/proc/<pid>/stat`: after the
/// command name in parentheses comes the state.
fn is_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat.rsplit_once(") ")?.1.split(' ').next()? != "Z"))
        .unwrap_or(false)
}

fn environment_of(pid: i32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/environ")).ok()
}

/// Whether a NUL-separated environment block holds exactly `entry`.
fn has_entry(environment: &[u8], entry: &str) -> bool {
    environment
        .split(|byte| *byte == 0)
        .any(|item| item == entry.as_bytes())
}

type SpawnRequest = (Command, oneshot::Sender<io::Result<Child>>);

/// Starts `command` with the parent-death signal set, from the long-lived spawning
/// thread. Must be called inside the agent's runtime.
pub async fn spawn(mut command: Command) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure only makes two system calls, both safe between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The agent may have died before the signal was armed.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (reply, answer) = oneshot::channel();
    spawner()
        .send((command, reply))
        .map_err(|_| io::Error::other("the thread that starts phase commands is gone"))?;
    answer
        .await
        .map_err(|_| io::Error::other("the thread that starts phase commands is gone"))?
}

fn spawner() -> &'static mpsc::Sender<SpawnRequest> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let runtime = tokio::runtime::Handle::current();
        let (sender, requests) = mpsc::channel::<SpawnRequest>();
        let started = std::thread::Builder::new()
            .name("phase-spawner".into())
            .spawn(move || {
                // Children are watched by the runtime's process driver.
                let _runtime = runtime.enter();
                for (mut command, reply) in requests {
                    let child = command.spawn();
                    // It holds copies of the output pipe's write end.
                    drop(command);
                    let _ = reply.send(child);
                }
            });
        if let Err(error) = started {
            // Without it every phase fails to start, saying so in its log.
            tracing::error!("cannot start the thread that starts phase commands: {error}");
        }
        sender
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A marked process in a session of its own (out of reach of any group signal), as
    /// a phase's child may be.
    fn marked_sleep(marker: &str) -> std::process::Child {
        std::process::Command::new("setsid")
            .args(["sleep", "300"])
            .env(MARKER_VARIABLE, marker)
            .spawn()
            .expect("setsid and sleep run")
    }

    #[test]
    fn what_a_noted_phase_left_running_is_killed_and_the_note_removed() {
        let outbox = tempfile::tempdir().unwrap();
        let (_, marker) = new_marker();
        let noted = note(outbox.path(), "test", &marker);
        std::mem::forget(noted); // the agent died: nobody removed the note
        let (_, other_marker) = new_marker();
        let mut left = marked_sleep(&marker);
        let mut unrelated = marked_sleep(&other_marker);
        let entry = format!("{MARKER_VARIABLE}={marker}");
        wait_until(|| !running_with_entry(&entry).is_empty());

        kill_left_behind(outbox.path(), "job");

        assert!(running_with_entry(&entry).is_empty());
        assert!(!outbox.path().join(NOTE).exists());
        let _ = left.wait();
        assert!(
            is_running(unrelated.id() as i32),
            "another phase's process was killed"
        );
        let _ = unrelated.kill();
        let _ = unrelated.wait();
    }

    /// setsid execs sleep: its environment is the marked one only once it has.
    fn wait_until(condition: impl Fn() -> bool) {
        for _ in 0..500 {
            if condition() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the marked process never appeared");
    }

    #[test]
    fn only_a_whole_environment_entry_matches() {
        let environment = b"PATH=/bin\0TF_AGENT_PHASE_RUN=abc\0";
        assert!(has_entry(environment, "TF_AGENT_PHASE_RUN=abc"));
        assert!(!has_entry(environment, "TF_AGENT_PHASE_RUN=ab"));
        assert!(!has_entry(
            b"X=TF_AGENT_PHASE_RUN=abc\0",
            "TF_AGENT_PHASE_RUN=abc"
        ));
    }
}
