//! Nothing lost: the server dying mid-job, the agent dying mid-job, and the agent dying
//! with reports still to send.

use serde_json::json;

use tf_test_support::agent::{wait_for_state, wait_for_test_output, Agent};
use tf_test_support::server::Server;
use tf_test_support::wait::wait_for;

#[test]
fn output_printed_while_the_server_was_down_arrives_once_and_in_order() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[]);
    let address = server.address.clone();
    let settings = "test_command: for i in $(seq 1 40); do echo line $i; sleep 0.1; done\n";
    let _agent = Agent::start(&server, settings);
    let job_id = server.submit(&json!({"job_queue": "q", "test_data": {"test_cmds": "x"}}));
    wait_for_test_output(&server, &job_id, "line 3\n");
    server.kill();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let server = Server::start_at(data.path(), &address, &[]);

    let result = wait_for_state(&server, &job_id, &["complete"]);
    let expected: String = (1..=40).map(|i| format!("line {i}\n")).collect();
    // Every line exactly once, in order, after the three banner lines.
    let output = result["test_output"].as_str().unwrap();
    let printed: String = output.lines().skip(3).map(|l| format!("{l}\n")).collect();
    assert_eq!(printed, expected);
    assert_eq!(result["test_status"], json!(0));
    // What queued up during the outage went in batches (tf's `log-batches`).
    let batches = "tf_http_request_duration_seconds_count{method=\"POST\",\
                   route=\"/v1/result/{job_id}/log/{log_type}/batch\",code=\"200\"}";
    let metrics = server.get("/metrics").text();
    assert!(
        metrics.lines().any(|line| line.starts_with(batches)),
        "no batch in\n{metrics}"
    );
}

#[test]
fn a_job_interrupted_by_an_agent_kill_is_ended_when_the_agent_returns() {
    let server = Server::start();
    let settings = "test_command: echo before the kill; sleep 30\n";
    let mut agent = Agent::start(&server, settings);
    let job_id = server.submit(&json!({"job_queue": "q", "test_data": {"test_cmds": "x"}}));
    wait_for_test_output(&server, &job_id, "before the kill");
    agent.kill();
    agent.spawn(&[]);

    let result = wait_for_state(&server, &job_id, &["complete"]);
    let output = result["test_output"].as_str().unwrap();
    assert!(output.contains("before the kill\n"), "{output:?}");
    assert!(
        output.contains("ERROR: The agent stopped before this phase finished"),
        "{output:?}"
    );
    // The interrupted phase was killed with the agent: not a pass, and not the test's
    // failure either.
    assert_eq!(result["test_status"], json!(247), "{result}");
    assert_eq!(
        result["outcome"],
        json!({"result": "infrastructure_failure", "phase": "test", "exit_code": 247})
    );
    wait_for("the run directory to go", || {
        (!agent.run_dir(&job_id).exists()).then_some(())
    });
}

#[test]
fn reports_still_unsent_when_the_agent_dies_are_sent_after_its_restart() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[]);
    let address = server.address.clone();
    let settings = "test_command: echo started; sleep 1; echo finished; mkdir artifacts; echo kept > artifacts/out.txt\n";
    let mut agent = Agent::start(&server, settings);
    let job_id = server.submit(&json!({"job_queue": "q", "test_data": {"test_cmds": "x"}}));
    wait_for_test_output(&server, &job_id, "started");
    // The job ends while the server is away: its end (artifacts, outcome) stays queued.
    server.kill();
    let outbox = agent
        .home
        .join(format!("execution/.tf-agent/{job_id}/outbox.jsonl"));
    wait_for("the job to end on the agent", || {
        let entries = std::fs::read_to_string(&outbox).ok()?;
        entries.contains(r#"{"kind":"done"}"#).then_some(())
    });
    agent.kill();

    let server = Server::start_at(data.path(), &address, &[]);
    agent.spawn(&[]);
    let result = wait_for_state(&server, &job_id, &["complete"]);
    assert!(
        result["test_output"]
            .as_str()
            .unwrap()
            .ends_with("started\nfinished\n"),
        "{result}"
    );
    assert_eq!(result["test_status"], json!(0));
    let archive = server.get(&format!("/v1/result/{job_id}/artifact"));
    assert_eq!(archive.status, 200, "the artifacts were not uploaded");
}

#[test]
fn an_agent_sharing_the_run_directories_leaves_the_other_agents_job_alone() {
    let server = Server::start();
    let go = tempfile::tempdir().unwrap();
    let go_file = go.path().join("go");
    let settings = format!(
        "test_command: 'echo started; while [ ! -e {} ]; do sleep 0.05; done; echo done'\n",
        go_file.display()
    );
    let first = Agent::start(&server, &settings);
    let job_id = server.submit(&json!({"job_queue": "q", "test_data": {"test_cmds": "x"}}));
    wait_for_test_output(&server, &job_id, "started");
    // A second agent on the same host, with the same execution_basedir, starting up.
    let shared = first.home.join("execution");
    let second = Agent::start(
        &server,
        &format!(
            "agent_id: agent-2\njob_queues: [other]\nexecution_basedir: {}\n",
            shared.display()
        ),
    );
    wait_for("the second agent to be up", || {
        second
            .log()
            .contains("Starting agent agent-2")
            .then_some(())
    });
    std::fs::write(&go_file, "").unwrap();
    let result = wait_for_state(&server, &job_id, &["complete"]);
    let output = result["test_output"].as_str().unwrap();
    assert!(output.ends_with("started\ndone\n"), "{output:?}");
    assert_eq!(result["test_status"], json!(0));
}

