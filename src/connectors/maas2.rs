//! `maas2`: deploys the device through MAAS with the `maas` CLI (a profile already logged
//! in on the agent host): release (with the recovery chain), storage layout, allocate,
//! deploy, then wait until MAAS says Deployed at the expected address and ssh answers.
//! `cleanup` releases the machine again.
//!
//! With `reset_efi`, network boot is put first in the machine's EFI boot order before
//! it is released; with `clear_tpm`, its TPM is cleared before provisioning.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use super::context::{Context, Failure, StageResult};
use super::maas_storage::{self, StorageError};
use super::runner::RunError;
use super::serial::SerialLogger;
use super::stages::pre_provision_hook;

/// Pauses between the retries of a failing MAAS command (four runs in all).
const RETRY_PAUSES: [u64; 3] = [10, 20, 40];
/// How often a deploying machine is looked at (the reference: once a minute).
const DEPLOY_CHECK_EVERY: Duration = Duration::from_secs(10);
const RELEASE_CHECKS: u32 = 30;
const RECOVERY_CHECKS: u32 = 3;
const CHECK_PAUSE: Duration = Duration::from_secs(10);

struct Maas<'a> {
    context: &'a Context,
    user: String,
    node: String,
    agent: String,
    debug: bool,
    /// The node's block devices, as read when the connector started.
    block_devices: Vec<Value>,
}

