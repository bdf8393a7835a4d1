//! The stages every device shares (the reference's default device): the pre-provision
//! hook, `provision`, `runtest`, `allocate`, `reserve` and `cleanup` (`firmware_update`,
//! shared too, has a module of its own: `firmware`). A device module calls on these for
//! what it does not do its own way; `dispatch` picks between them.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::Value;

use super::context::{Context, Failure, StageResult};
use super::control_host;
use super::runner::RunError;
use super::serial::SerialLogger;
use crate::job::reservation::{CONNECT_TO, RESERVED_BANNER};

/// What every provision does first: prepare the control host, if the device has one.
/// `power_scripts`: keep the device powered off while the control host reboots.
pub fn pre_provision_hook(context: &Context, power_scripts: bool) -> Result<(), Failure> {
    context.log.info("Running pre-provision hook");
    control_host::before_provision(context, power_scripts)
}

/// A device with nothing to install: only the pre-provision hook.
pub fn provision(context: &Context) -> StageResult {
    pre_provision_hook(context, false)?;
    Ok(0)
}

/// Runs the job's `test_data.test_cmds` on the agent host: a list of commands (the
/// last one's status counts), or a script (`#!/bin/bash` unless it has its own).
pub fn runtest(context: &Context) -> StageResult {
    context.log.info("BEGIN testrun");
    let Some(test_data) = context.job.get("test_data") else {
        return Err(Failure::Provisioning("the job has no test_data".into()));
    };
    control_host::before_test(context);
    let _serial = SerialLogger::start(context, "test-serial.log");
    let environment = test_environment(context, test_data);
    let status = run_test_commands(context, test_data, &environment)?;
    context.log.info("END testrun");
    Ok(status)
}

/// Runs `test_data.test_cmds` in `environment`: a list of commands (the last one's
/// status counts) or a script (`#!/bin/bash` unless it has its own).
pub fn run_test_commands(
    context: &Context,
    test_data: &Value,
    environment: &[(String, String)],
) -> StageResult {
    Ok(match test_data.get("test_cmds") {
        Some(Value::Array(commands)) => {
            if commands.is_empty() {
                return Err(Failure::Provisioning("test_cmds is an empty list".into()));
            }
            let mut status = 0;
            for command in commands {
                let command = templated(
                    &command
                        .as_str()
                        .map_or_else(|| command.to_string(), str::to_string),
                    context,
                );
                context.log.info(&format!("Running: {command}"));
                status = run_test_command(context, "/bin/sh", &["-c", &command], environment)?;
                if status != 0 {
                    context.log.warning(&format!("Command failed, rc={status}"));
                }
            }
            status
        }
        Some(Value::String(script)) => {
            let script = if script.starts_with("#!") {
                script.clone()
            } else {
                format!("#!/bin/bash\n{script}")
            };
            let script = templated(&script, context);
            let written = std::fs::write("tf_cmd_script", script).and_then(|()| {
                std::fs::set_permissions("tf_cmd_script", std::fs::Permissions::from_mode(0o775))
            });
            if let Err(error) = written {
                return Err(Failure::Provisioning(format!(
                    "cannot write tf_cmd_script: {error}"
                )));
            }
            let status = run_test_command(context, "./tf_cmd_script", &[], environment)?;
            if status != 0 {
                context.log.warning(&format!("Tests failed, rc={status}"));
            }
            status
        }
        _ => {
            context
                .log
                .error("test_cmds field must be a list or string");
            1
        }
    })
}

fn run_test_command(
    context: &Context,
    program: &str,
    args: &[&str],
    environment: &[(String, String)],
) -> StageResult {
    context
        .runner
        .run_relayed(program, args, environment)
        .map_err(|error| Failure::Provisioning(format!("cannot run the test commands: {error}")))
}

