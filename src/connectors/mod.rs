//! `tf device-connector <device> <stage> -c <config.yaml> <testflinger.json>` (also
//! installed as `testflinger-device-connector`): the programs the agent's phase commands
//! run to touch hardware. This module is the contract every connector shares: the
//! command line, the device config, `device-info.json` written for every stage, failures
//! appended to `device-connector-error.json`, and the exit codes (1 failure, 46 recovery
//! failed, 2 usage). The stages themselves live in `stages` and the per-device modules.

mod control_host;
mod fake;
mod firmware;
mod hpe;
mod maas2;
mod maas_storage;
mod multi;
mod muxpi;
mod muxpi_users;
mod noprovision;
mod runner;
mod serial;
mod stages;
mod web;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde_json::{json, Map, Value};

use crate::codec::yaml;

pub use runner::Runner;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
#[value(rename_all = "snake_case")]
pub enum Device {
    #[value(alias = "fake")]
    FakeConnector,
    Noprovision,
    Muxpi,
    Maas2,
    Multi,
    Cm3,
    DellOemscript,
    Dragonboard,
    HpOemscript,
    LenovoOemscript,
    OemAutoinstall,
    Netboot,
    Oemrecovery,
    Oemscript,
    ControlHostIot,
    ControlHostKvm,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
#[value(rename_all = "snake_case")]
pub enum Stage {
    Provision,
    FirmwareUpdate,
    Runtest,
    Allocate,
    Reserve,
    Cleanup,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Provision => "provision",
            Stage::FirmwareUpdate => "firmware_update",
            Stage::Runtest => "runtest",
            Stage::Allocate => "allocate",
            Stage::Reserve => "reserve",
            Stage::Cleanup => "cleanup",
        }
    }
}

#[derive(Args, Debug)]
pub struct ConnectorArgs {
    /// The kind of device (fake_connector, noprovision, muxpi, maas2, …)
    #[arg(value_enum)]
    pub device: Device,
    /// provision, firmware_update, runtest, allocate, reserve or cleanup
    #[arg(value_enum)]
    pub stage: Stage,
    /// The device's config file (default.yaml)
    #[arg(short = 'c', long = "config", required = true)]
    pub config: PathBuf,
    /// The job, as the agent wrote it (testflinger.json)
    pub job_data: PathBuf,
}

/// How a stage failed, which decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// The stage could not do its job (exit 1).
    Provisioning(String),
    /// The device could not be brought back: it is unusable (exit 46).
    Recovery(String),
}

impl Failure {
    fn kind(&self) -> &'static str {
        match self {
            Failure::Provisioning(_) => "ProvisioningError",
            Failure::Recovery(_) => "RecoveryError",
        }
    }

    fn message(&self) -> &str {
        match self {
            Failure::Provisioning(m) | Failure::Recovery(m) => m,
        }
    }

    fn exit_code(&self) -> u8 {
        match self {
            Failure::Provisioning(_) => 1,
            Failure::Recovery(_) => 46,
        }
    }
}

pub type StageResult = Result<i32, Failure>;

/// What every stage gets: the device config, the job, a logger and the command runner.
pub struct Context {
    pub config: Map<String, Value>,
    pub job: Value,
    pub log: Log,
    pub runner: Runner,
    /// `TF_CONNECTOR_NO_WAIT` is set: retry and polling loops do not pause (tests).
    no_wait: bool,
}

impl Context {
    /// Waits `duration` between retries or checks. Loops count their attempts rather than
    /// watch the clock, so with `TF_CONNECTOR_NO_WAIT` set they run through at once.
    pub fn pause(&self, duration: std::time::Duration) {
        if !self.no_wait {
            std::thread::sleep(duration);
        }
    }

    /// A config string, `None` when missing or empty.
    pub fn config_text(&self, key: &str) -> Option<String> {
        match self.config.get(key)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// A required config string, as a clear failure when missing.
    pub fn required(&self, key: &str) -> Result<String, Failure> {
        self.config_text(key)
            .ok_or_else(|| Failure::Provisioning(format!("the device config has no `{key}`")))
    }

    /// A config list of commands (`reboot_script`, …); a single string counts as one.
    pub fn config_commands(&self, key: &str) -> Vec<String> {
        match self.config.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect(),
            Some(Value::String(single)) if !single.is_empty() => vec![single.clone()],
            _ => Vec::new(),
        }
    }

    /// `test_data.test_username`, or `ubuntu`. It goes into `user@host` ssh targets, so
    /// only a plain login name is accepted: `-oProxyCommand=…` must not pass as a user.
    pub fn test_username(&self) -> Result<String, Failure> {
        let user = self
            .job
            .pointer("/test_data/test_username")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .unwrap_or("ubuntu");
        if is_login_name(user) {
            Ok(user.to_string())
        } else {
            Err(Failure::Provisioning(format!(
                "test_username {user:?} is not a valid login name"
            )))
        }
    }
}

