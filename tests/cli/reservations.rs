//! Reservations as the user sees them: `poll`, `submit --poll` and `reserve` say a device
//! is reserved only when the reserve phase really reserved it, and name the command the
//! user typed. The agent runs the built-in connectors, with the fakes for ssh-import-id
//! and ssh-copy-id.

use std::path::Path;

use serde_json::json;

use tf_test_support::agent::{wait_for_agent_state, wait_for_state, Agent};
use tf_test_support::server::Server;

use crate::client::{printed_job_id, Client};

/// An agent on queue `q` whose phases run `tf device-connector fake_connector` for a
/// device at 10.0.0.7; its cleanup takes a moment, during which the job's state is
/// still the last one the agent reported (`reserve`, for every job).
struct Lab {
    server: Server,
    client: Client,
    _agent: Agent,
    _device: tempfile::TempDir,
}

impl Lab {
    fn start() -> Lab {
        let server = Server::start();
        let device = tempfile::tempdir().expect("temp dir");
        let config = device.path().join("default.yaml");
        std::fs::write(&config, "agent_name: agent-1\ndevice_ip: 10.0.0.7\n").expect("config");
        let fakes = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes");
        let connector = format!(
            "PATH={}:$PATH FAKE_STATE={} {} device-connector fake_connector",
            fakes.display(),
            device.path().display(),
            env!("CARGO_BIN_EXE_tf")
        );
        let stage = |stage: &str| {
            format!(
                "{connector} {stage} -c {} testflinger.json",
                config.display()
            )
        };
        let settings = format!(
            "provision_command: {}\ntest_command: {}\nreserve_command: {}\ncleanup_command: echo cleaning; sleep 2\n",
            stage("provision"),
            stage("runtest"),
            stage("reserve"),
        );
        let agent = Agent::start(&server, &settings);
        wait_for_agent_state(&server, "waiting");
        let client = Client::new(&server);
        Lab {
            server,
            client,
            _agent: agent,
            _device: device,
        }
    }
}

/// `reserve` on queue `q` for `key`, without questions, for ten minutes (cut short by
/// the tests).
fn reserve_args(key: &str) -> [&str; 10] {
    [
        "reserve",
        "-q",
        "q",
        "--distro",
        "noble",
        "-k",
        key,
        "-y",
        "--timeout",
        "600",
    ]
}

#[test]
fn an_ordinary_job_is_never_said_to_be_reserved() {
    let lab = Lab::start();
    let job_id = lab.client.submit(
        "job_queue: q\nprovision_data: {distro: noble}\ntest_data: {test_cmds: echo tested}\n",
    );
    let poll = lab.client.start(None, &["poll", &job_id]).finish();
    assert_eq!(poll.code, 0, "{poll:?}");
    assert!(poll.stdout.contains("tested"), "{}", poll.stdout);
    assert!(!poll.stdout.contains("reserved"), "{}", poll.stdout);
    // The device's address was known, and the job went through the `reserve` state.
    let result = lab.server.get(&format!("/v1/result/{job_id}")).json();
    assert_eq!(result["device_info"]["device_ip"], json!("10.0.0.7"));
    assert!(
        poll.stdout.contains("State 'reserve' lasted"),
        "{}",
        poll.stdout
    );
}

#[test]
fn the_status_line_of_an_ordinary_job_never_counts_down_a_reservation() {
    let lab = Lab::start();
    let job_id = lab.client.submit(
        "job_queue: q
test_data: {test_cmds: echo tested}
",
    );
    // On a terminal, the last line shows what is happening; the job's cleanup (2 s) runs
    // while its state is still `reserve`.
    let seen = lab.client.run_on_terminal(&["poll", &job_id], &[]);
    assert!(seen.contains("[reserve]"), "{seen}");
    assert!(!seen.contains("Reserved"), "{seen}");
}

#[test]
fn a_reservation_says_how_to_ssh_in_with_the_command_the_user_typed() {
    let lab = Lab::start();
    let mut reserve = lab
        .client
        .start(Some("testflinger-cli"), &reserve_args("lp:me"));
    reserve.wait_for_output("The device is reserved");
    let job_id = printed_job_id(&reserve.seen);
    reserve.wait_for_output(&format!(
        "The device is reserved: ssh ubuntu@10.0.0.7 (to end the reservation early: testflinger-cli cancel {job_id})"
    ));
    // Another terminal, with `tf`, follows the same reservation.
    let mut poll = lab.client.start(None, &["poll", &job_id]);
    poll.wait_for_output(&format!(
        "The device is reserved: ssh ubuntu@10.0.0.7 (to end the reservation early: tf cancel {job_id})"
    ));
    assert_eq!(lab.client.run(&["cancel", &job_id]).code, 0);
    let reserve = reserve.finish();
    assert_eq!(reserve.code, 0, "{reserve:?}");
    assert!(reserve
        .stdout
        .contains("*** TESTFLINGER SYSTEM RESERVED ***"));
    assert_eq!(poll.finish().code, 0);
}

#[test]
fn a_reservation_that_failed_is_not_claimed() {
    let lab = Lab::start();
    let reserve = lab.client.start(None, &reserve_args("lp:missing")).finish();
    assert_eq!(reserve.code, 1, "{reserve:?}");
    assert!(
        reserve
            .stdout
            .contains("the device was not reserved: ssh key lp:missing: user not found"),
        "{}",
        reserve.stdout
    );
    assert!(!reserve.stdout.contains("RESERVED"), "{}", reserve.stdout);
    assert!(
        !reserve.stdout.contains("is reserved"),
        "{}",
        reserve.stdout
    );
    assert_eq!(
        reserve.stderr,
        "The device was not reserved: job outcome: failed: reserve exited with 1\n"
    );
    let job_id = printed_job_id(&reserve.stdout);
    let result = wait_for_state(&lab.server, &job_id, &["complete"]);
    assert_eq!(result["reserve_status"], json!(1), "{result}");
}
