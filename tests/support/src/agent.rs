//! Starts the real `tf agent` against a test server, with a config file in the
//! reference format written to a temporary directory, and waits for what it does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use serde_yaml::{Mapping, Value as Yaml};

use crate::http::Caller;
use crate::server::Server;
use crate::tf_binary;
use crate::wait::{wait_for, PATIENCE};

pub struct Agent {
    child: Option<Child>,
    pub home: PathBuf,
    pub config: PathBuf,
    pub token_file: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Agent {
    /// An agent `agent-1` on queue `q` with `polling_interval: 1`; `settings` is YAML
    /// whose keys replace or add to those.
    pub fn start(server: &Server, settings: &str) -> Agent {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut agent = Agent::configure(temp.path(), server, settings);
        agent._temp = Some(temp);
        agent.spawn(&[]);
        agent
    }

    /// Writes the config and token file into `home` without starting the agent.
    pub fn configure(home: &Path, server: &Server, settings: &str) -> Agent {
        let mut config = Mapping::new();
        let mut set = |key: &str, value: Yaml| {
            config.insert(Yaml::from(key), value);
        };
        set("agent_id", "agent-1".into());
        set(
            "server_address",
            format!("http://{}", server.address).into(),
        );
        set("job_queues", Yaml::Sequence(vec!["q".into()]));
        set("polling_interval", 1.into());
        for dir in ["execution_basedir", "logging_basedir", "results_basedir"] {
            let path = home.join(dir.trim_end_matches("_basedir"));
            set(dir, path.to_str().expect("utf-8").into());
        }
        let overrides: Mapping = if settings.trim().is_empty() {
            Mapping::new()
        } else {
            serde_yaml::from_str(settings).expect("settings are a YAML mapping")
        };
        for (key, value) in overrides {
            config.insert(key, value);
        }
        let config_path = home.join("testflinger-agent.conf");
        std::fs::write(&config_path, serde_yaml::to_string(&config).expect("yaml"))
            .expect("write config");
        let token_file = home.join("refresh_token");
        let token = serde_json::json!({"refresh_token": server.agent_refresh_token()});
        std::fs::write(&token_file, token.to_string()).expect("write token file");
        Agent {
            child: None,
            home: home.to_path_buf(),
            config: config_path,
            token_file,
            _temp: None,
        }
    }

    /// Starts (or starts again) the agent process.
    pub fn spawn(&mut self, extra_args: &[&str]) {
        let stderr = std::fs::File::create(self.home.join("agent.stderr")).expect("stderr file");
        let child = Command::new(tf_binary())
            .arg("agent")
            .arg("-c")
            .arg(&self.config)
            .arg("--token-file")
            .arg(&self.token_file)
            .args(extra_args)
            .env("RUST_LOG", "info,tf=debug")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start tf agent");
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent running").id()
    }

    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }

    /// Stops the agent the way a crash or `kill -9` would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the agent process to exit by itself.
    pub fn wait_for_exit(&mut self) -> ExitStatus {
        self.wait_for_exit_within(PATIENCE)
    }

    /// Waits for the agent process to exit by itself; fails if it takes over `limit`.
    pub fn wait_for_exit_within(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("agent running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the agent logged (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("agent.stderr")).unwrap_or_default()
    }

    pub fn run_dir(&self, job_id: &str) -> PathBuf {
        self.home.join("execution").join(job_id)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `kill -<signal> <pid>`.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

/// The job's result once its state is one of `states`.
pub fn wait_for_state(caller: &Caller, job_id: &str, states: &[&str]) -> Value {
    wait_for(&format!("job {job_id} to reach {states:?}"), || {
        let response = caller
            .try_request("GET", &format!("/v1/result/{job_id}"), &[], b"")
            .ok()?;
        if response.status != 200 {
            return None;
        }
        let result = response.json();
        let state = result["job_state"].as_str()?;
        states.contains(&state).then_some(result)
    })
}

/// Runs `job` to the end on a fresh agent: the agent, the job id and its result.
pub fn run_job(server: &Server, settings: &str, job: &Value) -> (Agent, String, Value) {
    let agent = Agent::start(server, settings);
    let job_id = server.submit(job);
    let result = wait_for_state(server, &job_id, &["complete"]);
    (agent, job_id, result)
}

/// The server's record of `agent-1` once its state is `state`.
pub fn wait_for_agent_state(server: &Server, state: &str) -> Value {
    wait_for(&format!("agent-1 to be {state}"), || {
        let data = server.get("/v1/agents/data/agent-1").json();
        (data["state"] == state).then_some(data)
    })
}

/// Waits until the job's test phase has printed `text` (as the server has it).
pub fn wait_for_test_output(server: &Server, job_id: &str, text: &str) {
    wait_for(&format!("the test phase to print {text:?}"), || {
        let result = server.get(&format!("/v1/result/{job_id}")).json();
        let output = result["test_output"].as_str()?;
        output.contains(text).then_some(())
    })
}
