//! `muxpi`: flashes an image onto the device's SD card (or USB disk) through an SD mux
//! attached to a control host, prepares a test user, boots the device and waits for it.
//! Everything on the control host is done over ssh; the image is downloaded on the agent
//! and streamed through ssh into `zstdcat | sudo dd` on the control host.
//!
//! Unlike the reference, commands that are expected to fail (unmounting what is not
//! mounted, probing for image types) are not retried for a minute each, and the commands
//! that are retried get three tries, five seconds apart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::context::{Context, Failure, StageResult};
use super::muxpi_host::{shell_quote, MuxHost};
use super::muxpi_users;
use super::runner::{RunError, SSH_OPTIONS};
use super::serial::SerialLogger;
use super::stages::pre_provision_hook;
use super::web;

const BOOT_LIMIT: Duration = Duration::from_secs(1200);
const BOOT_CHECK_EVERY: Duration = Duration::from_secs(10);

pub fn provision(context: &Context) -> StageResult {
    pre_provision_hook(context, true)?;
    let _serial = SerialLogger::start(context, "provision-serial.log");
    let log = &context.log;
    log.info("BEGIN provision");
    log.info("Provisioning device");
    let control = MuxHost::new(context)?;
    reset_classic_mux(context, &control)?;
    let data = context
        .job
        .get("provision_data")
        .cloned()
        .unwrap_or(Value::Null);
    let image = image_source(&data)?;
    let storage = Storage::select(context, &control, &data)?;
    let flashed = flash(context, &control, &image, &storage.device).and_then(|()| {
        if data
            .get("create_user")
            .and_then(Value::as_bool)
            .unwrap_or(true)
        {
            create_user(context, &control, &storage.device)
        } else {
            log.info("Skipping test user creation (create_user=False)");
            Ok(())
        }
    });
    if flashed.is_ok() {
        for command in context.config_commands("post_provision_script") {
            if control.run(&command, Duration::from_secs(60)).is_err() {
                log.warning(&format!("Error running {command}"));
            }
        }
    }
    // The storage goes back to the device whatever happened.
    let handed_back = control.run(&storage.back_command, Duration::from_secs(60));
    flashed?;
    handed_back?;
    log.info("Booting Test Image");
    hard_reset(context)?;
    boot_check(context, &data)?;
    log.info("END provision");
    Ok(0)
}

/// Classic (`stm`-style) muxes start from a freshly rebooted control host and device.
fn reset_classic_mux(context: &Context, control: &MuxHost) -> Result<(), Failure> {
    let local = context
        .config_text("control_switch_local_cmd")
        .unwrap_or("stm -ts".into());
    if local
        .split_whitespace()
        .any(|t| t == "sdwire" || t == "typecmux")
    {
        return Ok(());
    }
    let reboot = context.config_commands("control_host_reboot_script");
    if reboot.is_empty() {
        context
            .log
            .warning("control_host_reboot_script not defined, skip rebooting control host");
        return Ok(());
    }
    context.log.info("Rebooting control host");
    for command in &reboot {
        let argv: Vec<&str> = command.split_whitespace().collect();
        match context.runner.run(&argv, Some(Duration::from_secs(60))) {
            Ok(output) if output.success() => {}
            _ => return Err(Failure::Provisioning("fail to reboot control host".into())),
        }
    }
    context.log.info("Rebooting DUT");
    hard_reset(context)?;
    let wait = context
        .config
        .get("control_host_reboot_timeout")
        .and_then(Value::as_u64)
        .unwrap_or(120);
    context.pause(Duration::from_secs(wait));
    for _ in 0..wait / 10 {
        if control.probe("true").is_some() {
            return Ok(());
        }
        context
            .log
            .info("Waiting for control host to become active...");
        context.pause(Duration::from_secs(10));
    }
    control.run("true", Duration::from_secs(60)).map(drop)
}

/// Where the image comes from.
enum Image {
    Url(String),
    File(PathBuf),
}

