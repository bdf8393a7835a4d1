//! `noprovision`: the device keeps whatever it runs. Provisioning only makes sure it is
//! reachable over ssh, power-cycling it with `reboot_script` when it is not.

use std::time::Duration;

use super::context::{Context, Failure, StageResult};
use super::runner::RunError;
use super::stages::pre_provision_hook;

/// How long a rebooted device has to come back, and how often it is tried meanwhile.
const BOOT_LIMIT: Duration = Duration::from_secs(300);
const PROBE_EVERY: Duration = Duration::from_secs(5);

pub fn provision(context: &Context) -> StageResult {
    pre_provision_hook(context, false)?;
    let log = &context.log;
    let target = format!(
        "{}@{}",
        context.test_username()?,
        context.required("device_ip")?
    );
    log.info("BEGIN provision");
    log.info("Booting the test image");
    if reachable(context, &target) {
        log.info("END provision");
        return Ok(0);
    }
    hard_reset(context)?;
    // Probed from the start (the reference first waits a full minute).
    for _ in 0..BOOT_LIMIT.as_secs() / PROBE_EVERY.as_secs() {
        if reachable(context, &target) {
            log.info("END provision");
            return Ok(0);
        }
        context.pause(PROBE_EVERY);
    }
    Err(Failure::Provisioning("Failed to boot test image!".into()))
}

fn reachable(context: &Context, target: &str) -> bool {
    let argv = [
        "ssh",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "ConnectTimeout=10",
        target,
        "/bin/true",
    ];
    matches!(context.runner.run(&argv, Some(Duration::from_secs(60))), Ok(output) if output.success())
}

/// Power-cycles the device: each `reboot_script` item, split on whitespace, no shell.
fn hard_reset(context: &Context) -> Result<(), Failure> {
    let commands = context.config_commands("reboot_script");
    if commands.is_empty() {
        return Err(Failure::Provisioning(
            "the device is unreachable and the device config has no reboot_script".into(),
        ));
    }
    for command in commands {
        let argv: Vec<&str> = command.split_whitespace().collect();
        match context.runner.run(&argv, Some(Duration::from_secs(120))) {
            Ok(output) if output.success() => {}
            Ok(output) => {
                return Err(Failure::Provisioning(format!(
                    "reboot script `{command}` failed with exit status {}: {}",
                    output.status,
                    output.all()
                )))
            }
            Err(RunError::TimedOut(_)) => {
                return Err(Failure::Recovery("timeout reaching control host!".into()))
            }
            Err(error) => {
                return Err(Failure::Provisioning(format!(
                    "reboot script `{command}`: {error}"
                )))
            }
        }
    }
    Ok(())
}
