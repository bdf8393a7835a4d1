//! Nothing a phase started outlives an agent that was killed. Two guards:
//!
//! - Each phase command gets `PR_SET_PDEATHSIG` (SIGKILL), so its shell dies with the
//!   agent. The kernel sends it when the *thread* that forked the child ends, and the
//!   async runtime's threads come and go, so commands are started from one thread that
//!   lives as long as the agent (`spawn`).
//! - The signal reaches only the shell, not what it started. So the running phase's
//!   process group is noted in the job's outbox directory, and an agent starting up kills
//!   the groups noted there before it takes a job (`kill_left_behind`). A process counts
//!   as the phase's only if it carries the phase's marker in its environment, so a group
//!   id the kernel handed out again is never killed.

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
    group: i32,
    marker: String,
}

/// The marker for a phase run about to start, as an environment entry.
pub fn new_marker() -> (String, String) {
    (MARKER_VARIABLE.into(), uuid::Uuid::new_v4().to_string())
}

/// Notes the group of a phase that just started; the note goes when this is dropped.
pub struct Noted(Option<PathBuf>);

pub fn note(outbox_dir: &Path, phase: &str, group: i32, marker: &str) -> Noted {
    let path = outbox_dir.join(NOTE);
    let note = Note {
        phase: phase.into(),
        group,
        marker: marker.into(),
    };
    let written = serde_json::to_vec(&note)
        .map_err(io::Error::from)
        .and_then(|bytes| std::fs::write(&path, bytes));
    match written {
        Ok(()) => Noted(Some(path)),
        Err(error) => {
            tracing::warn!("cannot note the {phase} phase's process group: {error}");
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
    let ours = |pid: i32| environment_of(pid).is_some_and(|env| has_entry(&env, &marker));
    // Group 0 would be the agent's own, 1 init's: never a phase's.
    if note.group > 1 && members_of(note.group).into_iter().any(ours) {
        tracing::warn!(
            "Killing what the {} phase of job {job_id} left running (process group {})",
            note.phase,
            note.group
        );
        // SAFETY: killpg only sends a signal; the group was checked to be the phase's.
        unsafe {
            libc::killpg(note.group, libc::SIGKILL);
        }
        let deadline = Instant::now() + DEATH_WAIT;
        while !members_of(note.group).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = std::fs::remove_file(path);
}

/// The running (not zombie) processes in process group `group`.
fn members_of(group: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| running_group_of(*pid) == Some(group))
        .collect()
}

/// The process group of a running process, from `/proc/<pid>/stat`: after the command
/// name in parentheses come the state, the parent and the group.
fn running_group_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, fields) = stat.rsplit_once(") ")?;
    let mut fields = fields.split(' ');
    let state = fields.next()?;
    let group = fields.nth(1)?.parse().ok()?;
    (state != "Z").then_some(group)
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
    use super::has_entry;

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