fn image_source(data: &Value) -> Result<Image, Failure> {
    if let Some(url) = data.get("url").and_then(Value::as_str) {
        return Ok(Image::Url(url.to_string()));
    }
    let Some(name) = data.get("use_attachment").and_then(Value::as_str) else {
        return Err(Failure::Provisioning(
            "In the \"provision_data\" section of your job_data you must provide a value for \"url\" to specify where to download an image from or a value for \"use_attachment\" to specify which attachment to use as an image".into(),
        ));
    };
    // A name inside the job's provision attachments, nothing else on the agent.
    let inside = !name.is_empty()
        && Path::new(name)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    let path = Path::new("attachments/provision").join(name);
    if !inside || !path.is_file() {
        return Err(Failure::Provisioning(format!(
            "In the \"provision_data\" section of your job_data you have provided a value for \"use_attachment\" but that attachment doesn't exist: {name}"
        )));
    }
    Ok(Image::File(path))
}

/// The block device on the control host, and how to give it back to the device.
struct Storage {
    device: String,
    back_command: String,
}

impl Storage {
    /// Switches the SD card (or USB disk, with `media`) to the control host.
    fn select(context: &Context, control: &MuxHost, data: &Value) -> Result<Storage, Failure> {
        let local = context
            .config_text("control_switch_local_cmd")
            .unwrap_or("stm -ts".into());
        let Some(media) = data.get("media") else {
            control.run(&local, Duration::from_secs(60))?;
            return Ok(Storage {
                device: context.required("test_device")?,
                back_command: context
                    .config_text("control_switch_device_cmd")
                    .unwrap_or("stm -dut".into()),
            });
        };
        let tokens: Vec<&str> = local.split_whitespace().collect();
        let mux_at = tokens
            .iter()
            .position(|t| *t == "sdwire" || *t == "typecmux");
        let Some(cli) = mux_at.filter(|at| *at > 0).map(|at| tokens[..at].join(" ")) else {
            return Err(Failure::Provisioning("The \"control_switch_local_cmd\" config must include a mux CLI command followed by \"sdwire\" or \"typecmux\" when \"media\" is specified in \"provision_data\"".into()));
        };
        let kind = match media.as_str() {
            Some("sd") => "sdwire",
            Some("usb") => "typecmux",
            _ => {
                return Err(Failure::Provisioning(format!(
                    "The \"media\" value in the \"provision_data\" section of your job_data must be either \"sd\" or \"usb\", but got {media}"
                )))
            }
        };
        // Both muxes go to the control host whichever medium is written, so that the
        // device can boot neither meanwhile (as the reference does); only the written one
        // is handed back afterwards.
        let plug_to_self = |mux: &str| {
            control.run(
                &format!("{cli} {mux} plug_to_self"),
                Duration::from_secs(60),
            )
        };
        let (sdwire, typecmux) = (plug_to_self("sdwire"), plug_to_self("typecmux"));
        let (written, other) = if kind == "sdwire" {
            (sdwire, typecmux)
        } else {
            (typecmux, sdwire)
        };
        if let Err(failure) = other {
            context.log.warning(&format!(
                "The other mux could not be switched to the control host: {}",
                failure.message()
            ));
        }
        let output = written?;
        let device = output
            .text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .trim()
            .to_string();
        let plausible = device.starts_with("/dev/")
            && device
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c));
        if !plausible {
            return Err(Failure::Provisioning(format!(
                "`{cli} {kind} plug_to_self` named no block device"
            )));
        }
        Ok(Storage {
            device,
            back_command: format!("{cli} {kind} set DUT"),
        })
    }
}