impl<'a> Maas<'a> {
    fn new(context: &'a Context) -> Result<Maas<'a>, Failure> {
        let mut maas = Maas {
            context,
            user: context.required("maas_user")?,
            node: context.required("node_id")?,
            agent: context.config_text("agent_name").unwrap_or_default(),
            debug: context
                .job
                .get("debug")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            block_devices: Vec::new(),
        };
        // As the reference: the node's block devices are read first, and must be.
        maas.log("Reading node's block device information");
        let devices = maas
            .once(&["block-devices", "read", &maas.node])
            .map_err(|reason| {
                Failure::Provisioning(format!(
                    "MAAS: Unable to read node's block device information: {reason}"
                ))
            })?;
        maas.block_devices = serde_json::from_str::<Value>(&devices)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        Ok(maas)
    }

    fn log(&self, message: &str) {
        self.context.log.info(&format!("MAAS: {message}"));
    }

    fn argv<'b>(&'b self, args: &[&'b str]) -> Vec<&'b str> {
        let mut argv = vec!["maas", self.user.as_str()];
        argv.extend_from_slice(args);
        argv
    }

    /// Runs a MAAS command once; its output, or why it failed.
    fn once(&self, args: &[&str]) -> Result<String, String> {
        match self
            .context
            .runner
            .run(&self.argv(args), Some(Duration::from_secs(300)))
        {
            Ok(output) if output.success() => Ok(output.text),
            Ok(output) => Err(format!("exit status {}: {}", output.status, output.all())),
            Err(RunError::Missing(program)) => Err(format!("{program} is not installed")),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Runs a MAAS command, retried (10, 20, 40 s apart) while it fails.
    fn run(&self, args: &[&str]) -> Result<String, Failure> {
        let shown = self.argv(args).join(" ");
        let mut failures = Vec::new();
        for attempt in 0..=RETRY_PAUSES.len() {
            match self.once(args) {
                Ok(output) => {
                    if self.debug {
                        self.log(&output);
                    }
                    return Ok(output);
                }
                Err(reason) => failures.push(reason),
            }
            if let Some(pause) = RETRY_PAUSES.get(attempt) {
                self.context.log.warning(&format!(
                    "MAAS: maas error running: {shown}; trying again in {pause} seconds"
                ));
                self.context.pause(Duration::from_secs(*pause));
            }
        }
        self.context.log.error(&format!(
            "MAAS: maas error running: {shown}; maximum retries reached"
        ));
        Err(Failure::Provisioning(failures.join("; ")))
    }

    /// `machine read`, as JSON.
    fn machine(&self) -> Result<Value, Failure> {
        let output = self.run(&["machine", "read", &self.node])?;
        serde_json::from_str(&output).map_err(|e| {
            Failure::Provisioning(format!("MAAS answered `machine read` with no JSON: {e}"))
        })
    }

    fn status(&self) -> Result<String, Failure> {
        Ok(self
            .machine()?
            .get("status_name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }

    /// Waits, `checks` looks `CHECK_PAUSE` apart (the first at once), for Ready.
    fn wait_ready(&self, checks: u32) -> Result<(String, bool), Failure> {
        let mut status = String::new();
        for check in 0..checks {
            if check > 0 {
                self.context.pause(CHECK_PAUSE);
            }
            status = self.status()?;
            if status == "Ready" {
                return Ok((status, true));
            }
        }
        Ok((status, false))
    }

    /// Releases the machine; if it does not come back Ready, tries to recover it, and
    /// gives up with a recovery failure (exit 46: the device is unusable).
    fn release(&self) -> Result<(), Failure> {
        self.log(&format!("Releasing node {}", self.agent));
        self.run(&["machine", "release", &self.node])?;
        let (status, ready) = self.wait_ready(RELEASE_CHECKS)?;
        if ready {
            self.log(&format!("Successfully released node {}", self.agent));
            return Ok(());
        }
        self.context.log.error(&format!(
            "MAAS: Device {} still in \"{status}\" state, attempting recovery!",
            self.agent
        ));
        self.run(&["machine", "mark-broken", &self.node])?;
        self.run(&["machine", "mark-fixed", &self.node])?;
        self.log("Check for Ready status");
        if self.wait_ready(RECOVERY_CHECKS)?.1 {
            return Ok(());
        }
        self.log("Attempt to just power-off the machine");
        self.run(&["machine", "power-off", &self.node])?;
        let (status, ready) = self.wait_ready(RECOVERY_CHECKS)?;
        if ready {
            return Ok(());
        }
        self.context.log.error(&format!(
            "MAAS: Device {} still in \"{status}\" state, could not recover!",
            self.agent
        ));
        Err(Failure::Recovery("Device recovery failed!".into()))
    }

    /// The job's `disks`, else the device's `default_disks`, else MAAS's flat layout.
    fn storage(&self) -> Result<(), Failure> {
        let job_disks = self
            .context
            .job
            .pointer("/provision_data/disks")
            .and_then(Value::as_array);
        if let Some(layout) = job_disks {
            let planned = maas_storage::plan(layout, &self.block_devices);
            return planned.and_then(|entries| self.lay_out(&entries)).map_err(
                |StorageError(reason)| {
                    Failure::Provisioning(format!(
                        "MAAS: Unable to configure node storage: {reason}"
                    ))
                },
            );
        }
        let defaults = self
            .context
            .config
            .get("default_disks")
            .and_then(Value::as_array);
        if let Some(layout) = defaults.filter(|l| !l.is_empty()) {
            // Used as written: they already name their disks and sizes in bytes.
            let entries: Vec<_> = layout
                .iter()
                .filter_map(|e| e.as_object().cloned())
                .collect();
            return self.lay_out(&entries).map_err(|StorageError(reason)| {
                Failure::Provisioning(format!(
                    "MAAS: Unable to reset node storage to default_disk layout: {reason}"
                ))
            });
        }
        self.context.log.warning(
            "MAAS: 'default_disks' and/or 'disks' unspecified; setting default storage layout to flat",
        );
        let flat = [
            "machine",
            "set-storage-layout",
            &self.node,
            "storage_layout=flat",
        ];
        if let Err(reason) = self.once(&flat) {
            self.context.log.error(&format!(
                "MAAS: Unable to set flat disk layout, attempting to continue anyway: {reason}"
            ));
        }
        Ok(())
    }

    /// Clears the node's disks, then creates the layout (storage commands run once).
    fn lay_out(&self, entries: &[serde_json::Map<String, Value>]) -> Result<(), StorageError> {
        let mut run = |command: Vec<String>| {
            let args: Vec<&str> = command.iter().map(String::as_str).collect();
            self.once(&args).map_err(StorageError)
        };
        self.log("Clearing existing storage configuration");
        for command in maas_storage::clearing(&self.node, &self.block_devices) {
            run(command)?;
        }
        self.log("Applying storage layout");
        maas_storage::apply(&self.node, entries, &mut run)
    }

    /// The id of the latest installation script result, if any.
    fn latest_installation(&self) -> Option<i64> {
        let output = self
            .once(&[
                "node-script-results",
                "read",
                &self.node,
                "type=installation",
            ])
            .ok()?;
        let results: Value = serde_json::from_str(&output).ok()?;
        results
            .as_array()?
            .iter()
            .filter_map(|r| r.get("id")?.as_i64())
            .max()
    }

    /// Logs the installation output of this deployment, when MAAS has one.
    fn log_installation(&self, before: Option<i64>) {
        let latest = self.latest_installation();
        let text = match latest.filter(|id| Some(*id) != before) {
            Some(id) => self
                .once(&[
                    "node-script-result",
                    "download",
                    &self.node,
                    &id.to_string(),
                ])
                .unwrap_or_default(),
            None => "None".into(),
        };
        self.context.log.info(&text);
    }

    /// Whether ephemeral deployment can be asked for: MAAS 3.5.0 or later.
    fn supports_ephemeral(&self) -> bool {
        let version = self
            .run(&["version", "read"])
            .ok()
            .and_then(|output| serde_json::from_str::<Value>(&output).ok())
            .and_then(|v| v.get("version")?.as_str().map(str::to_string));
        let parsed: Option<Vec<u32>> = version
            .as_deref()
            .map(|v| {
                v.split('.')
                    .map(|part| part.parse().ok())
                    .collect::<Option<Vec<u32>>>()
            })
            .unwrap_or(None);
        match parsed {
            Some(parts) if parts >= vec![3, 5, 0] => {
                self.log(&format!(
                    "MAAS version detected: {}",
                    version.unwrap_or_default()
                ));
                self.log("Deployment set to ephemeral");
                true
            }
            _ => {
                self.context.log.warning(&format!(
                    "MAAS: Unable to determine MAAS version: {version:?}. Proceeding without ephemeral deployment"
                ));
                false
            }
        }
    }

    /// The whole provision: EFI reset and TPM clear if configured, then the job's deploy.
    fn provision(&self) -> Result<(), Failure> {
        if self.flag("reset_efi") {
            self.reset_efi();
        }
        if self.flag("clear_tpm") {
            self.clear_tpm()?;
        }
        let data = self
            .context
            .job
            .get("provision_data")
            .cloned()
            .unwrap_or(Value::Null);
        self.deploy_with(&data)
    }

    /// Takes the machine back (EFI reset first if configured) and releases it.
    fn recover(&self) -> Result<(), Failure> {
        if self.flag("reset_efi") {
            self.reset_efi();
        }
        self.release()
    }

    fn deploy_with(&self, data: &Value) -> Result<(), Failure> {
        let text = |key: &str| data.get(key).and_then(Value::as_str).map(str::to_string);
        let distro = text("distro").unwrap_or("jammy".into());
        self.recover()?;
        self.machine()?;
        self.storage()?;
        self.log("Acquiring node");
        self.run(&["machines", "allocate", &format!("system_id={}", self.node)])?;
        let before = self.latest_installation();
        self.log(&format!(
            "Starting node {} with distro {distro}",
            self.agent
        ));
        let mut args = vec![
            "machine".to_string(),
            "deploy".into(),
            self.node.clone(),
            format!("distro_series={distro}"),
        ];
        if let Some(kernel) = text("kernel") {
            args.push(format!("hwe_kernel={kernel}"));
        }
        if let Some(user_data) = text("user_data") {
            let encoded = base64::engine::general_purpose::STANDARD.encode(user_data);
            args.push(format!("user_data={encoded}"));
        }
        if data
            .get("ephemeral")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            && self.supports_ephemeral()
        {
            args.push("ephemeral_deploy=true".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let deployed = self.run(&args)?;
        self.wait_deployed(before, &deployed)
    }

    /// Waits for Deployed at the expected address with ssh answering, up to
    /// `timeout_min` minutes.
    fn wait_deployed(&self, before: Option<i64>, deploy_output: &str) -> Result<(), Failure> {
        let minutes = self
            .context
            .config
            .get("timeout_min")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .unwrap_or(60);
        let device_ip = self.context.required("device_ip")?;
        self.log(&format!("Timeout value: {minutes} minutes."));
        let checks = minutes * 60 / DEPLOY_CHECK_EVERY.as_secs();
        let mut status = String::new();
        for check in 0..checks {
            if check > 0 {
                self.context.pause(DEPLOY_CHECK_EVERY);
                let passed = check * DEPLOY_CHECK_EVERY.as_secs();
                if passed.is_multiple_of(60) {
                    self.log(&format!("{} minutes passed since deployment.", passed / 60));
                }
            }
            let machine = self.machine()?;
            status = machine
                .get("status_name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            match status.as_str() {
                "Failed deployment" => {
                    self.context
                        .log
                        .error("MAAS: MAAS reports Failed Deployment");
                    self.log_installation(before);
                    return Err(Failure::Provisioning(
                        "Provisioning failed because MAAS got unexpected or deployment failure status signal.".into(),
                    ));
                }
                "Deployed" => {
                    let addresses: Vec<String> = machine
                        .get("ip_addresses")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|ip| ip.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    if !addresses.contains(&device_ip) {
                        self.context
                            .log
                            .error("MAAS: MAAS reports Wrong IP Address");
                        self.log_installation(before);
                        return Err(Failure::Provisioning(format!(
                            "Provisioning failed because of bad device configuration. Expected device ip {device_ip} was not any of the addresses known to maas: {addresses:?}"
                        )));
                    }
                    if self.ssh_answers(&device_ip) {
                        self.log("Deployed and booted.");
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        self.context.log.error(&format!(
            "MAAS: Device {} still in \"{status}\" state, deployment failed!",
            self.agent
        ));
        self.context.log.error(deploy_output);
        self.log_installation(before);
        Err(Failure::Provisioning(format!(
            "Provisioning failed because deployment timeout. Deploying for more than {minutes} minutes."
        )))
    }

    fn flag(&self, key: &str) -> bool {
        self.context
            .config
            .get(key)
            .is_some_and(crate::job::is_truthy)
    }

    /// Runs `command` on the machine as `ubuntu` (it must be deployed).
    fn on_machine(&self, command: &str, limit: Duration) -> Option<String> {
        let target = format!("ubuntu@{}", self.context.config_text("device_ip")?);
        match self.context.runner.ssh(&target, command, limit) {
            Ok(output) if output.success() => Some(output.text),
            _ => None,
        }
    }

    /// Puts network boot first in the EFI boot order, so MAAS can always take the
    /// machine back. Best effort: a machine where this fails is left as it is.
    fn reset_efi(&self) {
        self.log("Fixing EFI boot order before provisioning");
        let limit = Duration::from_secs(30);
        let listing = self.on_machine("sudo efibootmgr -v", limit).or_else(|| {
            self.on_machine(
                "sudo snap install efi-tools-ijohnson --devmode --edge",
                Duration::from_secs(300),
            );
            self.on_machine(
                "sudo snap alias efi-tools-ijohnson.efibootmgr efibootmgr",
                limit,
            );
            self.on_machine("sudo efibootmgr -v", limit)
        });
        let Some(order) = listing.as_deref().and_then(netboot_first) else {
            return;
        };
        self.log(&format!("Setting boot order to {order}"));
        if self
            .on_machine(&format!("sudo efibootmgr -o {order}"), limit)
            .is_none()
        {
            self.context.log.error(&format!(
                "MAAS: Failed to set efi boot order to \"{order}\""
            ));
        }
    }

    /// Asks the firmware to clear the TPM at the next boot; the machine must run an OS
    /// for that, so it is deployed first if the request does not take.
    fn clear_tpm(&self) -> Result<(), Failure> {
        self.log("Clearing the TPM before provisioning");
        for attempt in 0..2 {
            let limit = Duration::from_secs(30);
            self.on_machine("echo 5 | sudo tee /sys/class/tpm/tpm0/ppi/request", limit);
            let request = self.on_machine("cat /sys/class/tpm/tpm0/ppi/request", limit);
            if request.is_some_and(|r| r.trim() == "5") {
                return Ok(());
            }
            if attempt == 0 {
                self.deploy_with(&json!({"distro": "jammy"}))?;
            }
        }
        Err(Failure::Provisioning("Failed to clear TPM".into()))
    }

    fn ssh_answers(&self, device_ip: &str) -> bool {
        let target = format!("ubuntu@{device_ip}");
        let probe = self
            .context
            .runner
            .ssh(&target, "/bin/true", Duration::from_secs(60));
        matches!(probe, Ok(o) if o.success())
    }
}

pub fn provision(context: &Context) -> StageResult {
    pre_provision_hook(context, false)?;
    let _serial = SerialLogger::start(context, "provision-serial.log");
    context.log.info("BEGIN provision");
    context.log.info("Provisioning device");
    let outcome = Maas::new(context).and_then(|maas| maas.provision());
    if let Err(Failure::Provisioning(message)) = &outcome {
        context
            .log
            .error(&format!("Provisioning failed: {message}"));
    }
    context.log.info("END provision");
    outcome.map(|()| 0)
}

pub fn cleanup(context: &Context) -> StageResult {
    Maas::new(context)?.recover()?;
    Ok(0)
}

/// The boot order that netboots first, from `efibootmgr -v` output: the current entry
/// if it is an IPv4 (PXE) one, then the other IPv4 entries in listed order, then the
/// rest of the current order.
fn netboot_first(efibootmgr: &str) -> Option<String> {
    let mut current = None;
    let mut order: Vec<String> = Vec::new();
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in efibootmgr.lines() {
        let (first, rest) = line
            .trim()
            .split_once(char::is_whitespace)
            .unwrap_or((line.trim(), ""));
        match first {
            "BootCurrent:" => current = Some(rest.trim().to_string()),
            "BootOrder:" => {
                order = rest
                    .trim()
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect()
            }
            word => {
                let number = word.strip_prefix("Boot").map(|n| n.trim_end_matches('*'));
                if let Some(number) =
                    number.filter(|n| n.len() == 4 && n.chars().all(|c| c.is_ascii_hexdigit()))
                {
                    entries.push((number.to_string(), rest.to_string()));
                }
            }
        }
    }
    let is_ipv4 = |number: &str| {
        entries
            .iter()
            .any(|(n, text)| n == number && text.contains("IPv4"))
    };
    let mut new_order: Vec<String> = Vec::new();
    if let Some(current) = current.filter(|c| is_ipv4(c)) {
        new_order.push(current);
    }
    for (number, text) in &entries {
        if text.contains("IPv4") && !new_order.contains(number) {
            new_order.push(number.clone());
        }
    }
    for number in order {
        if !new_order.contains(&number) {
            new_order.push(number);
        }
    }
    (!new_order.is_empty()).then(|| new_order.join(","))
}

#[cfg(test)]
mod tests {
    use super::netboot_first;

    const EFI: &str = "BootCurrent: CURRENT\nTimeout: 1 seconds\nBootOrder: 0000,0001,0002\nBoot0000* ubuntu\tHD(1,GPT)\nBoot0001* UEFI: PXE IPv4 Intel\nBoot0002* UEFI: PXE IPv4 Mellanox\n";

    #[test]
    fn netboot_entries_go_first() {
        assert_eq!(
            netboot_first(&EFI.replace("CURRENT", "0002")).as_deref(),
            Some("0002,0001,0000")
        );
        assert_eq!(
            netboot_first(&EFI.replace("CURRENT", "0000")).as_deref(),
            Some("0001,0002,0000")
        );
    }
}
