//! The agent's config file, its registration, restart requests and metrics.

use serde_json::json;

use tf_test_support::agent::{wait_for_agent_state, wait_for_state, Agent};
use tf_test_support::http::send;
use tf_test_support::server::Server;
use tf_test_support::tf;
use tf_test_support::wait::wait_for;

#[test]
fn config_mistakes_are_one_line_errors_naming_the_file_and_key() {
    let temp = tempfile::tempdir().unwrap();
    let config = temp.path().join("agent.conf");
    let path = config.to_str().unwrap();
    let cases = [
        (
            "agent_id: a\nserver_address: s\njob_queues: [q]\ncolour: red\n",
            "unknown key `colour`",
        ),
        (
            "agent_id: 7\nserver_address: s\njob_queues: [q]\n",
            "`agent_id` must be a string",
        ),
        (
            "agent_id: a\nserver_address: s\n",
            "required key `job_queues` is missing",
        ),
        ("agent_id: [unclosed\n", "not valid YAML"),
    ];
    for (text, expected) in cases {
        std::fs::write(&config, text).unwrap();
        let run = tf(&["agent", "-c", path]);
        assert_eq!(run.status.code(), Some(78), "EX_CONFIG");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            stderr.contains(expected) && stderr.contains(path),
            "{stderr}"
        );
    }
    let missing = tf(&["agent", "-c", "/nonexistent/agent.conf"]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("cannot read the agent config /nonexistent/agent.conf"),
        "{stderr}"
    );
}

/// Every key of the reference's `testflinger-agent.conf.example`, in its types.
const EVERY_KEY: &str = r#"
identifier: cid-202401-12345
location: lab 3, rack 2
logging_level: INFO
logging_quiet: true
output_bytes: 10485760
provision_type: muxpi
global_timeout: 43200
output_timeout: 9000
setup_command: echo setup
provision_command: echo provision
firmware_update_command: echo firmware
test_command: echo test
allocate_command: echo allocate
reserve_command: echo reserve
cleanup_command: echo cleanup
advertised_queues:
  q: The test queue
advertised_images:
  q:
    core22: "url: http://images/core22.img.xz"
"#;

#[test]
fn a_config_with_every_reference_key_registers_the_agent() {
    let server = Server::start();
    let _agent = Agent::start(&server, EVERY_KEY);
    let data = wait_for("the agent to register", || {
        let data = server.get("/v1/agents/data/agent-1").json();
        (data["location"] == json!("lab 3, rack 2")).then_some(data)
    });
    assert_eq!(data["provision_type"], json!("muxpi"));
    assert_eq!(data["identifier"], json!("cid-202401-12345"));
    assert_eq!(data["queues"], json!(["q"]));
    let images = server.get("/v1/agents/images/q").json();
    assert_eq!(
        images["core22"],
        json!("url: http://images/core22.img.xz"),
        "{images}"
    );
}

#[test]
fn sigusr1_restarts_an_idle_agent_with_status_1() {
    let server = Server::start();
    let mut agent = Agent::start(&server, "");
    wait_for_agent_state(&server, "waiting");
    agent.signal("USR1");
    let status = agent.wait_for_exit();
    assert_eq!(status.code(), Some(1), "{}", agent.log());
    assert!(agent.log().contains("Restart Requested"));
    let data = server.get("/v1/agents/data/agent-1").json();
    assert_eq!(data["state"], json!("offline"));
    assert_eq!(
        data["comment"],
        json!("Restart signal detected from supervisor process")
    );
    // Restarted (as a supervisor would), it lifts the offline it set itself.
    agent.spawn(&[]);
    wait_for_agent_state(&server, "waiting");
}

#[test]
fn the_server_can_ask_for_a_restart() {
    let server = Server::start();
    let mut agent = Agent::start(&server, "");
    wait_for_agent_state(&server, "waiting");
    let asked = server.agent().post_json(
        "/v1/agents/data/agent-1",
        &json!({"state": "restart", "comment": "new version"}),
    );
    assert_eq!(asked.status, 200);
    assert_eq!(agent.wait_for_exit().code(), Some(1), "{}", agent.log());
}