/// Writes the image onto the block device on the control host.
fn flash(context: &Context, control: &MuxHost, image: &Image, device: &str) -> Result<(), Failure> {
    let log = &context.log;
    if control.probe(&format!("sudo umount {device}*")).is_none() {
        log.warning(&format!("Device {device} might not be mounted"));
    }
    let (file, limit, _download) = match image {
        Image::File(path) => {
            log.info(&format!(
                "Flashing Test image {} on {device}",
                path.display()
            ));
            (path.clone(), Duration::from_secs(1200), None)
        }
        Image::Url(url) => {
            log.info(&format!("Downloading test image from {url}"));
            let download = download(url)?;
            let name = url.rsplit('/').next().unwrap_or(url);
            log.info(&format!("Flashing Test image {name} on {device}"));
            (
                download.path().to_path_buf(),
                Duration::from_secs(1800),
                Some(download),
            )
        }
    };
    // The image goes to ssh's stdin straight from the file: no local shell involved.
    let remote = format!("zstdcat | sudo dd of={} bs=16M", shell_quote(device));
    let mut argv = vec!["ssh"];
    argv.extend(SSH_OPTIONS);
    argv.extend(["--", control.target(), &remote]);
    let image = std::fs::File::open(&file).map_err(|e| {
        Failure::Provisioning(format!("cannot read the image {}: {e}", file.display()))
    })?;
    match context.runner.run_with_input(&argv, image, Some(limit)) {
        Ok(output) if output.success() => {}
        Ok(output) => {
            return Err(Failure::Provisioning(format!(
                "Error while piping the test image to {device} through {}: {}",
                control.target(),
                output.all()
            )))
        }
        Err(RunError::TimedOut(_)) => {
            return Err(Failure::Provisioning(format!(
                "Timeout while piping the test image to {device} through {} using a timeout of {}",
                control.target(),
                limit.as_secs()
            )))
        }
        Err(error) => return Err(Failure::Provisioning(error.to_string())),
    }
    if control.probe("sync").is_none() {
        log.warning("Something went wrong with the sync, sleeping...");
        context.pause(Duration::from_secs(30));
    }
    control
        .run(&format!("sudo hdparm -z {device}"), Duration::from_secs(40))
        .map_err(|_| Failure::Provisioning("Unable to run hdparm to rescan partitions".into()))?;
    Ok(())
}

/// Downloads `url` on the agent into a temporary file.
fn download(url: &str) -> Result<tempfile::NamedTempFile, Failure> {
    let failed = |reason: String| {
        Failure::Provisioning(format!("cannot download the image {url}: {reason}"))
    };
    let file = tempfile::NamedTempFile::new().map_err(|e| failed(e.to_string()))?;
    web::download(url, file.path(), Duration::from_secs(1200)).map_err(failed)?;
    Ok(file)
}

/// Power-cycles the device with `reboot_script` (on the agent, no shell).
fn hard_reset(context: &Context) -> Result<(), Failure> {
    for command in context.config_commands("reboot_script") {
        let argv: Vec<&str> = command.split_whitespace().collect();
        match context.runner.run(&argv, Some(Duration::from_secs(120))) {
            Ok(output) if output.success() => {}
            _ => return Err(Failure::Recovery("timeout reaching control host!".into())),
        }
    }
    Ok(())
}

/// Waits for the flashed image to boot: a URL answering 200, or the test user accepting
/// the agent's ssh key.
fn boot_check(context: &Context, data: &Value) -> Result<(), Failure> {
    let log = &context.log;
    log.info("Checking if test image booted.");
    let device_ip = context.required("device_ip")?;
    let user = context.test_username()?;
    let password = context
        .job
        .pointer("/test_data/test_password")
        .and_then(Value::as_str)
        .unwrap_or("ubuntu")
        .to_string();
    context.runner.mask(&password);
    let target = format!("{user}@{device_ip}");
    // Checked at once, then every 10 s (the reference waits 10 s before the first check).
    let checks = BOOT_LIMIT.as_secs() / BOOT_CHECK_EVERY.as_secs();
    for check in 0..checks {
        if check > 0 {
            context.pause(BOOT_CHECK_EVERY);
        }
        if let Some(url) = data.get("boot_check_url").and_then(Value::as_str) {
            let url = url.replace("$DEVICE_IP", &device_ip);
            log.info(&format!("Checking {url} to confirm boot success ..."));
            match url_answers(&url) {
                Ok(200) => return Ok(()),
                Ok(status) => log.info(&format!("Check returned {status}, expecting 200")),
                Err(reason) => log.info(&format!("Boot check failed with {reason}")),
            }
            continue;
        }
        let mut argv = vec!["sshpass", "-p", &password, "ssh-copy-id"];
        argv.extend(SSH_OPTIONS);
        argv.push(&target);
        match context.runner.run(&argv, Some(Duration::from_secs(60))) {
            Ok(output) if output.success() => return Ok(()),
            Ok(output) => log.info(&format!("ssh-id-copy failed with {}", output.all())),
            Err(error) => log.info(&format!("ssh-id-copy failed with {error}")),
        }
    }
    Err(Failure::Provisioning("Failed to boot test image!".into()))
}

