//! The test user on a freshly flashed muxpi image: which kind of image it is (probed on
//! the mounted partitions) and the first-boot configuration that kind needs so that
//! `ubuntu`/`ubuntu` can log in over ssh. The configuration files are written here, then
//! copied to the control host and into the image.

use std::time::Duration;

use super::context::Failure;
use super::muxpi_host::MuxHost;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ImageType {
    CeOemIotBefore24,
    CeOemIot24AndBeyond,
    Tegra,
    PiDesktop,
    Ubuntu,
    Core,
    Core20,
    UbuntuCpc,
    Unknown,
}

impl ImageType {
    pub fn name(self) -> &'static str {
        match self {
            ImageType::CeOemIotBefore24 => "ce-oem-iot-before-24",
            ImageType::CeOemIot24AndBeyond => "ce-oem-iot-24-and-beyond",
            ImageType::Tegra => "tegra",
            ImageType::PiDesktop => "pi-desktop",
            ImageType::Ubuntu => "ubuntu",
            ImageType::Core => "core",
            ImageType::Core20 => "core20",
            ImageType::UbuntuCpc => "ubuntu-cpc",
            ImageType::Unknown => "unknown",
        }
    }
}

/// Probes the partitions mounted under `root`, in the reference's order.
pub fn detect(control: &MuxHost, root: &str) -> ImageType {
    let iot = control.probe(&format!(
        "grep -oP \"iot-[a-z]+-[a-z-]*(classic-(server|desktop)-\\K[0-9]+|core-\\K[0-9]+)\" {root}/writable/.disk/info"
    ));
    if let Some(release) = iot.and_then(|o| o.text.trim().parse::<u32>().ok()) {
        // A year-and-month release (2404) or a major version (24).
        let from_24 = if release > 2000 {
            release >= 2404
        } else {
            release >= 24
        };
        return if from_24 {
            ImageType::CeOemIot24AndBeyond
        } else {
            ImageType::CeOemIotBefore24
        };
    }
    if control
        .probe(&format!(
            "ls {root}/writable/lib/firmware/*-tegra* &>/dev/null"
        ))
        .is_some()
    {
        return ImageType::Tegra;
    }
    let markers = [
        ("writable/usr/bin/firefox", ImageType::PiDesktop),
        ("writable/etc", ImageType::Ubuntu),
        ("writable/system-data", ImageType::Core),
        ("ubuntu-seed/snaps", ImageType::Core20),
        ("cloudimg-rootfs/etc/cloud/cloud.cfg", ImageType::UbuntuCpc),
    ];
    for (path, kind) in markers {
        if control.probe(&format!("test -e {root}/{path}")).is_some() {
            return kind;
        }
    }
    ImageType::Unknown
}

const CLASSIC_META_DATA: &str = "instance_id: cloud-image\n";
const CLASSIC_USER_DATA: &str = "#cloud-config
password: ubuntu
chpasswd:
  expire: false
ssh_pwauth: true
";
const IOT_USER_DATA: &str = "#cloud-config
users:
  - name: ubuntu
    uid: 1000
    shell: /bin/bash
    groups: [adm, dialout, cdrom, floppy, sudo, audio, dip, video, plugdev, lxd, netdev, render]
    lock_passwd: false
    plain_text_passwd: ubuntu
ssh_pwauth: true
";
const UC20_NOCLOUD: &str = "datasource_list: [NoCloud, None]
datasource:
  NoCloud:
    user-data: |
      #cloud-config
      users:
        - name: ubuntu
          sudo: \"ALL=(ALL) NOPASSWD:ALL\"
          lock_passwd: false
          plain_text_passwd: ubuntu
      ssh_pwauth: true
";
const DESKTOP_USER_DATA: &str = "#cloud-config
users:
  - name: ubuntu
    shell: /bin/bash
    sudo: \"ALL=(ALL) NOPASSWD:ALL\"
    lock_passwd: false
    plain_text_passwd: ubuntu
packages: [openssh-server]
ssh_pwauth: true
write_files:
  - path: /etc/gdm3/custom.conf
    content: |
      [daemon]
      AutomaticLoginEnable=true
      AutomaticLogin=ubuntu
";
const OEM_CONFIG_SERVICE: &str = "[Unit]
Description=Automatic first-boot configuration for testing
After=network.target

[Service]
Type=oneshot
ExecStart=/usr/sbin/oem-config-firstboot --automatic

[Install]
WantedBy=oem-config.target
";
const PRESEED: &str = "d-i passwd/user-fullname string ubuntu
d-i passwd/username string ubuntu
d-i passwd/user-password password ubuntu
d-i passwd/user-password-again password ubuntu
d-i passwd/auto-login boolean true
d-i pkgsel/include string openssh-server
";

/// Puts a file with `content` on the control host as `<tmp>/<name>`, then copies it with
/// sudo to `destination` (inside the mounted image).
struct Installer<'a> {
    control: &'a MuxHost<'a>,
    local: tempfile::TempDir,
    remote_tmp: String,
}

