//! maas2 against a fake `maas` CLI that keeps the machine's state in a file.

use serde_json::json;

use crate::Bench;

const CONFIG: &str = "agent_name: node-1\nmaas_user: prof\nnode_id: abc123\ndevice_ip: 10.0.0.5\n";

fn run(bench: &Bench, stage: &str) -> crate::Ran {
    bench.run_with(
        &["maas2", stage, "-c", "default.yaml", "testflinger.json"],
        &[("TF_CONNECTOR_NO_WAIT", "1")],
    )
}

fn job() -> serde_json::Value {
    json!({"provision_data": {
        "distro": "noble", "kernel": "hwe-24.04", "user_data": "#cloud-config\n", "ephemeral": true,
    }})
}

#[test]
fn maas2_releases_allocates_deploys_and_checks_the_device() {
    let bench = Bench::new(CONFIG, &job());
    std::fs::write(bench.state.path().join("device-up"), "").unwrap();
    let ran = run(&bench, "provision");
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let calls: Vec<String> = bench.calls();
    let expected = [
        "maas prof block-devices read abc123",
        "maas prof machine release abc123",
        "maas prof machine read abc123",
        "maas prof machine read abc123",
        "maas prof machine set-storage-layout abc123 storage_layout=flat",
        "maas prof machines allocate system_id=abc123",
        "maas prof node-script-results read abc123 type=installation",
        "maas prof version read",
        "maas prof machine deploy abc123 distro_series=noble hwe_kernel=hwe-24.04 user_data=I2Nsb3VkLWNvbmZpZwo= ephemeral_deploy=true",
        "maas prof machine read abc123",
        "maas prof machine read abc123",
        "ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes -- ubuntu@10.0.0.5 /bin/true",
    ];
    assert_eq!(calls, expected);
    assert!(ran.stderr.contains("MAAS: Deployed and booted."));

    let cleanup = run(&bench, "cleanup");
    assert_eq!(cleanup.code, 0, "{}", cleanup.stderr);
    assert!(bench
        .calls()
        .iter()
        .any(|c| c == "maas prof machine release abc123"));
}

#[test]
fn maas2_reports_failed_deployments_and_wrong_addresses() {
    let failed = Bench::new(CONFIG, &job());
    std::fs::write(failed.state.path().join("maas-deploy-fails"), "").unwrap();
    let ran = run(&failed, "provision");
    assert_eq!(ran.code, 1);
    assert!(
        ran.stderr
            .contains("curtin: installation log of deployment 7"),
        "{}",
        ran.stderr
    );
    let record = failed.json("device-connector-error.json");
    assert_eq!(
        record["provision_exception_info"]["exception_message"],
        json!(
            "Provisioning failed because MAAS got unexpected or deployment failure status signal."
        )
    );

    let elsewhere = Bench::new(CONFIG, &job());
    std::fs::write(elsewhere.state.path().join("maas-ip"), "10.9.9.9").unwrap();
    let ran = run(&elsewhere, "provision");
    assert_eq!(ran.code, 1);
    assert!(ran.stderr.contains("Expected device ip 10.0.0.5 was not any of the addresses known to maas: [\"10.9.9.9\"]"), "{}", ran.stderr);
}

#[test]
fn a_machine_that_will_not_release_is_a_recovery_failure() {
    let bench = Bench::new(CONFIG, &job());
    std::fs::write(bench.state.path().join("maas-stuck"), "").unwrap();
    let ran = run(&bench, "cleanup");
    assert_eq!(ran.code, 46, "{}", ran.stderr);
    let calls = bench.calls();
    for step in ["mark-broken", "mark-fixed", "power-off"] {
        assert!(calls.iter().any(|c| c.contains(step)), "{step}: {calls:#?}");
    }
    assert!(ran.stderr.contains("could not recover!"));
    let missing = Bench::new("agent_name: x\n", &job());
    let ran = run(&missing, "provision");
    assert_eq!(ran.code, 1);
    assert!(
        ran.stderr.contains("the device config has no `maas_user`"),
        "{}",
        ran.stderr
    );
}

#[test]
fn a_missing_maas_cli_is_named() {
    let bench = Bench::new(CONFIG, &job());
    // Only the tests' fakes and the basic system tools: no `maas` at all.
    let fakes = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes");
    let bare = tempfile::tempdir().unwrap();
    for tool in ["ssh", "sudo"] {
        std::os::unix::fs::symlink(fakes.join(tool), bare.path().join(tool)).unwrap();
    }
    let ran = bench.run_with_path(
        &[
            "maas2",
            "provision",
            "-c",
            "default.yaml",
            "testflinger.json",
        ],
        &format!("{}:/usr/bin:/bin", bare.path().display()),
    );
    assert_eq!(ran.code, 1);
    assert!(
        ran.stderr.contains("maas is not installed"),
        "{}",
        ran.stderr
    );
}

