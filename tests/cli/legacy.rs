//! A mixed lab: one device host still runs a 2022 agent (no token, the Redis-era result
//! API), another runs `tf agent`; `tf poll` and `tf results` follow both jobs alike.

use serde_json::{json, Value};

use tf_test_support::agent::{wait_for_agent_state, wait_for_state, Agent};
use tf_test_support::http::{Caller, Response};
use tf_test_support::server::Server;
use tf_test_support::wait::wait_for;

use crate::client::Client;

/// The HTTP calls a 2022 agent makes for one job, in its order: claim, a state report
/// and live output per phase, the artifact, then the whole outcome in one document.
fn run_as_a_2022_agent(agent: &Caller, queue: &str) -> String {
    let job = wait_for("a job for the old agent", || {
        let response = agent.get(&format!("/v1/job?queue={queue}"));
        (response.status == 200).then(|| response.json())
    });
    let id = job["job_id"].as_str().expect("a job id").to_string();
    let ok = |path: String, response: Response| {
        assert_eq!(response.status, 200, "{path}: {}", response.text());
    };
    let mut outcome = json!({});
    for (phase, output) in [("setup", "old setup\n"), ("test", "old agent output\n")] {
        let result = format!("/v1/result/{id}");
        ok(
            result.clone(),
            agent.post_json(&result, &json!({"job_state": phase})),
        );
        let stream = format!("/v1/result/{id}/output");
        ok(
            stream.clone(),
            agent.post_raw(&stream, "text/plain", output.as_bytes()),
        );
        outcome[format!("{phase}_output")] = json!(output);
        outcome[format!("{phase}_status")] = json!(0);
    }
    let artifact = format!("/v1/result/{id}/artifact");
    ok(
        artifact.clone(),
        agent.upload(&artifact, "file", b"old artifact"),
    );
    outcome["job_state"] = json!("complete");
    let result = format!("/v1/result/{id}");
    ok(result.clone(), agent.post_json(&result, &outcome));
    id
}

#[test]
fn a_2022_agent_and_tf_agent_share_a_lab_and_its_clients() {
    let server = Server::start_with(&["--tokenless-agents"]);
    let _tf_agent = Agent::start(&server, "test_command: echo new agent output\n");
    wait_for_agent_state(&server, "waiting");
    // What a 2022 agent with `advertised_queues` posts when it starts.
    let advertised = server.post_json("/v1/agents/queues", &json!({"old": "an old agent"}));
    assert_eq!(advertised.status, 200);
    let client = Client::new(&server);
    let new_job = client.submit("job_queue: q\ntest_data: {test_cmds: x}\n");
    // Old agents never register, so only a waiting submission gets past the agent check.
    let job_file = client.write("old.yaml", "job_queue: old\ntest_data: {test_cmds: x}\n");
    let submitted = client.run(&[
        "submit",
        "-q",
        "--wait-for-available-agents",
        job_file.to_str().expect("utf-8"),
    ]);
    let old_job = submitted.stdout.lines().last().unwrap_or_default().trim();
    assert_eq!(
        run_as_a_2022_agent(&server, "old"),
        old_job,
        "{submitted:?}"
    );
    wait_for_state(&server, &new_job, &["complete"]);

    for (job, output) in [
        (old_job, "old agent output\n"),
        (&new_job, "new agent output\n"),
    ] {
        let poll = client.run(&["poll", job]);
        assert_eq!(poll.code, 0, "{poll:?}");
        assert!(poll.stdout.contains(output), "{job}: {}", poll.stdout);
        let results = client.run(&["results", job]);
        let parsed: Value = serde_json::from_str(&results.stdout).expect("results are JSON");
        assert_eq!(
            (parsed["job_state"].clone(), parsed["test_status"].clone()),
            (json!("complete"), json!(0)),
            "{job}"
        );
        assert!(parsed["test_output"].as_str().unwrap().contains(output));
    }
    let download = client.run(&["artifacts", "--filename", "old.tgz", old_job]);
    assert_eq!(download.code, 0, "{download:?}");
    assert_eq!(
        std::fs::read(client.home.path().join("old.tgz")).unwrap(),
        b"old artifact"
    );
    // An old CLI polling the job `tf agent` ran gets its output from the legacy stream.
    let streamed = server.get(&format!("/v1/result/{new_job}/output")).text();
    assert!(streamed.contains("new agent output\n"), "{streamed}");
}