/// The test commands' environment: ours, the config's `env:` map, `AGENT_NAME`,
/// `REBOOT_SCRIPT` and the job's secrets; empty values are dropped, as the reference does.
pub fn test_environment(context: &Context, test_data: &Value) -> Vec<(String, String)> {
    let mut environment: Vec<(String, String)> = std::env::vars().collect();
    let mut set = |key: String, value: String| {
        environment.retain(|(k, _)| *k != key);
        environment.push((key, value));
    };
    if let Some(Value::Object(extra)) = context.config.get("env") {
        for (key, value) in extra {
            set(key.clone(), scalar_text(value));
        }
    }
    set(
        "AGENT_NAME".into(),
        context.config_text("agent_name").unwrap_or_default(),
    );
    set(
        "REBOOT_SCRIPT".into(),
        context.config_commands("reboot_script").join(";"),
    );
    if let Some(Value::Object(secrets)) = test_data.get("secrets") {
        for (key, value) in secrets {
            set(key.clone(), scalar_text(value));
        }
    }
    environment.retain(|(_, value)| !value.is_empty());
    environment
}

/// A config value as an environment string (the reference crashes on non-strings).
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null | Value::Bool(false) => String::new(),
        Value::Bool(true) => "True".into(),
        other => other.to_string(),
    }
}

