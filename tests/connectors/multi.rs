//! multi against the real `tf serve`: the test plays the children's agents.

use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::Bench;
use tf_test_support::server::Server;
use tf_test_support::wait::wait_for;

fn parent_job(server: &Server, jobs: Value) -> (Bench, String) {
    let parent = server.submit(&json!({"job_queue": "parents"}));
    let config = format!(
        "agent_name: multi-1\ntestflinger_server: http://{}\n",
        server.address
    );
    let job = json!({
        "job_id": parent,
        "provision_data": {"jobs": jobs},
        "test_data": {"test_cmds": "echo devices $DEVICE_IP_1 $DEVICE_IP_2"},
    });
    (Bench::new(&config, &job), parent)
}

/// Starts `tf device-connector multi provision` in the background.
fn start_provision(bench: &Bench) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_tf"))
        .args([
            "device-connector",
            "multi",
            "provision",
            "-c",
            "default.yaml",
            "testflinger.json",
        ])
        .current_dir(bench.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Takes the next child job from the queue, as its agent would.
fn take_child(server: &Server, agent: &str) -> String {
    wait_for("a child job", || server.claim(agent, "child"))["job_id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn children() -> Value {
    json!([{"job_queue": "child", "test_data": {"test_cmds": "x"}}, {"job_queue": "child"}])
}

#[test]
fn multi_allocates_every_child_then_tests_with_their_addresses() {
    let server = Server::start();
    let (bench, parent) = parent_job(&server, children());
    let connector = start_provision(&bench);
    for (agent, ip) in [("child-1", "10.1.0.1"), ("child-2", "10.1.0.2")] {
        let child = take_child(&server, agent);
        let definition = server.get(&format!("/v1/job/{child}")).json();
        assert_eq!(definition["parent_job_id"], json!(parent));
        assert_eq!(definition["allocate_data"], json!({"allocate": true}));
        let report = json!({"job_state": "allocated", "device_info": {"device_ip": ip}});
        server
            .agent()
            .post_json(&format!("/v1/result/{child}"), &report);
    }
    let output = connector.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let list = bench.json("job_list.json");
    assert_eq!(list[0]["device_info"]["device_ip"], json!("10.1.0.1"));
    assert_eq!(list[1]["device_info"]["device_ip"], json!("10.1.0.2"));

    let test = bench.run("multi", "runtest");
    assert_eq!(
        (test.code, test.stdout.as_str()),
        (0, "devices 10.1.0.1 10.1.0.2\n"),
        "{}",
        test.stderr
    );
    assert_eq!(bench.run("multi", "cleanup").code, 0);
    for entry in list.as_array().unwrap() {
        let id = entry["job_id"].as_str().unwrap();
        let state = server.get(&format!("/v1/result/{id}")).json();
        assert_eq!(
            state["job_state"],
            json!("cancelled"),
            "the child's device is released"
        );
    }
}

#[test]
fn a_child_that_ends_before_allocating_cancels_the_others() {
    let server = Server::start();
    let (bench, _) = parent_job(&server, children());
    let connector = start_provision(&bench);
    let first = take_child(&server, "child-1");
    server.agent().post_json(
        &format!("/v1/result/{first}"),
        &json!({"job_state": "complete"}),
    );
    let output = connector.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("failed to allocate, cancelling remaining jobs"));
    let record = bench.json("device-connector-error.json");
    assert_eq!(
        record["provision_exception_info"]["exception_message"],
        json!("Unable to allocate all devices")
    );
    // The other child was cancelled before any agent took it.
    assert!(server.claim("child-2", "child").is_none());

    let (empty, _) = parent_job(&server, json!([]));
    let ran = empty.run("multi", "provision");
    assert_eq!(ran.code, 1);
    assert!(ran.stderr.contains("You must specify a list of 'jobs'"));
}