#[test]
fn metrics_count_jobs_and_phase_durations() {
    let server = Server::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = tempfile::tempdir().unwrap();
    let mut agent = Agent::configure(home.path(), &server, "test_command: exit 2\n");
    agent.spawn(&["-p", &port.to_string()]);
    let job_id = server.submit(&json!({"job_queue": "q", "test_data": {"test_cmds": "x"}}));
    wait_for_state(&server, &job_id, &["complete"]);
    let metrics = send(&format!("127.0.0.1:{port}"), "GET", "/metrics", &[], b"")
        .unwrap()
        .text();
    assert!(
        metrics.contains("jobs_total{agent_id=\"agent-1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("failures_total{agent_id=\"agent-1\",test_phase=\"test\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("phase_duration_seconds_count{agent_id=\"agent-1\",test_phase=\"test\",identifier=\"\",release=\"\"} 1"),
        "{metrics}"
    );
}

#[test]
fn an_agent_serving_a_restricted_queue_takes_jobs_only_from_it() {
    let server = Server::start();
    server.client("owner", "contributor", &[]);
    let manager = server.client("boss", "manager", &[]);
    // The queue must be served before it can be restricted; the real agent starts later.
    server.agent().post_json(
        "/v1/agents/data/agent-1",
        &json!({"queues": ["q", "private"], "state": "waiting"}),
    );
    let restricted = manager.post_json(
        "/v1/restricted-queues/private",
        &json!({"client_id": "owner"}),
    );
    assert_eq!(restricted.status, 200, "{}", restricted.text());
    // A fresh token carries the newly allowed queue.
    let login = server.login("owner", "owner-secret-0123456789");
    let owner = server.with_token(login["access_token"].as_str().unwrap());
    // Submitted first, so it would be taken first if the agent polled every queue.
    let public = server.submit(&json!({"job_queue": "q"}));
    let private = owner.submit(&json!({"job_queue": "private"}));
    let _agent = Agent::start(
        &server,
        "job_queues: [q, private]\nsetup_command: echo hi\n",
    );
    wait_for_state(&server, &private, &["complete"]);
    let public_state = server.get(&format!("/v1/result/{public}")).json();
    assert_eq!(
        public_state["job_state"],
        json!("waiting"),
        "{public_state}"
    );
}

#[test]
fn a_refused_access_token_is_renewed_from_the_token_file() {
    let data = tempfile::tempdir().unwrap();
    let key_file = data.path().join("other.key");
    let server = Server::start_in(data.path(), &[]);
    let address = server.address.clone();
    let _agent = Agent::start(&server, "setup_command: echo hi\n");
    let first = server.submit(&json!({"job_queue": "q"}));
    wait_for_state(&server, &first, &["complete"]);

    // A new signing key: the server now refuses the agent's access token (403 "Invalid
    // Token signature"); its refresh token, kept in the database, still works.
    drop(server);
    std::fs::write(&key_file, "a-completely-different-signing-key-0123456789").unwrap();
    let server = Server::start_at(
        data.path(),
        &address,
        &["--jwt-key-file", key_file.to_str().unwrap()],
    );
    let second = server.submit(&json!({"job_queue": "q"}));
    let result = wait_for_state(&server, &second, &["complete"]);
    assert_eq!(result["setup_status"], json!(0), "{}", _agent.log());
}

#[test]
fn a_stopping_agent_never_strands_a_job_it_was_handed() {
    let server = Server::start();
    let mut agent = Agent::start(&server, "polling_interval: 2\nsetup_command: echo hi\n");
    wait_for_agent_state(&server, "waiting");
    // Told to stop while its claim waits on the server; a job arrives meanwhile.
    agent.signal("TERM");
    let job_id = server.submit(&json!({"job_queue": "q"}));
    assert!(agent.wait_for_exit().success(), "{}", agent.log());
    // Either the agent never took it, or it gave it back: it waits for the next agent.
    let state = server.get(&format!("/v1/result/{job_id}")).json();
    assert_eq!(state["job_state"], json!("waiting"), "{}", agent.log());
    assert!(server.claim("another-agent", "q").is_some());
}

#[test]
fn a_missing_or_unreadable_token_file_is_a_config_error() {
    let server = Server::start();
    // A directory where the file should be cannot be read, even by root; a file with mode
    // 000 only when the test does not run as root (root reads it anyway).
    let as_root = unsafe { libc::geteuid() } == 0;
    type Spoil = fn(&std::path::Path);
    let mut cases: Vec<(&str, Spoil)> = vec![
        ("missing", |path| std::fs::remove_file(path).unwrap()),
        ("a directory", |path| {
            std::fs::remove_file(path).unwrap();
            std::fs::create_dir(path).unwrap();
        }),
        ("not JSON", |path| std::fs::write(path, "refresh").unwrap()),
    ];
    if !as_root {
        cases.push(("mode 000", |path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o000)).unwrap();
        }));
    }
    for (case, spoil) in cases {
        let home = tempfile::tempdir().unwrap();
        let mut agent = Agent::configure(home.path(), &server, "");
        spoil(&agent.token_file);
        agent.spawn(&[]);
        let status = agent.wait_for_exit();
        let log = agent.log();
        assert_eq!(status.code(), Some(78), "{case}: {log}");
        let token_file = agent.token_file.display().to_string();
        assert!(
            log.contains(&format!("token file {token_file}")),
            "{case}: {log}"
        );
        assert_eq!(log.trim_end().lines().count(), 1, "{case}: {log}");
    }
}