/// The reference's deprecated templating, applied only when the text has `{{`:
/// `{key}` of a config key becomes its value, other `{…}` stay, `{{`/`}}` become `{`/`}`.
fn templated(text: &str, context: &Context) -> String {
    if !text.contains("{{") {
        return text.to_string();
    }
    context
        .log
        .warning("DEPRECATED - Detected use of double-braces in test_cmds");
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(['{', '}']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
        } else if let (true, Some(end)) = (tail.starts_with('{'), tail.find('}')) {
            let name = &tail[1..end];
            let base = name.split(['[', '.']).next().unwrap_or_default();
            match context.config.get(base) {
                Some(value) if !base.is_empty() && base == name => {
                    out.push_str(&scalar_text(value))
                }
                _ => out.push_str(&tail[..=end]),
            }
            rest = &tail[end + 1..];
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The agent publishes device-info.json (written for every stage) and waits.
pub fn allocate(_context: &Context) -> StageResult {
    Ok(0)
}

/// As the reference's default device: the device stays as the job left it.
pub fn cleanup(_context: &Context) -> StageResult {
    Ok(0)
}

/// Lets the job's keys in, prints the reservation banner, and holds the device for the
/// reservation's time. A key that cannot be let in fails the stage before the banner:
/// a reservation its user cannot reach is not announced, and the device is not held.
pub fn reserve(context: &Context) -> StageResult {
    context.log.info("BEGIN reservation");
    let user = context.test_username()?;
    let device_ip = context.required("device_ip")?;
    let Some(reserve_data) = context.job.get("reserve_data") else {
        return Err(Failure::Provisioning("the job has no reserve_data".into()));
    };
    let keys: Vec<String> = reserve_data
        .get("ssh_keys")
        .and_then(Value::as_array)
        .map(|keys| {
            keys.iter()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    install_keys(context, &keys, &format!("{user}@{device_ip}"))
        .map_err(|why| Failure::Provisioning(format!("the device was not reserved: {why}")))?;
    let timeout = match reserve_data.get("timeout") {
        None | Some(Value::Null) => 3600,
        Some(value) => crate::job::duration::parse_duration(value).unwrap_or(3600),
    }
    // The server bounds it already; this keeps a hand-written job's expiry printable.
    .min(u64::from(u32::MAX));
    let now = crate::job::time::now();
    let expires = now + timeout as i64 * 1_000_000;
    let job_id = context
        .job
        .get("job_id")
        .and_then(Value::as_str)
        .unwrap_or("<job_id>");
    let mut banner = format!("{RESERVED_BANNER}\n{CONNECT_TO}{user}@{device_ip}\n");
    if let (Some(host), Some(port)) = (
        context.config_text("serial_host"),
        context.config_text("serial_port"),
    ) {
        banner.push_str(&format!(
            "Serial access is available via: telnet {host} {port}\n"
        ));
    }
    banner.push_str(&format!(
        "Current time:           [{}]\nReservation expires at: [{}]\nReservation will automatically timeout in {timeout} seconds\nTo end the reservation sooner use: testflinger-cli cancel {job_id}\n",
        crate::job::time::render_micros(now),
        crate::job::time::render_micros(expires)
    ));
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(banner.as_bytes());
    let _ = stdout.flush();
    drop(stdout);
    context.pause(Duration::from_secs(timeout));
    Ok(0)
}

/// Fetches every key, then puts them all on the device at `target` in one go; why not,
/// when a key cannot be fetched (all such keys are named) or the device refuses them.
fn install_keys(context: &Context, keys: &[String], target: &str) -> Result<(), String> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut public_keys = String::new();
    let mut problems = Vec::new();
    for key in keys {
        match import_key(context, key) {
            Ok(text) => public_keys.push_str(&text),
            Err(why) => problems.push(format!("ssh key {key}: {why}")),
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    std::fs::write("key.pub", public_keys).map_err(|e| format!("cannot write key.pub: {e}"))?;
    if copy_keys(context, target) {
        Ok(())
    } else {
        Err(format!("the ssh keys could not be copied to {target}"))
    }
}

/// Attempts at `ssh-import-id` and the pauses between them (the reference tries ten
/// times over about eight minutes; a key that fails this quickly rarely works later).
const IMPORT_PAUSES: [u64; 3] = [1, 2, 4];

/// The public key(s) `ssh-import-id` fetched for `key`, or why it could not.
fn import_key(context: &Context, key: &str) -> Result<String, String> {
    let log = &context.log;
    for attempt in 0..=IMPORT_PAUSES.len() {
        let _ = std::fs::remove_file("key.pub");
        match context.runner.run(
            &["ssh-import-id", "-o", "key.pub", key],
            Some(Duration::from_secs(30)),
        ) {
            Ok(output) if output.success() => {
                log.info(&format!("Successfully imported key: {key}"));
                let text = std::fs::read_to_string("key.pub")
                    .map_err(|e| format!("cannot read what ssh-import-id wrote: {e}"))?;
                return Ok(if text.ends_with('\n') {
                    text
                } else {
                    format!("{text}\n")
                });
            }
            Ok(output) if output.all().contains("status_code=404") => {
                log.error(&format!("Failed to import ssh key: {key}. User not found."));
                return Err("user not found".into());
            }
            Err(RunError::Missing(program)) => {
                log.error(&format!(
                    "Failed to import ssh key: {key}. {program} is not installed."
                ));
                return Err(format!("{program} is not installed"));
            }
            _ => {
                log.warning(&format!("Unable to import ssh key from: {key}"));
                if let Some(pause) = IMPORT_PAUSES.get(attempt) {
                    log.info("Retrying...");
                    context.pause(Duration::from_secs(*pause));
                }
            }
        }
    }
    log.error(&format!(
        "Failed to import ssh key: {key}. Maximum retries reached"
    ));
    Err(format!(
        "ssh-import-id failed {} times",
        IMPORT_PAUSES.len() + 1
    ))
}

/// `ssh-copy-id` of key.pub to `target`; whether it got there.
fn copy_keys(context: &Context, target: &str) -> bool {
    let argv = [
        "ssh-copy-id",
        "-f",
        "-i",
        "key.pub",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        target,
    ];
    for attempt in 0..3 {
        match context.runner.run(&argv, Some(Duration::from_secs(30))) {
            Ok(output) if output.success() => return true,
            _ => {
                context
                    .log
                    .warning("Error copying ssh key to device for: key.pub");
                if attempt < 2 {
                    context.log.info("Retrying...");
                    context.pause(Duration::from_secs(10));
                }
            }
        }
    }
    context.log.error("Failed to copy ssh key: key.pub");
    false
}
