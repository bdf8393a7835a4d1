//! `tf device-connector <device> <stage> -c <config.yaml> <testflinger.json>` (also
//! installed as `testflinger-device-connector`): the programs the agent's phase commands
//! run to touch hardware. This module is the contract every connector shares: the
//! command line, the device config, `device-info.json` written for every stage, failures
//! appended to `device-connector-error.json`, and the exit codes (1 failure, 46 recovery
//! failed, 2 usage).
//!
//! The modules, and who may use whom (no module uses this one, and none uses another in
//! a circle):
//! - `dispatch` picks the code for a `(device, stage)` pair; it alone knows the devices.
//! - the devices: `fake`, `noprovision`, `muxpi` (with `muxpi_host`, `muxpi_users`),
//!   `maas2` (with `maas_storage`) and `multi`;
//! - what they share: the stages in `stages` and `firmware` (with `hpe`), the
//!   control-host hooks in `control_host`;
//! - what everything stands on: `context` (the stage's context and failures), `log`,
//!   `runner` (external commands), `serial` (console capture) and `web` (HTTP).

mod context;
mod control_host;
mod dispatch;
mod fake;
mod firmware;
mod hpe;
mod log;
mod maas2;
mod maas_storage;
mod multi;
mod muxpi;
mod muxpi_host;
mod muxpi_users;
mod noprovision;
mod runner;
mod serial;
mod stages;
mod web;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde_json::{json, Map, Value};

use crate::codec::yaml;
use context::{Context, Failure};
use dispatch::{Device, Stage};
use log::Log;

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
    let log = Log::new(text_of(config.get("agent_name")));
    write_device_info(&config, &log);
    let context = Context::new(config, job, log);
    // A bug in a stage must still leave its failure record for the agent to report.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        dispatch::run(args.device, args.stage, &context)
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
