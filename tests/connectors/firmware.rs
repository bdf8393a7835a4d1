//! firmware_update through LVFS on a fake device: the fake ssh runs the device's commands
//! against a fake /sys, and a fake fwupdmgr lists, upgrades and reports.

use serde_json::json;

use crate::Bench;

const CONFIG: &str = "agent_name: desk-1\ndevice_ip: 10.0.0.8\n";

fn device(vendor: &str, chassis: &str, data: serde_json::Value) -> Bench {
    let bench = Bench::new(CONFIG, &json!({"firmware_update_data": data}));
    let dmi = bench.state.path().join("dut/sys/class/dmi/id");
    std::fs::create_dir_all(&dmi).unwrap();
    std::fs::write(dmi.join("chassis_vendor"), vendor).unwrap();
    std::fs::write(dmi.join("chassis_type"), chassis).unwrap();
    std::fs::write(bench.state.path().join("device-up"), "").unwrap();
    let devices = json!({"Devices": [
        {"Name": "System Firmware", "DeviceId": "abc", "Version": "1.0", "Flags": ["updatable"],
         "Releases": [{"Version": "1.2", "Flags": ["is-upgrade"]}]},
        {"Name": "Disk", "DeviceId": "d2", "Version": "3", "Flags": []},
    ]});
    std::fs::write(
        bench.state.path().join("fwupd-devices.json"),
        devices.to_string(),
    )
    .unwrap();
    std::fs::write(bench.state.path().join("fwupd-target"), "1.2").unwrap();
    bench
}

#[test]
fn lvfs_devices_are_upgraded_rebooted_and_checked() {
    let bench = device("Dell Inc.", "3", json!({"version": "latest"}));
    let ran = bench.update_firmware();
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let calls = bench.calls();
    let at = |wanted: &str| {
        calls
            .iter()
            .position(|c| c == wanted)
            .unwrap_or_else(|| panic!("{wanted}: {calls:#?}"))
    };
    assert!(at("fwupdmgr upgrade abc -y --no-reboot-check") < at("reboot "));
    assert!(at("reboot ") < at("fwupdmgr get-results abc --json"));
    assert!(
        !calls.iter().any(|c| c.contains("upgrade d2")),
        "not an updatable component"
    );
    assert!(ran.stderr.contains("10.0.0.8 is a Dell Inc. LVFSDevice"));
}

#[test]
fn firmware_failures_fail_the_stage_unless_ignored() {
    let failing = device("LENOVO", "13", json!({"version": "latest"}));
    std::fs::write(failing.state.path().join("fwupd-fails"), "").unwrap();
    let ran = failing.update_firmware();
    assert_eq!(ran.code, 1);
    assert!(
        ran.stderr
            .contains("Firmware Update failed: The firmware version did not update successfully"),
        "{}",
        ran.stderr
    );

    let ignored = device(
        "LENOVO",
        "13",
        json!({"version": "latest", "ignore_failure": true}),
    );
    std::fs::write(ignored.state.path().join("fwupd-fails"), "").unwrap();
    assert_eq!(ignored.update_firmware().code, 0);

    let laptop = device("HP", "9", json!({"version": "latest"}));
    let ran = laptop.update_firmware();
    assert_eq!(ran.code, 1);
    assert!(
        ran.stderr.contains(
            "DMI chassis_vendor: HP chassis_type: unknown is not in current support scope"
        ),
        "{}",
        ran.stderr
    );

    let pinned = device("HP", "3", json!({"version": "1.1"}));
    let ran = pinned.update_firmware();
    assert!(
        ran.stderr.contains("Current supported version: ['latest']"),
        "{}",
        ran.stderr
    );

    let unreachable = device("HP", "3", json!({"version": "latest"}));
    std::fs::remove_file(unreachable.state.path().join("device-up")).unwrap();
    let ran = unreachable.update_firmware();
    assert!(
        ran.stderr.contains("Failed to SSH to 10.0.0.8 after 60s"),
        "{}",
        ran.stderr
    );
}