fn url_answers(url: &str) -> Result<u16, String> {
    web::get(url, Duration::from_secs(5)).map(|reply| reply.status.as_u16())
}

/// Mounts the image's partitions, finds out what the image is, and lets the test user
/// (`ubuntu`/`ubuntu`) in, the way that image's first boot expects it.
fn create_user(context: &Context, control: &MuxHost, device: &str) -> Result<(), Failure> {
    let agent = context.required("agent_name")?;
    let mounts = mount_partitions(context, control, device, &agent)?;
    if mounts.is_empty() {
        return Err(Failure::Provisioning(format!(
            "No partition of {device} could be mounted to create the test user"
        )));
    }
    let image_type = muxpi_users::detect(control, &format!("/mnt/{agent}"));
    context
        .log
        .info(&format!("Image type detected: {}", image_type.name()));
    context.log.info("Creating Test User");
    let created = muxpi_users::create(control, image_type, &agent);
    for mount in mounts {
        let _ = control.probe(&format!("sudo umount {}", shell_quote(&mount)));
    }
    created.map_err(|failure| match failure {
        Failure::Provisioning(m) | Failure::Recovery(m) => {
            Failure::Provisioning(format!("Error creating user files: {m}"))
        }
    })
}

/// Mounts each labelled partition of `device` under `/mnt/<agent>/<label>`.
fn mount_partitions(
    context: &Context,
    control: &MuxHost,
    device: &str,
    agent: &str,
) -> Result<Vec<String>, Failure> {
    let mut partitions = Vec::new();
    for attempt in 0..2 {
        if let Some(output) = control.probe(&format!("lsblk -o NAME,LABEL -J {device}")) {
            partitions = labelled_partitions(&output.text);
        }
        if !partitions.is_empty() {
            break;
        }
        if attempt == 0 {
            println!("No valid partitions found, retrying...");
            context.pause(Duration::from_secs(10));
        }
    }
    let mut mounts = Vec::new();
    for (name, label) in partitions {
        // Names and labels come from the job's image: only plain ones are used.
        let plain = |text: &str| {
            !matches!(text, "" | "." | "..")
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        };
        if !plain(&name) || !plain(&label) {
            context
                .log
                .warning(&format!("Skipping partition {name:?} labelled {label:?}"));
            continue;
        }
        let mount = format!("/mnt/{agent}/{label}");
        let quoted = shell_quote(&mount);
        let mounted = control.probe(&format!("sudo mkdir -p {quoted}")).is_some()
            && control
                .probe(&format!("sudo mount /dev/{name} {quoted}"))
                .is_some();
        if mounted {
            mounts.push(mount);
        } else {
            context
                .log
                .warning(&format!("Could not mount /dev/{name} on {mount}"));
        }
    }
    Ok(mounts)
}

/// `(name, label)` of the first block device's children that have both.
fn labelled_partitions(lsblk: &str) -> Vec<(String, String)> {
    let Ok(tree) = serde_json::from_str::<Value>(lsblk) else {
        return Vec::new();
    };
    let devices = tree
        .get("blockdevices")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    devices
        .iter()
        .filter_map(|device| device.get("children").and_then(Value::as_array))
        .next()
        .map(|children| {
            children
                .iter()
                .filter_map(|child| Some((text(child, "name")?, text(child, "label")?)))
                .collect()
        })
        .unwrap_or_default()
}
