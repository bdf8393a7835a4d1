//! The stages: the shared ones (runtest, reserve, allocate) and the fake and
//! noprovision devices, and the connector contract around them.

use serde_json::json;

use crate::Bench;
use tf_test_support::agent::{wait_for_state, Agent};
use tf_test_support::server::Server;

const CONFIG: &str = "agent_name: rpi-7\ndevice_ip: 10.0.0.7\nenv:\n  DEVICE_IP: 10.0.0.7\n  EMPTY: ''\nreboot_script: [pdu-power-cycle outlet 7]\n";

#[test]
fn every_stage_writes_device_info_and_fake_provision_shows_the_data() {
    let bench = Bench::new(
        CONFIG,
        &json!({"provision_data": {"url": "http://images/x.img"}}),
    );
    let ran = bench.run("fake_connector", "provision");
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let stars = "*".repeat(40);
    assert_eq!(
        ran.stdout,
        format!("{stars}\nThis is a fake device connector!\nNo provisioning will actually happen, but here are the values from the provision_data:\n{{\n    \"url\": \"http://images/x.img\"\n}}\n{stars}\n")
    );
    assert!(
        ran.stderr
            .contains(" rpi-7 INFO: DEVICE CONNECTOR: Running pre-provision hook"),
        "{}",
        ran.stderr
    );
    assert_eq!(
        bench.json("device-info.json"),
        json!({"device_info": {"device_ip": "10.0.0.7", "agent_name": "rpi-7"}})
    );
    // Allocate only publishes the device (the reference crashes here).
    std::fs::remove_file(bench.path("device-info.json")).unwrap();
    assert_eq!(bench.run("fake_connector", "allocate").code, 0);
    assert!(bench.path("device-info.json").exists());
}

#[test]
fn runtest_runs_the_commands_in_the_device_environment() {
    let job = json!({"test_data": {
        "test_cmds": ["false", "echo \"$DEVICE_IP $AGENT_NAME ${EMPTY-unset} $TOKEN\"", "echo {{device_ip}}"],
        "secrets": {"TOKEN": "s3cret"},
    }});
    let bench = Bench::new(CONFIG, &job);
    let ran = bench.run("fake_connector", "runtest");
    // Only the last command's status counts; an empty value is dropped from the env.
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(ran.stdout, "10.0.0.7 rpi-7 unset s3cret\n{device_ip}\n");
    assert!(ran
        .stderr
        .contains("WARNING: DEVICE CONNECTOR: Command failed, rc=1"));

    let script = Bench::new(
        CONFIG,
        &json!({"test_data": {"test_cmds": "echo from bash $BASH_VERSION | cut -c1-9\nexit 4"}}),
    );
    let ran = script.run("noprovision", "runtest");
    assert_eq!(
        (ran.code, ran.stdout.as_str()),
        (4, "from bash\n"),
        "{}",
        ran.stderr
    );
    assert!(script.path("tf_cmd_script").exists());
}

#[test]
fn failures_are_recorded_for_the_agent() {
    let bench = Bench::new(CONFIG, &json!({}));
    let ran = bench.run("fake_connector", "runtest");
    assert_eq!(ran.code, 1);
    assert_eq!(
        bench.json("device-connector-error.json"),
        json!({"runtest_exception_info": {"exception_name": "ProvisioningError", "exception_message": "the job has no test_data", "exception_cause": null}})
    );
    // Usage errors exit 2; a missing config is one line.
    assert_eq!(bench.run("fake_connector", "test").code, 2);
    let missing = bench.run_with(
        &[
            "fake_connector",
            "runtest",
            "-c",
            "nope.yaml",
            "testflinger.json",
        ],
        &[],
    );
    assert_eq!(missing.code, 1);
    assert!(
        missing
            .stderr
            .starts_with("cannot read the device config nope.yaml"),
        "{}",
        missing.stderr
    );
    let unbuilt = bench.run("cm3", "provision");
    assert_eq!(unbuilt.code, 1);
    assert!(unbuilt
        .stderr
        .contains("the cm3 connector is not built into tf yet"));
}

