use serde_json::json;

use tf_test_support::server::Server;

const JOB_ID: &str = "11111111-2222-3333-4444-555555555555";

#[test]
fn a_submitted_job_is_claimed_once_and_shown_as_submitted() {
    let server = Server::start();
    let id = server.submit(&json!({"job_queue": "rpi4", "global_timeout": "60", "test_data": {"test_cmds": "echo hi"}}));

    let shown = server.get(&format!("/v1/job/{id}"));
    assert_eq!(shown.status, 200);
    assert_eq!(
        shown.json(),
        json!({"job_id": id, "job_queue": "rpi4", "global_timeout": 60, "exclude_agents": [], "test_data": {"test_cmds": "echo hi"}})
    );

    let claimed = server.claim("agent-1", "rpi4").expect("a job");
    assert_eq!(claimed["job_id"], json!(id));
    assert_eq!(claimed["test_data"]["test_cmds"], json!("echo hi"));
    assert!(claimed["started_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(server.claim("agent-2", "rpi4"), None);

    let result = server.get(&format!("/v1/result/{id}")).json();
    assert_eq!(result, json!({"job_state": "running"}));
}

#[test]
fn claims_follow_priority_then_submission_order_across_queues() {
    let server = Server::start();
    let low = server.submit(&json!({"job_queue": "a"}));
    let lead = server.client("lead", "contributor", &["--max-priority", "*=10"]);
    let high = lead.submit(&json!({"job_queue": "b", "job_priority": 5}));
    let second_low = server.submit(&json!({"job_queue": "b"}));
    let other_queue = lead.submit(&json!({"job_queue": "c", "job_priority": 9}));

    let cookie = [("Cookie", "agent_name=x")];
    let mut order = Vec::new();
    loop {
        let response = server
            .agent()
            .request("GET", "/v1/job?queue=a&queue=b", &cookie, b"");
        if response.status == 204 {
            assert!(response.body.is_empty(), "204 must have an empty body");
            break;
        }
        order.push(response.json()["job_id"].as_str().unwrap().to_string());
    }
    assert_eq!(order, vec![high, low, second_low]);
    assert_eq!(
        server.claim("x", "c").unwrap()["job_id"],
        json!(other_queue)
    );
}

#[test]
fn claiming_needs_a_queue_and_an_agent_name() {
    let server = Server::start();
    let no_queue = server
        .agent()
        .request("GET", "/v1/job", &[("Cookie", "agent_name=x")], b"");
    assert_eq!(no_queue.status, 400);
    assert_eq!(
        no_queue.json(),
        json!({"detail": {}, "message": "No queue(s) specified in request"})
    );
    let no_agent = server.agent().get("/v1/job?queue=q");
    assert_eq!(no_agent.status, 401);
    assert_eq!(no_agent.json()["message"], json!("Agent not identified"));
}

#[test]
fn excluded_agents_never_get_the_job() {
    let server = Server::start();
    let refused = server.post_json(
        "/v1/job",
        &json!({"job_queue": "q", "exclude_agents": ["a1"]}),
    );
    assert_eq!(refused.status, 422);
    assert_eq!(
        refused.json()["message"],
        json!("There are no agents on the specified queue that are allowed to run this job")
    );

    for agent in ["a1", "a2"] {
        server.agent().post_json(
            &format!("/v1/agents/data/{agent}"),
            &json!({"queues": ["q"], "state": "waiting"}),
        );
    }
    let id = server.submit(&json!({"job_queue": "q", "exclude_agents": ["a1"]}));
    assert_eq!(server.claim("a1", "q"), None);
    assert_eq!(server.claim("a2", "q").unwrap()["job_id"], json!(id));
}

#[test]
fn a_job_with_attachments_waits_for_its_archive() {
    let server = Server::start();
    let plain = server.submit(&json!({"job_queue": "q"}));
    let refused = server.upload(&format!("/v1/job/{plain}/attachments"), "file", b"x");
    assert_eq!(
        (refused.status, refused.text()),
        (422, format!("Job {plain} not awaiting attachments\n"))
    );
    assert_eq!(server.claim("a", "q").unwrap()["job_id"], json!(plain));

    let id = server
        .submit(&json!({"job_queue": "q", "test_data": {"attachments": [{"agent": "a.txt"}]}}));
    assert_eq!(
        server.claim("a", "q"),
        None,
        "dispatch must wait for the upload"
    );
    assert_eq!(
        server
            .agent()
            .get(&format!("/v1/job/{id}/attachments"))
            .status,
        204
    );

    let missing_part = server.upload(&format!("/v1/job/{id}/attachments"), "other", b"x");
    assert_eq!(missing_part.status, 400);
    assert_eq!(
        missing_part.json(),
        json!({"detail": {}, "message": "Bad Request"})
    );

    let archive = b"\x1f\x8b pretend this is a tar.gz".repeat(1000);
    let uploaded = server.upload(&format!("/v1/job/{id}/attachments"), "file", &archive);
    assert_eq!((uploaded.status, uploaded.text()), (200, "OK".to_string()));
    let retried = server.upload(&format!("/v1/job/{id}/attachments"), "file", b"other bytes");
    assert_eq!(retried.status, 409, "{}", retried.text());

    let claimed = server.claim("a", "q").unwrap();
    assert_eq!(claimed["job_id"], json!(id));
    assert_eq!(claimed["attachments_status"], json!("complete"));
    let download = server.agent().get(&format!("/v1/job/{id}/attachments"));
    assert_eq!(download.status, 200);
    assert_eq!(download.header("content-type"), Some("application/gzip"));
    assert_eq!(
        download.body, archive,
        "a retry must not replace the first upload"
    );

    let late = server.upload(&format!("/v1/job/{id}/attachments"), "file", b"x");
    assert_eq!(
        (late.status, late.text()),
        (422, format!("Job {id} is not valid\n"))
    );
    let bad_id = server.upload("/v1/job/nope/attachments", "file", b"x");
    assert_eq!(
        (bad_id.status, bad_id.text()),
        (400, "Invalid job id\n".to_string())
    );
}

#[test]
fn cancel_stops_unfinished_jobs_only() {
    let server = Server::start();
    let id = server.submit(&json!({"job_queue": "q"}));
    let cancel = json!({"action": "cancel"});
    let first = server.post_json(&format!("/v1/job/{id}/action"), &cancel);
    assert_eq!((first.status, first.text()), (200, "OK".to_string()));
    assert_eq!(
        server.claim("a", "q"),
        None,
        "a cancelled job is never dispatched"
    );
    let again = server.post_json(&format!("/v1/job/{id}/action"), &cancel);
    assert_eq!(
        (again.status, again.text()),
        (400, "The job is already completed or cancelled".to_string())
    );
    let unknown = server.post_json(&format!("/v1/job/{JOB_ID}/action"), &cancel);
    assert_eq!(unknown.status, 400);
    let bad_action = server.post_json(&format!("/v1/job/{id}/action"), &json!({"action": "pause"}));
    assert_eq!(bad_action.status, 422);
    assert_eq!(
        bad_action.json()["detail"],
        json!({"json": {"action": ["Must be one of: cancel."]}})
    );
    let bad_id = server.post_json("/v1/job/nope/action", &cancel);
    assert_eq!(
        (bad_id.status, bad_id.text()),
        (400, "Invalid job id\n".to_string())
    );
    assert_eq!(
        server.get(&format!("/v1/result/{id}")).json()["job_state"],
        json!("cancelled")
    );
}

#[test]
fn position_counts_the_waiting_jobs_ahead() {
    let server = Server::start();
    let first = server.submit(&json!({"job_queue": "q"}));
    let second = server.submit(&json!({"job_queue": "q"}));
    let lead = server.client("lead", "contributor", &["--max-priority", "q=3"]);
    let urgent = lead.submit(&json!({"job_queue": "q", "job_priority": 3}));
    let position = |id: &str| server.get(&format!("/v1/job/{id}/position"));
    assert_eq!(position(&urgent).text(), "0");
    assert_eq!(position(&first).text(), "1");
    assert_eq!(position(&second).text(), "2");
    server.claim("a", "q");
    let started = position(&urgent);
    assert_eq!(
        (started.status, started.text()),
        (410, "Job not found or already started\n".to_string())
    );
    assert_eq!(position(&first).text(), "0");
    assert_eq!(position(JOB_ID).status, 410);
    assert_eq!(
        position("bad").json()["message"],
        json!("Invalid job_id specified")
    );
}

#[test]
fn search_filters_by_tags_and_state_and_pages() {
    let server = Server::start();
    let a = server.submit(&json!({"job_queue": "q", "tags": ["x", "y"]}));
    let b = server.submit(&json!({"job_queue": "q", "tags": ["y"]}));
    let c = server.submit(&json!({"job_queue": "q"}));
    server.post_json(&format!("/v1/job/{c}/action"), &json!({"action": "cancel"}));
    let ids = |query: &str| -> Vec<String> {
        let response = server.get(&format!("/v1/job/search{query}"));
        assert_eq!(response.status, 200, "{}", response.text());
        response
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(""), vec![a.clone(), b.clone(), c.clone()]);
    assert_eq!(ids("?tags=y"), vec![a.clone(), b.clone()]);
    assert_eq!(ids("?tags=x&tags=y&match=all"), vec![a.clone()]);
    assert_eq!(ids("?tags=x&tags=y&match=any"), vec![a.clone(), b.clone()]);
    assert_eq!(ids("?state=active"), vec![a.clone(), b.clone()]);
    assert_eq!(ids("?state=cancelled"), vec![c.clone()]);
    assert_eq!(ids("?limit=1&offset=1"), vec![b.clone()]);

    let entry = &server.get("/v1/job/search?state=cancelled").json()[0];
    assert_eq!(entry["job_state"], json!("cancelled"));
    assert!(entry["created_at"].as_str().unwrap().ends_with('Z'));

    for bad in [
        "?state=waiting",
        "?state=complete",
        "?match=some",
        "?limit=x",
        "?bogus=1",
    ] {
        assert_eq!(
            server.get(&format!("/v1/job/search{bad}")).status,
            422,
            "{bad}"
        );
    }
    let running = server.get("/v1/job/search?state=running").json();
    let message = running["detail"]["query"]["state"]["0"][0]
        .as_str()
        .unwrap();
    assert!(message.starts_with("Must be one of: setup,"), "{message}");
}

#[test]
fn resubmitting_a_job_id_keeps_it_and_duplicates_are_refused() {
    let server = Server::start();
    assert_eq!(
        server.submit(&json!({"job_queue": "q", "job_id": JOB_ID})),
        JOB_ID
    );
    let duplicate = server.post_json("/v1/job", &json!({"job_queue": "q", "job_id": JOB_ID}));
    assert_eq!(duplicate.status, 409);
    let bad = server.post_json("/v1/job", &json!({"job_queue": "q", "job_id": "bad"}));
    assert_eq!(
        (bad.status, bad.json()),
        (
            400,
            json!({"detail": {}, "message": "Invalid job_id specified"})
        )
    );
    let job = server.get(&format!("/v1/job/{JOB_ID}"));
    assert_eq!(job.json()["job_id"], json!(JOB_ID));
}

#[test]
fn unknown_and_invalid_job_ids_on_views() {
    let server = Server::start();
    assert_eq!(server.get(&format!("/v1/job/{JOB_ID}")).status, 204);
    assert_eq!(server.get(&format!("/v1/result/{JOB_ID}")).status, 204);
    let bad = server.get("/v1/job/123");
    assert_eq!(
        (bad.status, bad.json()["message"].clone()),
        (400, json!("Invalid job_id specified"))
    );
    assert_eq!(server.get("/v1/result/123").status, 400);
}

#[test]
fn paths_answer_with_and_without_trailing_slash() {
    let server = Server::start();
    assert_eq!(server.get("/v1").status, 200);
    assert_eq!(server.get("/v1/").status, 200);
    assert!(server
        .get("/v1/")
        .text()
        .starts_with("Testflinger Server v"));
    let id = server
        .post_json("/v1/job/", &json!({"job_queue": "q"}))
        .json()["job_id"]
        .clone();
    assert_eq!(
        server
            .get(&format!("/v1/job/{}/", id.as_str().unwrap()))
            .status,
        200
    );
}

#[test]
fn long_poll_claim_returns_as_soon_as_a_job_arrives() {
    let server = Server::start();
    let agent = server.agent();
    let waiter = std::thread::spawn(move || {
        agent.request(
            "GET",
            "/v1/job?queue=late&wait=30",
            &[("Cookie", "agent_name=w")],
            b"",
        )
    });
    // Give the waiter time to register; it must still get the job, never a 204.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let id = server.submit(&json!({"job_queue": "late"}));
    let response = waiter.join().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["job_id"], json!(id));

    let empty = server.agent().request(
        "GET",
        "/v1/job?queue=none&wait=0.2",
        &[("Cookie", "agent_name=w")],
        b"",
    );
    assert_eq!(empty.status, 204);
    let bad = server.agent().request(
        "GET",
        "/v1/job?queue=none&wait=soon",
        &[("Cookie", "agent_name=w")],
        b"",
    );
    assert_eq!(bad.status, 422);
}
