//! `firmware_update`, the same for every device: find out what the device is (its DMI
//! vendor and chassis type, over ssh), then bring its firmware to the job's
//! `firmware_update_data.version`. Desktops, all-in-ones, mini PCs and rack servers from
//! HP, Dell and Lenovo go through LVFS (`fwupdmgr` on the device; only `latest`). HPE
//! servers go through their iLO (see `hpe`).
//!
//! `ignore_failure: true` makes any failure of this stage exit 0 (the reference only
//! ignores some of them).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::context::{Context, Failure, StageResult};

/// The chassis types the reference supports, and how each is updated.
fn chassis(kind: u32) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        3 => ("Desktop", "LVFS"),
        13 => ("All In One", "LVFS"),
        35 => ("Mini PC", "LVFS"),
        7 => ("Tower", "OEM-defined"),
        17 => ("Main Server Chassis", "OEM-defined"),
        25 => ("Multi-system", "OEM-defined"),
        28 => ("Blade", "OEM-defined"),
        23 => ("Rack Mount Chassis", "OEM-defined,LVFS"),
        _ => return None,
    })
}

const LVFS_VENDORS: &[&str] = &["HP", "Dell Inc.", "LENOVO"];
const HPE_VENDORS: &[&str] = &["HPE"];

/// A firmware update that did not happen, and why.
struct Refused(String);

pub fn firmware_update(context: &Context) -> StageResult {
    let log = &context.log;
    log.info("BEGIN firmware_update");
    let Some(data) = context.job.get("firmware_update_data").cloned() else {
        return Err(Failure::Provisioning(
            "the job has no firmware_update_data".into(),
        ));
    };
    let ignore_failure = data
        .get("ignore_failure")
        .is_some_and(crate::job::is_truthy);
    let refused = |f: Failure| match f {
        Failure::Provisioning(m) | Failure::Recovery(m) => Refused(m),
    };
    let outcome = context
        .required("device_ip")
        .and_then(|ip| Ok((context.test_username()?, ip)))
        .map_err(refused)
        .and_then(|(user, ip)| {
            let device = Device {
                context,
                target: format!("{user}@{ip}"),
                ip,
            };
            device.update(
                data.get("version")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            )
        });
    log.info("END firmware_update");
    match outcome {
        Ok(()) => Ok(0),
        Err(Refused(reason)) => {
            log.error(&format!("Firmware Update failed: {reason}"));
            Ok(if ignore_failure { 0 } else { 1 })
        }
    }
}

struct Device<'a> {
    context: &'a Context,
    target: String,
    ip: String,
}

