//! The Redis-era result API: old agents' free-form result documents and the raw
//! `output`/`serial_output` streams, read back through both API generations.

use serde_json::{json, Value};

use tf_test_support::http::Caller;
use tf_test_support::server::Server;

const UNKNOWN: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

/// A job claimed by the test agent and reported in `phase`.
fn running_job(server: &Server, phase: &str) -> String {
    let id = server.submit(&json!({"job_queue": "q"}));
    server.claim("a", "q");
    report(&server.agent(), &id, json!({"job_state": phase}));
    id
}

fn report(agent: &Caller, id: &str, body: Value) {
    let response = agent.post_json(&format!("/v1/result/{id}"), &body);
    assert_eq!(
        (response.status, response.text()),
        (200, "OK".to_string()),
        "{body}"
    );
}

fn stream(agent: &Caller, id: &str, stream: &str, text: &str) {
    let response = agent.post_raw(
        &format!("/v1/result/{id}/{stream}"),
        "text/plain",
        text.as_bytes(),
    );
    assert_eq!((response.status, response.text()), (200, "OK".to_string()));
}

/// What a legacy read returns: the text, or `None` on 204.
fn read(caller: &Caller, id: &str, stream: &str) -> Option<String> {
    let response = caller.get(&format!("/v1/result/{id}/{stream}"));
    match response.status {
        200 => {
            // A job's output is anyone's text: never served as HTML.
            assert_eq!(
                response.header("content-type"),
                Some("text/plain; charset=utf-8")
            );
            Some(response.text())
        }
        204 => None,
        other => panic!("GET {stream} answered {other}: {}", response.text()),
    }
}

#[test]
fn old_result_documents_merge_key_by_key_beside_the_current_results() {
    let server = Server::start();
    let agent = server.agent();
    let id = running_job(&server, "setup");
    for (number, phase, text) in [(0, "setup", "streamed\n"), (1, "reserve", "cleanup\n")] {
        let fragment = json!({"fragment_number": number, "timestamp": "2026-01-01T00:00:00",
                              "phase": phase, "log_data": text});
        agent.post_json(&format!("/v1/result/{id}/log/output"), &fragment);
    }

    report(
        &agent,
        &id,
        json!({"setup_output": "setup, as the agent kept it\n", "setup_status": 0,
               "exit_code": 0, "device_info": {"device_ip": "10.0.0.9"}}),
    );
    report(
        &agent,
        &id,
        json!({"test_output": "t\n", "test_status": 1, "exit_code": 1, "job_state": "complete"}),
    );
    assert_eq!(
        server.get(&format!("/v1/result/{id}")).json(),
        json!({
            "job_state": "complete", "device_info": {"device_ip": "10.0.0.9"},
            "setup_status": 0, "test_status": 1, "exit_code": 1,
            "setup_output": "setup, as the agent kept it\n", "test_output": "t\n",
            "outcome": {"result": "failed", "phase": "test", "exit_code": 1}
        }),
        "a key posted again replaces its value; the agent's copy of the logs wins"
    );
    // What current agents ask for: the state and exit codes, no documents.
    assert_eq!(
        server.get(&format!("/v1/result/{id}?logs=false")).json(),
        json!({"job_state": "complete", "device_info": {"device_ip": "10.0.0.9"},
               "setup_status": 0, "test_status": 1,
               "outcome": {"result": "failed", "phase": "test", "exit_code": 1}})
    );
    // The log as current clients read it is what was streamed.
    let log = server.get(&format!("/v1/result/{id}/log/output")).json();
    assert_eq!(
        (
            log["output"]["setup"]["log_data"].clone(),
            log["output"]["reserve"]["log_data"].clone()
        ),
        (json!("streamed\n"), json!("cleanup\n"))
    );

    // A current report still replaces the status map as a whole.
    report(&agent, &id, json!({"status": {"cleanup": 0}}));
    let result = server.get(&format!("/v1/result/{id}")).json();
    assert_eq!(
        (result["cleanup_status"].clone(), result.get("test_status")),
        (json!(0), None)
    );
}