/// Whether process `pid` still runs (a zombie waiting to be reaped does not).
fn is_running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat.rsplit_once(") ")?.1.starts_with(|s| s != 'Z')))
        .unwrap_or(false)
}

#[test]
fn a_silent_phase_process_left_by_a_killed_agent_is_gone_before_the_next_job() {
    let server = Server::start();
    let temp = tempfile::tempdir().unwrap();
    let pid_file = temp.path().join("sleep.pid");
    // The test phase prints nothing; its sleep is a child of the phase's shell, in its
    // process group. The next job's setup says whether that sleep still runs.
    let settings = format!(
        "test_command: sleep 300 & echo $! > {pid}.new; mv {pid}.new {pid}; wait\n\
         setup_command: 'if grep -qv \") Z \" /proc/$(cat {pid})/stat 2>/dev/null; \
         then echo sleep still runs; else echo sleep gone; fi'\n",
        pid = pid_file.display()
    );
    let mut agent = Agent::start(&server, &settings);
    let first = server.submit(&json!({"job_queue": "q", "test_data": {"test_cmds": "x"}}));
    let pid = wait_for("the test phase to start its sleep", || {
        std::fs::read_to_string(&pid_file).ok()
    });
    let pid = pid.trim();
    agent.kill();
    assert!(is_running(pid), "the sleep died with the agent by itself");

    agent.spawn(&[]);
    wait_for_state(&server, &first, &["complete"]);
    let second = server.submit(&json!({"job_queue": "q"}));
    let result = wait_for_state(&server, &second, &["complete"]);
    let running = is_running(pid);
    if running {
        // Whatever the outcome, the test leaves nothing running.
        let _ = std::process::Command::new("kill")
            .args(["-9", pid])
            .status();
    }
    let setup = result["setup_output"].as_str().unwrap_or_default();
    assert!(
        setup.ends_with("sleep gone\n"),
        "{setup:?}\n{}",
        agent.log()
    );
    assert!(!running, "the sleep outlived the agent's restart");
}

#[test]
fn a_phase_command_dies_with_a_killed_agent() {
    let server = Server::start();
    let temp = tempfile::tempdir().unwrap();
    let pid_file = temp.path().join("phase.pid");
    // The phase's own process (the shell, replaced by sleep), silent.
    let settings = format!(
        "test_command: echo $$ > {pid}.new; mv {pid}.new {pid}; exec sleep 300\n",
        pid = pid_file.display()
    );
    let mut agent = Agent::start(&server, &settings);
    server.submit(&json!({"job_queue": "q", "test_data": {"test_cmds": "x"}}));
    let pid = wait_for("the test phase to start", || {
        std::fs::read_to_string(&pid_file).ok()
    });
    let pid = pid.trim();
    agent.kill();
    let died = std::iter::repeat_n((), 500).any(|()| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        !is_running(pid)
    });
    if !died {
        let _ = std::process::Command::new("kill")
            .args(["-9", pid])
            .status();
    }
    assert!(died, "the phase command outlived the agent");
}

#[test]
fn a_noted_process_group_that_is_not_the_phases_is_left_alone() {
    use std::os::unix::process::CommandExt;
    let server = Server::start();
    let temp = tempfile::tempdir().unwrap();
    let mut agent = Agent::configure(temp.path(), &server, "");
    // A group whose id was noted for an interrupted phase, now some other program's (as
    // when the kernel hands the id out again): it lacks the phase's marker.
    let mut stranger = std::process::Command::new("sleep")
        .arg("300")
        .process_group(0)
        .spawn()
        .unwrap();
    let job_id = "0191e3a4-0000-7000-8000-000000000001";
    let outbox = temp.path().join("execution/.tf-agent").join(job_id);
    std::fs::create_dir_all(&outbox).unwrap();
    let note = json!({"phase": "test", "group": stranger.id(), "marker": "another-run"});
    std::fs::write(outbox.join("phase-group"), note.to_string()).unwrap();

    agent.spawn(&[]);
    wait_for("the agent to look at the note", || {
        (!outbox.join("phase-group").exists()).then_some(())
    });
    let untouched = stranger.try_wait().unwrap().is_none();
    let _ = stranger.kill();
    let _ = stranger.wait();
    assert!(
        untouched,
        "the agent killed a group that was not the phase's"
    );
}
