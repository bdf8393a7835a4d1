//! The phase order, skip rules and failure rules, seen from the server.

use serde_json::{json, Value};

use crate::harness::Server;
use crate::runner::{run_job, wait_for, wait_for_state, Agent};

fn text(result: &Value, key: &str) -> String {
    result[key].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_job_runs_its_phases_in_order_and_ends_complete() {
    let server = Server::start();
    let settings = r#"
        provision_type: noprovision
        setup_command: echo "setup as $agent_id for $provision_type"
        provision_command: echo provisioning
        test_command: echo tested; mkdir -p artifacts/sub; echo kept > artifacts/sub/report.txt
        cleanup_command: echo cleaned
    "#;
    let job = json!({
        "job_queue": "q",
        "provision_data": {"distro": "noble"},
        "test_data": {"test_cmds": "unused"},
    });
    let (agent, job_id, result) = run_job(&server, settings, &job);

    let setup = text(&result, "setup_output");
    let title = "* Starting testflinger setup phase on agent-1 *";
    let stars = "*".repeat(title.len());
    assert!(
        setup.starts_with(&format!("{stars}\n{title}\n{stars}\n")),
        "{setup:?}"
    );
    assert!(
        setup.contains("setup as agent-1 for noprovision\n"),
        "{setup:?}"
    );
    assert!(text(&result, "provision_output").ends_with("provisioning\n"));
    assert!(text(&result, "test_output").ends_with("tested\n"));
    assert!(text(&result, "cleanup_output").ends_with("cleaned\n"));
    for phase in ["setup", "provision", "test", "cleanup"] {
        assert_eq!(result[format!("{phase}_status")], json!(0), "{result}");
    }
    for phase in ["firmware_update", "allocate", "reserve"] {
        assert!(result.get(format!("{phase}_status")).is_none(), "{result}");
    }

    // Fragment numbers run on across phases.
    let logs = server
        .get(&format!("/v1/result/{job_id}/log/output"))
        .json();
    let last = |phase: &str| {
        logs["output"][phase]["last_fragment_number"]
            .as_i64()
            .unwrap()
    };
    assert!(last("setup") < last("provision"), "{logs}");
    assert!(
        last("provision") < last("test") && last("test") < last("cleanup"),
        "{logs}"
    );

    // The artifacts archive is rooted at artifacts/.
    let archive = server.get(&format!("/v1/result/{job_id}/artifact"));
    assert_eq!(archive.status, 200);
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&archive.body[..]));
    let names: Vec<String> = tar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(
        names.contains(&"artifacts/sub/report.txt".to_string()),
        "{names:?}"
    );

    // The run directory goes once the server has everything; the agent is free again.
    wait_for("the run directory to go", || {
        (!agent.run_dir(&job_id).exists()).then_some(())
    });
    let data = server.get("/v1/agents/data/agent-1").json();
    assert_eq!(data["job_id"], json!(""), "{data}");
    assert_eq!(data["provision_streak_type"], json!("pass"), "{data}");
    wait_for("the agent to wait again", || {
        let data = server.get("/v1/agents/data/agent-1").json();
        (data["state"] == json!("waiting")).then_some(())
    });
}

#[test]
fn phases_without_data_or_asked_to_skip_do_not_run() {
    let server = Server::start();
    let settings = r#"
        provision_command: echo provisioning
        firmware_update_command: echo flashing
        test_command: echo tested
        cleanup_command: echo cleaned
    "#;
    // provision asks to be skipped, firmware_update has no data, test has data.
    let job = json!({
        "job_queue": "q",
        "provision_data": {"skip": true},
        "test_data": {"test_cmds": "x"},
    });
    let (_agent, _, result) = run_job(&server, settings, &job);
    assert!(result.get("provision_status").is_none(), "{result}");
    assert!(result.get("provision_output").is_none(), "{result}");
    assert!(result.get("firmware_update_status").is_none(), "{result}");
    assert_eq!(result["test_status"], json!(0));
    assert_eq!(result["cleanup_status"], json!(0));
    // A skipped provision still counts as a pass, as with the reference.
    let data = server.get("/v1/agents/data/agent-1").json();
    assert_eq!(data["provision_streak_type"], json!("pass"), "{data}");
}

#[test]
fn a_failed_phase_ends_the_job_but_cleanup_still_runs() {
    let server = Server::start();
    let settings = r#"
        provision_command: echo broken; exit 3
        test_command: echo tested
        cleanup_command: echo cleaned
    "#;
    let job = json!({"job_queue": "q", "provision_data": {"distro": "x"}, "test_data": {"test_cmds": "x"}});
    let (_agent, _, result) = run_job(&server, settings, &job);
    assert_eq!(result["provision_status"], json!(3));
    assert!(text(&result, "provision_output").ends_with("broken\n"));
    assert!(
        result.get("test_status").is_none(),
        "test must not run: {result}"
    );
    assert_eq!(result["cleanup_status"], json!(0));
    let data = server.get("/v1/agents/data/agent-1").json();
    assert_eq!(data["provision_streak_type"], json!("fail"), "{data}");
}

#[test]
fn a_failed_test_still_lets_reserve_run() {
    let server = Server::start();
    let settings = r#"
        test_command: echo failing; exit 1
        reserve_command: echo reserving
    "#;
    let job = json!({
        "job_queue": "q",
        "test_data": {"test_cmds": "x"},
        "reserve_data": {"ssh_keys": ["lp:someone"], "timeout": 60},
    });
    let (_agent, _, result) = run_job(&server, settings, &job);
    assert_eq!(result["test_status"], json!(1));
    assert_eq!(result["reserve_status"], json!(0));
    assert!(text(&result, "reserve_output").ends_with("reserving\n"));
}

#[test]
fn allocate_publishes_the_device_and_holds_it_until_the_parent_ends() {
    let server = Server::start();
    let settings = r#"
        allocate_command: >-
          echo '{"device_info": {"device_ip": "10.1.2.3", "agent_name": "agent-1"}}' > device-info.json
    "#;
    let parent = server.submit(&json!({"job_queue": "parents"}));
    let _agent = Agent::start(&server, settings);
    let child = server.submit(&json!({
        "job_queue": "q",
        "allocate_data": {"allocate": true},
        "parent_job_id": parent,
    }));
    let allocated = wait_for_state(&server, &child, &["allocated"]);
    assert_eq!(allocated["device_info"]["device_ip"], json!("10.1.2.3"));
    let cancel = server.post_json(
        &format!("/v1/job/{parent}/action"),
        &json!({"action": "cancel"}),
    );
    assert_eq!(cancel.status, 200);
    let done = wait_for_state(&server, &child, &["complete"]);
    assert_eq!(done["allocate_status"], json!(0));
}

#[test]
fn a_failed_recovery_takes_the_agent_offline() {
    let server = Server::start();
    let settings = "provision_command: echo cannot recover; exit 46\n";
    let job = json!({"job_queue": "q", "provision_data": {"distro": "x"}});
    let (_agent, _, result) = run_job(&server, settings, &job);
    assert_eq!(result["provision_status"], json!(46));
    let data = wait_for("the agent to be offline", || {
        let data = server.get("/v1/agents/data/agent-1").json();
        (data["state"] == json!("offline")).then_some(data)
    });
    let comment = data["comment"].as_str().unwrap();
    assert!(comment.contains("Recovery failed during job"), "{comment}");
}