/// A POSIX-style login name: a lower-case letter or `_`, then letters, digits, `_.-`.
fn is_login_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
        && name.len() <= 32
}

/// The connector's log lines on stderr, in the reference's format:
/// `2026-11-24 20:02:01,968 fake001 INFO: DEVICE CONNECTOR: BEGIN provision`.
#[derive(Clone)]
pub struct Log {
    agent_name: String,
}

impl Log {
    #[cfg(test)]
    pub fn for_tests() -> Log {
        Log {
            agent_name: "test".into(),
        }
    }

    pub fn info(&self, message: &str) {
        self.line("INFO", message);
    }

    pub fn warning(&self, message: &str) {
        self.line("WARNING", message);
    }

    pub fn error(&self, message: &str) {
        self.line("ERROR", message);
    }

    fn line(&self, level: &str, message: &str) {
        let now = crate::job::time::now();
        let seconds = crate::job::time::render(now);
        let stamp = format!(
            "{} {},{:03}",
            &seconds[..10],
            &seconds[11..19],
            now.rem_euclid(1_000_000) / 1000
        );
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(
            stderr,
            "{stamp} {} {level}: DEVICE CONNECTOR: {message}",
            self.agent_name
        );
        let _ = stderr.flush();
    }
}

pub fn run(args: ConnectorArgs) -> ExitCode {
    let config = match load_config(&args.config) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let job = match std::fs::read_to_string(&args.job_data)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str::<Value>(&text).map_err(|e| e.to_string()))
    {
        Ok(job) => job,
        Err(reason) => {
            eprintln!("cannot read the job {}: {reason}", args.job_data.display());
            return ExitCode::FAILURE;
        }
    };
    let log = Log {
        agent_name: text_of(config.get("agent_name")),
    };
    write_device_info(&config, &log);
    let context = Context {
        runner: Runner::new(log.clone(), &config),
        config,
        job,
        log,
        no_wait: std::env::var_os("TF_CONNECTOR_NO_WAIT").is_some(),
    };
    // A bug in a stage must still leave its failure record for the agent to report.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        stages::run(args.device, args.stage, &context)
    }))
    .unwrap_or_else(|_| {
        Err(Failure::Provisioning(format!(
            "the {} stage crashed; this is a bug in tf, please report it",
            args.stage.name()
        )))
    });
    match outcome {
        Ok(code) => ExitCode::from((code.rem_euclid(256)) as u8),
        Err(failure) => {
            context.log.error(failure.message());
            record_failure(args.stage, &failure);
            ExitCode::from(failure.exit_code())
        }
    }
}

fn text_of(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The device config: a YAML mapping. Problems are one line naming the file.
fn load_config(path: &Path) -> Result<Map<String, Value>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the device config {}: {e}", path.display()))?;
    match yaml::parse(&text) {
        Ok(Value::Object(config)) => Ok(config),
        Ok(_) => Err(format!(
            "the device config {} must be a mapping of keys to values",
            path.display()
        )),
        Err(e) => Err(format!(
            "the device config {} is not valid YAML: {e}",
            path.display()
        )),
    }
}

/// `device-info.json`: the device's address and agent, for the agent to publish. Written
/// for every stage, with each key only if the config has a value for it.
fn write_device_info(config: &Map<String, Value>, log: &Log) {
    let mut info = Map::new();
    for key in ["device_ip", "agent_name"] {
        let value = text_of(config.get(key));
        if !value.is_empty() {
            info.insert(key.into(), Value::String(value));
        }
    }
    let document = json!({ "device_info": info });
    if let Err(error) = std::fs::write("device-info.json", document.to_string()) {
        log.warning(&format!("cannot write device-info.json: {error}"));
    }
}

/// Appends the failure to `device-connector-error.json`, where the agent finds the detail
/// of a failed phase.
fn record_failure(stage: Stage, failure: &Failure) {
    let record = json!({
        format!("{}_exception_info", stage.name()): {
            "exception_name": failure.kind(),
            "exception_message": failure.message(),
            "exception_cause": null,
        }
    });
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("device-connector-error.json");
    if let Ok(mut file) = file {
        let _ = file.write_all(record.to_string().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::is_login_name;

    #[test]
    fn only_plain_login_names_become_ssh_users() {
        for good in ["ubuntu", "_ci", "test-user.2"] {
            assert!(is_login_name(good), "{good}");
        }
        for bad in [
            "",
            "-oProxyCommand=x",
            "Root",
            "a b",
            "ü",
            "x@y",
            &"a".repeat(33),
        ] {
            assert!(!is_login_name(bad), "{bad}");
        }
    }
}