#[test]
fn a_jobs_disk_layout_is_cleared_and_applied() {
    let layout = json!([
        {"id": "disk0", "type": "disk", "name": "root"},
        {"id": "efi", "type": "partition", "device": "disk0", "number": 1, "size": "500M"},
        {"id": "rootfs", "type": "partition", "device": "disk0", "number": 2, "size": "20G"},
        {"id": "efi-fs", "type": "format", "volume": "efi", "fstype": "fat32", "label": "efi"},
        {"id": "root-fs", "type": "format", "volume": "rootfs", "fstype": "ext4", "label": "root"},
        {"id": "efi-mount", "type": "mount", "device": "efi-fs", "path": "/boot/efi"},
        {"id": "root-mount", "type": "mount", "device": "root-fs", "path": "/"},
    ]);
    let mut job = job();
    job["provision_data"]["disks"] = layout;
    let bench = Bench::new(CONFIG, &job);
    std::fs::write(bench.state.path().join("device-up"), "").unwrap();
    let devices = json!([
        {"id": 1, "type": "physical", "size": 16_000_000_000u64, "partitions": [{"id": 10}],
         "filesystem": {"mount_point": "/"}},
        {"id": 2, "type": "physical", "size": 64_000_000_000u64, "partitions": []},
        {"id": 3, "type": "virtual", "size": 1, "partitions": [{"id": 30}]},
    ]);
    std::fs::write(
        bench.state.path().join("maas-blockdevices.json"),
        devices.to_string(),
    )
    .unwrap();
    let ran = run(&bench, "provision");
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let storage: Vec<String> = bench
        .calls()
        .into_iter()
        .filter(|c| c.contains("partition") || c.contains("block-device "))
        .collect();
    assert_eq!(
        storage,
        [
            "maas prof partition delete abc123 1 10",
            "maas prof block-device unmount abc123 1",
            "maas prof block-device unformat abc123 1",
            "maas prof block-device set-boot-disk abc123 2",
            "maas prof block-device update abc123 2 name=root",
            "maas prof partitions create abc123 2 size=500000000",
            "maas prof partitions create abc123 2 size=20000000000",
            "maas prof partition format abc123 2 101 fstype=fat32 label=efi",
            "maas prof partition format abc123 2 102 fstype=ext4 label=root",
            "maas prof partition mount abc123 2 101 mount_point=/boot/efi",
            "maas prof partition mount abc123 2 102 mount_point=/",
        ]
    );

    let mut too_big = job.clone();
    too_big["provision_data"]["disks"][2]["size"] = json!("100G");
    let small = Bench::new(CONFIG, &too_big);
    std::fs::write(
        small.state.path().join("maas-blockdevices.json"),
        devices.to_string(),
    )
    .unwrap();
    let ran = run(&small, "provision");
    assert_eq!(ran.code, 1);
    assert!(
        ran.stderr.contains(
            "No suitable block-device found for partition disk0 with size 100500000000 bytes"
        ),
        "{}",
        ran.stderr
    );
}

#[test]
fn efi_reset_puts_network_boot_first_and_the_tpm_is_cleared() {
    let config = format!("{CONFIG}reset_efi: true\nclear_tpm: true\n");
    let bench = Bench::new(&config, &job());
    std::fs::write(bench.state.path().join("device-up"), "").unwrap();
    std::fs::create_dir_all(bench.state.path().join("dut/sys/class/tpm/tpm0/ppi")).unwrap();
    std::fs::write(
        bench.state.path().join("efibootmgr.txt"),
        "BootCurrent: 0000\nBootOrder: 0000,0001,0002\nBoot0000* ubuntu\tHD(1,GPT)\nBoot0001* UEFI: PXE IPv4 Intel\nBoot0002* UEFI: PXE IPv4 Mellanox\n",
    )
    .unwrap();
    let ran = run(&bench, "provision");
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let calls = bench.calls();
    let reorders = calls
        .iter()
        .filter(|c| *c == "efibootmgr -o 0001,0002,0000")
        .count();
    assert_eq!(
        reorders, 2,
        "before provisioning and before the release: {calls:#?}"
    );
    let tpm = std::fs::read_to_string(
        bench
            .state
            .path()
            .join("dut/sys/class/tpm/tpm0/ppi/request"),
    )
    .unwrap();
    assert_eq!(tpm.trim(), "5");
    assert!(ran
        .stderr
        .contains("MAAS: Setting boot order to 0001,0002,0000"));
}
