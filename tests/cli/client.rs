//! Runs `tf` client commands with a private config directory, as a user would.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::json;

use tf_test_support::add_client;
use tf_test_support::agent::send_signal;
use tf_test_support::server::Server;

pub struct Client {
    pub server: String,
    pub home: tempfile::TempDir,
}

/// What a command did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Client {
    pub fn new(server: &Server) -> Client {
        Client {
            server: format!("http://{}", server.address),
            home: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn config_dir(&self) -> PathBuf {
        self.home.path().join("config")
    }

    fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(program);
        command
            .arg("--server")
            .arg(&self.server)
            .args(args)
            .current_dir(self.home.path())
            .env("XDG_CONFIG_HOME", self.config_dir())
            .env("HOME", self.home.path())
            .env_remove("TESTFLINGER_SERVER")
            .env_remove("TESTFLINGER_CLIENT_ID")
            .env_remove("TESTFLINGER_SECRET_KEY");
        command
    }

    /// `tf --server <server> <args>`.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_input(args, "")
    }

    pub fn run_with_input(&self, args: &[&str], input: &str) -> Run {
        run(
            self.command(Path::new(env!("CARGO_BIN_EXE_tf")), args),
            input,
        )
    }

    /// The same, through a `testflinger-cli` symlink (argv[0] dispatch).
    pub fn run_as(&self, name: &str, args: &[&str]) -> Run {
        run(self.command(&self.link_as(name), args), "")
    }

    /// Starts `tf --server <server> <args>` (or the binary linked as `name`, when given)
    /// without waiting for it, to watch its output and signal it.
    pub fn start(&self, name: Option<&str>, args: &[&str]) -> Running {
        let program = match name {
            Some(name) => self.link_as(name),
            None => PathBuf::from(env!("CARGO_BIN_EXE_tf")),
        };
        Running::start(self.command(&program, args))
    }

    /// The binary, symlinked as `name` in the client's directory (argv[0] dispatch).
    fn link_as(&self, name: &str) -> PathBuf {
        let link = self.home.path().join(name);
        if !link.exists() {
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tf"), &link).expect("symlink");
        }
        link
    }

    /// `tf --server <server> <args>` with stdout on a pseudo-terminal, as a person sees it
    /// (`\n` arrives as `\r\n`), and `env` set (`NO_COLOR` is unset unless given).
    pub fn run_on_terminal(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        use std::io::Read;
        use std::os::fd::FromRawFd;
        let (mut controller, mut terminal) = (-1, -1);
        // SAFETY: openpty only writes the two new descriptors into the integers given.
        let opened = unsafe {
            libc::openpty(
                &mut controller,
                &mut terminal,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors are new and owned by nothing else.
        let (mut controller, terminal) = unsafe {
            (
                std::fs::File::from_raw_fd(controller),
                std::fs::File::from_raw_fd(terminal),
            )
        };
        let mut command = self.command(Path::new(env!("CARGO_BIN_EXE_tf")), args);
        command
            .env_remove("NO_COLOR")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(terminal)
            .stderr(Stdio::null());
        let mut child = command.spawn().expect("run tf");
        // Our copy of the terminal side must close for the reads to end with the child.
        drop(command);
        let mut seen = Vec::new();
        // Linux ends a terminal whose other side closed with EIO rather than EOF.
        let _ = controller.read_to_end(&mut seen);
        child.wait().expect("wait");
        String::from_utf8_lossy(&seen).into_owned()
    }

    /// Writes a file into the client's working directory.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.home.path().join(name);
        std::fs::write(&path, content).expect("write");
        path
    }
}

fn run(mut command: Command, input: &str) -> Run {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tf");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Registers an agent serving `queue` (without running one), so submissions pass the
/// CLI's check for online agents.
pub fn register_agent(server: &Server, name: &str, queue: &str) {
    let response = server.agent().post_json(
        &format!("/v1/agents/data/{name}"),
        &json!({"state": "waiting", "queues": [queue], "location": "lab 1"}),
    );
    assert_eq!(response.status, 200);
}

impl Client {
    /// Writes `yaml` as job.yaml and submits it with `submit -q`; the job id.
    pub fn submit(&self, yaml: &str) -> String {
        let job = self.write("job.yaml", yaml);
        let run = self.run(&["submit", "-q", job.to_str().expect("utf-8")]);
        assert_eq!(run.code, 0, "{run:?}");
        run.stdout.trim().to_string()
    }
}

/// The id in the `job_id: <id>` line that `submit` and `reserve` print.
pub fn printed_job_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("job_id: "))
        .expect("a job_id line")
        .trim()
        .to_string()
}

/// The credentials options of an admin client `root`, created on the server.
pub const ADMIN: [&str; 4] = [
    "--client-id",
    "root",
    "--secret-key",
    "root-secret-0123456789",
];

pub fn add_admin(server: &Server) {
    add_client(&server.data_dir, "root", "admin", ADMIN[3], &[]);
}

/// How long a test waits for a running command to say or do something; only a guard
/// against hanging forever, never a measurement.
const PATIENCE: Duration = Duration::from_secs(90);

/// A client command still running: its output so far, its stdin, and signals.
pub struct Running {
    child: Child,
    stdout: Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    pub seen: String,
}

impl Running {
    fn start(mut command: Command) -> Running {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tf");
        let (sender, stdout) = std::sync::mpsc::channel();
        let mut out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(read) = out.read(&mut buffer) {
                if read == 0
                    || sender
                        .send(String::from_utf8_lossy(&buffer[..read]).into_owned())
                        .is_err()
                {
                    return;
                }
            }
        });
        let mut err = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        Running {
            child,
            stdout,
            stderr: Some(stderr),
            seen: String::new(),
        }
    }

    /// Waits until stdout has shown `text`.
    pub fn wait_for_output(&mut self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.seen.contains(text) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(chunk) => self.seen.push_str(&chunk),
                Err(_) => panic!(
                    "gave up waiting for {text:?}; the output so far:\n{}",
                    self.seen
                ),
            }
        }
    }

    pub fn signal(&self, signal: &str) {
        send_signal(self.child.id(), signal);
    }

    /// Types `text` on the command's stdin.
    pub fn type_in(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    /// Waits for the command to end (killing it if it does not, which fails the test).
    pub fn finish(mut self) -> Run {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            while let Ok(chunk) = self.stdout.try_recv() {
                self.seen.push_str(&chunk);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the command did not end; its output so far:\n{}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(chunk) = self.stdout.recv_timeout(PATIENCE) {
            self.seen.push_str(&chunk);
        }
        Run {
            code: status.code().unwrap_or(-1),
            stdout: std::mem::take(&mut self.seen),
            stderr: self
                .stderr
                .take()
                .map(|reader| reader.join().expect("stderr reader"))
                .unwrap_or_default(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
