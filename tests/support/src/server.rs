//! Starts the real `tf serve` on a free port with its own data dir, as a lab admin would,
//! with a test agent client ready for the agent-only endpoints.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::http::Caller;
use crate::{add_client, tf_binary, tf_on};

pub struct Server {
    child: Child,
    pub address: String,
    pub data_dir: PathBuf,
    /// What the server wrote to stderr up to the line saying where it listens.
    pub startup_log: String,
    _temp: Option<tempfile::TempDir>,
    /// Requests without credentials (the server's anonymous contributor).
    anonymous: Caller,
    agent_token: String,
}

/// The client the harness creates in every data dir, to call agent-only endpoints.
const TEST_AGENT: (&str, &str) = ("tf-test-agent", "test-agent-secret-0123456789");

impl std::ops::Deref for Server {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.anonymous
    }
}

impl Server {
    /// A server on a fresh, temporary data dir.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    pub fn start_with(extra_args: &[&str]) -> Server {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut server = Server::start_in(temp.path(), extra_args);
        server._temp = Some(temp);
        server
    }

    /// A server on `data_dir`, which outlives it (for restart tests).
    pub fn start_in(data_dir: &Path, extra_args: &[&str]) -> Server {
        Server::start_at(data_dir, "127.0.0.1:0", extra_args)
    }

    /// A server on `data_dir` listening on `bind` (a restart on the same address).
    pub fn start_at(data_dir: &Path, bind: &str, extra_args: &[&str]) -> Server {
        let mut command = tf_on(data_dir);
        command
            .arg("serve")
            .args(["--bind", bind, "--data-dir"])
            .arg(data_dir)
            .args(extra_args);
        Server::spawn(command, Some(data_dir))
    }

    /// A server on a fresh data dir whose open-file limits (soft, hard) are set before it
    /// starts, as `ulimit -n` would.
    pub fn start_with_open_file_limit(soft: u64, hard: u64, extra_args: &[&str]) -> Server {
        use std::os::unix::process::CommandExt;
        let temp = tempfile::tempdir().expect("temp dir");
        let mut command = tf_on(temp.path());
        command
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(temp.path())
            .args(extra_args);
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit is async-signal-safe and touches only the child.
        unsafe {
            command.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let mut server = Server::spawn(command, Some(temp.path()));
        server._temp = Some(temp);
        server
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A server whose data dir is a private tmpfs of `kib` KiB, to see a full disk
    /// (a user + mount namespace, so no privileges are needed).
    pub fn start_on_small_disk(kib: u32) -> Server {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().to_str().expect("utf-8 path").to_string();
        let tf = tf_binary();
        let tf = tf.display();
        let (agent, secret) = TEST_AGENT;
        // The tmpfs hides the directory's contents: the test agent is created after mounting.
        let script = format!(
            "mount -t tmpfs -o size={kib}k tmpfs '{data_dir}' && printf %s '{secret}' > '{data_dir}/{agent}.secret' \
             && '{tf}' clients --data-dir '{data_dir}' add {agent} --role agent --secret-file '{data_dir}/{agent}.secret' >/dev/null \
             && exec '{tf}' serve --bind 127.0.0.1:0 --data-dir '{data_dir}'"
        );
        let mut command = Command::new("unshare");
        command.args(["--user", "--map-root-user", "--mount", "sh", "-c", &script]);
        let mut server = Server::spawn(command, None);
        server._temp = Some(temp);
        server
    }

    /// Starts the server `command` runs on `data_dir`, creating the test agent there
    /// first (unless `data_dir` is `None`: the command does it).
    fn spawn(mut command: Command, data_dir: Option<&Path>) -> Server {
        if let Some(data_dir) =
            data_dir.filter(|dir| !dir.join(format!("{}.secret", TEST_AGENT.0)).exists())
        {
            add_client(data_dir, TEST_AGENT.0, "agent", TEST_AGENT.1, &[]);
        }
        let mut child = command
            .env("RUST_LOG", "info")
            .env_remove("TF_BIND")
            .env_remove("WEBHOOK_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tf serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut startup_log = String::new();
        let address = loop {
            let line = lines
                .next()
                .expect("tf serve exited before listening")
                .expect("read stderr");
            startup_log.push_str(&line);
            startup_log.push('\n');
            let after = line.split("listening on ").nth(1).map(|rest| {
                rest.trim_start_matches("https://")
                    .trim_start_matches("http://")
            });
            if let Some(rest) = after {
                break rest
                    .split([',', ' '])
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let mut server = Server {
            child,
            anonymous: Caller {
                address: address.clone(),
                token: None,
            },
            address,
            data_dir: data_dir.map(Path::to_path_buf).unwrap_or_default(),
            startup_log,
            _temp: None,
            agent_token: String::new(),
        };
        // Logged in once the server is owned, so a failed login still stops the process.
        server.agent_token = server.login(TEST_AGENT.0, TEST_AGENT.1)["access_token"]
            .as_str()
            .expect("an access token")
            .to_string();
        server
    }

    /// A refresh token of the test agent, as an agent's token file holds it.
    pub fn agent_refresh_token(&self) -> String {
        self.login(TEST_AGENT.0, TEST_AGENT.1)["refresh_token"]
            .as_str()
            .expect("a refresh token")
            .to_string()
    }

    /// Requests as the test agent (role agent).
    pub fn agent(&self) -> Caller {
        self.with_token(&self.agent_token)
    }

    /// Requests with the given access token.
    pub fn with_token(&self, token: &str) -> Caller {
        Caller {
            address: self.address.clone(),
            token: Some(token.to_string()),
        }
    }

    /// Creates a client on the data dir, like an admin on the lab host; its secret is
    /// `<client_id>-secret-0123456789`, returned.
    pub fn add_client(&self, client_id: &str, role: &str, extra: &[&str]) -> String {
        let secret = format!("{client_id}-secret-0123456789");
        add_client(&self.data_dir, client_id, role, &secret, extra);
        secret
    }

    /// Creates a client (see `add_client`) and returns a caller with its access token.
    pub fn client(&self, client_id: &str, role: &str, extra: &[&str]) -> Caller {
        let secret = self.add_client(client_id, role, extra);
        let token = self.login(client_id, &secret)["access_token"]
            .as_str()
            .expect("a token")
            .to_string();
        self.with_token(&token)
    }

    /// Claims one job for `agent` from `queue`; `None` on 204.
    pub fn claim(&self, agent: &str, queue: &str) -> Option<Value> {
        let cookie = format!("agent_name={agent}");
        let response = self.agent().request(
            "GET",
            &format!("/v1/job?queue={queue}"),
            &[("Cookie", &cookie)],
            b"",
        );
        match response.status {
            200 => Some(response.json()),
            204 => None,
            other => panic!("claim answered {other}: {}", response.text()),
        }
    }

    /// The server process's resident memory, in bytes.
    pub fn resident_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read the server's /proc status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status");
        kib * 1024
    }

    /// Stops the server the way a crash or an OOM kill would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit; returns whether it exited successfully.
    pub fn terminate(mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child
            .wait()
            .map(|status| status.success())
            .unwrap_or(false)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
