//! Integration tests of `tf device-connector`: the real binary in a run directory, with
//! the hardware tools replaced by the fakes in `tests/fakes/` (first on `PATH`), which
//! record every call in `$FAKE_STATE/calls`.

#[allow(dead_code)]
#[path = "../server/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../agent/runner.rs"]
mod runner;

mod control_host;
mod firmware;
mod hpe;
mod maas2;
mod multi;
mod muxpi;
mod stages;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// A run directory with a device config and a job, and the fakes' state directory.
pub struct Bench {
    pub dir: tempfile::TempDir,
    pub state: tempfile::TempDir,
}

pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Bench {
    pub fn new(config: &str, job: &Value) -> Bench {
        let bench = Bench {
            dir: tempfile::tempdir().unwrap(),
            state: tempfile::tempdir().unwrap(),
        };
        std::fs::write(bench.path("default.yaml"), config).unwrap();
        std::fs::write(bench.path("testflinger.json"), job.to_string()).unwrap();
        bench
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `tf device-connector <device> <stage> -c default.yaml testflinger.json`.
    pub fn run(&self, device: &str, stage: &str) -> Ran {
        self.run_with(
            &[device, stage, "-c", "default.yaml", "testflinger.json"],
            &[],
        )
    }

    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Ran {
        let fakes = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes");
        let path = format!(
            "{}:{}",
            fakes.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        self.run_in(args, &path, env)
    }

    /// With exactly this `PATH` (to see a tool missing).
    pub fn run_with_path(&self, args: &[&str], path: &str) -> Ran {
        self.run_in(args, path, &[])
    }

    fn run_in(&self, args: &[&str], path: &str, env: &[(&str, &str)]) -> Ran {
        let output = Command::new(env!("CARGO_BIN_EXE_tf"))
            .arg("device-connector")
            .args(args)
            .current_dir(self.dir.path())
            .env("PATH", path)
            .env("FAKE_STATE", self.state.path())
            .envs(env.iter().copied())
            .output()
            .unwrap();
        Ran {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The fakes' calls, one per line.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.state.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn json(&self, name: &str) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.path(name)).unwrap()).unwrap()
    }
}