impl Device<'_> {
    /// Runs `command` on the device: its exit status and output.
    fn run(&self, command: &str, limit: Duration) -> (i32, String) {
        match self.context.runner.ssh(&self.target, command, limit) {
            Ok(output) if output.success() => (0, output.text.trim().to_string()),
            Ok(output) => (output.status, output.all()),
            Err(error) => (124, error.to_string()),
        }
    }

    /// Runs `command`, refusing the update if it fails.
    fn must(&self, command: &str, limit: Duration) -> Result<String, Refused> {
        match self.run(command, limit) {
            (0, output) => Ok(output),
            (status, output) => Err(Refused(format!(
                "Failed to execute {command}:\n [{status}] {output}"
            ))),
        }
    }

    /// Waits up to `seconds` for ssh to answer.
    fn wait_for_ssh(&self, seconds: u64) -> Result<(), Refused> {
        for attempt in 0..seconds / 10 {
            if attempt > 0 {
                self.context.pause(Duration::from_secs(10));
            }
            if self.run("/bin/true", Duration::from_secs(10)).0 == 0 {
                return Ok(());
            }
        }
        Err(Refused(format!(
            "Failed to SSH to {} after {seconds}s",
            self.ip
        )))
    }

    fn update(&self, version: &str) -> Result<(), Refused> {
        self.wait_for_ssh(60)?;
        let vendor = self.run(
            "sudo cat /sys/class/dmi/id/chassis_vendor",
            Duration::from_secs(30),
        );
        let kind = self.run(
            "sudo cat /sys/class/dmi/id/chassis_type",
            Duration::from_secs(30),
        );
        if vendor.0 != 0 || kind.0 != 0 {
            return Err(Refused(format!(
                "Unable to detect device vendor/type due to lacking of dmi info.\n{}\n{}",
                vendor.1, kind.1
            )));
        }
        let (vendor, kind) = (vendor.1, kind.1);
        let (name, methods) = kind
            .parse()
            .ok()
            .and_then(chassis)
            .unwrap_or(("unknown", ""));
        let out_of_scope = || {
            Refused(format!(
                "DMI chassis_vendor: {vendor} chassis_type: {name} is not in current support scope"
            ))
        };
        if methods.contains("LVFS") && LVFS_VENDORS.contains(&vendor.as_str()) {
            self.context
                .log
                .info(&format!("{} is a {vendor} LVFSDevice", self.ip));
            return self.lvfs(version);
        }
        if methods.contains("OEM-defined") && HPE_VENDORS.contains(&vendor.as_str()) {
            self.context
                .log
                .info(&format!("{} is a {vendor} HPEDevice", self.ip));
            let bmc = super::hpe::Bmc::from_maas(self.context).map_err(Refused)?;
            return bmc.update(version).map_err(Refused);
        }
        Err(out_of_scope())
    }

    /// The fwupd path: every updatable component to its latest LVFS release.
    fn lvfs(&self, version: &str) -> Result<(), Refused> {
        if version != "latest" {
            return Err(Refused(
                "Fail to provide version in firmware_update_data. Current supported version: ['latest']".into(),
            ));
        }
        let log = &self.context.log;
        self.run("sudo apt update", Duration::from_secs(120));
        self.must("sudo apt install -y fwupd", Duration::from_secs(300))?;
        let fwupd = self.must("sudo fwupdmgr --version", Duration::from_secs(30))?;
        log.info(&format!("fwupd version\n{fwupd}"));
        self.must("sudo fwupdmgr refresh --force", Duration::from_secs(120))?;
        let devices = self.must("sudo fwupdmgr get-devices --json", Duration::from_secs(60))?;
        let devices: Value = serde_json::from_str(&devices)
            .map_err(|e| Refused(format!("fwupdmgr get-devices gave no JSON: {e}")))?;
        let updatable: Vec<&Value> = devices
            .get("Devices")
            .and_then(Value::as_array)
            .map(|all| all.iter().filter(|d| has_flag(d, "updatable")).collect())
            .unwrap_or_default();

        // Device id → the version it should have after the reboot.
        let mut targets: BTreeMap<String, String> = BTreeMap::new();
        for device in &updatable {
            let text = |key: &str| device.get(key).and_then(Value::as_str).unwrap_or_default();
            let name = if text("Name").is_empty() {
                text("DeviceId")
            } else {
                text("Name")
            };
            log.info(&format!("[{name}] current version: {}", text("Version")));
            let Some(latest) = device.pointer("/Releases/0") else {
                log.info(&format!("[{name}] - no available firmware on LVFS"));
                continue;
            };
            let latest_version = latest
                .get("Version")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if latest_version == text("Version") {
                log.info(&format!(
                    "[{name}] already the latest available firmware version"
                ));
                continue;
            }
            if !has_flag(latest, "is-upgrade") {
                log.info(&format!("[{name}] not an upgradable component"));
                continue;
            }
            log.info(&format!("[{name}] try upgrading to {latest_version}"));
            let command = format!(
                "sudo fwupdmgr upgrade {} -y --no-reboot-check",
                text("DeviceId")
            );
            match self.run(&command, Duration::from_secs(1200)) {
                (0, _) => {
                    targets.insert(text("DeviceId").to_string(), latest_version.to_string());
                }
                (_, output) => log.error(&format!(
                    "[{name}] Failed to upgrade to {latest_version}\nerror: {output}"
                )),
            }
        }
        if targets.is_empty() {
            return Ok(());
        }
        self.run("sudo reboot", Duration::from_secs(30));
        self.context.pause(Duration::from_secs(10));
        self.wait_for_ssh(900)?;
        let mut all_landed = true;
        for (id, target) in &targets {
            let results = self.must(
                &format!("sudo fwupdmgr get-results {id} --json"),
                Duration::from_secs(60),
            )?;
            let results: Value = serde_json::from_str(&results).unwrap_or(Value::Null);
            let landed = results
                .pointer("/Releases/0/Version")
                .and_then(Value::as_str)
                == Some(target)
                && results.get("UpdateState").and_then(Value::as_u64) == Some(2);
            if landed {
                log.info(&format!("[{id}] firmware flashed to {target}"));
            } else {
                all_landed = false;
                let error = results
                    .get("UpdateError")
                    .and_then(Value::as_str)
                    .unwrap_or("missing results");
                log.error(&format!(
                    "[{id}] firmware update to {target} failed: {error}"
                ));
            }
        }
        if all_landed {
            Ok(())
        } else {
            Err(Refused(
                "The firmware version did not update successfully".into(),
            ))
        }
    }
}

fn has_flag(entry: &Value, flag: &str) -> bool {
    entry
        .get("Flags")
        .and_then(Value::as_array)
        .is_some_and(|flags| flags.iter().any(|f| f.as_str() == Some(flag)))
}