#[test]
fn old_result_documents_are_checked_like_current_reports() {
    let server = Server::start();
    let agent = server.agent();
    let post = |path: &str, body: Value| agent.post_json(path, &body);
    let id = running_job(&server, "test");
    let result = format!("/v1/result/{id}");

    let wrong_state = post(&result, json!({"job_state": 3, "test_output": "x"}));
    assert_eq!(
        (wrong_state.status, wrong_state.json()["detail"].clone()),
        (422, json!({"json": {"job_state": ["Not a valid string."]}}))
    );
    let wrong_code = post(&result, json!({"setup_status": null}));
    assert_eq!(
        wrong_code.json()["detail"],
        json!({"json": {"setup_status": ["Not a valid integer."]}})
    );
    assert_eq!(post(&result, json!([1, 2])).status, 422);
    assert_eq!(
        server.get(&result).json(),
        json!({"job_state": "test"}),
        "a refused document leaves nothing behind"
    );

    let bad_id = post("/v1/result/xyz", json!({"test_output": "x"}));
    assert_eq!(
        (bad_id.status, bad_id.json()["message"].clone()),
        (400, json!("Invalid job_id specified"))
    );
    // Unknown jobs are ignored, as every result report is.
    report(
        &agent,
        UNKNOWN,
        json!({"test_output": "x", "test_status": 0}),
    );
    assert_eq!(server.get(&format!("/v1/result/{UNKNOWN}")).status, 204);
    // Anonymous callers are contributors: they may not report.
    assert_eq!(
        server
            .post_json(&result, &json!({"test_output": "x"}))
            .status,
        403
    );
}

#[test]
fn old_output_streams_are_read_once_and_kept_as_log_fragments() {
    let server = Server::start();
    let agent = server.agent();
    let id = running_job(&server, "setup");
    assert_eq!(read(&server, &id, "output"), None, "nothing yet: 204");

    stream(&agent, &id, "output", "line 1\n");
    stream(&agent, &id, "output", "line 2\n");
    assert_eq!(
        read(&server, &id, "output").as_deref(),
        Some("line 1\nline 2\n")
    );
    assert_eq!(
        read(&server, &id, "output"),
        None,
        "read text is not repeated"
    );

    report(&agent, &id, json!({"job_state": "test"}));
    stream(&agent, &id, "output", "testing\n");
    stream(&agent, &id, "serial_output", "serial console\n");
    // A fragment from a current agent reaches an old client's reads too.
    let fragment = json!({"fragment_number": 3, "timestamp": "2026-01-01T00:00:00",
                          "phase": "test", "log_data": "from a current agent\n"});
    agent.post_json(&format!("/v1/result/{id}/log/output"), &fragment);
    assert_eq!(
        read(&server, &id, "output").as_deref(),
        Some("testing\nfrom a current agent\n")
    );
    assert_eq!(
        read(&server, &id, "serial_output").as_deref(),
        Some("serial console\n")
    );

    // The same text, as current clients read it: fragments of the phase it came in.
    let log = server.get(&format!("/v1/result/{id}/log/output")).json();
    assert_eq!(
        log["output"]["setup"],
        json!({"last_fragment_number": 1, "log_data": "line 1\nline 2\n"})
    );
    assert_eq!(
        log["output"]["test"],
        json!({"last_fragment_number": 3, "log_data": "testing\nfrom a current agent\n"})
    );
    let result = server.get(&format!("/v1/result/{id}")).json();
    assert_eq!(
        (
            result["setup_output"].clone(),
            result["test_serial"].clone()
        ),
        (json!("line 1\nline 2\n"), json!("serial console\n"))
    );

    // Once the job has ended (an old agent's cleanup reports no phase): cleanup.
    report(&agent, &id, json!({"job_state": "cancelled"}));
    stream(&agent, &id, "output", "cleaning up\n");
    let cleanup = server.get(&format!("/v1/result/{id}/log/output?phase=cleanup"));
    assert_eq!(
        cleanup.json()["output"]["cleanup"]["log_data"],
        json!("cleaning up\n")
    );
}