#[test]
fn reserve_imports_the_keys_and_prints_the_banner_tools_grep_for() {
    let job =
        json!({"job_id": "j-1", "reserve_data": {"ssh_keys": ["lp:me", "gh:me"], "timeout": 1}});
    let bench = Bench::new(CONFIG, &job);
    let ran = bench.run("fake_connector", "reserve");
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(lines[0], "*** TESTFLINGER SYSTEM RESERVED ***");
    assert_eq!(lines[1], "You can now connect to ubuntu@10.0.0.7");
    assert!(lines[2].starts_with("Current time:           ["));
    assert_eq!(
        lines[4],
        "Reservation will automatically timeout in 1 seconds"
    );
    assert_eq!(
        lines[5],
        "To end the reservation sooner use: testflinger-cli cancel j-1"
    );
    // Every key is fetched first, then all of them go to the device at once.
    assert_eq!(
        bench.calls(),
        [
            "ssh-import-id -o key.pub lp:me",
            "ssh-import-id -o key.pub gh:me",
            "ssh-copy-id -f -i key.pub -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null ubuntu@10.0.0.7",
        ]
    );
    assert_eq!(
        std::fs::read_to_string(bench.path("key.pub")).unwrap(),
        "ssh-ed25519 AAAAfake lp:me\nssh-ed25519 AAAAfake gh:me\n"
    );
}

#[test]
fn reserve_fails_without_holding_the_device_when_a_key_cannot_be_imported() {
    // An hour's reservation: a stage that held the device would fail the bench's guard.
    let job = json!({"job_id": "j-1", "reserve_data": {"ssh_keys": ["lp:me", "lp:missing"], "timeout": 3600}});
    let unknown_user = Bench::new(CONFIG, &job);
    let ran = unknown_user.run("fake_connector", "reserve");
    assert_eq!(ran.code, 1, "{}", ran.stderr);
    assert!(!ran.stdout.contains("RESERVED"), "{}", ran.stdout);
    assert!(
        ran.stderr
            .contains("ERROR: DEVICE CONNECTOR: the device was not reserved: ssh key lp:missing: user not found"),
        "{}",
        ran.stderr
    );
    // Nothing reached the device.
    assert!(
        unknown_user
            .calls()
            .iter()
            .all(|c| !c.starts_with("ssh-copy-id")),
        "{:?}",
        unknown_user.calls()
    );
    let record = unknown_user.json("device-connector-error.json");
    assert_eq!(
        record["reserve_exception_info"]["exception_message"],
        json!("the device was not reserved: ssh key lp:missing: user not found")
    );

    // Without ssh-import-id on PATH.
    let no_tool = Bench::new(CONFIG, &job);
    let ran = no_tool.run_with_path(
        &[
            "fake_connector",
            "reserve",
            "-c",
            "default.yaml",
            "testflinger.json",
        ],
        no_tool.state.path().to_str().unwrap(),
    );
    assert_eq!(ran.code, 1, "{}", ran.stderr);
    assert!(!ran.stdout.contains("RESERVED"), "{}", ran.stdout);
    assert!(
        ran.stderr.contains(
            "the device was not reserved: ssh key lp:me: ssh-import-id is not installed; ssh key lp:missing: ssh-import-id is not installed"
        ),
        "{}",
        ran.stderr
    );
}

