//! Integration tests of `tf device-connector`: the real binary in a run directory, with
//! the hardware tools replaced by the fakes in `tests/fakes/` (first on `PATH`), which
//! record every call in `$FAKE_STATE/calls`.

mod control_host;
mod firmware;
mod hpe;
mod maas2;
mod multi;
mod muxpi;
mod stages;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a stage may take before the test gives up on it: only a guard against a
/// stage that never ends, never a measurement.
const PATIENCE: Duration = Duration::from_secs(120);

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

    /// The firmware_update stage, without the waits for the device to reboot.
    pub fn update_firmware(&self) -> Ran {
        self.run_with(
            &[
                "fake_connector",
                "firmware_update",
                "-c",
                "default.yaml",
                "testflinger.json",
            ],
            &[("TF_CONNECTOR_NO_WAIT", "1")],
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

    /// Runs the stage; one that is still running after `PATIENCE` (holding a device it
    /// should have let go, say) is killed and fails the test.
    fn run_in(&self, args: &[&str], path: &str, env: &[(&str, &str)]) -> Ran {
        let capture = |name: &str| std::fs::File::create(self.state.path().join(name)).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tf"))
            .arg("device-connector")
            .args(args)
            .current_dir(self.dir.path())
            .env("PATH", path)
            .env("FAKE_STATE", self.state.path())
            .envs(env.iter().copied())
            .stdout(capture("stage.stdout"))
            .stderr(capture("stage.stderr"))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("`device-connector {}` did not end", args.join(" "));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let captured =
            |name: &str| std::fs::read_to_string(self.state.path().join(name)).unwrap_or_default();
        Ran {
            code: status.code().unwrap_or(-1),
            stdout: captured("stage.stdout"),
            stderr: captured("stage.stderr"),
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