#[test]
fn old_output_streams_refuse_bad_input_with_the_usual_answers() {
    let server = Server::start_with(&["--max-body-size", "1000"]);
    let agent = server.agent();
    let id = running_job(&server, "test");

    let bad_id = agent.post_raw("/v1/result/xyz/output", "text/plain", b"x");
    assert_eq!(
        (bad_id.status, bad_id.text()),
        (400, "Invalid job id\n".to_string())
    );
    assert_eq!(server.get("/v1/result/xyz/serial_output").status, 400);
    let huge = agent.post_raw(
        &format!("/v1/result/{id}/output"),
        "text/plain",
        &[b'x'; 2000],
    );
    assert_eq!(
        (huge.status, huge.json()["message"].clone()),
        (413, json!("Payload too large"))
    );
    stream(&agent, UNKNOWN, "output", "nobody\n");
    assert_eq!(
        read(&server, UNKNOWN, "output"),
        None,
        "unknown jobs keep nothing"
    );
    stream(&agent, &id, "output", "");
    let not_utf8 = agent.post_raw(&format!("/v1/result/{id}/output"), "", b"ok \xff\n");
    assert_eq!(not_utf8.status, 200);
    assert_eq!(
        read(&server, &id, "output").as_deref(),
        Some("ok \u{fffd}\n"),
        "an empty post adds nothing; bytes that are not UTF-8 are replaced"
    );
    // Posting is for agents, reading for people.
    assert_eq!(
        server
            .post_raw(&format!("/v1/result/{id}/output"), "text/plain", b"x")
            .status,
        403
    );
    assert_eq!(agent.get(&format!("/v1/result/{id}/output")).status, 403);
}

#[test]
fn tokenless_agents_run_jobs_only_where_the_server_allows_them() {
    let locked = Server::start();
    let id = locked.submit(&json!({"job_queue": "q"}));
    assert_eq!(locked.get("/v1/job?queue=q").status, 403);
    assert_eq!(
        locked
            .post_raw(&format!("/v1/result/{id}/output"), "text/plain", b"x")
            .status,
        403
    );

    let open = Server::start_with(&["--tokenless-agents"]);
    let id = open.submit(&json!({"job_queue": "q"}));
    // As a 2022 agent: no token, no `agent_name` cookie.
    let claimed = open.get("/v1/job?queue=q");
    assert_eq!(
        (claimed.status, claimed.json()["job_id"].clone()),
        (200, json!(id))
    );
    report(&open, &id, json!({"job_state": "test"}));
    stream(&open, &id, "output", "hello\n");
    assert_eq!(
        open.post_json("/v1/agents/queues", &json!({"q": "a queue"}))
            .status,
        200
    );
    // Such agents never register: their queue exists with no agent to show.
    assert_eq!(open.get("/v1/queues/q/agents").json(), json!([]));
    assert_eq!(open.get("/v1/queues/other/agents").status, 404);
    // Anonymous callers stay contributors as well.
    assert_eq!(read(&open, &id, "output").as_deref(), Some("hello\n"));
    assert_eq!(
        open.post_json(
            &format!("/v1/job/{id}/action"),
            &json!({"action": "cancel"})
        )
        .status,
        200
    );
    // A token is still checked when one is sent.
    let forged = open.with_token("not-a-token");
    assert_eq!(forged.get("/v1/job?queue=q").status, 403);
}

#[test]
fn tokenless_claims_never_carry_secret_values() {
    let server = Server::start_with(&["--tokenless-agents"]);
    let dev = server.client("dev", "contributor", &[]);
    assert_eq!(dev.put_secret("dev", "lab/token", "s3cr3t").status, 200);
    let job = json!({"job_queue": "q", "test_data": {"test_cmds": "true", "secrets": {"TOKEN": "lab/token"}}});
    dev.submit(&job);
    let anonymous = server.get("/v1/job?queue=q");
    assert_eq!(anonymous.status, 200);
    assert_eq!(
        anonymous.json()["test_data"]["secrets"],
        json!({"TOKEN": ""})
    );
    // An agent with credentials still gets the value.
    dev.submit(&job);
    let claimed = server.claim("dev-1", "q").unwrap();
    assert_eq!(claimed["test_data"]["secrets"], json!({"TOKEN": "s3cr3t"}));
}

#[test]
fn the_command_line_can_turn_tokenless_agents_off_again() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("tf.yaml");
    std::fs::write(&config, "tokenless_agents: true\n").unwrap();
    let config = config.to_str().unwrap();
    let from_file = Server::start_with(&["--config", config]);
    from_file.submit(&json!({"job_queue": "q"}));
    assert_eq!(from_file.get("/v1/job?queue=q").status, 200);
    let overridden = Server::start_with(&["--config", config, "--tokenless-agents", "false"]);
    overridden.submit(&json!({"job_queue": "q"}));
    assert_eq!(overridden.get("/v1/job?queue=q").status, 403);
}