impl Installer<'_> {
    fn run(&self, command: &str) -> Result<(), Failure> {
        self.control.run(command, Duration::from_secs(60)).map(drop)
    }

    fn install(&self, name: &str, content: &str, destination: &str) -> Result<(), Failure> {
        let local = self.local.path().join(name);
        std::fs::write(&local, content)
            .map_err(|e| Failure::Provisioning(format!("cannot write {name}: {e}")))?;
        self.control
            .copy(&local, &format!("{}/{name}", self.remote_tmp))?;
        self.run(&format!("sudo cp {}/{name} {destination}", self.remote_tmp))
    }
}

pub fn create(control: &MuxHost, kind: ImageType, agent: &str) -> Result<(), Failure> {
    let root = format!("/mnt/{agent}");
    let installer = Installer {
        control,
        local: tempfile::tempdir().map_err(|e| Failure::Provisioning(e.to_string()))?,
        remote_tmp: format!("/tmp/{agent}"),
    };
    installer.run(&format!("mkdir -p {}", installer.remote_tmp))?;
    let sudoers = || {
        installer.run(&format!(
            "sudo bash -c \"echo 'ubuntu ALL=(ALL) NOPASSWD:ALL' > {root}/writable/etc/sudoers.d/ubuntu\""
        ))
    };
    match kind {
        ImageType::CeOemIotBefore24 | ImageType::CeOemIot24AndBeyond => {
            let destination = if kind == ImageType::CeOemIotBefore24 {
                format!("{root}/system-boot/")
            } else {
                format!("{root}/writable/var/lib/cloud/seed/nocloud")
            };
            installer.install("user-data", IOT_USER_DATA, &destination)?;
            sudoers()?;
            classic(&installer, &format!("{root}/writable"), false)
        }
        ImageType::Tegra => {
            let base = format!("{root}/writable");
            let seed = format!("{base}/var/lib/cloud/seed/nocloud");
            installer.run(&format!("sudo mkdir -p {seed}"))?;
            installer.install("user-data", CLASSIC_USER_DATA, &seed)?;
            installer.run(&format!(
                "sudo sed -i 's/timeout=[0-9]*/timeout=0/g' {base}/boot/grub/grub.cfg"
            ))?;
            installer.run(&format!(
                "grep -rl 'GRUB_TIMEOUT=' {base}/etc/default/ | xargs sudo sed -i 's/GRUB_TIMEOUT=[0-9]*/GRUB_TIMEOUT=0/g'"
            ))?;
            sudoers()
        }
        ImageType::PiDesktop => {
            let base = format!("{root}/writable");
            let version = control
                .probe(&format!(
                    "grep '^VERSION_ID=' {base}/etc/os-release | cut -d= -f2 | tr -d '\"'"
                ))
                .map(|o| o.text.trim().to_string())
                .unwrap_or_default();
            let major: u32 = version
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            if major >= 25 {
                let seed = format!("{base}/var/lib/cloud/seed/nocloud-net");
                installer.run(&format!("sudo mkdir -p {seed}"))?;
                installer.install("meta-data", CLASSIC_META_DATA, &seed)?;
                installer.install("user-data", DESKTOP_USER_DATA, &seed)?;
                installer.run(&format!(
                    "sudo rm -f {base}/etc/cloud/cloud.cfg.d/99-fake?cloud.cfg"
                ))?;
            } else {
                installer.install(
                    "oem-config.service",
                    OEM_CONFIG_SERVICE,
                    &format!("{base}/etc/systemd/system/oem-config.service"),
                )?;
                installer.install("preseed.cfg", PRESEED, &format!("{base}/preseed.cfg"))?;
            }
            installer.run(&format!(
                "sudo cp -a {base}/etc/systemd/system/multi-user.target.wants/NetworkManager.service {base}/etc/systemd/system/oem-config.target.wants"
            ))?;
            sudoers()
        }
        ImageType::Core20 => {
            let directory = format!("{root}/ubuntu-seed/data/etc/cloud/cloud.cfg.d");
            installer.run(&format!("sudo mkdir -p {directory}"))?;
            installer.install("99_nocloud.cfg", UC20_NOCLOUD, &directory)
        }
        ImageType::Ubuntu => classic(&installer, &format!("{root}/writable"), true),
        ImageType::Core => classic(&installer, &format!("{root}/writable/system-data"), false),
        ImageType::UbuntuCpc => classic(&installer, &format!("{root}/cloudimg-rootfs"), false),
        ImageType::Unknown => classic(&installer, &format!("{root}/writable"), false),
    }
}

/// cloud-init's NoCloud seed with the default user's password set.
fn classic(installer: &Installer, base: &str, drop_fake_cloud: bool) -> Result<(), Failure> {
    let seed = format!("{base}/var/lib/cloud/seed/nocloud-net");
    installer.run(&format!("sudo mkdir -p {seed}"))?;
    installer.install("meta-data", CLASSIC_META_DATA, &seed)?;
    installer.install("user-data", CLASSIC_USER_DATA, &seed)?;
    if drop_fake_cloud {
        installer.run(&format!(
            "sudo rm -f {base}/etc/cloud/cloud.cfg.d/99-fake?cloud.cfg"
        ))?;
    }
    Ok(())
}
