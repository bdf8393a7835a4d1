//! The phase order, skip rules and failure rules, seen from the server.

use serde_json::{json, Value};

use tf_test_support::agent::{
    run_job, wait_for_agent_state, wait_for_state, wait_for_test_output, Agent,
};
use tf_test_support::server::Server;
use tf_test_support::wait::wait_for;

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
    // The agent reports itself free after the run directory is gone.
    let data = wait_for("the agent to report no job", || {
        let data = server.get("/v1/agents/data/agent-1").json();
        (data["job_id"] == json!("")).then_some(data)
    });
    assert_eq!(data["provision_streak_type"], json!("pass"), "{data}");
    assert_eq!(result["outcome"], json!({"result": "passed"}));
    wait_for_agent_state(&server, "waiting");

    // Its own log, on stderr (a file here) and in its log file, has no colour codes.
    let log_file = agent.home.join("logging/testflinger-agent.log");
    for log in [agent.log(), std::fs::read_to_string(log_file).unwrap()] {
        assert!(log.contains(&job_id), "{log}");
        assert!(!log.contains('\x1b'), "{log:?}");
    }
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
    // A skipped provision is no provision attempt (the reference counts it as a pass).
    let data = server.get("/v1/agents/data/agent-1").json();
    assert!(data.get("provision_streak_type").is_none(), "{data}");
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
    assert_eq!(
        result["outcome"],
        json!({"result": "infrastructure_failure", "phase": "provision", "exit_code": 3})
    );
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
    assert_eq!(
        result["outcome"],
        json!({"result": "failed", "phase": "test", "exit_code": 1})
    );
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
    let data = wait_for_agent_state(&server, "offline");
    let comment = data["comment"].as_str().unwrap();
    assert!(comment.contains("Recovery failed during job"), "{comment}");
}

/// Accepts HTTP requests on a local port and hands over each body.
fn webhook_receiver() -> (String, std::sync::mpsc::Receiver<Value>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if let Ok(body) = serde_json::from_slice(&body) {
                let _ = sender.send(body);
            }
        }
    });
    (url, receiver)
}

#[test]
fn job_events_reach_the_webhook_as_the_reference_sends_them() {
    let (webhook, events) = webhook_receiver();
    let server = Server::start_with(&["--webhook-url", &webhook]);
    let settings = "setup_command: echo hi\ntest_command: echo tested\n";
    let job = json!({
        "job_queue": "q",
        "test_data": {"test_cmds": "x"},
        "job_status_webhook": format!("{webhook}/hook"),
    });
    let (_agent, _, _) = run_job(&server, settings, &job);
    let last = wait_for("the job_end event", || {
        let body = events
            .recv_timeout(std::time::Duration::from_secs(30))
            .ok()?;
        let list = body["events"].as_array()?.clone();
        (list.last()?["event_name"] == json!("job_end")).then_some(list)
    });
    let names: Vec<&str> = last
        .iter()
        .map(|e| e["event_name"].as_str().unwrap())
        .collect();
    let mut expected = vec!["job_start"];
    let phases = [
        "setup",
        "provision",
        "firmware_update",
        "test",
        "allocate",
        "reserve",
        "cleanup",
    ];
    let pairs: Vec<String> = phases
        .iter()
        .flat_map(|p| [format!("{p}_start"), format!("{p}_success")])
        .collect();
    expected.extend(pairs.iter().map(String::as_str));
    expected.push("job_end");
    assert_eq!(names, expected);
    assert_eq!(last.last().unwrap()["detail"], json!("normal_exit"));
    let job_page = last[0]["detail"].as_str().unwrap();
    assert!(job_page.contains("/jobs/"), "{job_page}");
}

#[test]
fn the_serial_log_a_connector_writes_is_uploaded() {
    let server = Server::start();
    let settings = "test_command: echo console line > test-serial.log; echo tested\n";
    let job = json!({"job_queue": "q", "test_data": {"test_cmds": "x"}});
    let (_agent, _, result) = run_job(&server, settings, &job);
    assert_eq!(result["test_serial"], json!("console line\n"), "{result}");
}

/// An admin's offline stands across an agent restart (the reference's startup resets it).
#[test]
fn an_offline_agent_takes_no_job_until_it_is_back() {
    let server = Server::start();
    server.agent().post_json(
        "/v1/agents/data/agent-1",
        &json!({"state": "offline", "comment": "maintenance window"}),
    );
    let agent = Agent::start(&server, "setup_command: echo hi\n");
    let offline_passes = || {
        agent
            .log()
            .matches("is offline, not processing jobs")
            .count()
    };
    wait_for("the agent to notice it is offline", || {
        (offline_passes() > 0).then_some(())
    });
    let job_id = server.submit(&json!({"job_queue": "q"}));
    let seen = offline_passes();
    wait_for("another offline pass", || {
        (offline_passes() > seen).then_some(())
    });
    let waiting = server.get(&format!("/v1/result/{job_id}")).json();
    assert_eq!(waiting["job_state"], json!("waiting"));
    assert!(agent.log().contains("Reason: maintenance window"));

    server
        .agent()
        .post_json("/v1/agents/data/agent-1", &json!({"state": "waiting"}));
    wait_for_state(&server, &job_id, &["complete"]);
}

#[test]
fn a_job_the_agent_cannot_start_is_ended_with_the_reason() {
    let server = Server::start();
    // A run directory cannot be created under a file.
    let (_agent, _, result) = run_job(
        &server,
        "execution_basedir: /dev/null/run\nsetup_command: echo hi\n",
        &json!({"job_queue": "q"}),
    );
    let setup = text(&result, "setup_output");
    assert!(
        setup.contains("ERROR: the agent cannot start this job"),
        "{result}"
    );
    assert_eq!(
        result["outcome"],
        json!({"result": "infrastructure_failure", "phase": "setup", "exit_code": 100})
    );
}

#[test]
fn maintenance_set_during_a_job_is_kept_after_it() {
    let server = Server::start();
    let go = tempfile::tempdir().unwrap();
    let go_file = go.path().join("go");
    let settings = format!(
        "test_command: 'echo started; while [ ! -e {} ]; do sleep 0.05; done'\nreserve_command: echo reserving\n",
        go_file.display()
    );
    let agent = Agent::start(&server, &settings);
    let job_id = server.submit(&json!({
        "job_queue": "q",
        "test_data": {"test_cmds": "x"},
        "reserve_data": {"ssh_keys": ["lp:someone"]},
    }));
    wait_for_test_output(&server, &job_id, "started");
    server.agent().post_json(
        "/v1/agents/data/agent-1",
        &json!({"state": "maintenance", "comment": "lab work"}),
    );
    std::fs::write(&go_file, "").unwrap();
    wait_for_state(&server, &job_id, &["complete"]);
    // The reserve phase report overwrote it on the server; the agent puts it back.
    let data = wait_for_agent_state(&server, "maintenance");
    assert_eq!(data["comment"], json!("lab work"));
    let next = server.submit(&json!({"job_queue": "q"}));
    let seen = agent
        .log()
        .matches("is maintenance, not processing jobs")
        .count();
    wait_for("another idle pass", || {
        (agent
            .log()
            .matches("is maintenance, not processing jobs")
            .count()
            > seen)
            .then_some(())
    });
    assert_eq!(
        server.get(&format!("/v1/result/{next}")).json()["job_state"],
        json!("waiting")
    );
}
