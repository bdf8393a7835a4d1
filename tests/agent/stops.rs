//! Stop conditions: global and output timeouts, cancellation, and the agent being told
//! to stop. Each kills the phase's whole process group and says why in the log.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use tf_test_support::agent::{
    run_job, send_signal, wait_for_agent_state, wait_for_state, wait_for_test_output, Agent,
};
use tf_test_support::server::Server;
use tf_test_support::wait::wait_for;

fn output(result: &Value, phase: &str) -> String {
    result[format!("{phase}_output")]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Whether the process whose id is in `pid_file` still runs.
fn is_alive(pid_file: &Path) -> bool {
    let pid = std::fs::read_to_string(pid_file).expect("pid file");
    Path::new(&format!("/proc/{}", pid.trim())).exists()
}

#[test]
fn the_global_timeout_kills_the_whole_process_group() {
    let server = Server::start();
    let temp = tempfile::tempdir().unwrap();
    let pid_file = temp.path().join("background.pid");
    // A background child that would outlive its shell if only the shell were killed.
    let settings = format!(
        "setup_command: sleep 300 & echo $! > {}; echo started; wait\ncleanup_command: echo cleaned\n",
        pid_file.display()
    );
    let job = json!({"job_queue": "q", "global_timeout": 1});
    let (_agent, _, result) = run_job(&server, &settings, &job);
    assert_eq!(result["setup_status"], json!(247), "{result}");
    let setup = output(&result, "setup");
    assert!(setup.contains("started\n"), "{setup:?}");
    assert!(
        setup.ends_with("\nERROR: Global timeout reached! (1s)\n"),
        "{setup:?}"
    );
    assert_eq!(result["cleanup_status"], json!(0));
    assert_eq!(
        result["outcome"],
        json!({"result": "timed_out", "phase": "setup", "timeout": "global"})
    );
    wait_for("the background process to die", || {
        (!is_alive(&pid_file)).then_some(())
    });
}

#[test]
fn the_output_timeout_applies_to_the_test_phase() {
    let server = Server::start();
    let settings = "test_command: echo begin; sleep 300\ncleanup_command: echo cleaned\n";
    let job = json!({"job_queue": "q", "output_timeout": 1, "test_data": {"test_cmds": "x"}});
    let (_agent, _, result) = run_job(&server, settings, &job);
    assert_eq!(result["test_status"], json!(247));
    assert!(
        output(&result, "test").ends_with("begin\n\nERROR: Output timeout reached! (1s)\n"),
        "{result}"
    );
    assert_eq!(result["cleanup_status"], json!(0));
    assert_eq!(
        result["outcome"],
        json!({"result": "timed_out", "phase": "test", "timeout": "output"})
    );
}

#[test]
fn cancelling_a_job_stops_the_running_phase() {
    let server = Server::start();
    let settings = "test_command: echo waiting; sleep 300\ncleanup_command: echo cleaned\n";
    let _agent = Agent::start(&server, settings);
    let job_id = server.submit(&json!({"job_queue": "q", "test_data": {"test_cmds": "x"}}));
    wait_for_test_output(&server, &job_id, "waiting");
    let cancel = server.post_json(
        &format!("/v1/job/{job_id}/action"),
        &json!({"action": "cancel"}),
    );
    assert_eq!(cancel.status, 200);
    let result = wait_for_state(&server, &job_id, &["complete"]);
    assert_eq!(result["test_status"], json!(247));
    assert!(
        output(&result, "test").ends_with("waiting\n\nJob cancellation was requested, exiting.\n"),
        "{result}"
    );
    assert_eq!(result["outcome"], json!({"result": "cancelled"}));
    assert_eq!(result["cleanup_status"], json!(0));
}

#[test]
fn sigterm_to_the_agent_ends_the_job_and_the_agent() {
    let server = Server::start();
    let settings = "test_command: echo running; sleep 300\n";
    let mut agent = Agent::start(&server, settings);
    let job_id = server.submit(&json!({"job_queue": "q", "test_data": {"test_cmds": "x"}}));
    wait_for_test_output(&server, &job_id, "running");
    agent.signal("TERM");
    assert!(agent.wait_for_exit().success(), "{}", agent.log());
    let result = wait_for_state(&server, &job_id, &["complete"]);
    assert_eq!(result["test_status"], json!(247));
    assert!(
        output(&result, "test").contains("ERROR: The agent stopped before this phase finished"),
        "{result}"
    );
    // The lab stopped the test, it did not fail.
    assert_eq!(
        result["outcome"],
        json!({"result": "infrastructure_failure", "phase": "test", "exit_code": 247})
    );
}

#[test]
fn sigterm_stops_an_idle_agent_without_waiting_out_its_long_poll() {
    let server = Server::start();
    // Its claims wait 30 s for a job.
    let mut agent = Agent::start(&server, "polling_interval: 60\n");
    wait_for_agent_state(&server, "waiting");
    agent.signal("TERM");
    // Well before the long-poll would have ended by itself.
    let status = agent.wait_for_exit_within(Duration::from_secs(20));
    assert!(status.success(), "{}", agent.log());
    // No claim of the stopped agent lingers on the server to take it: the next agent
    // to ask gets it.
    let job_id = server.submit(&json!({"job_queue": "q"}));
    let claimed = server
        .claim("agent-2", "q")
        .expect("the job is still there");
    assert_eq!(claimed["job_id"], json!(job_id));
}

#[test]
fn a_job_that_comes_as_an_idle_agent_stops_stays_in_its_queue() {
    let server = Server::start();
    let mut agent = Agent::start(&server, "polling_interval: 60\n");
    wait_for_agent_state(&server, "waiting");
    agent.signal("TERM");
    // Either the agent's claim has ended, or it hands the job over and the agent gives
    // it back on its way out.
    let job_id = server.submit(&json!({"job_queue": "q"}));
    assert!(agent.wait_for_exit().success(), "{}", agent.log());
    let claimed = server
        .claim("agent-2", "q")
        .expect("the job is back in its queue");
    assert_eq!(claimed["job_id"], json!(job_id));
}

#[test]
fn a_job_taken_as_the_agent_stops_goes_back_to_its_queue_before_any_phase_runs() {
    let server = Server::start();
    let settings = "polling_interval: 60\ntest_command: echo ran\n";
    let mut agent = Agent::start(&server, settings);
    wait_for_agent_state(&server, "waiting");
    // Let the claim that follows reach the server, then freeze the agent: the job is
    // handed out on that claim while the agent cannot take it in.
    std::thread::sleep(Duration::from_secs(1));
    agent.signal("STOP");
    let job_id = server.submit(&json!({"job_queue": "q", "test_data": {"test_cmds": "x"}}));
    wait_for_state(&server, &job_id, &["running"]);
    // With the server frozen, the agent takes the job and then waits on the server before
    // its first phase; it is told to stop there.
    send_signal(server.pid(), "STOP");
    agent.signal("CONT");
    wait_for("the agent to start the job", || {
        agent
            .log()
            .contains(&format!("Starting job {job_id}"))
            .then_some(())
    });
    agent.signal("TERM");
    send_signal(server.pid(), "CONT");
    assert!(agent.wait_for_exit().success(), "{}", agent.log());
    let result = server.get(&format!("/v1/result/{job_id}")).json();
    assert_eq!(result["job_state"], json!("waiting"), "{result}");

    // Another agent runs it.
    let _other = Agent::start(&server, "agent_id: agent-2\ntest_command: echo ran\n");
    let result = wait_for_state(&server, &job_id, &["complete"]);
    assert_eq!(result["test_status"], json!(0), "{result}");
    assert_eq!(result["outcome"], json!({"result": "passed"}));
    assert!(output(&result, "test").contains("ran\n"), "{result}");
}

#[test]
fn a_reservation_the_agent_stopped_before_reads_as_the_labs_failure() {
    let server = Server::start();
    // The test phase freezes the server on its way out, so that the agent is held
    // between the test and reserve phases until the test lets the server go.
    let settings = format!(
        "test_command: kill -STOP {}\nreserve_command: echo reserving\ncleanup_command: echo cleaned\n",
        server.pid()
    );
    let mut agent = Agent::start(&server, &settings);
    let job_id = server.submit(&json!({
        "job_queue": "q",
        "test_data": {"test_cmds": "x"},
        "reserve_data": {"ssh_keys": ["lp:someone"]},
    }));
    let outcome_file = agent.run_dir(&job_id).join("testflinger-outcome.json");
    wait_for("the test phase to end", || {
        let outcome = std::fs::read_to_string(&outcome_file).ok()?;
        outcome.contains(r#""test":0"#).then_some(())
    });
    agent.signal("TERM");
    send_signal(server.pid(), "CONT");
    assert!(agent.wait_for_exit().success(), "{}", agent.log());

    let result = wait_for_state(&server, &job_id, &["complete"]);
    assert_eq!(result["test_status"], json!(0), "{result}");
    assert_eq!(result["reserve_status"], json!(247), "{result}");
    let reserve = output(&result, "reserve");
    assert!(
        reserve.contains("ERROR: The agent stopped before this phase finished"),
        "{reserve:?}"
    );
    assert!(!reserve.contains("reserving"), "{reserve:?}");
    assert_eq!(result["cleanup_status"], json!(0), "{result}");
    assert_eq!(
        result["outcome"],
        json!({"result": "infrastructure_failure", "phase": "reserve", "exit_code": 247})
    );
}
