//! Runs `tf` client commands with a private config directory, as a user would.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;

use crate::harness::Server;

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
        let link = self.home.path().join(name);
        if !link.exists() {
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tf"), &link).expect("symlink");
        }
        run(self.command(&link, args), "")
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

/// The credentials options of an admin client `root`, created on the server.
pub const ADMIN: [&str; 4] = [
    "--client-id",
    "root",
    "--secret-key",
    "root-secret-0123456789",
];

pub fn add_admin(server: &Server) {
    crate::harness::add_client(&server.data_dir, "root", "admin", ADMIN[3], &[]);
}