#[test]
fn reserve_fails_when_the_keys_cannot_be_copied_to_the_device() {
    let job = json!({"reserve_data": {"ssh_keys": ["lp:me"], "timeout": 3600}});
    let bench = Bench::new(CONFIG, &job);
    std::fs::write(bench.state.path().join("device-down"), "").unwrap();
    let ran = bench.run_with(
        &[
            "fake_connector",
            "reserve",
            "-c",
            "default.yaml",
            "testflinger.json",
        ],
        &[("TF_CONNECTOR_NO_WAIT", "1")],
    );
    assert_eq!(ran.code, 1, "{}", ran.stderr);
    assert!(!ran.stdout.contains("RESERVED"), "{}", ran.stdout);
    assert!(
        ran.stderr.contains(
            "the device was not reserved: the ssh keys could not be copied to ubuntu@10.0.0.7"
        ),
        "{}",
        ran.stderr
    );
}

#[test]
fn noprovision_checks_the_device_and_power_cycles_it_when_needed() {
    let job = json!({"provision_data": {"skip": false}});
    let up = Bench::new(CONFIG, &job);
    std::fs::write(up.state.path().join("device-up"), "").unwrap();
    assert_eq!(up.run("noprovision", "provision").code, 0);
    assert_eq!(up.calls().len(), 1);
    assert!(up.calls()[0].ends_with("ubuntu@10.0.0.7 /bin/true"));

    let down = Bench::new(CONFIG, &job);
    let ran = down.run("noprovision", "provision");
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let calls = down.calls();
    assert!(calls[0].starts_with("ssh "));
    assert_eq!(calls[1], "pdu-power-cycle outlet 7");
    assert!(calls[2].starts_with("ssh "));

    let broken = Bench::new(CONFIG, &job);
    let ran = broken.run_with(
        &[
            "noprovision",
            "provision",
            "-c",
            "default.yaml",
            "testflinger.json",
        ],
        &[("FAKE_PDU_FAILS", "1")],
    );
    assert_eq!(ran.code, 1);
    let record = broken.json("device-connector-error.json");
    let message = record["provision_exception_info"]["exception_message"]
        .as_str()
        .unwrap();
    assert!(message.contains("PDU unreachable"), "{message}");
}

#[test]
fn a_test_username_that_reads_like_an_option_never_reaches_ssh() {
    let bench = Bench::new(
        CONFIG,
        &json!({"test_data": {"test_username": "-oProxyCommand=touch /tmp/owned"}}),
    );
    std::fs::write(bench.state.path().join("device-up"), "").unwrap();
    let ran = bench.run("noprovision", "provision");
    assert_eq!(ran.code, 1, "{}", ran.stderr);
    assert!(bench.calls().is_empty(), "{:?}", bench.calls());
    let record = bench.json("device-connector-error.json");
    assert!(record["provision_exception_info"]["exception_message"]
        .as_str()
        .unwrap()
        .contains("is not a valid login name"));
}

#[test]
fn an_agent_runs_a_job_through_the_built_in_connectors() {
    let server = Server::start();
    let device = tempfile::tempdir().unwrap();
    let config = device.path().join("default.yaml");
    std::fs::write(&config, "agent_name: agent-1\ndevice_ip: 127.0.0.1\n").unwrap();
    let tf = env!("CARGO_BIN_EXE_tf");
    let settings = format!(
        "provision_command: {tf} device-connector fake_connector provision -c {0} testflinger.json\ntest_command: {tf} device-connector fake_connector runtest -c {0} testflinger.json\n",
        config.display()
    );
    let _agent = Agent::start(&server, &settings);
    let job_id = server.submit(&json!({
        "job_queue": "q",
        "provision_data": {"distro": "noble"},
        "test_data": {"test_cmds": "echo ran on $AGENT_NAME"},
    }));
    let result = wait_for_state(&server, &job_id, &["complete"]);
    assert_eq!(result["provision_status"], json!(0), "{result}");
    assert!(result["provision_output"]
        .as_str()
        .unwrap()
        .contains("This is a fake device connector!"));
    assert!(
        result["test_output"]
            .as_str()
            .unwrap()
            .contains("ran on agent-1\n"),
        "{result}"
    );
    assert_eq!(result["device_info"]["device_ip"], json!("127.0.0.1"));
}
